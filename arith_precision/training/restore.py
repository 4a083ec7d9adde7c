"""A finished run's final parameters, restored from its checkpoint and checked against its summary.

`restore_params(run_dir)` is what the quantization study, the precision probe and notebooks use to
load a trained model: it rebuilds the run's training state from the `config` its summary.json
recorded, restores the newest checkpoint onto the training mesh, and refuses parameters whose
SHA-256 differs from the summary's.
"""

from __future__ import annotations

import json
import os
from typing import Any, NamedTuple

import jax
import orbax.checkpoint as ocp

from arith_precision.training.mesh import DataMesh
from arith_precision.training.step import model_config, optimizer, params_sha256, state_initializer


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
    replicated = DataMesh.make().replicated
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
