"""Exact rounding of a carrier's magnitude to a power-of-two grid, on the integer bit pattern.

Everything here is integer arithmetic on the carrier's bit pattern (`lax.bitcast_convert_type`),
never floating-point arithmetic: XLA:CPU flushes subnormal operands and results of float32 /
float64 arithmetic to zero, and a fused or reassociated `(x + c) - c` trick is not guaranteed to
round, so float arithmetic could not be trusted to round exactly. Bit manipulation is exact on
every backend.

Representation. A finite non-negative carrier value with magnitude bits `mag`, exponent field
`ec` and Mc mantissa bits is

    value = sig * 2^qc,   sig = mag - offset,   offset = (max(ec, 1) - 1) << Mc,
    qc = max(ec, 1) - bias_c - Mc                       (the carrier's own quantum),

with sig = 2^Mc + fraction for normal numbers and sig = fraction for subnormals. The map
sig -> offset + sig is linear and stays valid when rounding carries sig up to 2^(Mc+1) (not
beyond: the next binade's spacing is twice as large): the carry flows into the exponent field
exactly as in the carrier's encoding (and into the inf pattern when the carrier itself overflows,
which callers treat as overflow). Rounding the value to a multiple
of 2^q is therefore rounding the integer sig to a multiple of 2^d with d = q - qc:

    nearest_even  add 2^d when the remainder is above half, or exactly half and the kept part is
                  odd (the kept part of sig counts quanta, so "even" means an even multiple of
                  the quantum: IEEE ties-to-even; with M = 0 it is the implicit leading 1 and
                  ties between powers of two round up, as ml_dtypes does for float8_e8m0fnu);
    nearest_away  add 2^d when the remainder is at least half (IEEE roundTiesToAway);
    toward_zero   drop the remainder;
    toward_positive / toward_negative
                  add 2^d when the remainder is nonzero and the value is positive / negative (the
                  sign is passed in; magnitudes of the other sign are truncated);
    to_odd        drop the remainder, then, if it was nonzero and the kept part is even, add 2^d:
                  truncation toward zero with the last kept bit forced to 1 when anything nonzero
                  was dropped ("jamming", von Neumann rounding). An inexact result is always odd,
                  which is what makes rounding to odd at p + 2 bits followed by a nearest
                  rounding to p bits equal one nearest rounding (Boldo and Melquiond 2008);
    stochastic    add 2^d with probability remainder / 2^d exactly, using 2 * width random bits
                  (see `stochastic_round_up`); or, with r random bits, with probability
                  floor(remainder * 2^r / 2^d) / 2^r (see `stochastic_round_up_bits`).

d <= 0 means the value is already on the grid. For d >= Mc + 2 the value is below half a
quantum, so nearest and toward-zero give 0; d is clamped there to keep shifts in range (XLA does
not define shifts by the full width on every backend), and a round-up there (stochastic or
directed, or to_odd: the kept part 0 is even) gives the quantum 2^q, built directly
(`pow2_bits`).

With M = 0 (grids of powers of two) "even" under nearest_even can instead mean an even exponent
field (IEEE P3109 / gfloat for precision 1): `round_to_quantum(..., even_field_bias=b)` then breaks
ties toward the power of two whose format exponent field q + b is even, and to_odd rounds an
inexact value up exactly when the lower neighbour is 0 or has an even exponent field.
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax

from arith_precision.formats.carrier import Carrier

ROUNDING_MODES = (
    "nearest_even", "nearest_away", "toward_zero", "toward_positive", "toward_negative",
    "to_odd", "stochastic",
)
DIRECTED = ("toward_positive", "toward_negative")


def _const(value: int, carrier: Carrier):
    return jnp.asarray(value, dtype=carrier.uint_dtype)


def _shl(x, s, width: int):
    """x << s for unsigned x and int32 s >= 0, defined as 0 for s >= width."""
    s_clamped = jnp.clip(s, 0, width - 1).astype(x.dtype)
    return jnp.where(s >= width, jnp.zeros_like(x), lax.shift_left(x, s_clamped))


def _shr(x, s, width: int):
    """x >> s (logical) for unsigned x and int32 s >= 0, defined as 0 for s >= width."""
    s_clamped = jnp.clip(s, 0, width - 1).astype(x.dtype)
    return jnp.where(s >= width, jnp.zeros_like(x), lax.shift_right_logical(x, s_clamped))


def decompose(bits, carrier: Carrier):
    """Split carrier bits into (negative, mag, exponent_field, finite).

    `negative` is the sign bit (True also for -0 and negative NaNs), `mag` the bits with the sign
    cleared, `exponent_field` an int32 array and `finite` False for inf / NaN.
    """
    width, mc = carrier.width, carrier.mantissa_bits
    negative = lax.shift_right_logical(bits, _const(width - 1, carrier)) == 1
    mag = bits & _const(2 ** (width - 1) - 1, carrier)
    field = lax.shift_right_logical(mag, _const(mc, carrier)).astype(jnp.int32)
    finite = field != 2**carrier.exponent_bits - 1
    return negative, mag, field, finite


def binade_exponent(mag, field, carrier: Carrier):
    """floor(log2(value)) of a finite nonzero magnitude, also for carrier subnormals (int32)."""
    normal_e = field - carrier.bias
    # A subnormal's leading one sits at bit (width - 1 - clz); its weight is 2^(emin - Mc).
    lead = (carrier.width - 1) - lax.clz(mag).astype(jnp.int32)
    subnormal_e = lead + (carrier.emin - carrier.mantissa_bits)
    return jnp.where(field >= 1, normal_e, subnormal_e)


def carrier_quantum_exponent(field, carrier: Carrier):
    """qc: the exponent of the carrier's own spacing in this binade (int32)."""
    return jnp.maximum(field, 1) - carrier.bias - carrier.mantissa_bits


def stochastic_round_up(rem, d, hi, lo, carrier: Carrier):
    """True with probability rem / 2^d, given uniform random words hi, lo (carrier uint dtype).

    Compares the 2W-bit random number (hi, lo) with the threshold T = rem * 2^(2W - d), W the
    carrier width: exact whenever d <= 2W. Since rem < 2^(Mc+1), d > 2W only happens for a value
    below 2^(Mc + 1 - 2W) of a quantum (2^-40 on float32, 2^-75 on float64); there T is
    truncated, which lowers the probability by less than 2^-2W. Requires 0 <= rem < 2^d.
    """
    w = carrier.width
    d = jnp.maximum(d, 0)
    s = 2 * w - d  # T = rem * 2^s; s may be negative (truncation)
    # High word: rem * 2^(s - W) = rem << (W - d) if d <= W else rem >> (d - W).
    t_hi = jnp.where(d <= w, _shl(rem, w - d, w), _shr(rem, d - w, w))
    # Low word: the bits of rem * 2^s below 2^W. Zero when d <= W (s >= W shifts them out).
    t_lo = jnp.where(
        d <= w,
        jnp.zeros_like(rem),
        jnp.where(s >= 0, _shl(rem, jnp.maximum(s, 0), w), _shr(rem, jnp.maximum(-s, 0), w)),
    )
    return (hi < t_hi) | ((hi == t_hi) & (lo < t_lo))


def stochastic_round_up_bits(rem, d, word, random_bits: int, carrier: Carrier):
    """True for exactly floor(rem * 2^r / 2^d) of the 2^r values of the r-bit random number
    R = word mod 2^r (r = `random_bits`, 1 <= r <= W), given 0 <= rem < 2^d.

    This is the hardware rule "add r random bits below the kept last bit and truncate": with
    t = floor(rem * 2^(r - d)), the top r bits of the discarded fraction f = rem / 2^d, the value
    rounds up (in magnitude) iff t + R >= 2^r. So P(up) = floor(f * 2^r) / 2^r, which is f
    exactly when f is a multiple of 2^-r and otherwise falls short of f by less than 2^-r (the
    rounding is biased toward zero). It is gfloat's `RoundMode.StochasticFastest` with
    srnumbits = r and srbits = R (IEEE P3109's stochastic rounding with a truncated fraction).
    """
    w = carrier.width
    d = jnp.maximum(d, 0)
    mask = _const(2**random_bits - 1, carrier)
    # t = rem << (r - d) when d <= r (exact: rem < 2^d, so t < 2^r), else rem >> (d - r).
    t = jnp.where(d <= random_bits, _shl(rem, random_bits - d, w), _shr(rem, d - random_bits, w))
    # t + R >= 2^r  <=>  R > (2^r - 1) - t, written so that nothing overflows for r = W.
    return (t != 0) & ((word & mask) > mask - t)


def round_to_quantum(mag, field, q, carrier: Carrier, rounding: str, random_words=None,
                     negative=None, even_field_bias: int | None = None,
                     random_bits: int | None = None):
    """Round finite magnitudes `mag` (carrier bits) to multiples of 2^q; returns carrier bits.

    Args:
        mag, field: from `decompose` (entries that are not finite give garbage, mask them).
        q: int32 array (or scalar), the exponent of the target grid's spacing at each element.
        rounding: one of ROUNDING_MODES.
        random_words: for "stochastic", uniform uint words shaped like `mag`: (hi, lo) for the
            exact rule, (word,) with `random_bits`.
        negative: bool array (the sign), needed by "toward_positive" / "toward_negative".
        even_field_bias: for M = 0 grids under "nearest_even": a tie rounds up iff the lower
            neighbour's exponent field q + even_field_bias is odd (None: kept-bit parity); the
            same parity decides "to_odd".
        random_bits: r for "stochastic" with r random bits (`stochastic_round_up_bits`); None:
            the exact rule (`stochastic_round_up`).

    The result is the bit pattern of the rounded magnitude; it may be the carrier's inf pattern
    (or beyond the format's range), which callers handle as overflow.
    """
    mc = carrier.mantissa_bits
    offset = lax.shift_left(
        (jnp.maximum(field, 1) - 1).astype(carrier.uint_dtype), _const(mc, carrier)
    )
    sig = mag - offset
    d = q - carrier_quantum_exponent(field, carrier)
    dc = jnp.clip(d, 0, mc + 2)  # see module docstring: d >= Mc + 2 is "below half a quantum"
    one = _const(1, carrier)
    dcu = dc.astype(carrier.uint_dtype)
    unit = lax.shift_left(one, dcu)  # 2^dc, at most 2^(Mc+2) < 2^W
    rem = sig & (unit - one)
    base = sig - rem
    kept_odd = (lax.shift_right_logical(sig, dcu) & one) == one
    if even_field_bias is not None:
        kept_odd = (((q + even_field_bias) & 1) == 1) & (sig >= unit)
    if rounding == "nearest_even":
        half = lax.shift_right_logical(unit, one)  # 2^(dc-1), or 0 when dc == 0
        up = (rem > half) | ((rem == half) & (half != 0) & kept_odd)
    elif rounding == "nearest_away":
        half = lax.shift_right_logical(unit, one)
        up = (rem >= half) & (half != 0)
    elif rounding in DIRECTED:
        if negative is None:
            raise ValueError(f"rounding={rounding!r} needs the sign (negative=...)")
        toward_sign = negative if rounding == "toward_negative" else ~negative
        up = (rem != 0) & toward_sign
    elif rounding == "toward_zero":
        up = jnp.zeros(sig.shape, dtype=bool)
    elif rounding == "to_odd":
        # For d >= Mc + 2 the kept part is 0 (even), so any nonzero value rounds up to 2^q.
        up = (rem != 0) & ~kept_odd
    elif rounding == "stochastic":
        # rem = sig when d > Mc + 1 (clamping dc only ever keeps all of sig), so the exact
        # probability sig / 2^d is rem / 2^d with the unclamped d.
        if random_bits is None:
            hi, lo = random_words
            up = stochastic_round_up(rem, d, hi, lo, carrier) & (d > 0)
        else:
            (word,) = random_words
            up = stochastic_round_up_bits(rem, d, word, random_bits, carrier) & (d > 0)
    else:
        raise ValueError(f"unknown rounding mode {rounding!r}; expected one of {ROUNDING_MODES}")
    rounded_sig = base + jnp.where(up, unit, jnp.zeros_like(unit))
    # offset + sig encodes the value only for 0 < sig <= 2^(Mc+1) (offset alone would be a
    # nonzero number, and above 2^(Mc+1) the carrier's spacing doubles).
    out = jnp.where(rounded_sig == 0, jnp.zeros_like(mag), offset + rounded_sig)
    if rounding in ("stochastic", "to_odd") or rounding in DIRECTED:
        # Only stochastic, directed and to_odd rounding round up a value below half a quantum
        # (d >= Mc + 2, where dc is clamped): the result is the quantum 2^q itself.
        out = jnp.where(up & (d >= mc + 2), pow2_bits(q, carrier), out)
    return out


def round_nearest_even_normal_floor(mag, field, mantissa_bits: int, emin_field: int,
                                    carrier: Carrier):
    """`round_to_quantum(..., "nearest_even")` for the grid of an eEmM float, in fewer operations.

    The grid has quantum 2^(max(e, emin) - M) in binade e. When the format's smallest normal
    binade emin is not below the carrier's (`emin_field = emin + bias_c >= 1`), the shift
    d = q - qc depends on the exponent field alone,

        d = (Mc - M) + max(emin_field - max(field, 1), 0),

    so no leading-zero count is needed (carrier subnormals lie below the format's normal range and
    share the shift of field 1). Ties to even is the classic add-(half - 1 + kept lsb)-and-mask.
    Same result as `round_to_quantum` bit for bit; about half the operations, which matters
    because the simulation layer rounds after every primitive.
    """
    if emin_field < 1 or not 0 <= mantissa_bits < carrier.mantissa_bits:
        raise ValueError(
            f"fast path needs emin_field >= 1 and 0 <= M < {carrier.mantissa_bits}, got "
            f"emin_field={emin_field}, M={mantissa_bits}")
    mc = carrier.mantissa_bits
    udt = carrier.uint_dtype
    fe = jnp.maximum(field, 1)
    offset = lax.shift_left((fe - 1).astype(udt), _const(mc, carrier))
    sig = mag - offset
    below = jnp.maximum(emin_field - fe, 0)  # binades below the format's normal range
    d = jnp.minimum(below + (mc - mantissa_bits), mc + 2).astype(udt)  # >= 1
    one = _const(1, carrier)
    bias = lax.shift_left(one, d - one) - one + (lax.shift_right_logical(sig, d) & one)
    rounded_sig = lax.shift_left(lax.shift_right_logical(sig + bias, d), d)
    return jnp.where(rounded_sig == 0, jnp.zeros_like(mag), offset + rounded_sig)


def pow2_bits(q, carrier: Carrier):
    """Carrier bits of 2^q (int32 q, 2^q a normal or subnormal carrier number)."""
    q = jnp.asarray(q, jnp.int32)
    mc = carrier.mantissa_bits
    normal = lax.shift_left(
        jnp.maximum(q + carrier.bias, 0).astype(carrier.uint_dtype), _const(mc, carrier)
    )
    # A subnormal 2^q has the single bit q - (emin - Mc) set.
    sub_shift = jnp.clip(q - (carrier.emin - mc), 0, mc - 1).astype(carrier.uint_dtype)
    subnormal = lax.shift_left(_const(1, carrier), sub_shift)
    return jnp.where(q >= carrier.emin, normal, subnormal)
