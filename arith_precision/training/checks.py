"""Up-front checks of a training config: every bad value named by its key before any work.

`validate(config)` raises `cli_errors.UsageError(key, value, why)` (a ValueError) for the first
bad value: task, evaluation sizes, model, precision, optimizer (learning rate > 0 and finite,
warmup >= 0, final fraction in [0, 1], weight decay >= 0, Adam betas in [0, 1), clip > 0),
training sizes (>= 1), seeds (>= 0), early stopping (every >= 0, threshold in (0, 1],
the rest >= 1), and a run whose estimated memory exceeds the limit.

The memory estimate (`estimate_bytes`) counts float32 parameters, gradients and both Adam moments,
plus the activations a backward pass keeps per example (residual-width and MLP-width vectors and
the attention probabilities of every layer, at the longest sequence) times the batch, plus the
evaluation's decoding cache. It is a rough lower bound on the real peak (XLA temporaries,
simulation and `sequential` accumulation add more); it exists to reject sizes that cannot fit
(n = 10^9, batch = 10^9) before the run allocates, not to predict memory use.
"""

from __future__ import annotations

import math
import re

from arith_precision.common.cli_errors import UsageError, check_memory
from arith_precision.training import step as step_lib
from arith_precision.training.early_stop import PROTOCOLS

_OPTIM_RULES = (  # key, test, why
    ("learning_rate", lambda v: math.isfinite(v) and v > 0, "must be > 0 and finite"),
    ("warmup_steps", lambda v: v >= 0, "must be >= 0"),
    ("final_lr_fraction", lambda v: 0 <= v <= 1, "must be in [0, 1]"),
    ("weight_decay", lambda v: math.isfinite(v) and v >= 0, "must be >= 0 and finite"),
    ("b1", lambda v: 0 <= v < 1, "must be in [0, 1)"),
    ("b2", lambda v: 0 <= v < 1, "must be in [0, 1)"),
    ("grad_clip", lambda v: math.isfinite(v) and v > 0, "must be > 0 and finite"),
)


def _number(key: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UsageError(key, value, "must be a number")
    return float(value)


def _at_least(key: str, value, lo: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise UsageError(key, value, "must be an integer")
    if value < lo:
        raise UsageError(key, value, f"must be >= {lo}")


def _keyed(block: str, fields, err: ValueError) -> UsageError:
    """Name the field an error message starts with ('base must be >= 2' -> task.base)."""
    message = str(err).replace("TransformerConfig.", "")
    words = message.split()
    candidates = [words[0].split("=")[0].rstrip(":,")] if words else []
    candidates += re.findall(r"unknown (\w+)", message) + re.findall(r"\b(\w+)=", message)
    for name in candidates:
        if name in fields:
            return UsageError(f"{block}.{name}", fields[name], message)
    return UsageError(block, "(config)", message)


def validate(config) -> None:
    """Raise UsageError for the first bad value of a training config (see the module doc)."""
    for key in ("seed", "data_seed"):
        _at_least(key, config[key], 0)
    try:
        spec = step_lib.task_spec(config.task)
    except UsageError:
        raise
    except ValueError as e:
        raise _keyed("task", dict(config.task), e) from None
    if config.task.task != "iter_add" and config.task.k != 2:
        raise UsageError("task.k", config.task.k, f"only applies to iter_add (task is "
                         f"{config.task.task})")
    if config.task.task != "mul" and config.task.l:
        raise UsageError("task.l", config.task.l, f"only applies to mul (task is "
                         f"{config.task.task})")
    for n in config.eval.get("ns") or ():
        _at_least("eval.ns", n, 1)
    try:
        especs = step_lib.eval_specs(config)
    except ValueError as e:
        raise UsageError("eval.ns", tuple(config.eval.ns), str(e)) from None
    try:
        step_lib.precision_of(config)
    except ValueError as e:
        message = str(e)
        for key in ("regions", "rounding", "random_bits"):
            if message.startswith(f"{key}: "):
                raise UsageError(f"precision.{key}", config.precision[key],
                                 message.split(": ", 2)[-1]) from None
        raise UsageError("precision", config.precision.name, message) from None
    for key in ("num_layers", "d_model", "num_heads", "d_ff"):
        _at_least(f"model.{key}", config.model[key], 1)
    for key in ("steps", "batch_size", "log_every", "checkpoint_every", "keep_checkpoints"):
        _at_least(f"train.{key}", config.train[key], 1)
    for key in ("num_examples", "batch_size"):
        _at_least(f"eval.{key}", config.eval[key], 1)
    _at_least("optim.warmup_steps", config.optim.warmup_steps, 0)
    if config.get("early_stop") is not None:
        es = config.early_stop
        _at_least("early_stop.every", es.every, 0)
        for key in ("num_examples", "batch_size", "patience"):
            _at_least(f"early_stop.{key}", es[key], 1)
        if not 0 < _number("early_stop.threshold", es.threshold) <= 1:
            raise UsageError("early_stop.threshold", es.threshold, "must be in (0, 1]")
        if es.get("min_steps") is not None:
            _at_least("early_stop.min_steps", es.min_steps, 0)
        if es.get("protocol", "unseen") not in PROTOCOLS:
            raise UsageError("early_stop.protocol", es.protocol,
                             f"expected one of {', '.join(PROTOCOLS)}")
    for key, ok, why in _OPTIM_RULES:
        if not ok(_number(f"optim.{key}", config.optim[key])):
            raise UsageError(f"optim.{key}", config.optim[key], why)
    # Sizes before the model config: a huge max_len must not be touched by anything else. When
    # one example alone does not fit, the sequence (n) is too long; else the batch is too big.
    longest = max(s.sequence_length for s in [spec, *especs])
    what = f"training (sequence length {longest}, batch {config.train.batch_size})"
    check_memory("task.n" if longest == spec.sequence_length else "eval.ns",
                 max(s.n for s in [spec, *especs]),
                 estimate_bytes(config, longest, spec.vocab_size, batch=1, eval_batch=1), what)
    check_memory("train.batch_size", config.train.batch_size,
                 estimate_bytes(config, longest, spec.vocab_size, eval_batch=1), what)
    check_memory("eval.batch_size", config.eval.batch_size,
                 estimate_bytes(config, longest, spec.vocab_size), what)
    try:
        step_lib.model_config(config)
    except ValueError as e:
        raise _keyed("model", dict(config.model), e) from None


def estimate_bytes(config, seq_len: int, vocab: int, batch: int | None = None,
                   eval_batch: int | None = None) -> float:
    """Rough peak bytes of a run (see the module doc): state + activations + evaluation."""
    m = config.model
    d, f, layers, heads = m.d_model, m.d_ff, m.num_layers, m.num_heads
    params = 2 * vocab * d + seq_len * d + layers * (4 * d * d + 2 * d * f + 9 * d)
    state = 4 * params  # params, gradients, two Adam moments
    per_example = layers * (seq_len * (8 * d + 2 * f) + 2 * heads * seq_len * seq_len)
    per_example += 3 * seq_len * vocab  # logits, softmax, its gradient
    train_act = (config.train.batch_size if batch is None else batch) * per_example
    eval_batch = config.eval.batch_size if eval_batch is None else eval_batch
    eval_act = eval_batch * (layers * 2 * seq_len * d + heads * seq_len + seq_len * d)
    return 4.0 * (state + train_act + eval_act)
