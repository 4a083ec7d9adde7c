"""`quantize` as a JAX function: stochastic rounding, transformations, gradients, carrier rule
and argument errors."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from arith_precision import formats as F
from arith_precision.formats import carrier as carrier_mod
from arith_precision.formats import rounding as rounding_mod

# ---------------------------------------------------------------------------------------------
# Stochastic rounding

# (format, lower grid point, upper grid point, fraction of the way up): normal, subnormal,
# across a binade boundary, fixed point, negative, and float64-carried.
STOCHASTIC_CASES = [
    ("bf16", 1.0, 1.0 + 2**-7, 0.3),
    ("e4m3fn", 2**-9, 2 * 2**-9, 0.7),  # subnormal grid
    ("e5m2", 0.0, 2.0**-16, 0.1),  # below the smallest subnormal: 0 or min
    ("e4m3", 15.0, 16.0, 0.5),  # the upper neighbour is in the next binade
    ("fixed4.4", -3.0, -3.0 - 2**-4, 0.25),  # negative: "up" means larger magnitude
    ("e2m1fn", 4.0, 6.0, 0.9),
    ("e8m0fnu", 2.0**-127, 2.0**-126, 0.4),  # e8m0's true grid, unbiased there too
    ("fp16", 1000.0, 1000.5, 0.6),
]


@pytest.mark.parametrize("name,lo,hi,frac", STOCHASTIC_CASES)
def test_stochastic_rounding_is_unbiased_and_hits_only_the_neighbours(name, lo, hi, frac):
    n = 200_000
    x = np.float32(lo + frac * (hi - lo))
    assert lo < abs(x) < abs(hi) or hi < x < lo
    xs = jnp.full((n,), x, jnp.float32)
    q = np.asarray(F.quantize(xs, name, "stochastic", key=jax.random.key(0)))
    assert set(np.unique(q).tolist()) == {np.float32(lo), np.float32(hi)}
    spacing = abs(hi - lo)
    # Each sample is lo or hi: standard deviation <= spacing / 2, so the mean of n samples is
    # within 5 standard errors with probability 1 - 6e-7.
    bound = 5 * spacing / (2 * math.sqrt(n))
    assert abs(q.astype(np.float64).mean() - float(x)) <= bound
    up = np.mean(q == np.float32(hi))
    assert abs(up - abs(float(x) - lo) / spacing) <= 5 * 0.5 / math.sqrt(n)


def test_stochastic_rounding_on_float64_carrier_is_unbiased():
    n = 100_000
    with jax.enable_x64(True):
        lo, hi = 1.0, 1.0 + 2.0**-20  # e11m20 grid near 1
        x = lo + 0.35 * (hi - lo)
        q = np.asarray(F.quantize(jnp.full((n,), x), "e11m20", "stochastic", key=jax.random.key(1)))
    assert set(np.unique(q).tolist()) == {lo, hi}
    assert abs(q.mean() - x) <= 5 * (hi - lo) / (2 * math.sqrt(n))


def test_stochastic_rounding_is_reproducible_and_key_dependent():
    x = jax.random.normal(jax.random.key(3), (4096,), jnp.float32)
    a = F.quantize(x, "e4m3", "stochastic", key=jax.random.key(7))
    b = F.quantize(x, "e4m3", "stochastic", key=jax.random.key(7))
    c = F.quantize(x, "e4m3", "stochastic", key=jax.random.key(8))
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert np.any(np.asarray(a) != np.asarray(c))
    raw = F.quantize(x, "e4m3", "stochastic", key=jax.random.PRNGKey(7))  # legacy uint32 key
    assert raw.shape == x.shape


def test_stochastic_rounding_keeps_representable_values_and_specials():
    x = np.array([0.0, -0.0, 1.5, -0.25, 448.0, np.inf, -np.inf, np.nan], np.float32)
    q = np.asarray(F.quantize(x, "e4m3fn", "stochastic", key=jax.random.key(0)))
    near = np.asarray(F.quantize(x, "e4m3fn"))
    np.testing.assert_array_equal(q.view(np.uint32)[:5], near.view(np.uint32)[:5])
    assert np.isnan(q[5:]).all()  # e4m3fn has no inf


def test_stochastic_round_up_probability_is_exact():
    """The (hi, lo) threshold comparison equals the exact integer comparison, i.e. rounds up
    with probability exactly rem / 2^d for d up to 2W, for both carriers."""
    rng = np.random.default_rng(0)
    for carrier in (carrier_mod.FLOAT32, carrier_mod.FLOAT64):
        w = carrier.width
        n = 4000
        d = rng.integers(0, 2 * w + 40, size=n)
        bits = np.minimum(d, carrier.mantissa_bits + 1)
        rem = np.array([int(rng.integers(0, 2 ** int(b))) if b else 0 for b in bits], object)
        hi = rng.integers(0, 2**w, size=n, dtype=np.uint64, endpoint=False)
        lo = rng.integers(0, 2**w, size=n, dtype=np.uint64, endpoint=False)
        if w == 32:
            hi, lo = hi >> np.uint64(32), lo >> np.uint64(32)
        # Edge cases: the random number equal to the threshold and one below it.
        threshold = [(int(r) << (2 * w)) >> int(dd) for r, dd in zip(rem, d, strict=True)]
        for i in range(0, 200):
            t = threshold[i] - (i % 2)
            if t >= 0:
                hi[i], lo[i] = t >> w, t & (2**w - 1)
        udt = carrier.uint_dtype

        def run(rem_, d_, hi_, lo_, carrier=carrier, udt=udt):
            return rounding_mod.stochastic_round_up(
                rem_.astype(udt), d_.astype(np.int32), hi_.astype(udt), lo_.astype(udt), carrier
            )

        with jax.enable_x64(w == 64):
            got = np.asarray(
                jax.jit(run)(
                    jnp.asarray(np.array(rem, dtype=np.uint64).astype(udt)),
                    jnp.asarray(d.astype(np.int32)),
                    jnp.asarray(hi.astype(udt)),
                    jnp.asarray(lo.astype(udt)),
                )
            )
        for i in range(n):
            r, dd = int(rem[i]), int(d[i])
            random_number = (int(hi[i]) << w) | int(lo[i])
            # Exact for d <= 2W; beyond, the documented truncation of the threshold.
            t = (r << (2 * w)) >> dd
            assert got[i] == (random_number < t), (w, r, dd, int(hi[i]), int(lo[i]))


def test_stochastic_tiny_values_use_the_exact_probability():
    """A value 2^-20 of a quantum (d > 32 bits on float32): rounds up with probability 2^-20;
    with 2^22 samples the count of round-ups is ~4, never thousands, never always zero."""
    x = jnp.full((1 << 22,), np.float32(2.0**-16 * 2.0**-20), jnp.float32)  # e5m2 min sub 2^-16
    q = np.asarray(F.quantize(x, "e5m2", "stochastic", key=jax.random.key(11)))
    ups = int(np.sum(q != 0))
    assert set(np.unique(q).tolist()) <= {0.0, 2.0**-16}
    assert 0 < ups < 20  # Poisson(4): P(0) = 0.018, P(>= 20) < 1e-7


# ---------------------------------------------------------------------------------------------
# Transformations and gradients


def test_jit_vmap_and_any_shape():
    x = jax.random.normal(jax.random.key(0), (3, 5, 7), jnp.float32) * 100
    eager = F.quantize(x, "e4m3fn")
    jitted = jax.jit(F.quantize, static_argnums=1)(x, "e4m3fn")
    vmapped = jax.vmap(lambda r: F.quantize(r, "e4m3fn"))(x)
    for other in (jitted, vmapped):
        np.testing.assert_array_equal(np.asarray(eager), np.asarray(other))
    assert F.quantize(jnp.float32(3.3), "e2m1fn").shape == ()
    assert F.quantize(jnp.zeros((0, 4)), "bf16").shape == (0, 4)
    keys = jax.random.split(jax.random.key(0), 3)
    per_key = jax.vmap(lambda r, k: F.quantize(r, "bf16", "stochastic", key=k))(x, keys)
    assert per_key.shape == x.shape and per_key.dtype == jnp.float32


def test_output_dtype_is_the_carrier():
    assert F.quantize(jnp.ones(3, jnp.float32), "fp16").dtype == jnp.float32
    with jax.enable_x64(True):
        assert F.quantize(jnp.ones(3, jnp.float64), "fp16").dtype == jnp.float64
        assert F.quantize(jnp.ones(3, jnp.float64), "e11m20").dtype == jnp.float64


@pytest.mark.parametrize("rounding", ["nearest_even", "toward_zero", "stochastic"])
@pytest.mark.parametrize("fmt", ["bf16", "e4m3fn", "fixed4.4", "e8m0fnu"])
def test_straight_through_gradient_is_identity(fmt, rounding):
    key = jax.random.key(0) if rounding == "stochastic" else None
    x = jnp.linspace(-3.0, 3.0, 11, dtype=jnp.float32) + 0.1
    g = jax.grad(lambda v: jnp.sum(F.quantize(v, fmt, rounding, key) * jnp.arange(11.0)))(x)
    np.testing.assert_array_equal(np.asarray(g), np.arange(11.0, dtype=np.float32))
    _, tangent = jax.jvp(lambda v: F.quantize(v, fmt, rounding, key), (x,), (jnp.ones_like(x),))
    np.testing.assert_array_equal(np.asarray(tangent), np.ones(11, np.float32))


def test_straight_through_can_be_turned_off():
    g = jax.grad(lambda v: F.quantize(v, "bf16", straight_through=False).sum())(jnp.ones(4))
    np.testing.assert_array_equal(np.asarray(g), np.zeros(4, np.float32))


def test_second_order_and_jit_of_grad():
    f = jax.jit(jax.grad(lambda v: jnp.sum(F.quantize(v, "e5m2") ** 2)))
    x = jnp.array([1.1, -2.3], jnp.float32)
    np.testing.assert_array_equal(np.asarray(f(x)), 2 * np.asarray(F.quantize(x, "e5m2")))


# ---------------------------------------------------------------------------------------------
# Carrier rule and argument errors


@pytest.mark.parametrize("fmt", ["e11m20", "e5m20", "fp64", "e8m11", "fixed8.8"])
def test_formats_wider_than_float32_refuse_a_float32_carrier(fmt):
    with pytest.raises(ValueError) as err:
        F.quantize(jnp.ones(3, jnp.float32), fmt)
    assert str(F.parse(fmt)) in str(err.value) and "float64" in str(err.value)


def test_formats_wider_than_float64_are_refused():
    with jax.enable_x64(True), pytest.raises(ValueError, match="e11m30"):
        F.quantize(jnp.ones(3, jnp.float64), "e11m30")


def test_float64_numpy_input_without_x64_is_refused():
    assert not jax.config.jax_enable_x64
    with pytest.raises(ValueError, match="double rounding"):
        F.quantize(np.ones(3, np.float64), "bf16")
    # Python scalars follow JAX's weak typing (documented) and float32 NumPy arrays are fine.
    assert float(F.quantize(1.0, "bf16")) == 1.0
    assert F.quantize(np.ones(3, np.float32), "bf16").dtype == jnp.float32


def test_fp32_on_float64_carrier_is_allowed_and_rounds():
    with jax.enable_x64(True):
        x = jnp.asarray(np.array([1 + 2.0**-30, 1e-40, 1e39], np.float64))
        np.testing.assert_array_equal(
            np.asarray(F.quantize(x, "fp32")), np.array([1.0, np.float32(1e-40), np.inf])
        )


@pytest.mark.parametrize("dtype", [jnp.int32, jnp.bfloat16, jnp.float16, bool])
def test_non_carrier_dtypes_are_refused(dtype):
    with pytest.raises(ValueError, match="float32 or float64"):
        F.quantize(jnp.ones(3, dtype), "e4m3")


def test_argument_errors_name_the_bad_value():
    x = jnp.ones(3)
    with pytest.raises(ValueError, match="unknown rounding mode 'up'"):
        F.quantize(x, "bf16", "up")
    with pytest.raises(ValueError, match="needs a jax.random key.*key=None"):
        F.quantize(x, "bf16", "stochastic")
    with pytest.raises(ValueError, match="unknown number format 'bf17'"):
        F.quantize(x, "bf17")
    with pytest.raises(ValueError, match="exponent_bits must be >= 1, got 0"):
        F.quantize(x, "e0m2")
    with pytest.raises(ValueError, match="mantissa_bits must be >= 0, got -1"):
        F.quantize(x, "e5m-1")


def test_key_is_ignored_by_deterministic_modes():
    x = jnp.linspace(-5, 5, 17)
    np.testing.assert_array_equal(
        np.asarray(F.quantize(x, "e4m3", key=jax.random.key(0))), np.asarray(F.quantize(x, "e4m3"))
    )
