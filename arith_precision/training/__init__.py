"""Training: `train_and_evaluate(config, workdir)` and what a run is made of.

One run trains a `Transformer` on one task with AdamW (linear warmup, cosine decay to a final
fraction of the peak, gradient clipping), loss on the answer tokens only, at the precision the
config names. The step is `jax.jit`-compiled with named shardings on the one data mesh
(`mesh.py`): the batch is split over every device, parameters and optimizer state are replicated,
and XLA inserts the gradient all-reduce. `config.distributed=True` calls
`jax.distributed.initialize()` first (multi-host); every host then builds the same global batch
and keeps its own shards.

Exact resume: a batch is a pure function of (data_seed, step), the optimizer state is
checkpointed with the parameters, and CPU execution is deterministic, so a run killed at any
moment and restarted from its latest orbax checkpoint ends with bit-identical parameters
(`summary.json` records `params_sha256` to check it). A newest checkpoint that fails to restore
is moved aside (never deleted) and the run resumes from the previous one.

The modules, one job each:

    config.py       the run-config schema (`get_config`, `base_config`, `validate`)
    checks.py       up-front checks of a config, every bad value named by its key
    precision.py    a config's `precision` block -> the simulated policy of the step
    step.py         config -> task, model, optimizer; the (unjitted) train step; params_sha256
    replicas.py     R steps in one program (unrolled copies: bit-identical to separate runs)
    mesh.py         the 1-D data mesh
    loop.py         `train_group`: R runs in one program, each written as if alone, with resume
    early_stop.py   validation every E steps and the stopping rule
    checkpoints.py  orbax manager options, the newest-good-checkpoint fallback
    restore.py      `restore_params`: a finished run's parameters, checked against its summary

Outputs in `workdir`: `metrics.jsonl` (one line per log step), `validation.jsonl` (early
stopping's validations), `checkpoints/` (orbax), `summary.json` (final evaluation, timing,
versions, resolved config, `params_sha256`, status, `steps_to_converge`).
"""

from arith_precision.training.config import base_config, get_config, validate
from arith_precision.training.loop import train_and_evaluate, train_group
from arith_precision.training.precision import StepPrecision, step_precision
from arith_precision.training.restore import RestoredRun, restore_params
from arith_precision.training.step import (
    eval_specs,
    loss_fn,
    make_train_step,
    model_config,
    optimizer,
    params_sha256,
    plateau_controller,
    plateau_decay,
    precision_of,
    state_initializer,
    task_spec,
    versions,
)

__all__ = [
    "RestoredRun", "StepPrecision", "base_config", "eval_specs", "get_config", "loss_fn",
    "make_train_step", "model_config", "optimizer", "params_sha256", "plateau_controller",
    "plateau_decay", "precision_of",
    "restore_params", "state_initializer", "step_precision", "task_spec", "train_and_evaluate",
    "train_group", "validate", "versions",
]
