"""Memory a construction's verification needs, estimated before the big allocations.

Two steps, so that absurd sizes are rejected before anything is built and real ones are judged
on the real widths: `lower_bound_widths(spec)` from the spec alone (nothing built; the heads are
exact, d_model, d_ff and MUL's layers are lower bounds read off each construction's docstring, at
the token level: P = p^c token values, N = ceil(n / c) operand tokens), then the widths of the
built construction (building is cheap next to verifying: 8 s for MUL base 10 at n = 16 on the
busy shared 2-core machine, measured).

Bytes (8 per value: the carrier may be float64): three copies of the parameters (built, cast,
on device) plus, per batch element, 1.5 attention score tensors (heads x T x T, T the sequence
length; calibrated on a measured run: constant-precision ADD at n = 64, batch 512 asked for
31 GB) and the MLP and residual activations of every layer; plus the input set as Python ints.
An estimate to reject sizes that cannot fit, not a prediction.
"""

from __future__ import annotations

import math

from arith_precision import tasks

NUM_LAYERS = {"add": 5, "iter_add": 5, "mul": 4, "constant": 3, "lookup": 9}  # MUL: 4 + R (R >= 0)
HEAD_DIM = 4


def lower_bound_widths(spec: tasks.TaskSpec, variant: str = "log") -> dict[str, int]:
    """{'d_model', 'd_ff', 'heads', 'layers'}: heads exact, the rest lower bounds (MUL has
    4 + R layers, R >= 0 reductions: `mul.num_reductions`)."""
    p, n, k = spec.token_base, spec.operand_tokens, spec.num_operands
    if variant == "constant":  # add_constant.py: exact
        return {"d_model": 8 * n + p + 2, "heads": 2 * n, "layers": NUM_LAYERS["constant"],
                "d_ff": max(4 * n, n * (n + 1) // 2, 2 * (n + 1) * (p + 1))}
    if variant == "lookup":  # lookup_add.py: exact, the same for every n and k
        return {"d_model": 44 + p, "d_ff": max(6, p - 1), "heads": 2,
                "layers": NUM_LAYERS["lookup"]}
    if spec.task == "mul":  # mul.py: d_model = 4 + 2N + 2N(P-1) + ..., d_ff >= 4N(P-1)
        return {"d_model": 2 * n + 2 * n * (p - 1), "heads": 2 * n, "layers": NUM_LAYERS["mul"],
                "d_ff": 4 * n * (p - 1)}
    group = 1 if k <= p else tasks.ceil_log(k, p)  # column_add.py
    base = p ** group
    return {"d_model": 26 + 3 * group, "heads": max(2, group), "layers": NUM_LAYERS[spec.task],
            "d_ff": max(6, 2 * ((k * (base - 1)) // base) + 1)}


def construction_widths(construction) -> dict[str, int]:
    c = construction.config
    return {"d_model": c.d_model, "d_ff": c.d_ff, "heads": c.num_heads, "layers": c.num_layers}


def estimate_bytes(spec: tasks.TaskSpec, w: dict[str, int], batch_size: int = 256,
                   num_inputs: int = 0, prefill_chunk: int | None = None) -> float:
    """Estimated peak bytes of verifying `num_inputs` inputs in batches of `batch_size`, for a
    construction of widths `w` (`lower_bound_widths` or `construction_widths`). A
    `prefill_chunk` C holds C x T attention scores per head instead of T x T."""
    d, f, h, layers = w["d_model"], w["d_ff"], w["heads"], w["layers"]
    t = spec.sequence_length
    rows = t if prefill_chunk is None else min(prefill_chunk, t)
    params = layers * (4.0 * d * h * HEAD_DIM + 2.0 * d * f) + (spec.vocab_size + t) * d
    per_example = 1.5 * h * rows * t + t * (3.0 * f + 4.0 * d * layers)
    operand_bytes = 64 + spec.n * math.log2(spec.base) / 8
    inputs = num_inputs * spec.num_operands * operand_bytes
    return 8.0 * (3 * params + batch_size * per_example) + inputs


def check(spec: tasks.TaskSpec, w: dict[str, int], batch_size: int, num_inputs: int,
          variant: str = "log", inputs_flag: tuple[str, object] = ("--random", None),
          prefill_chunk: int | None = None) -> None:
    """UsageError when the input set alone does not fit (naming `inputs_flag`, e.g. --random),
    when one example does not (naming --n, or --k when IterADD with k = 3 would fit) or when
    the batch does not (naming --batch-size)."""
    import dataclasses

    from arith_precision.common.cli_errors import check_memory, memory_limit_bytes

    n_flag, n_value = "--n", spec.n
    if spec.task == "iter_add" and spec.k > 3:
        small = dataclasses.replace(spec, k=3)
        if estimate_bytes(small, lower_bound_widths(small, variant),
                          prefill_chunk=prefill_chunk) <= memory_limit_bytes():
            n_flag, n_value = "--k", spec.k
    what = (f"verifying {spec.task} base {spec.base} n={spec.n} (sequence length "
            f"{spec.sequence_length}, {w['heads']} heads, d_ff {w['d_ff']})")
    # First one example with the families that grow with n and k (charged to n or k), then the
    # flag's own inputs (--random's count; all of an --inputs file), then the whole batch.
    flag, value = inputs_flag
    own = min(value, num_inputs) if isinstance(value, int) else num_inputs
    check_memory(n_flag, n_value, estimate_bytes(spec, w, 1, num_inputs - own, prefill_chunk),
                 what)
    inputs_only = estimate_bytes(spec, w, 0, own) - estimate_bytes(spec, w, 0, 0)
    check_memory(flag, num_inputs if value is None else value, inputs_only,
                 f"holding {own} inputs of {spec.num_operands} operands")
    check_memory("--batch-size", batch_size,
                 estimate_bytes(spec, w, batch_size, num_inputs, prefill_chunk),
                 what + f" in batches of {batch_size} (lower --batch-size)")
