"""Run a construction autoregressively at a (simulated) precision and check it exactly.

`predict` decodes the answer with the model's own greedy decoder (KV cache) under
`arith_precision.simulate`, with every floating-point intermediate, and the parameters, rounded to
the format. Matmuls run at precision "highest" (float32 products and sums in float32, never
TF32, also on a GPU).

Formats that float32 cannot carry without double rounding (more than 10 mantissa bits other than
fp32 itself, exponent wider than 8 bits, wide fixed point) run on a float64 carrier, which needs
`jax_enable_x64` (`enable_carrier` switches it on).

With `runtime=True` an e8mM format (M <= 24) runs through a decoder whose mantissa width is a
runtime value (`simulate.runtime_format`): one compiled program per (model shape, accumulation,
carrier) serves every width, on the carrier the static format uses: float32 for M <= 10 and
M = 23 (float32 itself), float64 (`RuntimeMantissa64`) for the other M <= 24; the rounding is
bit for bit the static one.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from arith_precision import evaluate, formats, tasks
from arith_precision import model as model_lib
from arith_precision.simulate import Policy, runtime_format
from constructions.craft.construction import Construction


def enable_carrier(fmt) -> None:
    """Switch on float64 if `fmt` needs a float64 carrier (a process-wide JAX setting)."""
    if formats.carrier_dtype(fmt) == np.float64 and not jax.config.jax_enable_x64:
        jax.config.update("jax_enable_x64", True)


FLOAT32_RUNTIME_BITS = 10  # the widest e8mM a float32 carrier simulates (formats/carrier.py)
MAX_RUNTIME_MANTISSA = 24  # ... and a float64 one


def runtime_mantissa(fmt) -> int | None:
    """M if `fmt` is e8mM (IEEE-like, nearest-even storage, M <= 24) that the runtime-width
    decoder runs, else None."""
    fmt = formats.as_format(fmt)
    if (isinstance(fmt, formats.FloatFormat) and type(fmt) is formats.FloatFormat
            and fmt.exponent_bits == 8 and fmt.variant == "ieee" and fmt.bias == 127
            and not fmt.saturate and not fmt.flush_subnormals
            and fmt.mantissa_bits <= MAX_RUNTIME_MANTISSA):
        return fmt.mantissa_bits
    return None


def runtime_decoder(config: model_lib.TransformerConfig, steps: int, accumulation: str,
                    wide: bool, prefill_chunk: int | None = None):
    """`(params, prompt_BxT, bits_S) -> tokens`: e8m{bits_S[0]} for every width, one compile
    (`wide`: the float64 carrier, up to e8m24)."""
    fmt = runtime_format.RuntimeMantissa64() if wide else runtime_format.RuntimeMantissa()
    return evaluate.decoder(config, steps, Policy(compute=fmt, accumulation=accumulation),
                            param_argnums=(0,), runtime_bits=True, prefill_chunk=prefill_chunk)


def predict(construction: Construction, operands: list[list[int]], fmt="fp32",
            accumulation: str = "once", batch_size: int = 256,
            runtime: bool = False, prefill_chunk: int | None = None) -> np.ndarray:
    """Greedy answer tokens (num x W) for each operand list (`runtime`: see the module doc;
    `prefill_chunk`: prompts go through the cache this many tokens at a time, for memory,
    `decode.greedy_decode`)."""
    fmt = formats.as_format(fmt)
    carrier = formats.carrier_dtype(fmt)
    if carrier == np.float64 and not jax.config.jax_enable_x64:
        raise ValueError(f"format {fmt} needs a float64 carrier: call "
                         f"constructions.check.run.enable_carrier({str(fmt)!r}) "
                         f"(jax_enable_x64) first")
    config = dataclasses.replace(construction.config, dtype=jnp.dtype(carrier),
                                 param_dtype=jnp.dtype(carrier))
    params = jax.tree.map(lambda a: np.asarray(a, carrier), construction.params)
    m = runtime_mantissa(fmt) if runtime else None
    if runtime and m is None:
        raise ValueError(f"format {fmt}: the runtime-width decoder runs e8mM with M <= "
                         f"{MAX_RUNTIME_MANTISSA} only")
    if m is not None:
        wide = carrier == np.float64  # the static format's carrier (e8m23 is float32 itself)
        jitted = runtime_decoder(config, construction.spec.answer_tokens, accumulation, wide,
                                 prefill_chunk)
        bits_S = np.array([m], np.int32)

        def decode(p, prompt):
            return jitted(p, prompt, bits_S)
    else:
        policy = None if (fmt == formats.as_format("fp32") and accumulation == "once") else \
            Policy(compute=fmt, accumulation=accumulation)
        decode = evaluate.decoder(config, construction.spec.answer_tokens, policy,
                                  param_argnums=(0,), prefill_chunk=prefill_chunk)
    spec = construction.spec
    outs = []
    for start in range(0, len(operands), batch_size):
        chunk = operands[start:start + batch_size]
        pad = batch_size - len(chunk) if len(operands) > batch_size else 0
        batch = tasks.batch_from_operands(spec, chunk + [chunk[-1]] * pad)  # one compiled shape
        # float32 contractions in float32: XLA:GPU would otherwise run them as TF32 (10 mantissa
        # bits) on recent GPUs, and "exact at fp32" would be a claim about another format.
        with jax.default_matmul_precision("highest"):
            outs.append(np.asarray(decode(params, batch.input_tokens))[: len(chunk)])
    return np.concatenate(outs) if outs else np.zeros((0, spec.answer_tokens), np.int32)


def reference_answer_tokens(spec: tasks.TaskSpec, answers: list[int]) -> np.ndarray:
    """(num x W) answer tokens of exact answers (Python ints, `TaskSpec.exact_answer`), written
    with Python's divmod (`tasks.make_example`'s path): the verifier's reference. It does not use
    the vectorised NumPy limb arithmetic of `tasks.batch_from_operands` (int64 limbs)."""
    from arith_precision.tasks import reference

    rows = [reference.answer_tokens(spec, a) for a in answers]
    return np.asarray(rows, np.int64).reshape(len(rows), spec.answer_tokens)


def check(construction: Construction, operands: list[list[int]], fmt="fp32",
          accumulation: str = "once", batch_size: int = 256,
          stop_at_first_failure: bool = False, runtime: bool = False,
          progress=None, prefill_chunk: int | None = None) -> dict:
    """Exact-match of the construction against Python integers on `operands` (non-empty).

    The expected answer of each input is `spec.exact_answer(operands)` (Python int arithmetic),
    turned into tokens by `reference_answer_tokens`; the prompts are built by
    `tasks.batch_from_operands`. An empty `operands` raises ValueError.

    Returns {"exact_match", "checked", "failures", "first_failure", "first_failure_expected",
    "first_failure_got"}; `first_failure` is the first failing operand list (input order) or None.
    With `stop_at_first_failure`, checking stops after the first batch that contains a failure
    (then `checked` counts only what was checked). `runtime`: e8mM through the runtime-width
    decoder (module doc). `progress(checked, total, failures)` is called after each batch.
    `prefill_chunk`: see `predict`.
    """
    spec = construction.spec
    if len(operands) == 0:
        raise ValueError("operands: empty list; nothing to check (an exact match over no inputs "
                         "would claim nothing)")
    checked = failures = 0
    first = None
    for start in range(0, len(operands), batch_size):
        chunk = operands[start:start + batch_size]
        got = predict(construction, chunk, fmt, accumulation, batch_size, runtime,
                      prefill_chunk)
        answers = [spec.exact_answer(ops) for ops in chunk]  # Python ints
        want = reference_answer_tokens(spec, answers)
        ok = np.all(got == want, axis=1)
        checked += len(chunk)
        failures += int((~ok).sum())
        if progress is not None:
            progress(checked, len(operands), failures)
        if first is None and not ok.all():
            i = int(np.argmin(ok))
            first = {"operands": chunk[i],
                     "expected": answers[i],
                     "got_tokens": got[i].tolist()}
            if stop_at_first_failure:
                break
    return {"exact_match": (checked - failures) / max(checked, 1), "checked": checked,
            "failures": failures, "first_failure": None if first is None else first["operands"],
            "first_failure_detail": first}
