"""Stochastic rounding with r random bits (`random_bits=r`), exactly.

The rule (`rounding.stochastic_round_up_bits`): x a fraction f of the way (in magnitude) from its
lower grid neighbour to its upper one rounds up for exactly the r-bit random numbers R with
R + floor(f * 2^r) >= 2^r, so with probability floor(f * 2^r) / 2^r. For r = 1..4 every one of
the 2^r random numbers is tried on every probe, and the set of R that round up, and both
results, are compared with a Fraction reference (f = frac(|x| / quantum)); wider r are checked at
the boundary R = 2^r - floor(f 2^r) (rounds up) and one below it (does not), on float32 and
float64 carriers, and against gfloat's StochasticFastest with the same random bits.
"""

from __future__ import annotations

import importlib
import math
from fractions import Fraction

import gfloat
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from gfloat import RoundMode

from arith_precision import formats as F
from arith_precision.formats import mx
from arith_precision.formats.carrier import FLOAT32, FLOAT64
from arith_precision.simulate import Policy, simulate
from tests.formats.test_formats_exact import float_probes, floor_log2, ref_float
from tests.formats.test_formats_gfloat import GFLOAT_FORMATS, probes

# P3109 is checked against gfloat below (the Fraction helpers here know the ml_dtypes variants).
quantize_mod = importlib.import_module("arith_precision.formats.quantize")

FORMATS = ["e4m3fn", "bf16", "e5m2", "fp16", "e2m1fn", "e3m2fn_sat", "e4m3_ftz", "e5m2fnuz",
           "e8m0fnu", "fixed4.3", "fixed0.7"]


def quantum(a: Fraction, fmt) -> Fraction:
    """The grid spacing at magnitude a > 0 (the true grid: "fnu" from 2^-b)."""
    if isinstance(fmt, F.FixedFormat):
        return Fraction(1, 2**fmt.frac_bits)
    emin = -fmt.bias if fmt.variant == "fnu" else 1 - fmt.bias
    return Fraction(2) ** (max(floor_log2(a), emin) - fmt.mantissa_bits)


def ref_neighbours(x: float, fmt):
    """(f, down, up): the fraction of the way up and the two results, from the definitions."""
    if isinstance(fmt, F.FixedFormat):
        a = Fraction(x) * 2**fmt.frac_bits
        k = math.floor(abs(a))
        lo_k, hi_k = -(2 ** (fmt.int_bits + fmt.frac_bits)), 2 ** (fmt.int_bits + fmt.frac_bits) - 1

        def value(kk):
            kk = min(max(kk if x >= 0 else -kk, lo_k), hi_k)
            return float(Fraction(kk, 2**fmt.frac_bits)) if kk else 0.0

        return abs(a) - k, value(k), value(k + 1)
    spec = (fmt.exponent_bits, fmt.mantissa_bits, fmt.bias, fmt.variant, fmt.saturate,
            fmt.flush_subnormals)
    a = abs(Fraction(x))
    q = quantum(a, fmt)
    f = a / q - math.floor(a / q)
    return f, ref_float(x, *spec, mode="down"), ref_float(x, *spec, mode="up")


def probe_set(fmt, n=1500, seed=0):
    """Grid points, fractions j/16 and j/7 of the way up in sampled gaps, random values, values
    far below the smallest quantum; both signs; finite, within the carrier."""
    rng = np.random.default_rng(seed)
    if isinstance(fmt, F.FixedFormat):
        k = rng.integers(0, 2 ** (fmt.int_bits + fmt.frac_bits), 80)
        lo = k / 2.0**fmt.frac_bits
        step = 2.0**-fmt.frac_bits
    else:
        base = float_probes(fmt.exponent_bits, fmt.mantissa_bits, fmt.bias, fmt.variant,
                            np.float32, n_random=300, rng=rng)
        base = base[np.isfinite(base) & (base > 0)]
        lo = rng.choice(base, 80)
        step = np.array([float(quantum(Fraction(float(v)), fmt)) for v in lo])
    fr = np.concatenate([np.arange(16) / 16, np.arange(1, 7) / 7])
    gaps = (lo[:, None] + fr[None, :] * np.asarray(step).reshape(-1, 1)).ravel()
    tiny = np.float32(2.0**-60) * rng.uniform(0.5, 1, 30)
    with np.errstate(over="ignore"):  # gaps above float32's range: inf, dropped
        x = np.concatenate([gaps, tiny]).astype(np.float32)
    x = x[np.isfinite(x)]
    x = np.unique(np.concatenate([x, -x]))
    if not isinstance(fmt, F.FixedFormat) and fmt.variant == "fnu":
        x = x[x >= float(fmt.min_positive_exact)]  # below 2^-b everything gives 2^-b
    return x


def run_with_words(x, fmt, words, r, carrier=FLOAT32):
    """`quantize`'s forward computation with the given random words (any broadcastable shape)."""
    bits = jax.lax.bitcast_convert_type(jnp.asarray(x), carrier.uint_dtype)
    bits, words = jnp.broadcast_arrays(bits, jnp.asarray(words, carrier.uint_dtype))
    kind = quantize_mod._float_bits if isinstance(fmt, F.FloatFormat) else quantize_mod._fixed_bits
    out = jax.jit(kind, static_argnums=(1, 2, 3, 5))(bits, fmt, carrier, "stochastic", (words,), r)
    return np.asarray(jax.lax.bitcast_convert_type(out, carrier.dtype))


def _same(a, b):
    a, b = np.asarray(a), np.asarray(b)
    u = {4: np.uint32, 8: np.uint64}[a.dtype.itemsize]
    return (a.view(u) == b.view(u)) | (np.isnan(a) & np.isnan(b))


FAST_FORMATS = ["e4m3fn", "bf16", "e8m0fnu", "fixed4.3"]
CASES = [pytest.param(name, r, marks=() if name in FAST_FORMATS else pytest.mark.slow)
         for name in FORMATS for r in (1, 2, 3, 4)]


@pytest.mark.parametrize("name,r", CASES)
def test_every_random_value_against_the_fraction_rule(name, r):
    fmt = F.parse(name)
    x = probe_set(fmt, seed=r)
    R = np.arange(2**r, dtype=np.uint32)
    got = run_with_words(x[:, None], fmt, R[None, :], r)  # (n, 2^r)
    n_up_total = 0
    for i, v in enumerate(x):
        f, down, up = ref_neighbours(float(v), fmt)
        t = math.floor(f * 2**r)
        rounds_up = R >= 2**r - t if t else np.zeros(R.shape, bool)
        want = np.where(rounds_up, np.float32(up), np.float32(down)).astype(np.float32)
        ok = _same(got[i], want)
        assert ok.all(), (name, r, float(v), float(f), down, up, got[i].tolist())
        assert int(rounds_up.sum()) == t
        n_up_total += t
    assert n_up_total > 0


@pytest.mark.parametrize("carrier,widths", [(FLOAT32, [5, 8, 13, 16, 24, 31, 32]),
                                            (FLOAT64, [8, 33, 48, 63, 64])])
def test_threshold_random_values_for_wide_r(carrier, widths):
    """R = 2^r - floor(f 2^r) is the smallest random number that rounds up (when f 2^r >= 1)."""
    fmt = F.parse("e5m2")
    x = probe_set(fmt, seed=5)
    x = x[np.abs(x) < 57344]  # inside the range: up is the next grid value
    with jax.enable_x64(carrier is FLOAT64):
        for r in widths:
            fs = [ref_neighbours(float(v), fmt) for v in x]
            t = np.array([math.floor(f * 2**r) for f, _, _ in fs], dtype=object)
            keep = t > 0
            xs = x[keep].astype(carrier.dtype)
            first_up = np.array([2**r - int(v) for v in t[keep]], dtype=np.uint64)
            words = np.stack([first_up, first_up - 1]).astype(carrier.uint_dtype)
            got = run_with_words(xs[None, :], fmt, words, r, carrier)
            up = np.array([u for (f, _, u), k in zip(fs, keep, strict=True) if k], carrier.dtype)
            down = np.array([d for (f, d, _), k in zip(fs, keep, strict=True) if k],
                            carrier.dtype)
            assert _same(got[0], up).all(), (r, carrier.dtype)
            assert _same(got[1], down).all(), (r, carrier.dtype)


@pytest.mark.parametrize("r", [1, 3, 8, 16])
@pytest.mark.parametrize("name", ["e4m3fn", "bf16", "e2m1fn", "p3109_k8p1", "p3109_k8p4"])
def test_matches_gfloat_stochastic_fastest(name, r):
    """gfloat 0.5.2's StochasticFastest rounds away iff delta + srbits * 2^-r >= 1: with
    srbits = R it is this rule, bit for bit."""
    fi, fmt = GFLOAT_FORMATS[name], F.parse(name)
    x = probes(fi, n_random=5000, seed=r)
    x = x[np.isfinite(x) & (np.abs(x) < fi.max) & (np.abs(x) >= 2.0**-100)]
    R = np.random.default_rng(r).integers(0, 2**r, x.size).astype(np.uint32)
    got = run_with_words(x, fmt, R, r)
    want = gfloat.round_ndarray(fi, x.astype(np.float64), RoundMode.StochasticFastest,
                                sat=not fmt.has_nan, srbits=R.astype(np.int64), srnumbits=r)
    assert _same(got, want.astype(np.float32)).all()
    assert (got != np.asarray(F.quantize(jnp.asarray(x), fmt, "toward_zero"))).any()


@pytest.mark.parametrize("r,frac,p", [(1, 0.3, 0.0), (1, 0.7, 0.5), (2, 0.3, 0.25),
                                      (8, 1 / 3, 85 / 256), (4, 0.5, 0.5)])
def test_public_api_frequency_is_the_rule(r, frac, p):
    """Through `quantize` (random bits hashed from the key and the element index): the fraction
    of round-ups is floor(f 2^r) / 2^r, not f (5 standard errors), also on every residue class
    of the index mod 4."""
    n = 400_000
    x = np.float32(1 + frac * 2**-7)
    q = np.asarray(F.quantize(jnp.full((n,), x), "bf16", "stochastic", key=jax.random.key(r),
                              random_bits=r))
    assert set(np.unique(q).tolist()) <= {1.0, 1 + 2**-7}
    f = (Fraction(float(x)) - 1) * 128
    assert math.floor(f * 2**r) / 2**r == p
    up = np.mean(q != 1.0)
    assert abs(up - p) <= 5 * math.sqrt(max(p * (1 - p), 1e-12) / n) + 1e-12
    for j in range(4):
        assert abs(np.mean(q[j::4] != 1.0) - p) <= 5 * math.sqrt(max(p * (1 - p), 1e-12) * 4 / n)


def test_public_api_is_deterministic_and_key_dependent():
    x = jax.random.normal(jax.random.key(0), (1000,)) * 10
    a = F.quantize(x, "e4m3fn", "stochastic", key=jax.random.key(1), random_bits=8)
    b = F.quantize(x, "e4m3fn", "stochastic", key=jax.random.key(1), random_bits=8)
    c = F.quantize(x, "e4m3fn", "stochastic", key=jax.random.key(2), random_bits=8)
    np.testing.assert_array_equal(a, b)
    assert (np.asarray(a) != np.asarray(c)).any()
    lo = F.quantize(x, "e4m3fn", "toward_negative")
    hi = F.quantize(x, "e4m3fn", "toward_positive")
    for r in (1, 8, 16, 32):
        s = F.quantize(x, "e4m3fn", "stochastic", key=jax.random.key(3), random_bits=r)
        assert bool(jnp.all((s == lo) | (s == hi)))
    with jax.enable_x64(True):
        x64 = jnp.asarray(np.linspace(1, 2, 1001))
        s = F.quantize(x64, "e11m20", "stochastic", key=jax.random.key(4), random_bits=40)
        assert s.dtype == jnp.float64
        assert bool(jnp.all((s == F.quantize(x64, "e11m20", "toward_zero"))
                            | (s == F.quantize(x64, "e11m20", "toward_positive"))))


def _chi2_ok(counts, expected):
    """Pearson's statistic below mean + 6 standard deviations (df = cells - 1)."""
    df = counts.size - 1
    stat = float((((counts - expected) ** 2) / expected).sum())
    return stat < df + 6 * math.sqrt(2 * df), stat


def test_random_words_look_uniform_and_independent():
    """The counter-based words behind random_bits: every bit balanced, the low byte uniform,
    neighbouring elements independent (pairs of low nibbles), rows and columns alike, and
    different keys give unrelated streams."""
    shape = (1024, 1024)
    (w,) = quantize_mod.random_words(jax.random.key(0), shape, jnp.uint32, 8)
    w = np.asarray(w).astype(np.uint64)
    n = w.size
    for bit in range(32):
        ones = int(((w >> np.uint64(bit)) & np.uint64(1)).sum())
        assert abs(ones - n / 2) < 6 * math.sqrt(n / 4), bit
    ok, stat = _chi2_ok(np.bincount((w & np.uint64(255)).ravel().astype(np.int64), minlength=256),
                        n / 256)
    assert ok, stat
    nib = (w & np.uint64(15)).astype(np.int64)
    for a, b in ((nib[:, :-1], nib[:, 1:]), (nib[:-1, :], nib[1:, :])):
        ok, stat = _chi2_ok(np.bincount((a * 16 + b).ravel(), minlength=256), a.size / 256)
        assert ok, stat
    (v,) = quantize_mod.random_words(jax.random.key(1), shape, jnp.uint32, 8)
    v = np.asarray(v).astype(np.uint64)
    assert np.mean(v == w) < 1e-3
    ok, stat = _chi2_ok(np.bincount(((w & np.uint64(15)) * np.uint64(16)
                                     + (v & np.uint64(15))).ravel().astype(np.int64),
                                    minlength=256), n / 256)
    assert ok, stat
    assert len(np.unique(w)) == n  # a bijection of the index: no repeated word in one call


def test_default_keeps_the_exact_rule():
    """random_bits=None is the 2W-bit rule, bit for bit (the same key, the same words)."""
    x = jax.random.normal(jax.random.key(0), (4096,))
    a = F.quantize(x, "bf16", "stochastic", key=jax.random.key(5))
    b = F.quantize(x, "bf16", "stochastic", key=jax.random.key(5), random_bits=None)
    np.testing.assert_array_equal(a, b)
    bits = jax.lax.bitcast_convert_type(x, jnp.uint32)
    words = jax.random.bits(jax.random.key(5), (2, 4096), jnp.uint32)
    direct = quantize_mod._float_bits(bits, F.parse("bf16"), FLOAT32, "stochastic",
                                      (words[0], words[1]))
    np.testing.assert_array_equal(jax.lax.bitcast_convert_type(direct, jnp.float32), a)


@pytest.mark.parametrize("bad,match", [
    (0, "random_bits must be >= 1, got 0"),
    (-3, "random_bits must be >= 1, got -3"),
    (33, "random_bits=33 exceeds the 32 bits of a float32 carrier"),
    (2.0, "random_bits must be an integer.*got 2.0"),
    (True, "random_bits must be an integer.*got True"),
    ("8", "random_bits must be an integer.*got '8'"),
])
def test_bad_random_bits_are_refused(bad, match):
    x = jnp.ones((4,))
    with pytest.raises(ValueError, match=match):
        F.quantize(x, "bf16", "stochastic", key=jax.random.key(0), random_bits=bad)
    with pytest.raises(ValueError, match=match.replace("float32 carrier", "float32 carrier")):
        F.quantize_mx(jnp.ones((32,)), "mxfp4_e2m1", rounding="stochastic",
                      key=jax.random.key(0), random_bits=bad)


def test_random_bits_need_stochastic_rounding():
    for call in (lambda: F.quantize(jnp.ones(4), "bf16", "nearest_even", random_bits=8),
                 lambda: F.quantize_mx(jnp.ones(32), "mxfp8_e4m3", random_bits=8),
                 lambda: Policy("bf16", random_bits=8)):
        with pytest.raises(ValueError, match="random_bits=8 applies only to rounding="
                                             "'stochastic', got rounding='nearest_even'"):
            call()
    with jax.enable_x64(True):
        with pytest.raises(ValueError, match="random_bits=65 exceeds the 64 bits of a float64"):
            F.quantize(jnp.ones(4, jnp.float64), "e11m20", "stochastic", key=jax.random.key(0),
                       random_bits=65)
    with pytest.raises(ValueError, match="random_bits=65 exceeds the 64 bits"):
        Policy("bf16", rounding="stochastic", random_bits=65)


# ---- MX elements and policies -----------------------------------------------------------------
@pytest.mark.parametrize("r", [1, 2, 3])
@pytest.mark.parametrize("name", ["mxfp4_e2m1", "mxfp8_e4m3", "mxint8"])
def test_mx_elements_every_random_value(name, r):
    """Inside MX blocks the element grid is scaled by X = 2^s; the same rule on x_i / X."""
    bf = mx.BLOCK_FORMATS[name]
    rng = np.random.default_rng(r)
    x = (rng.standard_normal((24, 32)) * 2.0 ** rng.uniform(-8, 8, (24, 1))).astype(np.float32)
    blocks = jnp.asarray(x)[:, None, :]  # (rows, 1 block, 32)
    bits = jax.lax.bitcast_convert_type(blocks, jnp.uint32)
    R = np.arange(2**r, dtype=np.uint32)
    outs = [np.asarray(jax.lax.bitcast_convert_type(
        mx._mx_blocks(bits, bf, "stochastic", (jnp.full(bits.shape, w, jnp.uint32),), r)[0],
        jnp.float32))[:, 0, :] for w in R]
    got = np.stack(outs, -1)  # (rows, 32, 2^r)
    s = np.asarray(mx._mx_blocks(bits, bf, "nearest_even", None)[1])[:, 0, 0]
    el = bf.element
    for i in range(x.shape[0]):
        scale = Fraction(2) ** int(s[i])
        for j in range(32):
            v = float(Fraction(float(x[i, j])) / scale)
            top = float(el.max_exact)
            if isinstance(el, F.FixedFormat) and v < 0:
                top = float(-el.min_exact)  # two's complement: one quantum further out
            if abs(v) >= top:  # MX saturates: +-max whatever the random bits
                f, down, up = Fraction(0), math.copysign(top, v), math.copysign(top, v)
            else:
                f, down, up = ref_neighbours(v, el)
                up = max(min(up, top), -top)
            t = math.floor(f * 2**r)
            want = np.where(R >= 2**r - t, up, down) if t else np.full(R.shape, down)
            want = (want * float(scale)).astype(np.float32)
            if isinstance(el, F.FixedFormat):
                want = np.where(want == 0, np.float32(0), want)
            assert _same(got[i, j], want).all(), (name, r, x[i, j], got[i, j], want)


def test_mx_and_nvfp4_public_api_take_random_bits():
    x = jnp.full((4096,), np.float32(1 + 0.3 * 2**-3))  # 0.3 of e4m3's quantum 2^-3 above 1
    one_bit = F.quantize_mx(x.reshape(-1, 32), "mxfp8_e4m3", rounding="stochastic",
                            key=jax.random.key(0), random_bits=1)
    np.testing.assert_array_equal(np.unique(np.asarray(one_bit)), [1.0])  # floor(0.6) = 0
    exact = F.quantize_mx(x.reshape(-1, 32), "mxfp8_e4m3", rounding="stochastic",
                          key=jax.random.key(0))
    assert (np.asarray(exact) > 1).any()
    y = np.tile(np.float32([6.0, 5.2] + [0.0] * 14), 256)  # nvfp4: 5.2 in (4, 6)
    y[:16] = [2688.0] + [0.0] * 15  # tensor amax 2688: g = 1, so the other blocks' scale is 1
    y = jnp.asarray(y)
    nv = np.asarray(F.quantize_mx(y, "nvfp4", rounding="stochastic", key=jax.random.key(1),
                                  random_bits=1))
    assert set(np.unique(nv[17::16]).tolist()) == {4.0, 6.0}  # f = 0.6: up for R = 1 only
    assert abs(np.mean(nv[17::16] == 6.0) - 0.5) < 0.1


def test_policy_random_bits_reach_every_rounding():
    """Policy.random_bits: with r = 1 a value 0.3 of a quantum above a grid point never rounds
    up (floor(0.6) = 0); the exact rule does 30% of the time."""
    x = jnp.full((20000,), np.float32(1 + 0.3 * 2**-7))

    def f(v):
        return v * 1.0 + 0.0

    one = simulate(f, Policy("bf16", rounding="stochastic", random_bits=1))(x)
    np.testing.assert_array_equal(np.unique(np.asarray(one)), [1.0])
    exact = simulate(f, Policy("bf16", rounding="stochastic"))(x)
    assert 0.25 < float(jnp.mean(exact > 1)) < 0.35
    eight = simulate(f, Policy("bf16", rounding="stochastic", random_bits=8, seed=3))(x)
    again = simulate(f, Policy("bf16", rounding="stochastic", random_bits=8, seed=3))(x)
    np.testing.assert_array_equal(eight, again)
    assert 0.25 < float(jnp.mean(eight > 1)) < 0.35  # floor(0.3 * 256) / 256 = 0.2969
