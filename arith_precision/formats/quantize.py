"""`quantize(x, fmt, rounding="nearest_even", key=None, *, random_bits=None)`: round an array to a
number format.

The result is a carrier array (same dtype as `x`: float32 or float64) whose every element is a
value of `fmt`, or inf / NaN where the format produces them. It is computed on the carrier's
integer bit pattern (`rounding.py`), so it is exact on every backend, subnormals included (XLA:CPU
float arithmetic flushes subnormals; integer arithmetic does not). It is jit-, vmap- and
grad-compatible, for any shape.

Semantics (see `float_format.py` / `fixed_format.py` for the formats):
  * nearest_even: the value on the format's grid nearest to x (ties to the even multiple of the
    quantum); a rounded magnitude above the largest finite value overflows: +-inf ("ieee"), NaN
    ("fn" with NaN, "fnuz", "fnu"), or +-max (saturate, sub-byte "fn", fixed point). For the
    ml_dtypes formats this is bit-for-bit what `x.astype(ml_dtypes_type).astype(x.dtype)` gives
    for float32 x (values, signs of zeros, NaN vs inf; NaN payloads are canonical quiet NaNs).
    For float64 x we round once, directly; ml_dtypes 0.6 casts float64 through float32 and so
    double rounds (1 + 2^-4 + 2^-30 -> e4m3fn gives 1.0 there, 1.125 here).
  * nearest_away: nearest, ties away from zero (IEEE roundTiesToAway). Overflow as nearest_even.
  * toward_zero: the grid value of largest magnitude not above |x|. As in IEEE 754, it never
    overflows: finite inputs beyond the range give +-max. (ml_dtypes has no such cast.)
  * toward_positive / toward_negative: the smallest grid value >= x / the largest <= x (IEEE
    roundTowardPositive / roundTowardNegative). A finite x beyond the range on the side the mode
    rounds away from gives +-max; on the other side it overflows as nearest_even does.
  * The P3109 formats (variant "p3109") with M = 0 break nearest_even ties between powers of two
    toward the even exponent field, as gfloat does; every other format's ties go to the even
    multiple of the quantum (with M = 0 that is the larger power of two, as ml_dtypes does).
  * to_odd: round to odd, defined as truncation toward zero with the last kept bit forced to 1
    when anything nonzero was dropped: x itself when it is on the grid, else whichever of its
    two grid neighbours has an odd last bit (an odd multiple of the quantum). With M = 0 the
    last kept bit of a nonzero value is its implicit leading 1, so round-to-odd is toward_zero
    there, except in the P3109 formats, whose "odd" at M = 0 is an odd exponent field (as for
    their nearest_even ties, and as gfloat's `RoundMode.ToOdd` does). Overflow: like
    toward_zero, a finite x beyond the range gives +-max, never inf or NaN (IEEE 754 does not
    define round-to-odd; this is Arm's FPRounding_ODD rule). gfloat's `ToOdd` (gfloat main, not
    in 0.5.2) instead rounds on the unbounded grid and overflows: it gives inf / NaN for
    |x| >= 2^(emax+1), and for e4m3fn, whose max 448 has an even significand (its all-ones
    code is NaN), already for |x| in (448, 480); elsewhere the two agree bit for bit.
  * stochastic: one of the two grid neighbours of x, the upper (in magnitude) with probability
    proportional to the distance from the lower, so E[quantize(x)] = x for x within range
    (exactly for every x whose discarded part fits 2 * carrier-width random bits; see
    `rounding.stochastic_round_up`). Overflow as for nearest_even. Needs `key` (a jax.random
    key); the same key gives the same result. For "fnu" the grid below 2^(1-b) is the true one
    ({2^-b, 2^(1-b)}), values below 2^-b give 2^-b.
    With `random_bits=r` (1 <= r <= carrier width) it uses r random bits per element, as
    hardware does: for x a fraction f of the way from its lower neighbour to its upper one (in
    magnitude), it rounds up with probability floor(f * 2^r) / 2^r (exactly floor(f * 2^r) of
    the 2^r values of the r-bit random number R round up: those with R + floor(f 2^r) >= 2^r;
    `rounding.stochastic_round_up_bits`). This is gfloat's `StochasticFastest` with
    srnumbits = r; it is biased toward zero by less than 2^-r of a quantum. The r-bit numbers
    come from a counter-based hash seeded by `key` (`random_words`), not from threefry.
  * Special inputs: NaN stays NaN (except the sub-byte "fn" formats, which have no NaN; see
    `float_format.py`); +-inf stays +-inf where the format has infinities ("ieee", "p3109"),
    becomes NaN where there is no infinity, and +-max in every saturating (`_sat`) format, in
    the formats with neither inf nor NaN, and in fixed point.
  * Saturation (one rule for every `_sat` format, OCP's): +-inf and finite overflow give +-max,
    NaN stays NaN. All of the above is checked bit for bit against gfloat 0.5.2.

Gradient: straight-through (identity) by default, via `jax.custom_jvp`; `straight_through=False`
gives the true derivative of a step function, zero.

Carrier rule: `x` must be float32 or float64 and the format must fit it (`carrier.py`), else a
ValueError names the format and the carrier it needs: a wider format on float32 would silently
double round. float64 inputs need `jax_enable_x64`; a NumPy float64 array given while x64 is off
raises rather than being rounded to float32 first (JAX would do that silently). Python scalars
follow JAX's weak typing and become the default float dtype.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from arith_precision.formats import rounding as _rounding
from arith_precision.formats.carrier import Carrier, carrier_for
from arith_precision.formats.fixed_format import FixedFormat
from arith_precision.formats.float_format import FloatFormat
from arith_precision.formats.parsing import as_format

ROUNDING_MODES = _rounding.ROUNDING_MODES


def _u(value: int, carrier: Carrier):
    return jnp.asarray(value, dtype=carrier.uint_dtype)


def _nan_bits(negative, carrier: Carrier):
    """Canonical quiet NaN (exponent all ones, top mantissa bit set) with the given sign."""
    quiet = (2**carrier.exponent_bits - 1) << carrier.mantissa_bits | 1 << (
        carrier.mantissa_bits - 1
    )
    return _signed(_u(quiet, carrier), negative, carrier)


def _signed(mag, negative, carrier: Carrier):
    sign = _u(1 << (carrier.width - 1), carrier)
    return jnp.where(negative, mag | sign, mag)


def _ieee_nearest_bits(bits, fmt: FloatFormat, carrier: Carrier):
    """`_float_bits` for the common case, nearest-even to a non-saturating IEEE format whose
    normal range starts at or above the carrier's (bf16, fp16, e5m2, e4m3, ...), in about 20
    integer operations: the simulation layer runs this after every primitive.

    The sign is set aside and OR-ed back. An infinite input needs no case of its own: its bits
    round to themselves, which lie above the format's largest finite value, so the overflow
    select returns inf. NaN inputs (magnitude bits above inf) become the canonical quiet NaN.
    """
    sign_bit = _u(1 << (carrier.width - 1), carrier)
    mag = bits & ~sign_bit
    emin_field = 1 - fmt.bias + carrier.bias
    if emin_field == 1:
        # The format's binades end where the carrier's do (e8mM on float32): one quantum
        # 2^(Mc - M) bit patterns everywhere, so round the pattern itself; a carry runs into the
        # exponent field exactly as the value crosses into the next binade.
        d = carrier.mantissa_bits - fmt.mantissa_bits
        bias = _u((1 << (d - 1)) - 1, carrier) + (
            lax.shift_right_logical(mag, _u(d, carrier)) & _u(1, carrier))
        rmag = (mag + bias) & _u(~((1 << d) - 1) & (2**carrier.width - 1), carrier)
    else:
        field = lax.shift_right_logical(mag, _u(carrier.mantissa_bits, carrier))
        rmag = _rounding.round_nearest_even_normal_floor(
            mag, field.astype(jnp.int32), fmt.mantissa_bits, emin_field, carrier)
    if fmt.flush_subnormals:
        min_normal = _u(carrier.bits_of(fmt.min_normal_exact), carrier)
        rmag = jnp.where(rmag < min_normal, jnp.zeros_like(rmag), rmag)
    inf = _u((2**carrier.exponent_bits - 1) << carrier.mantissa_bits, carrier)
    quiet_nan = inf | _u(1 << (carrier.mantissa_bits - 1), carrier)
    max_mag = _u(carrier.bits_of(fmt.max_exact), carrier)
    rmag = jnp.where(rmag > max_mag, inf, rmag)
    rmag = jnp.where(mag > inf, quiet_nan, rmag)
    return rmag | (bits & sign_bit)


def _float_bits(bits, fmt: FloatFormat, carrier: Carrier, rounding: str, random_words,
                random_bits: int | None = None):
    """The quantized bit pattern for a FloatFormat (see the module docstring)."""
    if (rounding == "nearest_even" and fmt.variant == "ieee" and not fmt.saturate
            and 1 - fmt.bias + carrier.bias >= 1):
        return _ieee_nearest_bits(bits, fmt, carrier)
    negative, mag, field, finite = _rounding.decompose(bits, carrier)
    # P3109 breaks nearest-even ties between powers of two (M = 0) toward an even exponent field.
    even_field_bias = fmt.bias if fmt.variant == "p3109" and fmt.mantissa_bits == 0 else None
    is_nan = ~finite & ((mag & _u(2**carrier.mantissa_bits - 1, carrier)) != 0)
    is_inf = ~finite & ~is_nan

    # Quantum exponent of the format's grid in x's binade: max(e, emin) - M. ml_dtypes rounds
    # "fnu" (e8m0) on the grid of an IEEE format with subnormals (emin = 1 - b) and then reads
    # the zero code as 2^-b; the other modes use the true grid, whose smallest binade is -b.
    emin = 1 - fmt.bias
    if fmt.variant == "fnu" and rounding != "nearest_even":
        emin = -fmt.bias
    if rounding == "nearest_even" and emin + carrier.bias >= 1 and even_field_bias is None:
        rmag = _rounding.round_nearest_even_normal_floor(
            mag, field, fmt.mantissa_bits, emin + carrier.bias, carrier)
    else:
        e = _rounding.binade_exponent(mag, field, carrier)
        q = jnp.maximum(e, emin) - fmt.mantissa_bits
        rmag = _rounding.round_to_quantum(mag, field, q, carrier, rounding, random_words,
                                          negative, even_field_bias, random_bits)

    max_mag = _u(carrier.bits_of(fmt.max_exact), carrier)
    overflow = rmag > max_mag
    if fmt.flush_subnormals and fmt.variant != "fnu":
        min_normal = _u(carrier.bits_of(fmt.min_normal_exact), carrier)
        rmag = jnp.where(rmag < min_normal, jnp.zeros_like(rmag), rmag)
    if fmt.variant == "fnu":
        # No zero: what rounded to zero is the smallest value 2^-b (ml_dtypes' code 0).
        min_mag = _u(carrier.bits_of(fmt.min_positive_exact), carrier)
        rmag = jnp.where(rmag == 0, min_mag, rmag)
    out = _signed(rmag, negative, carrier)
    if not fmt.has_negative_zero:
        out = jnp.where(rmag == 0, jnp.zeros_like(out), out)

    inf = _u((2**carrier.exponent_bits - 1) << carrier.mantissa_bits, carrier)
    signed_max = _signed(max_mag, negative, carrier)
    if fmt.variant == "fnuz":
        nan = _nan_bits(True, carrier)  # the fnuz NaN is the "-0" code: a negative NaN
    elif fmt.variant in ("fnu", "p3109"):
        nan = _nan_bits(False, carrier)  # a single, unsigned NaN code
    else:
        nan = _nan_bits(negative, carrier)

    # Overflow of finite values. Rounding toward zero (and to odd, its jammed form), and directed
    # rounding toward the side opposite to the value's sign, never overflow (IEEE 754): +-max.
    if fmt.saturate or not fmt.has_nan or rounding in ("toward_zero", "to_odd"):
        to_max = jnp.ones_like(negative)
    elif rounding == "toward_positive":
        to_max = negative
    elif rounding == "toward_negative":
        to_max = ~negative
    else:
        to_max = jnp.zeros_like(negative)
    past_max = _signed(inf, negative, carrier) if fmt.has_inf else nan
    out = jnp.where(overflow, jnp.where(to_max, signed_max, past_max), out)

    # Infinite inputs: +-max when saturating (one rule for every `_sat` format) or when the
    # format has neither inf nor NaN; else kept where the format has infinities, else NaN.
    if fmt.saturate or not fmt.has_nan:
        inf_value = signed_max
    elif fmt.has_inf:
        inf_value = _signed(inf, negative, carrier)
    else:
        inf_value = nan
    out = jnp.where(is_inf, inf_value, out)

    # NaN inputs. The sub-byte "fn" formats have no NaN: ml_dtypes returns its quiet_NaN(),
    # which for them is the -0 code, negated for negative inputs: NaN -> -0, -NaN -> +0.
    if fmt.has_nan:
        nan_value = nan
    else:
        nan_value = jnp.where(negative, jnp.zeros_like(out), _signed(_u(0, carrier), True, carrier))
    out = jnp.where(is_nan, nan_value, out)

    if fmt.variant == "fnu":
        # Unsigned without zero: zeros and negative numbers (-0 and -inf included) are NaN.
        out = jnp.where(negative | (mag == 0), nan, out)
    return out


def _fixed_bits(bits, fmt: FixedFormat, carrier: Carrier, rounding: str, random_words,
                random_bits: int | None = None):
    """The quantized bit pattern for a FixedFormat (uniform grid 2^-F, saturating)."""
    negative, mag, field, finite = _rounding.decompose(bits, carrier)
    is_nan = ~finite & ((mag & _u(2**carrier.mantissa_bits - 1, carrier)) != 0)
    q = jnp.asarray(-fmt.frac_bits, jnp.int32)
    rmag = _rounding.round_to_quantum(mag, field, q, carrier, rounding, random_words, negative,
                                      random_bits=random_bits)
    # Two's complement: the negative end is one quantum further out than the positive end.
    limit_pos = _u(carrier.bits_of(fmt.max_exact), carrier)
    limit_neg = _u(carrier.bits_of(-fmt.min_exact), carrier)
    limit = jnp.where(negative, limit_neg, limit_pos)
    rmag = jnp.where(~finite | (rmag > limit), limit, rmag)  # +-inf saturate too
    out = _signed(rmag, negative & (rmag != 0), carrier)  # a single zero: +0
    return jnp.where(is_nan, _nan_bits(negative, carrier), out)


_BF16 = FloatFormat(8, 7)


def _bf16_round_trip(x):
    """bf16 nearest-even on float32 through XLA's own conversion, the cheapest exact way.

    The narrowing `convert` is IEEE round-to-nearest-even (subnormals kept: the bf16 grid is the
    top half of the float32 pattern). The widening is done on the integers (bf16 bits << 16), not
    by a second `convert`: with `xla_allow_excess_precision` (on by default) XLA may delete a
    `f32 -> bf16 -> f32` convert pair (SimplifyFPConversions), which would silently skip the
    rounding. NaN inputs stay NaN (quiet; XLA picks the payload, as ml_dtypes does).
    Also fast: XLA keeps the 16-bit intermediate in memory between fusions.
    """
    half = lax.bitcast_convert_type(x.astype(jnp.bfloat16), jnp.uint16)
    return lax.bitcast_convert_type(
        lax.shift_left(half.astype(jnp.uint32), jnp.uint32(16)), jnp.float32)


def _fmix32(h):
    """MurmurHash3's 32-bit finaliser: a bijection of uint32 with full avalanche."""
    h = h ^ lax.shift_right_logical(h, jnp.uint32(16))
    h = h * jnp.uint32(0x85EBCA6B)
    h = h ^ lax.shift_right_logical(h, jnp.uint32(13))
    h = h * jnp.uint32(0xC2B2AE35)
    return h ^ lax.shift_right_logical(h, jnp.uint32(16))


def _hash_bits(index, k0, k1):
    """32 random-looking bits per uint32 `index`: fmix32(fmix32(index * phi ^ k0) ^ k1). For
    fixed (k0, k1) it is a bijection of the index, so no two elements share a word."""
    return _fmix32(_fmix32(index * jnp.uint32(0x9E3779B9) ^ k0) ^ k1)


def random_words(key, shape, uint_dtype, random_bits: int | None):
    """The random words of stochastic rounding for an array of `shape`.

    Exact rule (`random_bits` None): (hi, lo), two words of `uint_dtype` per element from
    `jax.random.bits(key)` (threefry by default).
    r random bits: (word,), one word per element whose low r bits are R. They come from a
    counter-based hash, as hardware draws them from a cheap generator rather than a
    cryptographic one: four seed words k = jax.random.bits(key, (4,)), then for the element
    of row-major index i, word = fmix32(fmix32(i * 0x9E3779B9 ^ k0) ^ k1) (MurmurHash3's
    finaliser; for r > 32, on float64, a second word from k2, k3 fills the high half). It is
    fused into the rounding (no random array in memory), a fraction of threefry's cost.
    Deterministic in the key; uniformity and independence of neighbours are tested."""
    uint_dtype = jnp.dtype(uint_dtype)
    if random_bits is None:
        words = jax.random.bits(key, (2, *shape), uint_dtype)
        return words[0], words[1]
    size = math.prod(shape)
    if size > 2**32:
        raise ValueError(f"random_bits: at most 2^32 elements per call, got shape {shape}")
    k = jax.random.bits(key, (4,), jnp.uint32)
    index = lax.iota(jnp.uint32, size).reshape(shape) if size else jnp.zeros(shape, jnp.uint32)
    word = _hash_bits(index, k[0], k[1]).astype(uint_dtype)
    if random_bits > 32:
        high = _hash_bits(index, k[2], k[3]).astype(uint_dtype)
        word = lax.shift_left(high, jnp.asarray(32, uint_dtype)) | word
    return (word,)


@functools.partial(jax.jit, static_argnums=(2, 3, 4, 5))
def _quantize_value(x, key, fmt, rounding, values_only=False, random_bits=None):
    """The forward computation (no custom gradient). Jitted as a whole so that eager calls
    compile one small program per (format, rounding, shape) instead of dispatching op by op."""
    carrier = carrier_for(fmt, x.dtype, values_only)
    if (
        isinstance(fmt, FloatFormat)
        and fmt.variant == "ieee"
        and not fmt.flush_subnormals
        and not fmt.saturate
        and (fmt.exponent_bits, fmt.mantissa_bits, fmt.bias)
        == (carrier.exponent_bits, carrier.mantissa_bits, carrier.bias)
    ):
        return x  # the carrier's own format: the identity, NaN payloads included
    if rounding == "nearest_even" and x.dtype == jnp.float32 and fmt == _BF16:
        return _bf16_round_trip(x)
    bits = lax.bitcast_convert_type(x, carrier.uint_dtype)
    words = None
    if rounding == "stochastic":
        words = random_words(key, x.shape, carrier.uint_dtype, random_bits)
    if isinstance(fmt, FloatFormat):
        out = _float_bits(bits, fmt, carrier, rounding, words, random_bits)
    else:
        out = _fixed_bits(bits, fmt, carrier, rounding, words, random_bits)
    return lax.bitcast_convert_type(out, x.dtype)


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3, 4, 5))
def _quantize_ste(x, key, fmt, rounding, values_only, random_bits):
    return _quantize_value(x, key, fmt, rounding, values_only, random_bits)


@_quantize_ste.defjvp
def _quantize_ste_jvp(fmt, rounding, values_only, random_bits, primals, tangents):
    x, key = primals
    x_dot, _ = tangents
    # Straight-through estimator: d quantize(x) / dx := 1.
    return _quantize_ste(x, key, fmt, rounding, values_only, random_bits), x_dot


def _as_carrier_array(x):
    """x as a JAX float array, refusing conversions that would round before quantize does."""
    if isinstance(x, int | float) and not isinstance(x, bool):
        return jnp.asarray(x, dtype=jnp.result_type(float))
    if not isinstance(x, jax.Array):
        dtype = np.asarray(x).dtype if not hasattr(x, "dtype") else np.dtype(x.dtype)
        if dtype == np.float64 and not jax.config.jax_enable_x64:
            raise ValueError(
                f"quantize got float64 input ({type(x).__name__}) while jax_enable_x64 is off: "
                "JAX would round it to float32 first (double rounding). Enable x64 or pass "
                "float32."
            )
        x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"quantize needs a float32 or float64 array, got dtype {x.dtype}")
    return x


def check_random_bits(random_bits, rounding: str, max_bits: int | None = None,
                      carrier_name: str = "") -> None:
    """ValueError naming `random_bits` unless it is None, or an int in [1, max_bits] given with
    rounding="stochastic" (`max_bits`: the carrier width; None skips that bound)."""
    if random_bits is None:
        return
    if isinstance(random_bits, bool) or not isinstance(random_bits, int):
        raise ValueError(f"random_bits must be an integer number of random bits or None, got "
                         f"{random_bits!r}")
    if rounding != "stochastic":
        raise ValueError(f"random_bits={random_bits} applies only to rounding='stochastic', got "
                         f"rounding={rounding!r}")
    if random_bits < 1:
        raise ValueError(f"random_bits must be >= 1, got {random_bits}")
    if max_bits is not None and random_bits > max_bits:
        raise ValueError(f"random_bits={random_bits} exceeds the {max_bits} bits of a "
                         f"{carrier_name} carrier word (use None for the exact rule)")


def quantize(x, fmt, rounding: str = "nearest_even", key=None, *, random_bits: int | None = None,
             straight_through: bool = True, values_only: bool = False):
    """Round every element of `x` to the number format `fmt` (see the module docstring).

    Args:
        x: float32 or float64 array (the carrier), any shape; the result has its dtype.
        fmt: a format string ("bf16", "e4m3fn", "fixed8.8", ...), format object or dtype.
        rounding: one of ROUNDING_MODES: "nearest_even" (default), "nearest_away",
            "toward_zero", "toward_positive", "toward_negative", "to_odd", "stochastic".
        key: a jax.random key; required for (and only used by) "stochastic".
        random_bits: r, for "stochastic" only: round up with probability floor(f 2^r) / 2^r
            using r random bits per element (1 <= r <= 32 on float32, 64 on float64); None
            (default): the exact probability f (module docstring).
        straight_through: identity gradient (default); False gives the true, zero, derivative.
        values_only: admit any format whose values are carrier values (e.g. e8m13 on float32),
            for rounding a carrier value that is itself the quantity to round (an accumulator
            register holding a carrier sum); the carrier rule would refuse it because a carrier
            *operation* followed by this rounding may double round.

    Raises:
        ValueError: unknown format or rounding mode; stochastic rounding without a key; an
            input that is not float32/float64 or a format that does not fit its carrier; a bad
            `random_bits` (not an int, < 1, wider than a carrier word, or without stochastic).
    """
    fmt = as_format(fmt)
    if rounding not in ROUNDING_MODES:
        raise ValueError(f"unknown rounding mode {rounding!r}; expected one of {ROUNDING_MODES}")
    if rounding == "stochastic" and key is None:
        raise ValueError(
            "rounding='stochastic' needs a jax.random key, e.g. "
            "quantize(x, fmt, 'stochastic', key=jax.random.key(0)); got key=None"
        )
    check_random_bits(random_bits, rounding)
    x = _as_carrier_array(x)
    carrier = carrier_for(fmt, x.dtype, values_only)  # the carrier error before tracing anything
    check_random_bits(random_bits, rounding, carrier.width, str(carrier.dtype))
    if rounding != "stochastic":
        key = jnp.zeros((), jnp.uint32)  # placeholder primal; never read
    if not straight_through:
        return _quantize_value(lax.stop_gradient(x), key, fmt, rounding, values_only, random_bits)
    return _quantize_ste(x, key, fmt, rounding, values_only, random_bits)
