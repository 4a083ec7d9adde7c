"""One training run: `get_config("task=...,base=...,n=...,precision=...,layers=...")`.

    python -m experiments.main --config=experiments/configs/train.py:ARGS --workdir=DIR \
        [--config.train.steps=2000 --config.model.d_model=64 ...]

ARGS is a comma-separated list of key=value (and the bare switch `smoke`):
    task=add|iter_add|mul  base=P  n=N  k=K (iter_add)  l=L (mul; default 2n)  chunk=C
    reverse=0|1  precision=fp32|bf16|fp16|pure_bf16|pure_<fmt>|<format string>
    accumulation=once|sequential|pairwise  native=0|1  layers=L  d_model=D  heads=H
    steps=S  batch=B  lr=LR  seed=S  data_seed=S  eval_ns=N1;N2;...  smoke
    early_stop=E (validate every E steps; stop at 2 validations in a row with exact match
    >= 0.99 on 1000 held-out examples; the `early_stop` block holds the rule; 0: off)
Unknown keys or values are errors.

Main variants (2-core CPU, JAX 0.10, measured):
  * `task=add,base=10,n=8` (the default): 3 layers, d=128, 3000 steps of 256 examples.
    Measured: 16m41s wall on a busy 2-core CPU (about 12 minutes when the machine is quiet);
    reaches 99.4% exact match (99.93% per digit) on 2000 held-out 8-digit sums (fp32, seed 0)
    -- see README "Training".
  * `smoke`: 2 layers, d=32, 20 steps, tiny evaluation: a few seconds, checks the plumbing only.
  * `task=iter_add,base=2,n=8,k=3,precision=bf16`: the paper's bf16 IterADD setting (GPU-sized
    grids live in the sweep configs).
"""

from __future__ import annotations

import ml_collections

from arith_precision.cli_errors import UsageError

TASKS = ("add", "iter_add", "mul")


def _bool(value: str) -> bool:
    if value in ("1", "true", "True"):
        return True
    if value in ("0", "false", "False"):
        return False
    raise ValueError(f"expected 0/1/true/false, got {value!r}")


def _parse(arg: str | None) -> dict[str, str]:
    out = {}
    for item in (arg or "").split(","):
        item = item.strip()
        if not item:
            continue
        if "=" not in item:
            if item != "smoke":
                raise UsageError("config argument", item, "is not key=value (or 'smoke')")
            out["smoke"] = "1"
            continue
        key, value = item.split("=", 1)
        if key.strip() in out:
            raise UsageError(key.strip(), value.strip(), "given twice")
        out[key.strip()] = value.strip()
    return out


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
        name="fp32", accumulation="once", native=False, param="", accum="", grad=""))
    c.optim = ml_collections.ConfigDict(dict(
        learning_rate=1e-3, warmup_steps=200, final_lr_fraction=0.05, weight_decay=0.01,
        b1=0.9, b2=0.98, grad_clip=1.0))
    c.train = ml_collections.ConfigDict(dict(
        steps=3000, batch_size=256, log_every=100, checkpoint_every=500, keep_checkpoints=2))
    c.eval = ml_collections.ConfigDict(dict(num_examples=2000, batch_size=500, ns=()))
    # Early stopping (arith_precision/early_stop.py): every=0 is off; else validate every `every`
    # steps and stop at `patience` consecutive validations with exact match >= `threshold`.
    c.early_stop = ml_collections.ConfigDict(dict(
        every=0, threshold=0.99, num_examples=1000, batch_size=500, patience=2))
    return c


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = base_config()
    args = _parse(arg)
    setters = {
        "task": lambda v: setattr(c.task, "task", v),
        "base": lambda v: setattr(c.task, "base", int(v)),
        "n": lambda v: setattr(c.task, "n", int(v)),
        "k": lambda v: setattr(c.task, "k", int(v)),
        "l": lambda v: setattr(c.task, "l", int(v)),
        "chunk": lambda v: setattr(c.task, "chunk", int(v)),
        "reverse": lambda v: setattr(c.task, "reverse_answer", _bool(v)),
        "precision": lambda v: setattr(c.precision, "name", v),
        "accumulation": lambda v: setattr(c.precision, "accumulation", v),
        "native": lambda v: setattr(c.precision, "native", _bool(v)),
        "layers": lambda v: setattr(c.model, "num_layers", int(v)),
        "d_model": lambda v: setattr(c.model, "d_model", int(v)),
        "heads": lambda v: setattr(c.model, "num_heads", int(v)),
        "steps": lambda v: setattr(c.train, "steps", int(v)),
        "batch": lambda v: setattr(c.train, "batch_size", int(v)),
        "lr": lambda v: setattr(c.optim, "learning_rate", float(v)),
        "seed": lambda v: setattr(c, "seed", int(v)),
        "data_seed": lambda v: setattr(c, "data_seed", int(v)),
        "eval_ns": lambda v: setattr(c.eval, "ns", tuple(int(x) for x in v.split(";") if x)),
        "early_stop": lambda v: setattr(c.early_stop, "every", int(v)),
        "smoke": lambda v: None,
    }
    unknown = sorted(set(args) - set(setters))
    if unknown:
        raise UsageError(unknown[0], args[unknown[0]],
                         f"unknown config key; known: {', '.join(sorted(setters))}")
    if args.get("task", c.task.task) not in TASKS:
        raise UsageError("task", args["task"], f"unknown task {args['task']!r}; expected one of "
                         f"{TASKS}")
    if args.get("smoke", "1") != "1":
        raise UsageError("smoke", args["smoke"], "is a bare switch: write 'smoke', no value")
    if "smoke" in args:  # tiny everything, applied first so explicit keys still win
        c.model.update(num_layers=2, d_model=32, num_heads=2, d_ff=64)
        c.train.update(steps=20, batch_size=16, log_every=5, checkpoint_every=10)
        c.optim.warmup_steps = 5
        c.eval.update(num_examples=32, batch_size=16)
    for key, value in args.items():
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
    including sizes whose estimated memory is over the limit (`arith_precision.train_checks`)."""
    from arith_precision import train_checks

    train_checks.validate(c)
