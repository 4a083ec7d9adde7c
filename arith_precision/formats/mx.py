"""Block-scaled formats: OCP MX v1.0 (mxfp8/mxfp6/mxfp4/mxint8) and NVIDIA NVFP4.

`quantize_mx(x, fmt, axis=-1, rounding="nearest_even", key=None, *, random_bits=None,
scale_rule="floor")` returns the dequantized array (float32,
same shape); `pack_mx` returns the storage form (`MXPacked`: element codes, block-scale codes, a
per-tensor scale) and `dequantize_mx(pack_mx(...))` gives the same array bit for bit.

OCP MX (block of 32 consecutive values along `axis`, one E8M0 scale per block):

    X = 2^s,  s = clip(floor(log2 amax) - emax_elem, -127, 127)   (s = -127 for an all-zero block)
    v_i = X * round_elem(x_i / X)   with saturation: |x_i / X| beyond the element's largest
          value gives +-max (every rounding mode; OCP MX 6.3),

amax = max_i |x_i| over the block and emax_elem = floor(log2(max of the element format)) (8 for
E4M3, 15 for E5M2, 4 for E3M2, 2 for E2M3 and E2M1, 0 for INT8). MXINT8 elements are 8-bit two's
complement with an implicit 2^-6: k / 64, k = -128..127. This is gfloat's `quantize_block` with
`compute_scale_amax`, which the tests compare against bit for bit.

Scale rules (`scale_rule`; the clip to [-127, 127] and the all-zero block as above). Write
amax = A * 2^e with 1 <= A < 2 (e = floor(log2 amax), exact also for float32 subnormals),
max_elem = Mx * 2^emax_elem with 1 <= Mx < 2, and M_elem for the element's fraction bits in its
top binade (its mantissa bits; 6 for MXINT8):

    floor  s = e - emax_elem                             OCP MX v1.0 (default; gfloat, torchao
           FLOOR). The largest scaled element amax / X = A * 2^emax_elem can exceed max_elem
           (when A > Mx) and then saturates: up to a quarter of the top binade is clipped.
    ceil   s = e - emax_elem + [A > Mx]: the smallest integer s with amax / 2^s <= max_elem, so
           no element is ever clipped (beyond the [-127, 127] range of E8M0). This is NVIDIA's
           cuBLAS rule for UE8M0 scales (torchao RCEIL), computed exactly: cuBLAS and torchao
           round amax / max_elem to float32 before taking the power of two above it. (torchao's
           CEIL, s = ceil(log2 amax) - emax_elem, is a different, coarser rule.)
    even   s = e - emax_elem + [A >= 2 - 2^-(M_elem + 1)]: floor(log2) of amax rounded (half up)
           to M_elem fraction bits (torchao EVEN). The scale steps up where amax, at element
           precision, would round past the top binade, i.e. halfway between the largest element
           values of two neighbouring scales (7 * 2^s for E2M1, whose grid ends 4, 6 | 8);
           A in (Mx, 2 - 2^-(M_elem+1)) still saturates. Since X is a power of two the
division is exact; we never compute it: x_i is rounded directly to the element grid scaled by X
(quantum 2^(max(e_i, emin_elem + s) - M_elem)), on the float32 bit pattern with the integer
rounding of `rounding.py`, so the result is exact for every float32 input, subnormals included.

NVFP4 (block of 16, E2M1 elements, E4M3 block scale, FP32 per-tensor scale), as NVIDIA's recipe:

    g   = fl(amax_tensor / (6 * 448))              the per-tensor decode scale (1 if amax = 0)
    b   = e4m3fn_sat(fl(fl(amax_block / 6) / g))   the block scale, an E4M3 value
    S   = fl(b * g)                                the block's decode scale
    v_i = fl(S * e2m1fn_sat(fl(x_i / S)))          (0 where S = 0)

with fl() one float32 operation (IEEE, round to nearest even). Unlike MX these are float
operations, done by XLA, which on CPU flushes float32 subnormals: the result is exact as written
for tensors whose scales and quotients stay in float32's normal range (amax_tensor above about
2^-100). The tests replay the same float32 steps in NumPy with gfloat's rounding.

Special values (both families): a block holding a NaN or an infinity gets a NaN scale (E8M0 0xFF,
E4M3 0x7F) and dequantizes to NaN throughout; the per-tensor amax of NVFP4 ignores them. (gfloat
0.5.2 turns an infinity into +-max * 2^127 instead, and a NaN into an error for element formats
without NaN.) Zeros keep their sign except in MXINT8, which has one zero.

NVFP4 has no power-of-two scale to choose: its E4M3 block scale is amax / 6 rounded to nearest
(NVIDIA's recipe), so any `scale_rule` other than "floor" is refused for it.

Stochastic rounding of the elements takes `random_bits` as `quantize` does (r random bits per
element, up with probability floor(f 2^r) / 2^r; None: the exact rule).

Gradient: straight-through (identity), as `quantize`. Only float32 inputs (the carrier the MX
grids are built on); the axis length must be a multiple of the block size.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from arith_precision.formats import rounding as _rounding
from arith_precision.formats.block_format import (  # noqa: F401 (re-exported)
    BLOCK_FORMATS,
    MX_SCALE_RULES,
    NVFP4_TENSOR_RANGE,
    BlockFormat,
    block_format,
    check_scale_rule,
    is_block_format,
)
from arith_precision.formats.carrier import FLOAT32
from arith_precision.formats.fixed_format import FixedFormat
from arith_precision.formats.float_format import FloatFormat
from arith_precision.formats.quantize import (
    ROUNDING_MODES,
    check_random_bits,
    quantize,
    random_words,
)

# ---- exact power-of-two scaling on float32 bit patterns ---------------------------------------
_U = jnp.uint32


def _normalize(mag):
    """(e, m): a nonzero float32 magnitude (bits) as m * 2^(e - 23), 2^23 <= m < 2^24."""
    field = lax.shift_right_logical(mag, _U(23)).astype(jnp.int32)
    lead = 31 - lax.clz(mag).astype(jnp.int32)
    e = jnp.where(field >= 1, field - 127, lead - 149)
    shift = jnp.clip(23 - lead, 0, 31).astype(_U)
    m = jnp.where(field >= 1, (mag & _U(0x7FFFFF)) | _U(0x800000), lax.shift_left(mag, shift))
    return e, m


def _scaled_bits(mag, s):
    """Bits of value(mag) * 2^s for float32 magnitudes `mag` (bits) and int32 `s`, exact when the
    result is a float32 value (as every value of a block grid is); 0 stays 0."""
    e, m = _normalize(mag)
    er = e + s
    normal = lax.shift_left(jnp.clip(er + 127, 1, 254).astype(_U), _U(23)) | (m & _U(0x7FFFFF))
    sub = lax.shift_right_logical(m, jnp.clip(-126 - er, 0, 31).astype(_U))
    return jnp.where(mag == 0, mag, jnp.where(er >= -126, normal, sub))


def _f32_bits(value: float) -> int:
    return int(np.asarray(np.float32(value)).view(np.uint32))


def _sign_bit(negative):
    return jnp.where(negative, _U(0x80000000), _U(0))


_NAN = np.uint32(0x7FC00000)  # NumPy, not jnp: no JAX computation (backend start) at import


# ---- OCP MX --------------------------------------------------------------------------------
def _scale_exponent(amax, bf: BlockFormat, scale_rule: str):
    """The E8M0 scale exponent s of blocks with largest magnitude `amax` (float32 bits)."""
    amax_e, amax_m = _normalize(amax)  # amax = amax_m * 2^(amax_e - 23), 2^23 <= amax_m < 2^24
    s = amax_e - bf.emax_element  # floor
    if scale_rule == "ceil":
        s = s + (amax_m > _U(bf.max_significand)).astype(jnp.int32)
    elif scale_rule == "even":
        threshold = 2**24 - 2 ** (22 - bf.element_fraction_bits)
        s = s + (amax_m >= _U(threshold)).astype(jnp.int32)
    elif scale_rule != "floor":
        raise ValueError(f"unknown scale_rule {scale_rule!r}; expected one of {MX_SCALE_RULES}")
    return jnp.where(amax == 0, -127, jnp.clip(s, -127, 127))


def _mx_blocks(bits, bf: BlockFormat, rounding: str, random_words, random_bits=None,
               scale_rule: str = "floor"):
    """Dequantized bits and the scale exponent s for bits shaped (..., blocks, block_size)."""
    negative, mag, field, finite = _rounding.decompose(bits, FLOAT32)
    bad_block = jnp.any(~finite, axis=-1, keepdims=True)
    amax = jnp.max(jnp.where(finite, mag, _U(0)), axis=-1, keepdims=True)  # |x| order = bits
    s = _scale_exponent(amax, bf, scale_rule)
    el = bf.element
    if isinstance(el, FloatFormat):
        e = _rounding.binade_exponent(mag, field, FLOAT32)
        q = jnp.maximum(e, 1 - el.bias + s) - el.mantissa_bits
        limit = _scaled_bits(_U(_f32_bits(el.max_value)), s)
        limit_neg = limit
    else:  # two's complement fixed point k * 2^-F, k in [-2^(I+F), 2^(I+F) - 1]
        q = jnp.broadcast_to(s - el.frac_bits, mag.shape)
        limit = _scaled_bits(_U(_f32_bits(el.max_value)), s)
        limit_neg = _scaled_bits(_U(_f32_bits(-float(el.min_exact))), s)
    rmag = _rounding.round_to_quantum(mag, field, q, FLOAT32, rounding, random_words, negative,
                                      random_bits=random_bits)
    lim = jnp.where(negative, limit_neg, limit)
    rmag = jnp.where(rmag > lim, lim, rmag)
    if isinstance(el, FixedFormat):
        negative = negative & (rmag != 0)  # one zero
    out = rmag | _sign_bit(negative)
    out = jnp.where(bad_block, _NAN, out)
    return out, s, bad_block


def _element_codes(vbits, s, bf: BlockFormat):
    """Element codes (uint8) of dequantized bits `vbits` in blocks with scale exponent s."""
    negative = lax.shift_right_logical(vbits, _U(31)) == 1
    mag = vbits & _U(0x7FFFFFFF)
    e, m = _normalize(_scaled_bits(mag, -s) | _U(0))  # the element value, a normal float32
    el = bf.element
    if isinstance(el, FloatFormat):
        M, emin = el.mantissa_bits, 1 - el.bias
        normal = lax.shift_left((e + el.bias).astype(_U), _U(M)) | lax.shift_right_logical(
            m & _U(0x7FFFFF), _U(23 - M))
        sub_shift = jnp.clip((emin - M) - (e - 23), 0, 31).astype(_U)
        sub = lax.shift_right_logical(m, sub_shift)
        code = jnp.where(mag == 0, _U(0), jnp.where(e >= emin, normal, sub))
        code = code | jnp.where(negative, _U(1 << (el.total_bits - 1)), _U(0))
    else:
        k = lax.shift_right_logical(m, jnp.clip(23 - el.frac_bits - e, 0, 31).astype(_U))
        k = jnp.where(mag == 0, _U(0), k).astype(jnp.int32)
        code = (jnp.where(negative, -k, k) & 0xFF).astype(_U)
    return code.astype(jnp.uint8)


@functools.cache
def _element_table(bf: BlockFormat) -> np.ndarray:
    """The float32 value of every element code (index = code)."""
    el = bf.element
    n = 2 ** bf.element_bits
    if isinstance(el, FixedFormat):
        k = np.arange(n)
        k = np.where(k >= n // 2, k - n, k)
        return (k * 2.0 ** -el.frac_bits).astype(np.float32)
    half = n // 2
    mags = [float(el.code_value(c)) if c <= el.max_code_magnitude else np.nan
            for c in range(half)]
    return np.array(mags + [-v for v in mags], np.float32)


# ---- NVFP4 ---------------------------------------------------------------------------------
def _nvfp4_blocks(x, bf: BlockFormat, rounding: str, key, random_bits=None):
    """(dequantized, block scale b (E4M3 values), tensor scale g, bad_block) for blocked x."""
    finite = jnp.isfinite(x)
    bad_block = jnp.any(~finite, axis=-1, keepdims=True)
    ax = jnp.where(finite, jnp.abs(x), 0.0)
    amax_t = jnp.max(ax)
    g = jnp.where(amax_t > 0, amax_t / jnp.float32(NVFP4_TENSOR_RANGE), jnp.float32(1.0))
    amax_b = jnp.max(ax, axis=-1, keepdims=True)
    b = quantize((amax_b / jnp.float32(6.0)) / g, "e4m3fn_sat", straight_through=False)
    S = b * g
    safe_S = jnp.where(S > 0, S, jnp.float32(1.0))
    y = x / safe_S
    # A quotient below float32's normal range may be flushed to zero (XLA:CPU); every value in
    # (0, 0.25) rounds alike (to 0, or to 0.5 away from zero), so stand in the smallest normal.
    tiny = jnp.copysign(jnp.float32(2.0**-126), x)
    y = jnp.where((y == 0) & (x != 0) & jnp.isfinite(x), tiny, y)
    y = quantize(y, "e2m1fn_sat", rounding, key, random_bits=random_bits, straight_through=False)
    out = jnp.where(S > 0, safe_S * y, jnp.copysign(jnp.zeros_like(x), x))
    out = jnp.where(bad_block, jnp.float32(jnp.nan), out)
    return out, b, g, bad_block, y


# ---- public API ----------------------------------------------------------------------------
def _check(x, bf: BlockFormat, axis: int, rounding: str, key, random_bits=None,
           scale_rule: str = "floor"):
    if rounding not in ROUNDING_MODES:
        raise ValueError(f"unknown rounding mode {rounding!r}; expected one of {ROUNDING_MODES}")
    if rounding == "stochastic" and key is None:
        raise ValueError("rounding='stochastic' needs a jax.random key; got key=None")
    check_random_bits(random_bits, rounding, FLOAT32.width, "float32")
    check_scale_rule(scale_rule, bf.name)
    x = jnp.asarray(x)
    if x.dtype != jnp.float32:
        raise ValueError(f"quantize_mx needs a float32 array, got dtype {x.dtype}")
    if x.ndim == 0:
        raise ValueError("quantize_mx needs an array with at least one axis, got a scalar")
    if not -x.ndim <= axis < x.ndim:
        raise ValueError(f"axis={axis} is out of range for an array of shape {x.shape}")
    n = x.shape[axis]
    if n % bf.block_size:
        raise ValueError(
            f"quantize_mx: axis {axis} has length {n}, not a multiple of the block size "
            f"{bf.block_size} of {bf.name}")
    return x, axis % x.ndim


def _to_blocks(x, axis: int, block: int):
    moved = jnp.moveaxis(x, axis, -1)
    return moved.reshape(moved.shape[:-1] + (moved.shape[-1] // block, block))


def _from_blocks(blocks, axis: int):
    flat = blocks.reshape(blocks.shape[:-2] + (-1,))
    return jnp.moveaxis(flat, -1, axis)


def _random_words(key, shape, rounding: str, random_bits=None):
    """Random uint32 words for stochastic rounding (`quantize.random_words`; None otherwise)."""
    if rounding != "stochastic":
        return None
    return random_words(key, shape, jnp.uint32, random_bits)


@functools.partial(jax.jit, static_argnums=(2, 3, 4, 5, 6))
def _quantize_mx_value(x, key, bf: BlockFormat, axis: int, rounding: str, random_bits=None,
                       scale_rule: str = "floor"):
    blocks = _to_blocks(x, axis, bf.block_size)
    if bf.name == "nvfp4":
        out = _nvfp4_blocks(blocks, bf, rounding, key if rounding == "stochastic" else None,
                            random_bits)[0]
        return _from_blocks(out, axis)
    bits = lax.bitcast_convert_type(blocks, jnp.uint32)
    words = _random_words(key, blocks.shape, rounding, random_bits)
    out, _, _ = _mx_blocks(bits, bf, rounding, words, random_bits, scale_rule)
    return _from_blocks(lax.bitcast_convert_type(out, jnp.float32), axis)


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3, 4, 5, 6))
def _quantize_mx_ste(x, key, bf, axis, rounding, random_bits, scale_rule):
    return _quantize_mx_value(x, key, bf, axis, rounding, random_bits, scale_rule)


@_quantize_mx_ste.defjvp
def _quantize_mx_ste_jvp(bf, axis, rounding, random_bits, scale_rule, primals, tangents):
    return (_quantize_mx_ste(primals[0], primals[1], bf, axis, rounding, random_bits,
                             scale_rule), tangents[0])


def quantize_mx(x, fmt, axis: int = -1, rounding: str = "nearest_even", key=None, *,
                random_bits: int | None = None, scale_rule: str = "floor"):
    """Round `x` (float32) to the block format `fmt` along `axis`; returns the dequantized array.

    Args:
        x: float32 array; `x.shape[axis]` must be a multiple of the block size (32, or 16 for
            nvfp4).
        fmt: one of mxfp8_e4m3, mxfp8_e5m2, mxfp6_e3m2, mxfp6_e2m3, mxfp4_e2m1, mxint8, nvfp4.
        axis: the axis along which consecutive values form a block (the contraction axis of a
            matmul operand, as MX hardware blocks it).
        rounding: the elements' rounding mode (any of `ROUNDING_MODES`); scales follow the rule
            of the format (module docstring).
        key: jax.random key, for (and only for) rounding="stochastic".
        random_bits: r random bits per element for rounding="stochastic" (1..32), None for the
            exact rule (as in `quantize`).
        scale_rule: "floor" (OCP, default), "ceil" or "even": how the E8M0 block scale is
            chosen (module docstring); nvfp4 takes only "floor".

    Gradient: straight-through. Jit-able (`fmt`, `axis`, `rounding`, `random_bits`,
    `scale_rule` static).
    Raises:
        ValueError: unknown format, rounding or scale rule, a non-float32 input, an axis length
            that is not a multiple of the block size, or a bad `random_bits`.
    """
    bf = block_format(fmt)
    x, axis = _check(x, bf, axis, rounding, key, random_bits, scale_rule)
    if key is None:
        key = jnp.zeros((), jnp.uint32)
    return _quantize_mx_ste(x, key, bf, axis, rounding, random_bits, scale_rule)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class MXPacked:
    """Storage form of a block-quantized array.

    codes: uint8 element codes, the input's shape (OCP bit layouts; MXINT8 two's complement).
    scales: uint8 scale codes (E8M0 for MX, E4M3 for NVFP4), the input's shape with `axis`
        divided by the block size.
    tensor_scale: float32 scalar, NVFP4's per-tensor decode scale g (1.0 for MX).
    """

    codes: jax.Array
    scales: jax.Array
    tensor_scale: jax.Array
    fmt: str = dataclasses.field(metadata=dict(static=True))
    axis: int = dataclasses.field(metadata=dict(static=True))

    @property
    def storage_bits(self) -> int:
        """Bits needed to store it: elements at their width, scales, the tensor scale."""
        bf = block_format(self.fmt)
        extra = 32 if bf.name == "nvfp4" else 0
        return self.codes.size * bf.element_bits + self.scales.size * 8 + extra


def pack_mx(x, fmt, axis: int = -1, rounding: str = "nearest_even", key=None, *,
            random_bits: int | None = None, scale_rule: str = "floor") -> MXPacked:
    """The storage form of `quantize_mx(x, fmt, axis, rounding, key, random_bits=...,
    scale_rule=...)` (same arguments); the scale codes are s + 127 under every scale rule."""
    bf = block_format(fmt)
    x, axis = _check(x, bf, axis, rounding, key, random_bits, scale_rule)
    return _pack(x, key, bf, axis, rounding, random_bits, scale_rule)


@functools.partial(jax.jit, static_argnums=(2, 3, 4, 5, 6))
def _pack(x, key, bf: BlockFormat, axis: int, rounding: str, random_bits=None,
          scale_rule: str = "floor") -> MXPacked:
    blocks = _to_blocks(x, axis, bf.block_size)
    if bf.name == "nvfp4":
        _, b, g, bad, y = _nvfp4_blocks(blocks, bf, rounding, key, random_bits)
        scale_codes = lax.bitcast_convert_type(b.astype(jnp.float8_e4m3fn), jnp.uint8)
        scale_codes = jnp.where(bad, jnp.uint8(0x7F), scale_codes)
        codes = _element_codes(lax.bitcast_convert_type(y, jnp.uint32), jnp.zeros_like(
            scale_codes, jnp.int32), bf)
        zero_codes = jnp.where(jnp.signbit(blocks), jnp.uint8(0x8), jnp.uint8(0))  # signed 0
        codes = jnp.where(bad, jnp.uint8(0), jnp.where(b == 0, zero_codes, codes))
        tensor_scale = g
    else:
        bits = lax.bitcast_convert_type(blocks, jnp.uint32)
        words = _random_words(key, blocks.shape, rounding, random_bits)
        out, s, bad = _mx_blocks(bits, bf, rounding, words, random_bits, scale_rule)
        codes = jnp.where(bad, jnp.uint8(0), _element_codes(out, s, bf))
        scale_codes = jnp.where(bad, jnp.uint8(0xFF), (s + 127).astype(jnp.uint8))
        tensor_scale = jnp.float32(1.0)
    return MXPacked(_from_blocks(codes, axis), jnp.moveaxis(scale_codes[..., 0], -1, axis),
                    tensor_scale, bf.name, axis)


@jax.jit
def dequantize_mx(packed: MXPacked):
    """The float32 array a `MXPacked` stores; equals `quantize_mx` of the packed input."""
    bf = block_format(packed.fmt)
    table = jnp.asarray(_element_table(bf))
    values = table[packed.codes.astype(jnp.int32)]
    blocks = _to_blocks(values, packed.axis, bf.block_size)
    scales = jnp.moveaxis(packed.scales, packed.axis, -1)[..., None]
    if bf.name == "nvfp4":
        b = lax.bitcast_convert_type(scales, jnp.float8_e4m3fn).astype(jnp.float32)
        S = b * packed.tensor_scale
        out = jnp.where(S > 0, S * blocks, jnp.copysign(jnp.zeros_like(blocks), blocks))
        out = jnp.where(scales == 0x7F, jnp.float32(jnp.nan), out)
    else:
        s = scales.astype(jnp.int32) - 127
        vbits = lax.bitcast_convert_type(blocks, jnp.uint32)
        negative = lax.shift_right_logical(vbits, _U(31)) == 1
        mag = _scaled_bits(vbits & _U(0x7FFFFFFF), s)
        out = lax.bitcast_convert_type(mag | _sign_bit(negative), jnp.float32)
        out = jnp.where(scales == 0xFF, jnp.float32(jnp.nan), out)
    return _from_blocks(out, packed.axis)
