"""The float64 runtime-width rounding (`RuntimeMantissa64`) against `formats.quantize`, bit for
bit, for every width it supports (0..51): normal values, e8mM subnormals, values that underflow,
overflow, infinities and NaNs; and against an exact Fraction reference on a sample."""

from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from arith_precision import formats
from arith_precision.simulate.runtime_format import (
    MAX_RUNTIME_BITS_64,
    RuntimeMantissa,
    RuntimeMantissa64,
    round_runtime,
    with_mantissa_bits,
)


def _values64():
    rng = np.random.default_rng(1)
    x = rng.standard_normal(6000) * np.exp2(rng.integers(-190, 140, 6000).astype(np.float64))
    # e8mM's normal/subnormal boundary and its smallest subnormals, ties, near overflow, float64
    # subnormals, and values beyond float32's range.
    edges = [2.0**-126, 2.0**-126 * (1 - 2.0**-30), 2.0**-149, 2.0**-150, 3 * 2.0**-151,
             2.0**-175, 2.0**-178, 2.0**-200, 5e-324, 1e-310, 1.0, 1.5, 1.25, 1.75, 2.5, 3.0,
             1 + 2.0**-25, 1 + 3 * 2.0**-26, 2.0**127 * (2 - 2.0**-30), 2.0**128 * (1 - 2.0**-60),
             3.4028235677973366e38, 2.0**128, 1e300, np.finfo(np.float64).max]
    special = [0.0, -0.0, np.inf, -np.inf, np.nan, -np.nan]
    return np.concatenate([x, edges, [-v for v in edges], special]).astype(np.float64)


@pytest.fixture(scope="module")
def rounded_by_width():
    x = _values64()
    with jax.enable_x64(True):
        f = jax.jit(lambda v, b: with_mantissa_bits(b, round_runtime, v, RuntimeMantissa64(slot=1)))
        got = {m: np.asarray(f(jnp.asarray(x), jnp.array([0, m], jnp.int32)))
               for m in range(MAX_RUNTIME_BITS_64 + 1)}  # one compiled program for every width
        want = {m: np.asarray(formats.quantize(jnp.asarray(x), f"e8m{m}", values_only=True))
                for m in range(MAX_RUNTIME_BITS_64 + 1)}
    return x, got, want


@pytest.mark.parametrize("m", range(MAX_RUNTIME_BITS_64 + 1))
def test_float64_runtime_rounding_is_quantize_bit_for_bit(rounded_by_width, m):
    _, got, want = rounded_by_width
    assert got[m].dtype == np.float64
    np.testing.assert_array_equal(got[m].view(np.uint64), want[m].view(np.uint64))


def _exact_e8m(v: float, m: int) -> float:
    """Round v to e8mM exactly with Fractions: nearest, ties to the even multiple of the quantum;
    beyond the largest finite value (half a quantum past it, or more) infinity."""
    if v != v:
        return v
    if v in (0.0, np.inf, -np.inf):
        return v
    a = abs(Fraction(v))
    e = max(-126, a.numerator.bit_length() - a.denominator.bit_length()
            - (1 if Fraction(2) ** (a.numerator.bit_length() - a.denominator.bit_length()) > a
               else 0))
    quantum = Fraction(2) ** (e - m)
    q, r = divmod(a, quantum)
    if r > quantum / 2 or (r == quantum / 2 and q % 2 == 1):
        q += 1
    out = q * quantum
    if out >= Fraction(2) ** 128:
        return float(np.copysign(np.inf, v))
    return float(np.copysign(float(out), v))


@pytest.mark.parametrize("m", [0, 1, 3, 7, 10, 11, 17, 24, 51])
def test_float64_runtime_rounding_is_the_exact_rounding(rounded_by_width, m):
    x, got, _ = rounded_by_width
    for i in range(0, len(x), 7):  # a seventh of the values, and every edge and special value
        want = _exact_e8m(float(x[i]), m)
        assert (np.isnan(got[m][i]) and np.isnan(want)) or got[m][i] == want, (x[i], m)
    for i in range(6000, len(x)):
        want = _exact_e8m(float(x[i]), m)
        assert (np.isnan(got[m][i]) and np.isnan(want)) or got[m][i] == want, (x[i], m)
        assert np.signbit(got[m][i]) == np.signbit(x[i]), (x[i], m)


def test_carriers_are_checked():
    x64 = np.array([1.3, -2.5e-40, 7.0])
    with jax.enable_x64(True):
        with pytest.raises(ValueError, match="float64 carriers only"):
            with_mantissa_bits(jnp.array([3]), round_runtime, jnp.asarray(x64, jnp.float32),
                               RuntimeMantissa64())
        with pytest.raises(ValueError, match="float32 carriers only"):
            with_mantissa_bits(jnp.array([3]), round_runtime, jnp.asarray(x64), RuntimeMantissa())
    assert RuntimeMantissa64() != RuntimeMantissa()
    assert (RuntimeMantissa64().mantissa_bits, formats.carrier_dtype(RuntimeMantissa64())) == (
        24, np.float64)
    with pytest.raises(ValueError, match="slot"):
        RuntimeMantissa64(slot=-1)


def test_float64_runtime_rounding_gradient_is_straight_through():
    with jax.enable_x64(True):
        g = jax.grad(lambda v: with_mantissa_bits(
            jnp.array([2]), round_runtime, v, RuntimeMantissa64()).sum())(jnp.array([1.3, 7.1]))
    np.testing.assert_array_equal(np.asarray(g), [1.0, 1.0])
