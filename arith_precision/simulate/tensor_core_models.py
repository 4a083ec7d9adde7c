"""Bit-accurate models of NVIDIA tensor-core inner products: `accumulation="tensor_core:<gpu>"`.

Not to be confused with `tensor_core.py`, a *speed* path that runs `once` contractions on real
bf16 tensor cores; this module *simulates* what a given GPU's matrix-multiply unit computes,
bit for bit, on any backend.

Source: F. A. Khattak and M. Mikaitis, "Accurate Models of NVIDIA Tensor Cores" (arXiv
2512.07004; ACM TACO), whose models are published as MATLAB code with hardware validation data
(github.com/north-numerical-computing/MATLAB-tensor-core: `models/<GPU>TC.m` set the parameters,
`models/tools/Generic_BFMA_TC.m` and `GEMM.m` implement them). The parameters below are those
files'; the semantics are restated here from the model. This implementation agrees bit for bit
with the published V100 / A100 / H100 / B200 hardware outputs (docs/hardware_numerics.md: how
`tests/simulate/test_simulate_tensor_core_models.py` checks them when given the data) and with a
Fraction restatement of the steps on adversarial inputs.

The model, for D = A B (fp32 output, C = 0) with A, B in the GPU's input format:

  Blocks. The K products of a dot product are taken in consecutive blocks of `block` (the
  number of products one hardware step sums; the last block is zero-padded). The accumulator
  c starts at 0 and each block computes c <- step(products of the block, c); D is the last c.

  One step (products p_k = a_k b_k, exact; zero products are dropped):
    1. Product exponents. Each input x != 0 has the exponent e_x = max(floor(log2 |x|), emin_in)
       of its format (emin_in = 1 - bias: subnormal inputs use the smallest normal exponent),
       and the product p_k the exponent E_k = e_a + e_b -- the exponent of the unnormalised
       product of the two significands, which lies in [1, 4) (two integer bits).
       The accumulator has e_c = max(floor(log2 |c|), -126) when c != 0.
    2. Alignment. E_max = max(E_k, e_c, min_exp) over the nonzero terms (min_exp: a floor on
       the alignment exponent found in the hardware, -132 on A100, -133 on H100 / B200, none on
       V100). Every term, c included, is truncated toward zero to a multiple of
       u = 2^(E_max - F), F = acc_mantissa + extra_bits fraction bits below E_max:
       n_k = floor(|p_k| / u), n_c = floor(|c| / u)  (the `extra_bits` alignment bits beyond the
       accumulator's mantissa; on H100 with fp8 inputs there are none and F = 13).
    3. Sum. S = sum of the signed n's, exactly (no rounding: the adder is wide enough).
    4. Normalisation and rounding. c <- S u truncated toward zero to an e8m{acc_mantissa}
       number (acc_mantissa = 23: fp32; 13 on H100 with fp8 inputs), subnormals below 2^-126
       on the grid 2^(-126 - acc_mantissa); S = 0 gives +0 (never -0). A result of magnitude
       >= 2^128 is +-inf, and an infinite accumulator stays so in later steps (the published
       model is silent on finite overflow; only bf16 / tf32 inputs reach it).
  Special values, over the whole dot product as the published model decides them: a NaN
  input, 0 * inf, or both +inf and -inf among the products give NaN; else an infinite product
  gives that infinity.

Parameters (fp32 output), from `models/<GPU>TC.m`:

    gpu    input       block  extra_bits  acc_mantissa  min_exp
    v100   fp16            4           0            23     none
    a100   fp16, bf16      8           1            23     -132
    a100   tf32            4           1            23     -132
    h100   fp16, bf16     16           2            23     -133
    h100   tf32            8           2            23     -133
    h100   e4m3, e5m2     32           0            13     -133
    b200   fp16, bf16     16           2            23     -133
    b200   tf32            8           2            23     -133

B200 with fp8 inputs is not offered: the published model (32 products, 2 extra bits,
truncation) disagrees with 36% of the published B200 E4M3 validation outputs, and no variant
we tried reproduces all of them (a round-to-nearest one comes within 1 in 5000), so there is no
bit-exact model to implement. H200 is the H100 model (`H200TC.m` calls `H100TC.m`).

The input format is the policy's compute format: fp16 = e5m10, bf16 = e8m7, tf32 = e8m10,
e4m3 = e4m3fn (or the IEEE-like e4m3, whose values are a subset), e5m2 (saturating or
flush-to-zero spellings of these are accepted: their values are a subset). Any other compute
format is refused. The output of the contraction is D (an fp32 value), then rounded to the
compute format like every simulated operation (cuBLAS with an fp32 compute type and a
low-precision output). Reductions (`reduce_sum`, `cumsum`) do not run on tensor cores; under
`tensor_core:<gpu>` they follow `once` (one rounding of the carrier sum, as fp32 CUDA-core
reductions with a final conversion).

Implementation: integer arithmetic throughout (jit-able, exact on every backend; XLA:CPU's
float arithmetic flushes subnormals). Significands are uint32, product exponents int32; each
block is one fused elementwise-and-reduce over (block, batch, M, N), scanned over the blocks.
The signed block sum of the products fits int32 and, with c, 32 bits of magnitude, for every
model above (checked when the module is imported).
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
from jax import lax

from arith_precision.formats.float_format import FloatFormat

PREFIX = "tensor_core:"
GPUS = ("v100", "a100", "h100", "b200")
ALIASES = {"h200": "h100"}
INPUTS = {  # name: (FloatFormat, variants whose values are a subset)
    "fp16": (FloatFormat(5, 10), ("ieee",)),
    "bf16": (FloatFormat(8, 7), ("ieee",)),
    "tf32": (FloatFormat(8, 10), ("ieee",)),
    "e4m3": (FloatFormat(4, 3, variant="fn"), ("fn", "ieee")),
    "e5m2": (FloatFormat(5, 2), ("ieee",)),
}


@dataclasses.dataclass(frozen=True)
class TensorCoreModel:
    """One GPU's inner product for one input format (see the module docstring)."""

    gpu: str
    input_name: str
    block: int
    extra_bits: int
    acc_mantissa: int
    min_exp: int | None

    @property
    def input_format(self) -> FloatFormat:
        return INPUTS[self.input_name][0]

    @property
    def input_emin(self) -> int:
        return 1 - self.input_format.bias

    @property
    def frac_bits(self) -> int:
        """F: the fraction bits of the alignment grid below E_max."""
        return self.acc_mantissa + self.extra_bits

    @property
    def product_shift(self) -> int:
        """G = F - 2 M_in: the product of two integer significands, shifted left by G, counts
        units of 2^(E - F)."""
        return self.frac_bits - 2 * self.input_format.mantissa_bits


def _models():
    table = {}
    for gpu, inputs, block, extra, acc, min_exp in (
            ("v100", ("fp16",), 4, 0, 23, None),
            ("a100", ("fp16", "bf16"), 8, 1, 23, -132),
            ("a100", ("tf32",), 4, 1, 23, -132),
            ("h100", ("fp16", "bf16"), 16, 2, 23, -133),
            ("h100", ("tf32",), 8, 2, 23, -133),
            ("h100", ("e4m3", "e5m2"), 32, 0, 13, -133),
            ("b200", ("fp16", "bf16"), 16, 2, 23, -133),
            ("b200", ("tf32",), 8, 2, 23, -133)):
        for name in inputs:
            table[(gpu, name)] = TensorCoreModel(gpu, name, block, extra, acc, min_exp)
    return table


MODELS: dict[tuple[str, str], TensorCoreModel] = _models()


def _check_word_bounds(model: TensorCoreModel) -> None:
    """The block sum of products fits int32, and with the accumulator 32 bits of magnitude."""
    m = model.input_format.mantissa_bits
    assert model.product_shift >= 0, model
    max_product = (2 ** (m + 1) - 1) ** 2 << model.product_shift
    max_c = (2**24 - 1) << max(model.frac_bits - 23, 0)
    assert model.block * max_product < 2**31, model
    assert model.block * max_product + max_c < 2**32, model


for _model in MODELS.values():
    _check_word_bounds(_model)


def gpu_of(mode) -> str | None:
    """The GPU of a "tensor_core:<gpu>" accumulation, None for any other string; a ValueError
    naming the value and the known GPUs for an unknown one."""
    if not isinstance(mode, str) or not mode.startswith(PREFIX):
        return None
    gpu = mode[len(PREFIX):].strip().lower()
    gpu = ALIASES.get(gpu, gpu)
    if gpu not in GPUS:
        known = ", ".join(PREFIX + g for g in GPUS + tuple(ALIASES))
        raise ValueError(f"accumulation {mode!r}: unknown GPU {mode[len(PREFIX):]!r}; known: "
                         f"{known}")
    return gpu


def _input_name(fmt) -> str | None:
    if type(fmt) is not FloatFormat:  # fixed point, runtime-width formats: no tensor core
        return None
    for name, (base, variants) in INPUTS.items():
        if (fmt.exponent_bits, fmt.mantissa_bits) == (base.exponent_bits, base.mantissa_bits) \
                and fmt.variant in variants and fmt.bias == FloatFormat(
                    fmt.exponent_bits, fmt.mantissa_bits, variant=fmt.variant).bias:
            return name
    return None


def model_for(mode: str, fmt) -> TensorCoreModel:
    """The model for accumulation `mode` ("tensor_core:<gpu>") and compute format `fmt`; a
    one-line ValueError naming both when the GPU has no model for that input format."""
    gpu = gpu_of(mode)
    if gpu is None:
        raise ValueError(f"{mode!r} is not a tensor_core:<gpu> accumulation")
    name = _input_name(fmt)
    covered = [n for (g, n) in MODELS if g == gpu]
    if name is None or (gpu, name) not in MODELS:
        extra = " (B200 fp8: no bit-exact model, see tensor_core_models.py)" \
            if gpu == "b200" and name in ("e4m3", "e5m2") else ""
        raise ValueError(f"accumulation {mode!r} has no model for compute format {fmt}; "
                         f"{gpu} takes {', '.join(covered)}{extra}")
    return MODELS[(gpu, name)]


# ---- integer decomposition ---------------------------------------------------------------------
_U = jnp.uint32
_LOW = -(2**20)  # the exponent of a zero term: below every real one, no int32 overflow in sums


def _float_parts(x):
    """(negative, e, m, nonzero, finite) of float32 x: |x| = m * 2^(e - 23) with e the binade
    exponent clamped at -126 (m = 24-bit significand, or the fraction for subnormals)."""
    bits = lax.bitcast_convert_type(x, _U)
    negative = lax.shift_right_logical(bits, _U(31)) == 1
    field = (lax.shift_right_logical(bits, _U(23)) & _U(0xFF)).astype(jnp.int32)
    frac = bits & _U(0x7FFFFF)
    m = jnp.where(field > 0, frac | _U(0x800000), frac)
    e = jnp.maximum(field, 1) - 127
    return negative, e, m, m != 0, field != 255


def _operand(x, model: TensorCoreModel, shift: int):
    """(sign mask: -1 if negative else 0, e_x, significand << shift) of inputs x (float32
    values of the input format), e_x = max(floor(log2 |x|), emin_in) and
    |x| = significand * 2^(e_x - M_in). Zeros, infinities and NaNs get significand 0 and
    exponent _LOW (specials are decided apart)."""
    negative, e, m, nonzero, finite = _float_parts(x)
    lead = 31 - lax.clz(m).astype(jnp.int32)  # 23 for normal float32, less for subnormal
    e_true = e + lead - 23
    ex = jnp.maximum(e_true, model.input_emin)
    # |x| = m * 2^(e - 23) = sig * 2^(ex - M_in)  =>  sig = m >> (23 - M_in + ex - e)
    drop = jnp.clip(23 - model.input_format.mantissa_bits + ex - e, 0, 31).astype(_U)
    sig = lax.shift_right_logical(m, drop)
    live = nonzero & finite
    sig = jnp.where(live, lax.shift_left(sig, _U(shift)), _U(0))
    sign = jnp.where(negative, -1, 0).astype(jnp.int32)
    return sign, jnp.where(live, ex, _LOW), sig


def _shr(x, s):
    """x >> s for uint32 x and int32 s >= 0 (0 for s >= 32)."""
    return jnp.where(s >= 32, _U(0), lax.shift_right_logical(x, jnp.clip(s, 0, 31).astype(_U)))


def _block_step(c, a_blk, b_blk, model: TensorCoreModel):
    """One hardware step: c (float32, (nb, M, N)) <- step(products of this block, c).

    Written as a loop over the block's products unrolled at trace time, so that XLA fuses the
    whole step into one elementwise loop over (nb, M, N) (no (block, nb, M, N) temporaries)."""
    a_sign, ea, sa = a_blk  # (B, nb, M): sign masks (0 / -1), exponents, shifted significands
    b_sign, eb, sb = b_blk  # (B, nb, N)
    terms = []
    for k in range(model.block):
        terms.append((ea[k][:, :, None] + eb[k][:, None, :],
                      sa[k][:, :, None] * sb[k][:, None, :],
                      a_sign[k][:, :, None] ^ b_sign[k][:, None, :]))
    c_neg, c_e, c_m, c_nonzero, c_finite = _float_parts(c)
    e_max = jnp.where(c_nonzero, c_e, _LOW)
    if model.min_exp is not None:
        e_max = jnp.maximum(e_max, model.min_exp)
    for e_prod, _, _ in terms:
        e_max = jnp.maximum(e_max, e_prod)
    s_p = None
    for e_prod, p, sign in terms:  # sign: 0 or -1; (x ^ sign) - sign is x or -x
        aligned = lax.shift_right_logical(p, jnp.minimum(e_max - e_prod, 31).astype(_U))
        aligned = (aligned.astype(jnp.int32) ^ sign) - sign
        s_p = aligned if s_p is None else s_p + aligned
    f = model.frac_bits
    if f >= 23:
        c_al = _shr(lax.shift_left(c_m, _U(f - 23)), e_max - c_e)
    else:
        c_al = _shr(c_m, e_max - c_e + (23 - f))
    # S = s_p + (-1)^c_neg c_al, as sign and 32-bit magnitude.
    p_neg = s_p < 0
    p_mag = jnp.abs(s_p).astype(_U)
    same = p_neg == c_neg
    big_p = p_mag >= c_al
    mag = jnp.where(same, p_mag + c_al, jnp.where(big_p, p_mag - c_al, c_al - p_mag))
    negative = jnp.where(same | big_p, p_neg, c_neg)
    out = _truncate_to_float(mag, negative, e_max - f, model.acc_mantissa)
    return jnp.where(c_finite, out, c)  # an infinite accumulator stays infinite


def _truncate_to_float(mag, negative, exp0, acc_mantissa: int):
    """float32 of (-1)^negative * mag * 2^exp0 truncated toward zero to e8m{acc_mantissa}
    (subnormal grid 2^(-126 - acc_mantissa)); 0 gives +0, >= 2^128 gives +-inf."""
    lead = 31 - lax.clz(mag).astype(jnp.int32)  # -1 for mag == 0
    e_val = exp0 + lead
    q = jnp.maximum(e_val, -126) - acc_mantissa  # the quantum exponent of the result
    s = q - exp0
    kept = jnp.where(s >= 0, _shr(mag, s),
                     lax.shift_left(mag, jnp.clip(-s, 0, 31).astype(_U)))  # value = kept * 2^q
    lead_k = 31 - lax.clz(kept).astype(jnp.int32)
    e_res = q + lead_k
    normal = lax.shift_left((e_res + 127).astype(_U), _U(23)) | (
        lax.shift_left(kept, jnp.clip(23 - lead_k, 0, 31).astype(_U)) & _U(0x7FFFFF))
    subnormal = lax.shift_left(kept, _U(23 - acc_mantissa))
    bits = jnp.where(e_res >= -126, normal, subnormal)
    bits = jnp.where(e_res >= 128, _U(0x7F800000), bits)
    bits = jnp.where(kept == 0, _U(0), bits | jnp.where(negative, _U(0x80000000), _U(0)))
    return lax.bitcast_convert_type(bits, jnp.float32)


def _special(a, b):
    """(is_nan, is_pos_inf, is_neg_inf) of each dot product sum_k a[k, :, :, None] b[k, :, None]
    ((nb, M, N)), from contractions of 0/1 indicators (exact counts in float32). Runs only when
    an input is not finite (`lax.cond` in `inner_products`)."""
    def some(x, y):  # whether sum_k x[k] y[k] > 0 for boolean x, y
        return jnp.einsum("kbm,kbn->bmn", x.astype(jnp.float32), y.astype(jnp.float32),
                          precision=lax.Precision.HIGHEST) > 0

    a_pinf, a_ninf, b_pinf, b_ninf = a == jnp.inf, a == -jnp.inf, b == jnp.inf, b == -jnp.inf
    a_pos, a_neg, b_pos, b_neg = a > 0, a < 0, b > 0, b < 0
    nan = (jnp.any(jnp.isnan(a), axis=0)[:, :, None] | jnp.any(jnp.isnan(b), axis=0)[:, None, :]
           | some(a_pinf | a_ninf, b == 0) | some(a == 0, b_pinf | b_ninf))
    pos = (some(a_pinf, b_pos) | some(a_ninf, b_neg) | some(a_pos, b_pinf)
           | some(a_neg, b_ninf))
    neg = (some(a_pinf, b_neg) | some(a_ninf, b_pos) | some(a_pos, b_ninf)
           | some(a_neg, b_pinf))
    return nan | (pos & neg), pos & ~neg, neg & ~pos


def _no_special(a, b):
    shape = (a.shape[1], a.shape[2], b.shape[2])
    return (jnp.zeros(shape, bool),) * 3


def inner_products(a_KxBxM, b_KxBxN, model: TensorCoreModel, c0=None):
    """D[b, m, n] = the model's sum over k of a[k, b, m] * b[k, b, n] (float32 (nb, M, N)),
    starting from the accumulator c0 (float32, default 0). Inputs: float32 arrays whose values
    are values of the model's input format (not checked)."""
    k, nb, m = a_KxBxM.shape
    n = b_KxBxN.shape[2]
    a = a_KxBxM.astype(jnp.float32)
    b = b_KxBxN.astype(jnp.float32)
    c = jnp.zeros((nb, m, n), jnp.float32) if c0 is None else jnp.broadcast_to(
        jnp.asarray(c0, jnp.float32), (nb, m, n))
    if k == 0:
        return c
    pad = -k % model.block
    if pad:
        a = jnp.concatenate([a, jnp.zeros((pad, nb, m), a.dtype)])
        b = jnp.concatenate([b, jnp.zeros((pad, nb, n), b.dtype)])
    blocks = (k + pad) // model.block
    ops_a = _operand(a, model, model.product_shift)
    ops_b = _operand(b, model, 0)

    def split(parts):
        return tuple(v.reshape((blocks, model.block) + v.shape[1:]) for v in parts)

    def step(acc, blk):
        return _block_step(acc, blk[0], blk[1], model), None

    out, _ = lax.scan(step, c, (split(ops_a), split(ops_b)))
    has_special = jnp.any(~jnp.isfinite(a)) | jnp.any(~jnp.isfinite(b))
    is_nan, pos_inf, neg_inf = lax.cond(has_special, _special, _no_special, a, b)
    c_special = ~jnp.isfinite(c)
    out = jnp.where(pos_inf & ~c_special, jnp.float32(jnp.inf), out)
    out = jnp.where(neg_inf & ~c_special, jnp.float32(-jnp.inf), out)
    both = (pos_inf & (c == -jnp.inf)) | (neg_inf & (c == jnp.inf)) | jnp.isnan(c)
    return jnp.where(is_nan | both, jnp.float32(jnp.nan), out)


def dot_general(lhs, rhs, dimension_numbers, model: TensorCoreModel, round_out, **params):
    """`lax.dot_general_p` under the model: operands to (K, batch, free) form, D from
    `inner_products`, then `round_out` (the compute format)."""
    (lc, rc), (lb, rb) = dimension_numbers
    out_dtype = params.get("preferred_element_type") or jnp.result_type(lhs, rhs)
    lfree = [d for d in range(lhs.ndim) if d not in lc and d not in lb]
    rfree = [d for d in range(rhs.ndim) if d not in rc and d not in rb]
    batch_shape = tuple(lhs.shape[d] for d in lb)
    lfree_shape = tuple(lhs.shape[d] for d in lfree)
    rfree_shape = tuple(rhs.shape[d] for d in rfree)
    k = math.prod(lhs.shape[d] for d in lc)
    nb, m, n = math.prod(batch_shape), math.prod(lfree_shape), math.prod(rfree_shape)
    a = jnp.transpose(lhs, tuple(lc) + tuple(lb) + tuple(lfree)).reshape(k, nb, m)
    b = jnp.transpose(rhs, tuple(rc) + tuple(rb) + tuple(rfree)).reshape(k, nb, n)
    d = _model_dot(a, b, model)
    out = round_out(d.astype(out_dtype))
    return out.reshape(batch_shape + lfree_shape + rfree_shape)


@functools.partial(jax.custom_jvp, nondiff_argnums=(2,))
def _model_dot(a, b, model):
    return inner_products(a, b, model)


@_model_dot.defjvp
def _model_dot_jvp(model, primals, tangents):
    """Straight through: the tangent of the exact contraction sum_k a b (the model is a step
    function of its inputs; jax.grad taken outside a simulated function sees this)."""
    a, b = primals
    ta, tb = tangents

    def dot(x, y):
        return jnp.einsum("kbm,kbn->bmn", x, y, precision=lax.Precision.HIGHEST)

    out = _model_dot(a, b, model)
    return out, (dot(ta, b) + dot(a, tb)).astype(out.dtype)
