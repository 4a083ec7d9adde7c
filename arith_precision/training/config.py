"""One training run: `get_config("task=...,base=...,n=...,precision=...,layers=...")`.

    python -m experiments.main --config=experiments/configs/train.py:ARGS --workdir=DIR \
        [--config.train.steps=2000 --config.model.d_model=64 ...]

ARGS is a comma-separated list of key=value (and the bare switch `smoke`):
    task=add|iter_add|mul  base=P  n=N  k=K (iter_add)  l=L (mul; default 2n)  chunk=C
    reverse=0|1  precision=fp32|bf16|fp16|pure_bf16|pure_<fmt>|<format string>|<region arm>
    accumulation=once|sequential|pairwise  native=0|1  rounding=R  regions=REGION=FMT[@R];...
    layers=L  d_model=D  heads=H
    steps=S  batch=B  lr=LR  seed=S  data_seed=S  eval_ns=N1;N2;...  smoke
    early_stop=E (validate every E steps; stop at 2 validations in a row with exact match
    >= 0.99 on 1000 held-out examples; the `early_stop` block holds the rule; 0: off)
Unknown keys or values are errors.

Main variants (2-core CPU, JAX 0.10, measured):
  * `task=add,base=10,n=8` (the default): 3 layers, d=128, 3000 steps of 256 examples.
    Measured: 16m41s wall on a busy 2-core CPU (about 12 minutes when the machine is quiet);
    reaches 99.4% exact match (99.93% per digit) on 2000 held-out 8-digit sums (fp32, seed 0)
    -- see docs/training.md.
  * `smoke`: 2 layers, d=32, 20 steps, tiny evaluation: a few seconds, checks the plumbing only.
  * `task=iter_add,base=2,n=8,k=3,precision=bf16`: the paper's bf16 IterADD setting (GPU-sized
    grids live in the sweep configs).
"""

from __future__ import annotations

import ml_collections

from arith_precision.common import config_args as args_lib
from arith_precision.common.cli_errors import UsageError
from arith_precision.tasks.spec import TASKS
from arith_precision.training import checks


def _bool(value: str) -> bool:
    if value in ("1", "true", "True"):
        return True
    if value in ("0", "false", "False"):
        return False
    raise ValueError(f"expected 0/1/true/false, got {value!r}")


def base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0  # parameter initialisation
    c.data_seed = 0  # training and evaluation streams
    c.distributed = False  # jax.distributed.initialize() for multi-host runs
    c.task = ml_collections.ConfigDict(dict(
        task="add", base=10, n=8, k=2, l=0, chunk=1, reverse_answer=False,
        operand_distribution="uniform_value"))  # l=0: full product (2n)
    c.model = ml_collections.ConfigDict(dict(
        num_layers=3, d_model=128, num_heads=4, d_ff=512, activation="gelu", norm="pre_ln",
        pos="learned", tied_embedding=False))
    c.precision = ml_collections.ConfigDict(dict(
        name="fp32", accumulation="once", native=False, param="", accum="", grad="",
        tensor_core_dot="auto", regions="", rounding="nearest_even", random_bits=0))
    c.optim = ml_collections.ConfigDict(dict(
        learning_rate=1e-3, warmup_steps=200, final_lr_fraction=0.05, weight_decay=0.01,
        b1=0.9, b2=0.98, grad_clip=1.0))
    c.train = ml_collections.ConfigDict(dict(
        steps=3000, batch_size=256, log_every=100, checkpoint_every=500, keep_checkpoints=2))
    c.eval = ml_collections.ConfigDict(dict(num_examples=2000, batch_size=500, ns=()))
    # Early stopping (arith_precision/training/early_stop.py): every=0 is off; else validate every
    # `every` steps and stop at `patience` consecutive validations with exact match >= `threshold`.
    # `protocol`: the validation score the rule reads (unseen: held-out inputs; iid: the task
    # distribution); `min_steps`: no stop before this step.
    c.early_stop = ml_collections.ConfigDict(dict(
        every=0, threshold=0.99, num_examples=1000, batch_size=500, patience=2,
        protocol="unseen", min_steps=0))
    return c


def _eval_ns(value: str) -> tuple[int, ...]:
    return tuple(int(x) for x in value.split(";") if x)


# The `key=value` ARGS: key -> (the config field it sets, how its text converts).
KEYS = {
    "task": ("task.task", str), "base": ("task.base", int), "n": ("task.n", int),
    "k": ("task.k", int), "l": ("task.l", int), "chunk": ("task.chunk", int),
    "reverse": ("task.reverse_answer", _bool), "precision": ("precision.name", str),
    "accumulation": ("precision.accumulation", str), "native": ("precision.native", _bool),
    "layers": ("model.num_layers", int), "d_model": ("model.d_model", int),
    "heads": ("model.num_heads", int), "steps": ("train.steps", int),
    "batch": ("train.batch_size", int), "lr": ("optim.learning_rate", float),
    "seed": ("seed", int), "data_seed": ("data_seed", int), "eval_ns": ("eval.ns", _eval_ns),
    "early_stop": ("early_stop.every", int), "rounding": ("precision.rounding", str),
    "regions": ("precision.regions", str), "random_bits": ("precision.random_bits", int),
}


def _setter(c: ml_collections.ConfigDict, path: str, convert):
    *parents, leaf = path.split(".")
    node = c
    for name in parents:
        node = node[name]
    return lambda value: setattr(node, leaf, convert(value))


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = base_config()
    setters = {key: _setter(c, path, convert) for key, (path, convert) in KEYS.items()}
    args = args_lib.parse(arg, keys=setters, switches=("smoke",))
    if args.get("task", c.task.task) not in TASKS:
        raise UsageError("task", args["task"], f"unknown task {args['task']!r}; expected one of "
                         f"{TASKS}")
    if "smoke" in args:  # tiny everything, applied first so explicit keys still win
        c.model.update(num_layers=2, d_model=32, num_heads=2, d_ff=64)
        c.train.update(steps=20, batch_size=16, log_every=5, checkpoint_every=10)
        c.optim.warmup_steps = 5
        c.eval.update(num_examples=32, batch_size=16)
    for key, value in args.items():
        if key == "smoke":
            continue
        try:
            setters[key](value)
        except ValueError as e:
            why = str(e)
            if "invalid literal" in why or "could not convert" in why:
                why = f"not a number ({why})"
            raise UsageError(key, value, why) from None
    validate(c)
    c.lock()
    return c


def validate(c: ml_collections.ConfigDict) -> None:
    """Fail early, with the offending key (a UsageError), on values the run would reject later,
    including sizes whose estimated memory is over the limit (`arith_precision.training.checks`)."""
    checks.validate(c)
