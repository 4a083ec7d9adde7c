"""Tensor-core contractions for simulated formats under `once` accumulation.

Under `once` a contraction is "exact products, a float32 accumulation, one rounding"
(`accumulate.py`). The carrier path computes it as a float32 x float32 dot at precision HIGHEST,
which on a GPU runs on the CUDA cores (no TF32). When the compute format's values all lie in
bfloat16 -- a `FloatFormat` with M <= 7 whose largest value and smallest positive value are
bfloat16 values (bf16 itself and every fp8 / fp6 / fp4 format; see `embeds_in_bf16`) -- the
already-rounded operands are cast to bfloat16 (exact: a value of the format *is* a bfloat16
value, NaN and +-inf included) and contracted with `preferred_element_type=float32`, which is
the tensor cores' bf16 x bf16 -> fp32 MMA on GPUs and TPUs; the float32 result is then rounded
exactly as the carrier path rounds it (`round_acc`, then `round_out`).

Why the semantics are the same: a product of two bfloat16 values (8-bit significands) has a
16-bit significand and is exact in float32 unless it under- or overflows float32's range, and
then the float32 carrier product rounds it the same way. Both paths therefore sum the same exact
products in float32.

Numerical assumption (where bit-identity comes from): the two paths agree bit for bit iff the
backend adds those products in the same order with IEEE float32 additions in both kernels.
`once` never fixed that order (the carrier path's own float32 sum differs between CPU and GPU),
so this is an assumption about a backend, not a property of the code:
  * XLA:CPU with `--xla_cpu_experimental_ynn_fusion_type=` (empty: no YNNPACK fusions): the
    bf16 dot is upcast to the float32 Eigen kernel; bit-identical (tested on random and
    cancelling inputs for every qualifying format, under jit and grad, in a subprocess).
  * XLA:CPU's default (jaxlib 0.10: YNNPACK) uses a different kernel for bf16 than for float32;
    the float32 sums differ in the last bits and, rarely, so do the rounded results (measured:
    6 of 131072 outputs of a 512x256x256 bf16 contraction of normal random values). Inputs
    whose float32 partial sums are all exact (order-independent) agree bit for bit (tested).
  * GPU tensor cores sum in another order, and their internal adder is not an IEEE float32
    adder (Fasi, Higham, Mikaitis, Pranesh 2021: operands aligned with truncation inside one
    MMA). `benchmarks/gpu_check.py` measures the fraction of rounded outputs that differ.
fp8 tensor-core dtypes are deliberately not used: Hopper's FP8 MMA keeps ~14 bits in its
accumulator (DeepSeek-V3), which is `accum="e8m13"`, not `once`; every fp8 format embeds in
bf16 and takes the bf16 MMA instead.

The policy's `tensor_core_dot` says when: "auto" (default) on GPU/TPU backends only -- on CPU
the carrier path runs and results are as before --, "on" everywhere (tests, CPU timing),
"off" never. Block formats (`matmul_block` / `weight_block`) and float64 carriers always take
the carrier path. Gradients of the fast contraction (jax.grad taken outside a simulated
function) are the carrier path's: float32 dots at precision HIGHEST of the tangents.
"""

from __future__ import annotations

import functools
from fractions import Fraction

import jax
import jax.numpy as jnp
from jax import lax
from jax.custom_derivatives import SymbolicZero

from arith_precision.formats.float_format import FloatFormat

MODES = ("auto", "on", "off")
ACCELERATORS = ("gpu", "cuda", "rocm", "tpu")
_BF16_MAX = (2 - Fraction(1, 2**7)) * Fraction(2) ** 127
_BF16_MIN_POSITIVE = Fraction(1, 2**133)


@functools.cache
def embeds_in_bf16(fmt) -> bool:
    """Whether every value of `fmt` is a bfloat16 value (finite values, and inf / NaN)."""
    if not isinstance(fmt, FloatFormat) or type(fmt) is not FloatFormat:
        return False  # fixed point, integer grids, runtime-width formats: the carrier path
    return (fmt.mantissa_bits <= 7 and fmt.max_exact <= _BF16_MAX
            and fmt.min_positive_exact >= _BF16_MIN_POSITIVE)


def applies(policy, a, b, params) -> bool:
    """Whether a `once` contraction of the carrier arrays `a`, `b` takes the bf16 path."""
    mode = policy.tensor_core_dot
    if mode == "off" or (mode == "auto" and jax.default_backend() not in ACCELERATORS):
        return False
    out = params.get("preferred_element_type")
    return (policy.accumulation == "once" and policy.matmul_block is None
            and policy.weight_block is None and a.dtype == jnp.float32
            and b.dtype == jnp.float32 and (out is None or jnp.dtype(out) == jnp.float32)
            and embeds_in_bf16(policy.compute))


def dot_general(a, b, dimension_numbers, round_out, round_acc, **params):
    """round_out(round_acc(bf16 x bf16 -> float32 contraction)) of float32 carriers whose values
    are bfloat16 values (see the module docstring); same signature as `accumulate.dot_general`
    without the mode."""
    rest = tuple(sorted((k, v) for k, v in params.items()
                        if k not in ("precision", "preferred_element_type")))
    return round_out(round_acc(_bf16_dot(a, b, dimension_numbers, rest)))


def _canonical(a, b, dimension_numbers):
    """Operands transposed to (batch, free, contracting) x (batch, contracting, free) and the
    matching dimension numbers; the output layout (batch, lhs free, rhs free) is unchanged.
    XLA:CPU has no bf16 x bf16 -> f32 kernel for batched dots whose batch axes sit at
    different positions in the two operands; transposes are exact, so nothing else changes."""
    (lc, rc), (lb, rb) = dimension_numbers
    lfree = [d for d in range(a.ndim) if d not in lc and d not in lb]
    rfree = [d for d in range(b.ndim) if d not in rc and d not in rb]
    a = jnp.transpose(a, (*lb, *lfree, *lc))
    b = jnp.transpose(b, (*rb, *rc, *rfree))
    nb, nc = len(lb), len(lc)
    dims = ((tuple(range(nb + len(lfree), a.ndim)), tuple(range(nb, nb + nc))),
            (tuple(range(nb)), tuple(range(nb))))
    return a, b, dims


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3))
def _bf16_dot(a, b, dimension_numbers, rest):
    a, b, dims = _canonical(a.astype(jnp.bfloat16), b.astype(jnp.bfloat16), dimension_numbers)
    return lax.dot_general_p.bind(
        a, b, dimension_numbers=dims, precision=None,
        preferred_element_type=jnp.dtype(jnp.float32), **dict(rest))


def _carrier_dot(a, b, dimension_numbers, rest):
    """The carrier path's contraction (float32 at HIGHEST), for tangents and cotangents."""
    return lax.dot_general_p.bind(
        a, b, dimension_numbers=dimension_numbers,
        precision=(lax.Precision.HIGHEST, lax.Precision.HIGHEST),
        preferred_element_type=jnp.dtype(jnp.float32), **dict(rest))


@functools.partial(_bf16_dot.defjvp, symbolic_zeros=True)
def _bf16_dot_jvp(dimension_numbers, rest, primals, tangents):
    a, b = primals
    ta, tb = tangents
    out = _bf16_dot(a, b, dimension_numbers, rest)
    terms = []
    if not isinstance(ta, SymbolicZero):
        terms.append(_carrier_dot(ta, b, dimension_numbers, rest))
    if not isinstance(tb, SymbolicZero):
        terms.append(_carrier_dot(a, tb, dimension_numbers, rest))
    if not terms:
        return out, jnp.zeros_like(out)
    return out, terms[0] if len(terms) == 1 else terms[0] + terms[1]
