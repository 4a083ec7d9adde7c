"""Round-to-odd (`rounding="to_odd"`) against an exact Fraction reference, and against gfloat.

The definition under test (`quantize.py`): x on the grid stays; x strictly between two
neighbouring grid values gives the one whose significand (integer multiple of its quantum) is
odd (the P3109 formats with M = 0: whose exponent field is odd); a finite x beyond the largest
value gives +-max. The reference below decodes every code of a format with Fractions, computes
each value's parity from the definition, and maps every probe to its gap.

Exhaustive sweep: every IEEE-like eEmM with 1 + E + M <= 16 that the library has (E <= 11:
FloatFormat refuses wider exponents, for which no carrier exists; e1m0 has no finite positive
value). Probes per format: every positive value, for every gap between neighbours (0 and the
smallest subnormal included) its midpoint and one carrier ulp above the lower / below the upper
end, values beyond max, tiny values, +-inf, NaN; all of it with both signs. The formats of at
most 8 bits and the usual 16-bit ones run in the default suite; the full sweep is `slow`
(about a minute on 2 cores: one compilation per format).
"""

from __future__ import annotations

import importlib.metadata
import math
from fractions import Fraction

import gfloat
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from gfloat import RoundMode
from gfloat import formats as gf

from arith_precision import formats as F
from tests.formats.test_formats_exact import assert_same_bits, floor_log2

_quantize = jax.jit(F.quantize, static_argnames=("fmt", "rounding"))


def _decode(code: int, fmt: F.FloatFormat) -> Fraction:
    """Value of a positive code (sign bit clear), from the format's definition."""
    m = fmt.mantissa_bits
    field, frac = code >> m, code & (2**m - 1)
    two = Fraction(2)
    if fmt.variant == "fnu":
        return two ** (field - fmt.bias)
    if field == 0:
        return Fraction(frac, 2**m) * two ** (1 - fmt.bias)
    return (1 + Fraction(frac, 2**m)) * two ** (field - fmt.bias)


def _is_odd(v: Fraction, fmt: F.FloatFormat) -> bool:
    """The parity round-to-odd keeps: the significand v / quantum, or for P3109 with M = 0 the
    exponent field; 0 is even."""
    if v == 0:
        return False
    e = floor_log2(v)
    if fmt.variant == "p3109" and fmt.mantissa_bits == 0:
        return (e + fmt.bias) % 2 == 1
    emin = -fmt.bias if fmt.variant == "fnu" else 1 - fmt.bias
    k = v / Fraction(2) ** (max(e, emin) - fmt.mantissa_bits)
    assert k.denominator == 1
    return k.numerator % 2 == 1


def to_odd_table(fmt: F.FloatFormat, dtype):
    """(probes, expected) for every value and gap of `fmt`, in carrier `dtype`."""
    dtype = np.dtype(dtype)
    top = fmt.max_code_magnitude
    values = sorted({_decode(c, fmt) for c in range(top + 1)})
    if values[0] != 0:  # "fnu": no zero, but the gap (0, 2^-b) still rounds (up, 0 is even)
        values = [Fraction(0)] + values
    lo, hi = values[:-1], values[1:]
    pick = [a if _is_odd(a, fmt) else b for a, b in zip(lo, hi, strict=True)]
    lo_f = np.array([float(v) for v in lo], dtype)
    hi_f = np.array([float(v) for v in hi], dtype)
    mid = np.array([float((a + b) / 2) for a, b in zip(lo, hi, strict=True)], dtype)
    assert all(Fraction(float(m)) == (a + b) / 2 for m, a, b in zip(mid, lo, hi, strict=True))
    want_gap = np.array([float(v) for v in pick], dtype)
    inf = dtype.type(np.inf)
    x_parts = [hi_f, mid, np.nextafter(lo_f, inf), np.nextafter(hi_f, dtype.type(0))]
    w_parts = [hi_f, want_gap, want_gap, want_gap]
    # Beyond max: +-max for every finite x (the overflow rule), inf stays where the format has it.
    top_v = float(values[-1])
    finfo = np.finfo(dtype)
    with np.errstate(over="ignore"):  # multiples of max beyond the carrier: inf, dropped
        beyond = np.array([np.nextafter(dtype.type(top_v), inf), top_v * 1.5, top_v * 2,
                           top_v * 1024, finfo.max], dtype)
    beyond = beyond[np.isfinite(beyond) & (beyond > top_v)]
    x_parts.append(beyond)
    w_parts.append(np.full(beyond.shape, top_v, dtype))
    # Tiny values far below the smallest positive value round up to it (0 is even).
    smallest = float(values[1])
    tiny = np.array([smallest / 3, smallest / 2**20, finfo.smallest_subnormal], dtype)
    tiny = tiny[(tiny > 0) & (tiny < smallest)]
    x_parts.append(tiny)
    w_parts.append(np.full(tiny.shape, smallest, dtype))
    x, want = np.concatenate(x_parts), np.concatenate(w_parts)
    if fmt.flush_subnormals:
        want = np.where(want < float(fmt.min_normal_exact), dtype.type(0), want)
    x, want = np.concatenate([x, -x]), np.concatenate([want, -want])
    if not fmt.has_negative_zero:
        want = np.where(want == 0, dtype.type(0), want)
    zeros = np.array([0.0, -0.0], dtype)
    x = np.concatenate([x, zeros])
    want = np.concatenate([want, zeros if fmt.has_negative_zero else np.zeros(2, dtype)])
    return x, want


def _carrier(fmt):
    return np.float32 if F.carrier_dtype(fmt) == np.float32 else np.float64


def check_to_odd(fmt: F.FloatFormat):
    dtype = _carrier(fmt)
    x, want = to_odd_table(fmt, dtype)
    if dtype == np.float64:
        with jax.enable_x64(True):
            got = np.asarray(_quantize(jnp.asarray(x), fmt, "to_odd"))
    else:
        got = np.asarray(_quantize(jnp.asarray(x), fmt, "to_odd"))
    assert_same_bits(x, got, want, f"{fmt} to_odd")
    # Specials: NaN stays NaN; +-inf stays +-inf ("ieee"), or +-max when saturating.
    sp = np.array([np.nan, np.inf, -np.inf], dtype)
    with jax.enable_x64(dtype == np.float64):
        got_sp = np.asarray(_quantize(jnp.asarray(sp), fmt, "to_odd"))
    assert np.isnan(got_sp[0])
    top = dtype(fmt.max_value)
    np.testing.assert_array_equal(got_sp[1:], [top, -top] if fmt.saturate else [np.inf, -np.inf])


def _ieee_formats(max_bits: int):
    out = []
    for e in range(1, F.float_format.MAX_EXPONENT_BITS + 1):
        for m in range(0, max_bits - e):
            if (e, m) == (1, 0):
                continue  # only inf / NaN codes: no positive finite value
            out.append(F.FloatFormat(e, m))
    return out


FAST = [f for f in _ieee_formats(8)] + [F.parse(n) for n in ("bf16", "fp16", "e3m12", "e9m6")]
SLOW = [f for f in _ieee_formats(16) if f not in FAST]


def test_the_sweep_covers_every_format_up_to_16_bits():
    every = _ieee_formats(16)
    assert len(every) == sum(16 - e for e in range(1, 12)) - 1 == 109
    assert set(FAST) | set(SLOW) == set(every)


@pytest.mark.parametrize("fmt", FAST, ids=str)
def test_to_odd_matches_fraction_reference(fmt):
    check_to_odd(fmt)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", SLOW, ids=str)
def test_to_odd_matches_fraction_reference_every_format_to_16_bits(fmt):
    check_to_odd(fmt)


VARIANTS = ["e4m3fn", "e5m2fnuz", "e4m3fnuz", "e4m3b11fnuz", "e2m1fn", "e3m2fn", "e2m3fn",
            "e8m0fnu", "e5m2_sat", "e4m3_ftz", "e4m3fn_sat_ftz", "e3m3_ftz"] + [
    f"p3109_k8p{p}" for p in range(1, 8)]


@pytest.mark.parametrize("name", VARIANTS)
def test_to_odd_every_variant_matches_fraction_reference(name):
    fmt = F.parse(name)
    dtype = _carrier(fmt)
    x, want = to_odd_table(fmt, dtype)
    if fmt.variant == "fnu":  # unsigned, no zero: negatives and zeros are NaN
        want = np.where((x < 0) | (x == 0) | np.signbit(x), np.nan, want).astype(dtype)
    got = np.asarray(_quantize(jnp.asarray(x), fmt, "to_odd"))
    assert_same_bits(x, got, want, f"{fmt} to_odd")


def test_to_odd_beyond_max_of_e4m3fn_is_max():
    """448 = 1.110b * 2^8 is even (1.111b * 2^8 is the NaN code): values in (448, 480) would
    round to 480 on the unbounded grid; the overflow rule gives max, as for every format."""
    x = jnp.asarray([448.5, 470.0, 479.9, 480.0, 1e6, -450.0, 417.0, 447.0], jnp.float32)
    got = np.asarray(F.quantize(x, "e4m3fn", "to_odd"))
    np.testing.assert_array_equal(got, [448, 448, 448, 448, 448, -448, 416, 416])


def test_to_odd_is_idempotent_and_between_the_directed_roundings():
    x = jax.random.normal(jax.random.key(3), (20000,), jnp.float32) * 8
    for name in ("e4m3", "bf16", "e2m1fn", "fixed3.4"):
        once = F.quantize(x, name, "to_odd")
        np.testing.assert_array_equal(np.asarray(F.quantize(once, name, "to_odd")), once)
        lo = F.quantize(x, name, "toward_negative")
        hi = F.quantize(x, name, "toward_positive")
        assert bool(jnp.all((once == lo) | (once == hi)))


def test_to_odd_then_nearest_is_one_nearest_rounding():
    """Why round-to-odd exists: rounding to odd at p + 2 bits and then to nearest at p bits equals
    one nearest rounding to p bits (no double rounding), while nearest twice does not."""
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal(200000).astype(np.float32))
    direct = np.asarray(F.quantize(x, "e5m2"))
    via_odd = np.asarray(F.quantize(F.quantize(x, "e5m4", "to_odd"), "e5m2"))
    via_nearest = np.asarray(F.quantize(F.quantize(x, "e5m4"), "e5m2"))
    np.testing.assert_array_equal(via_odd, direct)
    assert (via_nearest != direct).any()


@pytest.mark.parametrize("I,Fb", [(3, 4), (0, 7), (5, 0)])
def test_to_odd_fixed_point_matches_fraction_reference(I, Fb):
    fmt = F.FixedFormat(I, Fb)
    lo_k, hi_k = -(2 ** (I + Fb)), 2 ** (I + Fb) - 1
    grid = np.arange(lo_k - 3, hi_k + 4) / 2.0**Fb
    base = np.concatenate([grid, grid + 2.0 ** -(Fb + 1), grid + 2.0 ** -(Fb + 3)])
    base = base.astype(np.float32)
    x = np.concatenate([base, np.nextafter(base, np.float32(np.inf)),
                        np.nextafter(base, np.float32(-np.inf)),
                        np.array([np.inf, -np.inf, 1e30, -1e30, 1e-30, -1e-30], np.float32)])

    def ref(v):
        if math.isinf(v):
            k = hi_k if v > 0 else lo_k
        else:
            y = Fraction(v) * 2**Fb
            k = math.trunc(y)
            if k != y and k % 2 == 0:
                k += 1 if y > 0 else -1
            k = min(max(k, lo_k), hi_k)
        return float(Fraction(k, 2**Fb)) if k != 0 else 0.0

    want = np.array([ref(float(v)) for v in x], np.float32)
    assert_same_bits(x, np.asarray(F.quantize(jnp.asarray(x), fmt, "to_odd")), want, str(fmt))


# ---- gfloat ---------------------------------------------------------------------------------
GFLOAT = {
    "e5m2": gf.format_info_ocp_e5m2, "e4m3fn": gf.format_info_ocp_e4m3,
    "e3m2fn": gf.format_info_ocp_e3m2, "e2m3fn": gf.format_info_ocp_e2m3,
    "e2m1fn": gf.format_info_ocp_e2m1, "bf16": gf.format_info_bfloat16,
    "fp16": gf.format_info_binary16,
    **{f"p3109_k8p{p}": gf.format_info_p3109(8, p) for p in range(1, 8)},
}


def _gfloat_probes(fi, fmt):
    """Every code, every midpoint and a float32 ulp either side, random values; |x| <= max."""
    v = gfloat.decode_ndarray(fi, np.arange(2**fi.k, dtype=np.int64))
    v = np.unique(v[np.isfinite(v) & (v >= 0)])
    mids = (v[:-1] + v[1:]) / 2
    base = np.concatenate([v, mids]).astype(np.float32)
    rng = np.random.default_rng(1)
    rand = (rng.uniform(0, 1, 4000) * 2.0 ** rng.uniform(-40, 20, 4000)).astype(np.float32)
    x = np.concatenate([base, np.nextafter(base, np.float32(np.inf)),
                        np.nextafter(base, np.float32(0)), rand])
    x = x[np.abs(x) <= fmt.max_value]
    return np.concatenate([x, -x])


@pytest.mark.parametrize("name", list(GFLOAT))
def test_to_odd_matches_gfloat_directed_roundings(name):
    """With gfloat 0.5.2 (no ToOdd): round to odd is gfloat's TowardZero result when that is x
    or has an odd code, else the rounding away from zero (TowardPositive / TowardNegative);
    gfloat decides the code parity (`encode_float`)."""
    fi, fmt = GFLOAT[name], F.parse(name)
    x = _gfloat_probes(fi, fmt)
    x64 = x.astype(np.float64)
    rz = gfloat.round_ndarray(fi, x64, RoundMode.TowardZero)
    away = np.where(x64 < 0, gfloat.round_ndarray(fi, x64, RoundMode.TowardNegative),
                    gfloat.round_ndarray(fi, x64, RoundMode.TowardPositive))
    odd = np.array([gfloat.encode_float(fi, float(r)) & 1 == 1 for r in rz])
    want = np.where((rz == x64) | odd, rz, away).astype(np.float32)
    got = np.asarray(F.quantize(jnp.asarray(x), fmt, "to_odd"))
    assert_same_bits(x, got, want, f"{fmt} to_odd vs gfloat directed")
    assert (got != np.asarray(F.quantize(jnp.asarray(x), fmt, "toward_zero"))).any()


@pytest.mark.parametrize("name", list(GFLOAT))
def test_to_odd_matches_gfloat_main_round_to_odd(name):
    """gfloat's own RoundMode.ToOdd (gfloat main, commit de30dee; not in the installed 0.5.2,
    where this test reports a skip), on every value up to max, where the two definitions agree
    (beyond max gfloat overflows to inf / NaN, `quantize.py` gives max)."""
    if not hasattr(RoundMode, "ToOdd"):
        version = importlib.metadata.version("gfloat")
        pytest.skip(f"gfloat {version} has no RoundMode.ToOdd (added on gfloat main)")
    fi, fmt = GFLOAT[name], F.parse(name)
    x = _gfloat_probes(fi, fmt)
    want = gfloat.round_ndarray(fi, x.astype(np.float64), RoundMode.ToOdd)
    keep = np.isfinite(want) & (np.abs(want) <= fmt.max_value)
    assert keep.mean() > 0.95
    got = np.asarray(F.quantize(jnp.asarray(x), fmt, "to_odd"))
    assert_same_bits(x[keep], got[keep], want[keep].astype(np.float32), f"{fmt} ToOdd")


# ---- MX elements ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["mxfp8_e4m3", "mxfp8_e5m2", "mxfp6_e3m2", "mxfp6_e2m3",
                                  "mxfp4_e2m1", "mxint8"])
def test_to_odd_mx_elements_match_fraction_reference(name):
    """quantize_mx(..., rounding="to_odd"): each x_i / X rounded to odd on the element grid and
    saturated at +-max (MX saturates in every rounding mode); X = gfloat's floor scale."""
    from tests.formats.test_formats_mx import MX, make_blocks

    bf = F.BLOCK_FORMATS[name]
    el = bf.element
    x = make_blocks()
    got = np.asarray(F.quantize_mx(jnp.asarray(x), name, rounding="to_odd"))
    want = np.empty_like(x)
    if isinstance(el, F.FixedFormat):
        grid = [Fraction(k, 2**el.frac_bits) for k in range(0, 2 ** (el.int_bits + el.frac_bits))]
        odd = {g: (g * 2**el.frac_bits).numerator % 2 == 1 for g in grid}
    else:
        grid = sorted({_decode(c, el) for c in range(el.max_code_magnitude + 1)})
        odd = {g: _is_odd(g, el) for g in grid}
    top = grid[-1]
    for i, blk in enumerate(x.reshape(-1, bf.block_size)):
        scale = Fraction(gfloat.compute_scale_amax(MX[name].etype.emax, blk.astype(np.float64)))
        out = []
        for v in blk:
            a = abs(Fraction(float(v))) / scale
            if a >= top:
                r = top
            else:
                j = np.searchsorted(np.array([float(g) for g in grid]), float(a), side="right")
                lo_g = grid[j - 1]
                r = lo_g if (lo_g == a or odd[lo_g]) else grid[j]
            val = float(r * scale)
            if isinstance(el, F.FixedFormat) and val == 0:
                out.append(0.0)
            else:
                out.append(math.copysign(val, float(v)))
        want.reshape(-1, bf.block_size)[i] = out
    assert_same_bits(x, got, want, f"{name} to_odd")
