"""`quantize` against gfloat 0.5.2 (Graphcore's independent reference), bit for bit.

Every rounding mode except stochastic (checked below with injected random bits), every format
gfloat describes (OCP FP8/FP6/FP4, bf16, fp16, the P3109 binary8 formats p3109_k8p1..7), with
and without saturation. Probes: every code of the format, every midpoint between neighbouring
codes (and between +-max and the next value of the unbounded grid: the overflow thresholds),
one float32 ulp either side of each, +-0, +-inf, NaN, and random values over the whole float32
range.
"""

import importlib

import gfloat
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from gfloat import Domain, FormatInfo, RoundMode
from gfloat import formats as gf

from arith_precision import formats
from arith_precision.formats.carrier import FLOAT32
from tests.gfloat_modes import MODES

_quantize_module = importlib.import_module("arith_precision.formats.quantize")


# Our format string -> gfloat FormatInfo.
GFLOAT_FORMATS = {
    "e5m2": gf.format_info_ocp_e5m2,
    "e4m3fn": gf.format_info_ocp_e4m3,
    "e3m2fn": gf.format_info_ocp_e3m2,
    "e2m3fn": gf.format_info_ocp_e2m3,
    "e2m1fn": gf.format_info_ocp_e2m1,
    "bf16": gf.format_info_bfloat16,
    "fp16": gf.format_info_binary16,
    **{f"p3109_k8p{p}": gf.format_info_p3109(8, p) for p in range(1, 8)},
}


def _fnuz(name, precision, bias):
    """gfloat has no preset for ml_dtypes' fnuz formats: finite, no -0, its code is the NaN."""
    return FormatInfo(name=name, k=8, precision=precision, bias=bias, has_nz=False,
                      domain=Domain.Finite, num_high_nans=0, has_subnormals=True, is_signed=True,
                      is_twos_complement=False)


GFLOAT_FORMATS["e4m3fnuz"] = _fnuz("e4m3fnuz", 4, 8)
GFLOAT_FORMATS["e5m2fnuz"] = _fnuz("e5m2fnuz", 3, 16)
GFLOAT_FORMATS["e4m3b11fnuz"] = _fnuz("e4m3b11fnuz", 4, 11)


def _values(fi) -> np.ndarray:
    """Every finite value of the format, sorted, from gfloat's decoder."""
    v = gfloat.decode_ndarray(fi, np.arange(2**fi.k, dtype=np.int64))
    return np.unique(v[np.isfinite(v)])


def probes(fi, n_random=20000, seed=0) -> np.ndarray:
    v = _values(fi)
    pos = v[v > 0]
    # The next value of the unbounded grid above max: max + one quantum of the top binade.
    top_quantum = pos[-1] - pos[-2] if pos.size > 1 else pos[-1]
    ext = np.concatenate([[0.0], pos, [pos[-1] + top_quantum, 2 * pos[-1]]])
    mids = (ext[:-1] + ext[1:]) / 2
    with np.errstate(over="ignore"):  # 2 * max of bf16 is beyond float32: dropped below
        base = np.concatenate([ext, mids]).astype(np.float32)
    base = base[np.isfinite(base)]
    up = np.nextafter(base, np.float32(np.inf))
    down = np.nextafter(base, np.float32(0))
    rng = np.random.default_rng(seed)
    rand = (rng.uniform(-1, 1, n_random) * 2.0 ** rng.uniform(-150, 128, n_random))
    special = np.array([0.0, np.inf, np.nan, np.finfo(np.float32).max,
                        np.finfo(np.float32).tiny, 2.0**-149], np.float32)
    x = np.concatenate([base, up, down, rand.astype(np.float32), special])
    x = np.concatenate([x, -x]).astype(np.float32)
    return x


def assert_same_bits(x, got, want, label):
    got, want = np.asarray(got, np.float32), np.asarray(want, np.float32)
    both_nan = np.isnan(got) & np.isnan(want)
    bad = (got.view(np.uint32) != want.view(np.uint32)) & ~both_nan
    if bad.any():
        idx = np.flatnonzero(bad)[:6]
        rows = [f"x={x[i]!r} want={want[i]!r} got={got[i]!r}" for i in idx]
        raise AssertionError(f"{label}: {int(bad.sum())} mismatches of {x.size}\n"
                             + "\n".join(rows))


def gfloat_round(fi, x, mode, sat):
    return gfloat.round_ndarray(fi, x.astype(np.float64), MODES[mode], sat=sat).astype(np.float32)


@pytest.mark.parametrize("sat", [False, True])
@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("name", list(GFLOAT_FORMATS))
def test_quantize_matches_gfloat(name, mode, sat):
    fi = GFLOAT_FORMATS[name]
    fmt = formats.parse(name + ("_sat" if sat else ""))
    x = probes(fi)
    if not fmt.has_nan:
        # gfloat has no NaN to give here; ours follows ml_dtypes (tested in test_formats_exact).
        x = x[~np.isnan(x)]
    # Formats without inf or NaN saturate (as ml_dtypes does); gfloat raises instead unless sat.
    ref_sat = sat or not fmt.has_nan
    want = gfloat_round(fi, x, mode, ref_sat)
    got = formats.quantize(jnp.asarray(x), fmt, mode)
    assert_same_bits(x, got, want, f"{fmt} {mode}")


@pytest.mark.parametrize("sat", [False, True])
@pytest.mark.parametrize("mode", [m for m in MODES if m != "nearest_even"])
def test_e8m0fnu_matches_gfloat(mode, sat):
    """The MX scale type on its range [2^-127, inf]. Below 2^-127 gfloat 0.5.2 returns values
    that are not in the format (it does not underflow formats without subnormals), and under
    nearest_even our e8m0fnu follows ml_dtypes (ties between powers of two round up; tested in
    test_formats_exact) where gfloat ties to the even exponent."""
    fi = gf.format_info_ocp_e8m0
    x = probes(fi)
    x = x[(x >= 2.0**-127) | (x == np.inf)]
    fmt = formats.parse("e8m0fnu" + ("_sat" if sat else ""))
    want = gfloat_round(fi, x, mode, sat)
    assert_same_bits(x, formats.quantize(jnp.asarray(x), fmt, mode), want, f"{fmt} {mode}")


@pytest.mark.parametrize("name", ["e4m3fn", "e2m1fn", "p3109_k8p1", "p3109_k8p4", "bf16"])
def test_stochastic_matches_gfloat_with_the_same_random_bits(name):
    """Stochastic rounding rounds up iff R < remainder * 2^64 / 2^d for the 64-bit random number
    R = (hi, lo). With lo = 0 that is gfloat's StochasticFastest with 32 random bits
    s = 2^32 - 1 - hi (round up iff delta + s 2^-32 >= 1), exact while d <= 32."""
    fi = GFLOAT_FORMATS[name]
    fmt = formats.parse(name)
    x = probes(fi, n_random=5000)
    x = x[np.isfinite(x) & (np.abs(x) < fi.max)]
    x = x[(np.abs(x) >= 2.0**-100)]  # keeps d = q - qc <= 32 for every format here
    rng = np.random.default_rng(1)
    hi = rng.integers(0, 2**32, x.size, dtype=np.uint64).astype(np.uint32)
    bits = jax.lax.bitcast_convert_type(jnp.asarray(x), jnp.uint32)
    out = _quantize_module._float_bits(bits, fmt, FLOAT32, "stochastic",
                                       (jnp.asarray(hi), jnp.zeros_like(jnp.asarray(hi))))
    got = np.asarray(jax.lax.bitcast_convert_type(out, jnp.float32))
    srbits = (2**32 - 1 - hi.astype(np.int64))
    want = gfloat.round_ndarray(fi, x.astype(np.float64), RoundMode.StochasticFastest,
                                sat=not fmt.has_nan, srbits=srbits, srnumbits=32)
    assert_same_bits(x, got, want.astype(np.float32), f"{fmt} stochastic")
    # Both directions occur, so the comparison is not vacuous.
    on_grid = np.asarray(formats.quantize(jnp.asarray(x), fmt, "toward_zero")) == x
    assert (got[~on_grid] != np.asarray(formats.quantize(jnp.asarray(x), fmt, "toward_zero"))[
        ~on_grid]).any()


def test_p3109_formats_are_gfloats():
    """Every code of p3109_k8pP decodes (through our FloatFormat) to gfloat's value, and the
    specials sit where P3109 puts them: 0x80 NaN, 0x7f +inf, 0xff -inf, no -0."""
    for p in range(1, 8):
        fmt, fi = formats.parse(f"p3109_k8p{p}"), gf.format_info_p3109(8, p)
        assert (fmt.total_bits, fmt.mantissa_bits + 1, fmt.bias) == (8, p, fi.bias)
        assert fmt.max_value == fi.max and fmt.min_positive == fi.smallest_subnormal
        ours = [float(fmt.code_value(c)) for c in range(fmt.max_code_magnitude + 1)]
        theirs = gfloat.decode_ndarray(fi, np.arange(0, 0x7F))
        np.testing.assert_array_equal(ours, theirs)
        assert np.isnan(gfloat.decode_ndarray(fi, np.array([0x80])))[0]
        assert gfloat.decode_ndarray(fi, np.array([0x7F, 0xFF])).tolist() == [np.inf, -np.inf]
        assert not fmt.has_negative_zero and fmt.has_inf and fmt.has_nan
        assert str(fmt) == f"p3109_k8p{p}" and formats.parse(str(fmt)) == fmt


@pytest.mark.parametrize("name", ["bf16_sat", "fp16_sat", "e5m2_sat", "e4m3fn_sat",
                                  "e4m3fnuz_sat", "p3109_k8p3_sat", "e2m1fn_sat", "e8m7_sat"])
def test_one_saturation_rule(name):
    """Every `_sat` format: +-inf and finite overflow give +-max, NaN stays NaN."""
    fmt = formats.parse(name)
    big = min(float(fmt.max_value) * 4, float(np.finfo(np.float32).max))
    x = jnp.asarray([np.inf, -np.inf, big, -big, np.nan], jnp.float32)
    got = np.asarray(formats.quantize(x, fmt))
    m = np.float32(fmt.max_value)
    np.testing.assert_array_equal(got[:4], [m, -m, m, -m])
    assert np.isnan(got[4]) == fmt.has_nan


@pytest.mark.parametrize("text", ["p3109_k8p8", "p3109_k8p0", "p3109_k0p1"])
def test_bad_p3109_strings_are_rejected(text):
    with pytest.raises(ValueError, match=text):
        formats.parse(text)
