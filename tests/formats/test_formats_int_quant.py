"""Integer (int8 / int4, per-tensor / per-channel / grouped) and NF4 weight quantization."""

from __future__ import annotations

import statistics

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from arith_precision import formats as F

W = jax.random.normal(jax.random.key(0), (64, 48), jnp.float32) * jnp.linspace(0.1, 3.0, 48)

LAYOUTS = [
    dict(axis=None, group_size=None),  # per-tensor
    dict(axis=0, group_size=None),  # per-output-channel of an (in, out) weight
    dict(axis=1, group_size=None),
    dict(axis=(0, 1), group_size=None),  # same as per-tensor, via axes
    dict(axis=0, group_size=16),  # groups of 16 inputs, per output channel
    dict(axis=1, group_size=8),
    dict(axis=-1, group_size=48),
]


def _scale_per_element(q, shape):
    """Each element's scale, broadcast to the weight's shape."""
    if q.group_size is None:
        return np.broadcast_to(np.asarray(q.scales), shape)
    return np.repeat(np.asarray(q.scales), q.group_size, axis=q.axis[0])


@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("layout", LAYOUTS, ids=str)
def test_int_codes_in_range_and_error_at_most_half_a_step(bits, layout):
    q = F.quantize_int(W, bits=bits, **layout)
    qmax = 2 ** (bits - 1) - 1
    codes = np.asarray(q.codes)
    assert q.codes.dtype == jnp.int8 and codes.shape == W.shape
    assert codes.min() >= -qmax and codes.max() <= qmax
    assert codes.max() == qmax or codes.min() == -qmax  # the scale is set by the absmax
    w = np.asarray(W, np.float64)
    scale = _scale_per_element(q, W.shape).astype(np.float64)
    err = np.abs(w - np.asarray(F.dequantize(q), np.float64))
    # |w - c s| <= s/2 exactly; the float32 division w/s and product c*s add at most
    # s * qmax * u each (u = 2^-24), see int_quant's docstring.
    assert np.all(err <= scale * (0.5 + 2 * qmax * 2.0**-24))
    # Codes are the nearest integers to w / s (computed here in float64).
    np.testing.assert_array_less(np.abs(w / scale - codes), 0.5 + 1e-5)


def test_scale_shapes():
    assert F.quantize_int(W).scales.shape == (1, 1)
    assert F.quantize_int(W, axis=0).scales.shape == (1, 48)
    assert F.quantize_int(W, axis=1, group_size=8).scales.shape == (64, 6)
    assert F.quantize_int(W, axis=0, group_size=16).scales.shape == (4, 48)
    q = F.quantize_int(W, axis=0)
    np.testing.assert_allclose(
        np.asarray(q.scales)[0], np.abs(np.asarray(W)).max(axis=0) / 127, rtol=1e-7
    )


@pytest.mark.parametrize("bits", [8, 4, 2])
@pytest.mark.parametrize("layout", LAYOUTS[:2] + LAYOUTS[4:5], ids=str)
def test_representable_weights_round_trip_exactly(bits, layout):
    qmax = 2 ** (bits - 1) - 1
    rng = np.random.default_rng(bits)
    codes = rng.integers(-qmax, qmax + 1, size=(32, 12))
    codes[0, :] = qmax  # every channel / group reaches the absmax
    codes[16, :] = -qmax
    # Powers of two, so that c * s is exact: one per column (constant over each group that
    # shares a scale: the whole tensor for per-tensor, a column or a 16-row block of it else).
    scale = 2.0 ** rng.integers(-6, 6, size=(1, 12) if layout["axis"] is not None else (1, 1))
    w = jnp.asarray(codes * scale, jnp.float32)
    q = F.quantize_int(w, bits=bits, **layout)
    np.testing.assert_array_equal(np.asarray(F.dequantize(q)), np.asarray(w))
    if layout["axis"] is not None:
        np.testing.assert_array_equal(np.asarray(q.codes), codes)


def test_zero_groups_and_jit_pytree():
    w = jnp.zeros((4, 8)).at[0, :4].set(1.0)
    q = F.quantize_int(w, bits=4, axis=1, group_size=4)
    np.testing.assert_array_equal(np.asarray(F.dequantize(q)), np.asarray(w))
    leaves = jax.tree_util.tree_leaves(q)
    assert len(leaves) == 2
    jitted = jax.jit(F.dequantize)(q)  # crosses a jit boundary as a pytree
    np.testing.assert_array_equal(np.asarray(jitted), np.asarray(w))
    q2 = jax.jit(lambda v: F.quantize_int(v, bits=8, axis=0))(W)
    assert isinstance(q2, F.IntQuantized) and q2.axis == (0,)
    np.testing.assert_array_equal(np.asarray(q2.codes), np.asarray(F.quantize_int(W, axis=0).codes))


def test_int_quant_errors_name_the_bad_value():
    with pytest.raises(ValueError, match="bits must be >= 2, got 1"):
        F.quantize_int(W, bits=1)
    with pytest.raises(ValueError, match="bits must be <= 8, got 16"):
        F.quantize_int(W, bits=16)
    with pytest.raises(ValueError, match="group_size 10 does not divide the length 64 of axis 0"):
        F.quantize_int(W, axis=0, group_size=10)
    with pytest.raises(ValueError, match="group_size must be >= 1, got 0"):
        F.quantize_int(W, axis=0, group_size=0)
    with pytest.raises(ValueError, match="single int axis.*axis=None"):
        F.quantize_int(W, group_size=8)
    with pytest.raises(ValueError, match="axis 2 is out of range"):
        F.quantize_int(W, axis=2)
    with pytest.raises(ValueError, match="floating weight, got dtype int32"):
        F.quantize_int(jnp.ones((4,), jnp.int32))
    with pytest.raises(ValueError, match="IntQuantized or NF4Quantized, got ndarray"):
        F.dequantize(np.ones(3))


# ---------------------------------------------------------------------------------------------
# NF4

PUBLISHED_NF4 = [  # QLoRA (Dettmers et al. 2023), Appendix E / bitsandbytes get_4bit_type("nf4")
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
    -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
    0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
    0.7229568362236023, 1.0,
]  # fmt: skip


def test_nf4_levels_are_the_published_table():
    np.testing.assert_array_equal(F.NF4_LEVELS, np.array(PUBLISHED_NF4))


def test_nf4_levels_follow_from_the_normal_quantile_construction():
    """bitsandbytes' create_normal_map: Phi^-1 at linspace(offset, 1/2, 9)[:-1] (positive) and
    linspace(offset, 1/2, 8)[:-1] (negative), plus 0, normalised by the maximum. bitsandbytes
    evaluates the linspace in float32, hence the 1e-6 agreement rather than exact."""
    offset = 0.9677083
    phi_inv = statistics.NormalDist().inv_cdf
    pos = [phi_inv(offset + (0.5 - offset) * i / 8) for i in range(8)]
    neg = [-phi_inv(offset + (0.5 - offset) * i / 7) for i in range(7)]
    levels = np.sort(np.array(pos + [0.0] + neg))
    levels /= levels.max()
    np.testing.assert_allclose(F.NF4_LEVELS, levels, atol=1e-6, rtol=0)


def test_nf4_codes_are_the_nearest_levels():
    q = F.quantize_nf4(W, block_size=16, axis=1)
    codes = np.asarray(q.codes)
    assert q.codes.dtype == jnp.int8 and codes.min() >= 0 and codes.max() <= 15
    assert q.absmax.shape == (64, 3)
    absmax = np.repeat(np.asarray(q.absmax, np.float64), 16, axis=1)
    v = np.asarray(W, np.float64) / absmax
    dist = np.abs(v[..., None] - F.NF4_LEVELS)  # distance to every level
    chosen = np.take_along_axis(dist, codes[..., None].astype(np.int64), -1)[..., 0]
    assert np.all(chosen <= dist.min(-1) + 1e-6)  # nearest, up to float32 rounding of w / absmax
    deq = np.asarray(F.dequantize(q), np.float64)
    np.testing.assert_allclose(deq, F.NF4_LEVELS[codes] * absmax, rtol=1e-6)
    # Each block's absmax element is reproduced exactly (level +-1).
    np.testing.assert_array_equal(np.abs(deq).reshape(64, 3, 16).max(-1), np.asarray(q.absmax))


def test_nf4_representables_round_trip():
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 16, size=(8, 64))
    codes[:, 0] = 15  # level 1.0: the absmax of every block
    scale = 2.0 ** rng.integers(-3, 4, size=(8, 1))
    w = jnp.asarray(F.NF4_LEVELS[codes] * scale, jnp.float32)
    q = F.quantize_nf4(w, block_size=64)
    np.testing.assert_array_equal(np.asarray(q.codes), codes)
    np.testing.assert_array_equal(np.asarray(F.dequantize(q)), np.asarray(w))


def test_nf4_pytree_and_errors():
    q = jax.jit(lambda v: F.quantize_nf4(v, block_size=8, axis=0))(W)
    assert isinstance(q, F.NF4Quantized) and q.axis == 0 and q.absmax.shape == (8, 48)
    np.testing.assert_array_equal(np.asarray(jax.jit(F.dequantize)(q)), np.asarray(F.dequantize(q)))
    with pytest.raises(ValueError, match="block_size 10 does not divide the length 48 of axis 1"):
        F.quantize_nf4(W, block_size=10)
    with pytest.raises(ValueError, match="block_size must be >= 1, got 0"):
        F.quantize_nf4(W, block_size=0)
    with pytest.raises(ValueError, match="axis 3 is out of range"):
        F.quantize_nf4(W, axis=3)
