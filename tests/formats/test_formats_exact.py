"""`quantize` is exact: bit-for-bit equal to ml_dtypes casts, and to a Fraction reference.

Every check compares bit patterns (so the sign of zero matters), with NaNs compared as "both
NaN". The value sets: every representable value of the format (both signs), every midpoint
between neighbours, one carrier ulp either side of those midpoints and of every representable,
the overflow thresholds (max, the midpoint above max, the next grid point, beyond), zeros of
both signs, +-inf, NaNs, and random carrier bit patterns (all magnitudes, NaNs included) plus
random values spread over the format's range.
"""

from __future__ import annotations

import math
from fractions import Fraction

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

from arith_precision import formats as F

UINT = {np.dtype(np.float32): np.uint32, np.dtype(np.float64): np.uint64}
_quantize = jax.jit(F.quantize, static_argnames=("fmt", "rounding"))


def assert_same_bits(x, got, want, label=""):
    """Bitwise equality, NaN == NaN; reports the first offending inputs in hex."""
    x, got, want = np.asarray(x), np.asarray(got), np.asarray(want)
    assert got.dtype == want.dtype == x.dtype, (got.dtype, want.dtype, x.dtype)
    u = UINT[x.dtype]
    both_nan = np.isnan(got) & np.isnan(want)
    bad = (got.view(u) != want.view(u)) & ~both_nan
    if bad.any():
        idx = np.flatnonzero(bad)[:8]
        rows = [
            f"x={x[i]!r} ({x.view(u)[i]:#x}) want={want[i]!r} ({want.view(u)[i]:#x}) "
            f"got={got[i]!r} ({got.view(u)[i]:#x})"
            for i in idx
        ]
        raise AssertionError(
            f"{label}: {int(bad.sum())} mismatches of {x.size}\n" + "\n".join(rows)
        )


def probe_values(
    positive_values, dtype, next_above_max=None, rng=None, n_random=20000, midpoints=None
):
    """The value set described in the module docstring, as a 1-D array of `dtype`.

    positive_values: every positive finite value of the format (any order), in `dtype`, or a
        sample of them together with their upper neighbours.
    next_above_max: the grid point above max if the exponent range were unbounded (exact).
    midpoints: exact midpoints to probe; by default those of consecutive `positive_values`
        (and of 0 and the smallest), which are the grid midpoints for a full enumeration.
    """
    dtype = np.dtype(dtype)
    v = np.unique(np.asarray(positive_values, dtype=dtype))
    if midpoints is None:
        grid = [Fraction(0)] + [Fraction(float(a)) for a in v]
        midpoints = [(a + b) / 2 for a, b in zip(grid[:-1], grid[1:], strict=True)]
    # Grid midpoints are carrier values (the format has at most half the carrier's precision);
    # check that rather than assume it.
    mid = np.array([float(m) for m in midpoints], dtype=dtype)
    assert all(Fraction(float(a)) == m for a, m in zip(mid, midpoints, strict=True)), (
        "midpoint not exact"
    )
    parts = [v, np.zeros(1, dtype), mid]
    top = Fraction(float(v[-1]))
    if next_above_max is not None:
        above = [(top + next_above_max) / 2, next_above_max, 2 * next_above_max, 4 * top]
        above = [float(a) for a in above if a <= Fraction(float(np.finfo(dtype).max))]
        parts.append(np.array(above, dtype=dtype))
    finfo = np.finfo(dtype)
    parts.append(np.array([finfo.max, finfo.smallest_subnormal, finfo.smallest_normal], dtype))
    base = np.concatenate(parts)
    with np.errstate(over="ignore"):
        neighbours = [np.nextafter(base, dtype.type(np.inf)), np.nextafter(base, dtype.type(0))]
    rng = rng or np.random.default_rng(0)
    u = UINT[dtype]
    random_bits = rng.integers(0, np.iinfo(u).max, size=n_random, dtype=u, endpoint=True)
    lo, hi = math.log2(float(v[0])), math.log2(float(v[-1]))
    with np.errstate(over="ignore"):  # the top of the spread may exceed the carrier: inf
        spread = np.exp2(rng.uniform(lo - 3, hi + 2, size=n_random)).astype(dtype)
    specials = np.array([np.inf, np.nan], dtype)
    payload_nans = np.array([0x7F800001, 0x7FBFFFFF, 0x7FFFFFFF], np.uint64)
    if dtype == np.float32:
        payload_nans = payload_nans.astype(np.uint32).view(np.float32)
    else:
        payload_nans = ((payload_nans - 0x7F800000) | 0x7FF0000000000000).view(np.float64)
    pos = np.concatenate([base, *neighbours, np.abs(spread), specials, payload_nans])
    return np.concatenate([pos, -pos, random_bits.view(dtype)])


# ---------------------------------------------------------------------------------------------
# ml_dtypes: every float type it ships, plus float16.

ML_FLOAT_TYPES = sorted(
    name
    for name in dir(ml_dtypes)
    if name.startswith(("float", "bfloat")) and isinstance(getattr(ml_dtypes, name), type)
)


def test_every_ml_dtypes_float_type_has_a_format():
    """Guards the parametrisation below: no ml_dtypes float type goes untested."""
    assert len(ML_FLOAT_TYPES) >= 12, ML_FLOAT_TYPES
    covered = {np.dtype(d) for d in F.ML_DTYPE_FORMATS.values()}
    for name in ML_FLOAT_TYPES:
        assert np.dtype(getattr(ml_dtypes, name)) in covered, name


def all_values(dtype) -> np.ndarray:
    """Every positive finite value of a <= 16-bit dtype, by enumerating its codes."""
    dtype = np.dtype(dtype)
    codes = np.arange(2 ** (8 * dtype.itemsize), dtype=np.uint8 if dtype.itemsize == 1 else "u2")
    with np.errstate(invalid="ignore"):
        vals = codes.view(dtype).astype(np.float32)
    return np.unique(vals[np.isfinite(vals) & (vals > 0)])


NATIVE = [("bf16", ml_dtypes.bfloat16), ("fp16", np.float16)] + [
    (str(F.as_format(getattr(ml_dtypes, n))), getattr(ml_dtypes, n))
    for n in ML_FLOAT_TYPES
    if n != "bfloat16"  # already listed as bf16
]


def _native_cast(x, dtype):
    with np.errstate(all="ignore"):
        return x.astype(dtype).astype(x.dtype)


@pytest.mark.parametrize("name,dtype", NATIVE, ids=[n for n, _ in NATIVE])
def test_matches_native_dtype_bit_for_bit(name, dtype):
    fmt = F.parse(name)
    assert F.to_ml_dtype(fmt) == np.dtype(dtype)
    values = all_values(dtype)
    if np.dtype(dtype).itemsize == 2:  # bf16 / fp16: all 2^16 codes, as ml_dtypes decodes them
        assert values.size == 0x7BFF if dtype == np.float16 else 0x7F7F
    top = Fraction(float(values[-1]))
    quantum = Fraction(2) ** (math.floor(math.log2(top)) - fmt.mantissa_bits)
    x = probe_values(values, np.float32, next_above_max=top + quantum)
    assert_same_bits(x, _quantize(x, fmt), _native_cast(x, dtype), name)


@pytest.mark.parametrize("name", ["e5m2", "e4m3", "e3m4", "e5m10", "e8m7"])
def test_generic_ieee_family_is_the_native_type(name):
    """The plain eEmM spelling is the IEEE-like type ml_dtypes / NumPy ships under that shape."""
    dtype = {
        "e5m2": ml_dtypes.float8_e5m2,
        "e4m3": ml_dtypes.float8_e4m3,
        "e3m4": ml_dtypes.float8_e3m4,
        "e5m10": np.float16,
        "e8m7": ml_dtypes.bfloat16,
    }[name]
    fmt = F.FloatFormat(int(name[1 : name.index("m")]), int(name[name.index("m") + 1 :]))
    assert F.parse(name) == fmt and F.to_ml_dtype(fmt) == np.dtype(dtype)
    x = probe_values(all_values(dtype), np.float32, rng=np.random.default_rng(1), n_random=5000)
    assert_same_bits(x, _quantize(x, fmt), _native_cast(x, dtype), name)


def test_fp32_on_float32_is_the_identity():
    x = np.random.default_rng(2).integers(0, 2**32, size=100_000, dtype=np.uint64)
    x = x.astype(np.uint32).view(np.float32)
    got = np.asarray(_quantize(x, "fp32")).view(np.uint32)
    np.testing.assert_array_equal(got, x.view(np.uint32))  # NaN payloads included


@pytest.mark.parametrize("name,dtype", NATIVE, ids=[n for n, _ in NATIVE])
def test_float64_carrier_agrees_with_float32_carrier(name, dtype):
    """Same float32-representable inputs, carried in float64: the same values."""
    x = probe_values(all_values(dtype), np.float32, rng=np.random.default_rng(3), n_random=2000)
    with np.errstate(invalid="ignore"):  # float32 signalling NaNs become quiet in float64
        want = np.asarray(_quantize(x, name)).astype(np.float64)
        x64 = x.astype(np.float64)
    with jax.enable_x64(True):
        got = np.asarray(_quantize(jnp.asarray(x64), name))
    assert_same_bits(x64, got, want, name)


def test_float64_inputs_are_rounded_once():
    """ml_dtypes casts float64 through float32 (double rounding); quantize rounds once. The
    inputs lie just above a midpoint by less than float32 can see."""
    x = np.array([1 + 2**-4 + 2**-30, 1 + 2**-8 + 2**-30, -(1 + 2**-4 + 2**-30)], np.float64)
    with jax.enable_x64(True):
        e4m3fn = np.asarray(_quantize(jnp.asarray(x), "e4m3fn"))
        bf16 = np.asarray(_quantize(jnp.asarray(x), "bf16"))
    np.testing.assert_array_equal(e4m3fn, [1.125, 1.0, -1.125])
    np.testing.assert_array_equal(bf16, [1 + 2**-4, 1 + 2**-7, -(1 + 2**-4)])
    # (ml_dtypes 0.6 gives 1.0 for the first e4m3fn value, see quantize.py.)


@pytest.mark.parametrize("name,dtype", [("fp32", np.float32), ("fp16", np.float16)])
def test_float64_inputs_match_numpy_casts(name, dtype):
    """fp32 and fp16 on a float64 carrier against NumPy's direct (correctly rounded) casts from
    float64, on every probe class at float64 resolution."""
    finfo = np.finfo(dtype)
    if dtype == np.float16:
        positive = all_values(np.float16).astype(np.float64)
    else:  # all 2^31 float32 values are too many: every binade's ends and a random sample
        rng = np.random.default_rng(4)
        codes = rng.integers(1, 0x7F800000, size=20000).astype(np.uint32)
        edges = np.array([1, 2, 3, 0x7FFFFF, 0x800000, 0x800001, 0x7F7FFFFF], np.uint32)
        positive = np.concatenate([codes, edges]).view(np.float32).astype(np.float64)
    top = Fraction(float(finfo.max))
    quantum = Fraction(2) ** (math.floor(math.log2(top)) - finfo.nmant)
    x = probe_values(positive, np.float64, next_above_max=top + quantum, n_random=20000)
    with jax.enable_x64(True):
        got = np.asarray(_quantize(jnp.asarray(x), name))
    assert_same_bits(x, got, _native_cast(x, dtype), name)


# ---------------------------------------------------------------------------------------------
# An exact Fraction reference, independent of the library: the value of each code and the
# rounding are written out from the definitions.


def floor_log2(a: Fraction) -> int:
    e = a.numerator.bit_length() - a.denominator.bit_length()
    return e if Fraction(2) ** e <= a else e - 1


def ref_max(E, M, bias, variant) -> Fraction:
    """The value of the largest finite code."""
    if variant == "ieee":  # the top exponent field is inf / NaN
        field, frac = 2**E - 2, 2**M - 1
    elif variant == "fn" and 1 + E + M >= 8:  # only the all-ones code is NaN
        field, frac = (2**E - 1, 2**M - 2) if M else (2**E - 2, 0)
    elif variant == "fnu":  # 0xff is NaN
        field, frac = 2**E - 2, 0
    else:  # fnuz and the sub-byte fn formats: every code with the sign bit clear is finite
        field, frac = 2**E - 1, 2**M - 1
    return ref_decode(field, frac, E, M, bias, variant)


def ref_default_bias(E, variant):
    return 2 ** (E - 1) if variant == "fnuz" else 2 ** (E - 1) - 1


def ref_decode(field, frac, E, M, bias, variant) -> Fraction:
    two = Fraction(2)
    if variant == "fnu":
        return two ** (field - bias)
    if field == 0:
        return Fraction(frac, 2**M) * two ** (1 - bias)
    return (1 + Fraction(frac, 2**M)) * two ** (field - bias)


def ref_step(v: Fraction, M, bias) -> Fraction:
    """Distance from the grid point v > 0 to the next one above (the quantum of v's binade)."""
    return Fraction(2) ** (max(floor_log2(v), 1 - bias) - M)


def ref_values(E, M, bias, variant) -> list[Fraction]:
    """Every positive finite value, by decoding every code."""
    top = ref_max(E, M, bias, variant)
    vals = {ref_decode(f, m, E, M, bias, variant) for f in range(2**E) for m in range(2**M)}
    return sorted(v for v in vals if 0 < v <= top)


def ref_float(x: float, E, M, bias=None, variant="ieee", sat=False, ftz=False, mode="nearest"):
    """The documented semantics of quantize for a float format, on one Python float.

    mode: "nearest", "toward_zero", or the two candidates of stochastic rounding: "down" / "up"
    (the grid neighbours below / above |x|, with the overflow handling of "nearest").
    """
    if bias is None:
        bias = ref_default_bias(E, variant)
    nan, inf = math.nan, math.inf
    neg = math.copysign(1.0, x) < 0
    has_nan = not (variant == "fn" and 1 + E + M < 8)
    top = ref_max(E, M, bias, variant)
    sign = -1.0 if neg else 1.0
    if variant == "fnu" and (math.isnan(x) or neg or x == 0):
        return nan
    if math.isnan(x):
        return nan if has_nan else -sign * 0.0
    saturating = sat or not has_nan
    if math.isinf(x):
        if saturating:  # one rule for every `_sat` format: +-inf -> +-max
            return sign * float(top)
        return x if variant == "ieee" else nan
    a = Fraction(abs(x))
    emin = 1 - bias
    if variant == "fnu" and mode != "nearest":
        emin = -bias
    if a == 0:
        r = Fraction(0)
    else:
        q = max(floor_log2(a), emin) - M
        k = a / Fraction(2) ** q
        if mode == "nearest":
            n = round(k)  # Fraction rounding: ties to even
        else:
            n = math.ceil(k) if mode == "up" else math.floor(k)
        r = n * Fraction(2) ** q
    if r > top:
        if saturating or mode == "toward_zero":
            return sign * float(top)
        return inf * sign if variant == "ieee" else nan
    if ftz and variant != "fnu" and 0 < r < Fraction(2) ** (1 - bias):
        r = Fraction(0)
    if variant == "fnu" and r == 0:
        r = Fraction(2) ** -bias
    if r == 0 and variant == "fnuz":
        return 0.0
    return sign * float(r)


def ref_fixed(x: float, I, Fb, mode="nearest"):
    if math.isnan(x):
        return math.nan
    lo, hi = -(2 ** (I + Fb)), 2 ** (I + Fb) - 1
    if math.isinf(x):
        k = hi if x > 0 else lo
    else:
        y = Fraction(x) * 2**Fb
        k = round(y) if mode == "nearest" else math.trunc(y)
        k = min(max(k, lo), hi)
    return float(Fraction(k, 2**Fb)) if k != 0 else 0.0


def reference_array(fn, x, dtype):
    return np.array([fn(float(v)) for v in x], dtype=dtype)


def float_probes(E, M, bias, variant, dtype, n_random, rng=None):
    """probe_values around every value of a small format (all codes enumerated)."""
    rng = rng or np.random.default_rng(E * 100 + M)
    bias = ref_default_bias(E, variant) if bias is None else bias
    vals = ref_values(E, M, bias, variant)
    top = ref_max(E, M, bias, variant)
    nxt = top + Fraction(2) ** (floor_log2(top) - M)
    return probe_values([float(v) for v in vals], dtype, nxt, rng=rng, n_random=n_random)


def test_reference_agrees_with_ml_dtypes():
    """The reference itself is validated against ml_dtypes on the shapes both know."""
    cases = [
        (5, 2, None, "ieee", ml_dtypes.float8_e5m2),
        (3, 4, None, "ieee", ml_dtypes.float8_e3m4),
        (4, 3, None, "fn", ml_dtypes.float8_e4m3fn),
        (2, 1, None, "fn", ml_dtypes.float4_e2m1fn),
        (4, 3, 11, "fnuz", ml_dtypes.float8_e4m3b11fnuz),
        (5, 2, None, "fnuz", ml_dtypes.float8_e5m2fnuz),
        (8, 0, None, "fnu", ml_dtypes.float8_e8m0fnu),
    ]
    for E, M, bias, variant, dtype in cases:
        x = float_probes(E, M, bias, variant, np.float32, n_random=300)
        spec = (E, M, bias, variant)
        want = reference_array(lambda v, spec=spec: ref_float(v, *spec), x, np.float32)
        assert_same_bits(x, want, _native_cast(x, dtype), f"reference vs {dtype.__name__}")


REFERENCE_FORMATS = [
    # (E, M, bias, variant, sat, ftz)
    (3, 3, None, "ieee", False, False),
    (6, 2, None, "ieee", False, False),
    (2, 5, None, "ieee", False, False),
    (1, 3, None, "ieee", False, False),  # no normal binade at all: subnormals and inf only
    (4, 0, None, "ieee", False, False),  # M = 0: ties between powers of two round up
    (3, 3, 1, "ieee", False, False),  # a custom bias
    (5, 2, None, "ieee", True, False),
    (3, 3, None, "ieee", False, True),
    (6, 2, None, "ieee", True, True),
    (4, 3, None, "fn", True, False),
    (4, 3, None, "fn", False, True),
    (4, 3, None, "fnuz", True, True),
    (3, 2, None, "fn", False, True),
    (3, 3, None, "fn", False, False),  # 7 bits: no NaN, saturating
    (4, 4, None, "fn", False, False),  # 9 bits: NaN at the all-ones code
    (5, 0, None, "fnu", False, False),
    (8, 0, None, "fnu", True, False),
]


def _fmt_of(E, M, bias, variant, sat, ftz):
    return F.FloatFormat(E, M, bias, variant, saturate=sat, flush_subnormals=ftz)


@pytest.mark.parametrize("spec", REFERENCE_FORMATS, ids=lambda s: str(_fmt_of(*s)))
@pytest.mark.parametrize("mode", ["nearest", "toward_zero"])
def test_float_formats_match_fraction_reference(spec, mode):
    E, M, bias, variant, sat, ftz = spec
    fmt = _fmt_of(*spec)
    x = float_probes(E, M, bias, variant, np.float32, n_random=1500)
    rounding = {"nearest": "nearest_even", "toward_zero": "toward_zero"}[mode]
    want = reference_array(lambda v: ref_float(v, E, M, bias, variant, sat, ftz, mode), x, x.dtype)
    assert_same_bits(x, _quantize(x, fmt, rounding), want, f"{fmt} {mode}")


@pytest.mark.parametrize("name", [n for n, _ in NATIVE])
def test_ml_dtypes_formats_toward_zero_match_reference(name):
    fmt = F.parse(name)
    E, M, bias, variant = fmt.exponent_bits, fmt.mantissa_bits, fmt.bias, fmt.variant
    x = probe_values(all_values(F.to_ml_dtype(fmt)), np.float32, n_random=1000)
    x = x[np.random.default_rng(5).permutation(x.size)[:4000]]  # keep bf16/fp16 quick
    want = reference_array(
        lambda v: ref_float(v, E, M, bias, variant, mode="toward_zero"), x, x.dtype
    )
    assert_same_bits(x, _quantize(x, fmt, "toward_zero"), want, f"{name} toward_zero")


STOCHASTIC_FORMATS = [n for n, _ in NATIVE] + [str(_fmt_of(*spec)) for spec in REFERENCE_FORMATS]


@pytest.mark.parametrize("name", STOCHASTIC_FORMATS)
def test_stochastic_results_are_grid_neighbours(name):
    """Stochastic rounding returns one of the two reference grid neighbours of x (x itself when
    representable), for every probe class, tiny values far below a quantum included."""
    fmt = F.parse(name)
    E, M, bias, variant = fmt.exponent_bits, fmt.mantissa_bits, fmt.bias, fmt.variant
    sat, ftz = fmt.saturate, fmt.flush_subnormals
    rng = np.random.default_rng(8)
    x = float_probes(E, M, bias, variant, np.float32, n_random=500, rng=rng)
    x = x[rng.permutation(x.size)[:3000]]
    tiny = np.float32(fmt.min_positive) * np.exp2(-rng.uniform(1, 30, 200)).astype(np.float32)
    x = np.concatenate([x, tiny, -tiny])
    got = np.asarray(_quantize(x, fmt, "stochastic", key=jax.random.key(9)))
    lo, hi = (
        reference_array(lambda v, m=m: ref_float(v, E, M, bias, variant, sat, ftz, m), x, x.dtype)
        for m in ("down", "up")
    )
    u = np.uint32
    ok = (got.view(u) == lo.view(u)) | (got.view(u) == hi.view(u))
    ok |= np.isnan(got) & (np.isnan(lo) | np.isnan(hi))
    assert ok.all(), list(zip(x[~ok], got[~ok], lo[~ok], hi[~ok], strict=True))[:5]
    assert np.any(got != lo) and np.any(got != hi)  # both neighbours occur


def sampled_probes(E, M, variant, dtype, rng, n_sample=1500, n_random=1500):
    """probe_values for a format too large to enumerate (e11m20 has 2^31 codes): random codes,
    each with its upper neighbour and their exact midpoint, plus the range's extremes."""
    bias = ref_default_bias(E, variant)
    top = ref_max(E, M, bias, variant)
    fields = rng.integers(0, 2**E - 1, size=n_sample)
    fracs = rng.integers(0, 2**M, size=n_sample)
    two = Fraction(2)
    sample = {
        ref_decode(int(f), int(m), E, M, bias, variant) for f, m in zip(fields, fracs, strict=True)
    }
    sample |= {
        top,
        two ** (1 - bias - M),
        two ** (1 - bias),
        two ** (1 - bias) - two ** (1 - bias - M),
    }
    sample |= {Fraction(1), 1 + two**-M}
    values, mids = [], [two ** (-bias - M)]  # the midpoint below the smallest subnormal
    for v in sorted(x for x in sample if 0 < x <= top):
        values.append(v)
        if v < top:
            step = ref_step(v, M, bias)
            values.append(v + step)
            mids.append(v + step / 2)
    nxt = top + ref_step(top, M, bias)
    return probe_values(
        [float(v) for v in values], dtype, nxt, rng=rng, n_random=n_random, midpoints=mids
    )


@pytest.mark.parametrize(
    "spec",
    [(11, 20, None, "ieee", False, False), (5, 20, None, "ieee", True, True)],
    ids=lambda s: str(_fmt_of(*s)),
)
@pytest.mark.parametrize("mode", ["nearest", "toward_zero"])
def test_float64_carrier_formats_match_fraction_reference(spec, mode):
    """e11m20 and e5m20 need float64 (x64 enabled locally)."""
    E, M, bias, variant, sat, ftz = spec
    fmt = _fmt_of(*spec)
    assert F.carrier_dtype(fmt) == np.float64
    rounding = {"nearest": "nearest_even", "toward_zero": "toward_zero"}[mode]
    with jax.enable_x64(True):
        x = sampled_probes(E, M, variant, np.float64, np.random.default_rng(6))
        want = reference_array(
            lambda v: ref_float(v, E, M, bias, variant, sat, ftz, mode), x, np.float64
        )
        got = np.asarray(_quantize(jnp.asarray(x), fmt, rounding))
    assert_same_bits(x, got, want, f"{fmt} {mode}")


@pytest.mark.parametrize("I,Fb", [(4, 4), (0, 7), (6, 0), (3, 8)])
@pytest.mark.parametrize("mode", ["nearest", "toward_zero"])
def test_fixed_point_matches_fraction_reference(I, Fb, mode):
    fmt = F.FixedFormat(I, Fb)
    values = [float(Fraction(k, 2**Fb)) for k in range(1, 2 ** (I + Fb) + 1)]
    x = probe_values(values, np.float32, next_above_max=None, n_random=1500)
    extra = np.array([2.0**I, 2.0**I + 2.0**-Fb, 2.0**I - 2.0 ** -(Fb + 1), 1e30], np.float32)
    x = np.concatenate([x, extra, -extra])
    rounding = {"nearest": "nearest_even", "toward_zero": "toward_zero"}[mode]
    want = reference_array(lambda v: ref_fixed(v, I, Fb, mode), x, np.float32)
    assert_same_bits(x, _quantize(x, fmt, rounding), want, f"{fmt} {mode}")


def test_fixed_point_on_float64_matches_fraction_reference():
    fmt = F.FixedFormat(8, 8)  # 16 bits of precision: needs the float64 carrier
    assert F.carrier_dtype(fmt) == np.float64
    rng = np.random.default_rng(7)
    ks = np.unique(rng.integers(1, 2**16 + 1, size=3000))
    values = [float(Fraction(int(k), 2**8)) for k in ks]
    mids = [Fraction(2 * int(k) - 1, 2**9) for k in ks]  # between k - 1 and k quanta
    with jax.enable_x64(True):
        x = probe_values(values, np.float64, n_random=1500, rng=rng, midpoints=mids)
        want = reference_array(lambda v: ref_fixed(v, 8, 8), x, np.float64)
        got = np.asarray(_quantize(jnp.asarray(x), fmt))
    assert_same_bits(x, got, want, str(fmt))


_FIXED_MODES = {
    "nearest_away": lambda y: math.floor(y + Fraction(1, 2)) if y >= 0 else -math.floor(
        -y + Fraction(1, 2)),
    "toward_positive": math.ceil,
    "toward_negative": math.floor,
}


@pytest.mark.parametrize("mode", list(_FIXED_MODES))
@pytest.mark.parametrize("name", ["fixed4.3", "fixed5.5", "fixed1.6"])
def test_fixed_point_new_rounding_modes_match_fraction_reference(name, mode):
    """Every code, every midpoint and one float32 ulp either side, beyond both ends, +-inf."""
    fmt = F.parse(name)
    I, Fb = fmt.int_bits, fmt.frac_bits
    lo, hi = -(2 ** (I + Fb)), 2 ** (I + Fb) - 1
    grid = np.arange(lo - 2, hi + 3) / 2.0**Fb
    base = np.concatenate([grid, grid + 2.0 ** -(Fb + 1)]).astype(np.float32)
    x = np.concatenate([base, np.nextafter(base, np.float32(np.inf)),
                        np.nextafter(base, np.float32(-np.inf)),
                        np.array([np.inf, -np.inf, 0.0, -0.0, 1e30, -1e30], np.float32)])

    def ref(v):
        if math.isinf(v):
            k = hi if v > 0 else lo
        else:
            k = min(max(_FIXED_MODES[mode](Fraction(v) * 2**Fb), lo), hi)
        return float(Fraction(k, 2**Fb)) if k != 0 else 0.0

    want = np.array([ref(float(v)) for v in x], np.float32)
    assert_same_bits(x, np.asarray(F.quantize(jnp.asarray(x), fmt, mode)), want, f"{name} {mode}")
