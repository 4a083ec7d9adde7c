"""Training: `train_and_evaluate(config, workdir)`.

One run trains a `Transformer` on one task with AdamW (linear warmup, cosine decay, gradient
clipping), loss on the answer tokens only, at the precision the config names (`precision.py`).
The step is `jax.jit`-compiled with named shardings: the batch is split over every device on a
1-D "data" mesh, parameters and optimizer state are replicated, and XLA inserts the gradient
all-reduce. `config.distributed=True` calls `jax.distributed.initialize()` first (multi-host);
every host then builds the same global batch and keeps its own shards.

Exact resume: a batch is a pure function of (data_seed, step), the optimizer state is
checkpointed with the parameters, and CPU execution is deterministic, so a run killed at any
moment and restarted from its latest orbax checkpoint ends with bit-identical parameters
(`summary.json` records `params_sha256` to check it).

A newest checkpoint that fails to restore is moved aside (never deleted) and the run resumes from
the previous one (`checkpoints.py`); the final parameters are still bit-identical.

Early stopping (`config.early_stop.every > 0`, `early_stop.py`): validation exact match every
`every` steps; the run stops once it reaches the threshold at `patience` consecutive validations
and records `steps_to_converge`. Resume stays bit-identical with it on.

R runs at once (`train_group.py`): `train_group(configs, workdirs)` trains several runs in one
compiled program, each writing exactly what it would alone (bit-identical parameters); this
function is `train_group` with one run. The step and what a run is made of live in
`train_step.py` (re-exported here).

Outputs in `workdir`: `metrics.jsonl` (one line per log step), `validation.jsonl` (early
stopping's validations), `checkpoints/` (orbax), `summary.json` (final evaluation, timing,
versions, resolved config, `params_sha256`, status, `steps_to_converge`).
"""

from __future__ import annotations

import json
import os
from typing import Any, NamedTuple

import jax
import orbax.checkpoint as ocp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from arith_precision import model as model_lib  # noqa: F401 -- re-exported (train.model_lib)
from arith_precision.precision import StepPrecision, step_precision  # noqa: F401 -- re-exported
from arith_precision.train_group import train_group
from arith_precision.train_step import (  # noqa: F401 -- the public names of one run
    eval_specs,
    loss_fn,
    make_train_step,
    model_config,
    optimizer,
    params_sha256,
    precision_of,
    state_initializer,
    task_spec,
    versions,
)


class RestoredRun(NamedTuple):
    """A finished run's final parameters with what describes them."""

    params: Any
    config: Any  # ml_collections.ConfigDict, as the run resolved it
    summary: dict[str, Any]
    step: int  # the checkpoint's step (the last trained step; earlier with early stopping)


def restore_params(run_dir: str) -> RestoredRun:
    """The final parameters of a finished `train_and_evaluate` run (host arrays).

    Raises ValueError naming the directory when it holds no summary.json or checkpoints/, the
    run did not complete, or the restored parameters' SHA-256 differs from the summary's.
    """
    import ml_collections

    summary_path = os.path.join(run_dir, "summary.json")
    ckpt_dir = os.path.abspath(os.path.join(run_dir, "checkpoints"))
    if not os.path.isfile(summary_path) or not os.path.isdir(ckpt_dir):
        raise ValueError(f"{run_dir!r} is not a finished training run (expected summary.json and "
                         f"checkpoints/ from train_and_evaluate)")
    with open(summary_path) as f:
        summary = json.load(f)
    if summary.get("status") != "completed":
        raise ValueError(f"run {run_dir!r} has status {summary.get('status')!r}, not 'completed'")
    config = ml_collections.ConfigDict(summary["config"])
    mcfg = model_config(config)
    tx, _ = optimizer(config)
    mesh = jax.make_mesh((jax.device_count(),), ("data",),
                         axis_types=(jax.sharding.AxisType.Auto,))
    replicated = NamedSharding(mesh, P())
    target = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=replicated),
                          jax.eval_shape(state_initializer(config, mcfg, tx)))
    with ocp.CheckpointManager(ckpt_dir) as manager:
        step = manager.latest_step()
        if step is None:
            raise ValueError(f"run {run_dir!r} has no checkpoint in {ckpt_dir}")
        state = manager.restore(step, args=ocp.args.StandardRestore(target))
    params = jax.device_get(state["params"])
    if summary.get("params_sha256") and params_sha256(params) != summary["params_sha256"]:
        raise ValueError(f"run {run_dir!r}: the checkpoint at step {step} does not hold the "
                         f"parameters summary.json describes (params_sha256 differs)")
    return RestoredRun(params, config, summary, int(step))


def train_and_evaluate(config, workdir: str) -> dict[str, Any]:
    """Train, checkpoint, evaluate; resume from `workdir` if it holds a checkpoint.

    Returns the summary dict (also written to `workdir/summary.json`). Bad config values raise
    `cli_errors.UsageError` (a ValueError naming the key) before any work.
    """
    return train_group([config], [workdir])[0]
