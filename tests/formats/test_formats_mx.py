"""Block formats (OCP MX, NVFP4) against gfloat 0.5.2, bit for bit, and their edge cases."""

import gfloat
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from gfloat import RoundMode
from gfloat import formats as gf

from arith_precision import formats
from arith_precision.formats import mx
from tests.gfloat_modes import MODES

MX = {
    "mxfp8_e4m3": gf.format_info_mxfp8_e4m3,
    "mxfp8_e5m2": gf.format_info_mxfp8_e5m2,
    "mxfp6_e3m2": gf.format_info_mxfp6_e3m2,
    "mxfp6_e2m3": gf.format_info_mxfp6_e2m3,
    "mxfp4_e2m1": gf.format_info_mxfp4_e2m1,
    "mxint8": gf.format_info_mxint8,
}


def _bits(a):
    return np.asarray(a, np.float32).view(np.uint32)


def make_blocks(block: int = 32, seed: int = 0) -> np.ndarray:
    """Rows of blocks: random magnitudes over float32's range, partly zero blocks, one huge
    outlier, all-zero, subnormal blocks, and element midpoints / their float32 neighbours."""
    rng = np.random.default_rng(seed)
    rows = [rng.standard_normal((48, block)) * 2.0 ** rng.uniform(-140, 120, (48, 1))]
    part = rng.standard_normal((4, block))
    part[:, ::3] = 0.0
    part[1, :] = -0.0
    rows.append(part)
    outlier = rng.standard_normal((4, block)) * 1e-3
    outlier[:, 7] = [1e4, -3e30, 65504.0, 2.0**127]
    rows.append(outlier)
    rows.append(np.zeros((1, block)))
    rows.append(rng.integers(-2**23, 2**23, (4, block)) * 2.0**-149)  # float32 subnormals
    # Every midpoint of e2m1 / e2m3 / e4m3 grids at scale 1, with the block max pinned to 4 / 8.
    grid = np.unique(np.concatenate([np.arange(0, 8, 0.0625), np.arange(8, 512, 4.0)]))
    mids = np.concatenate([grid, (grid[:-1] + grid[1:]) / 2]).astype(np.float32)
    mids = np.concatenate([mids, np.nextafter(mids, np.float32(np.inf)),
                           np.nextafter(mids, np.float32(0))])
    mids = mids[: len(mids) // (block - 1) * (block - 1)].reshape(-1, block - 1)
    for top in (4.0, 7.9, 256.0):
        rows.append(np.concatenate([np.full((len(mids), 1), top), mids * (top / 8)], axis=1))
    x = np.concatenate(rows).astype(np.float32)
    signs = rng.choice([-1.0, 1.0], x.shape).astype(np.float32)
    return np.concatenate([x, x * signs])


def gfloat_mx(fi, x, mode):
    out = [gfloat.quantize_block(fi, b.astype(np.float64), gfloat.compute_scale_amax, MODES[mode])
           for b in x.reshape(-1, fi.k)]
    return np.stack(out).reshape(x.shape).astype(np.float32)


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("name", list(MX))
def test_mx_matches_gfloat_quantize_block(name, mode):
    x = make_blocks()
    got = np.asarray(formats.quantize_mx(jnp.asarray(x), name, rounding=mode))
    want = gfloat_mx(MX[name], x, mode)
    bad = _bits(got) != _bits(want)
    assert not bad.any(), (name, mode, x[bad][:4], got[bad][:4], want[bad][:4])
    # The packed form stores exactly this.
    packed = formats.pack_mx(jnp.asarray(x), name, rounding=mode)
    np.testing.assert_array_equal(_bits(formats.dequantize_mx(packed)), _bits(got))


@pytest.mark.parametrize("name", list(MX))
def test_mx_codes_match_gfloat_encode_block(name):
    fi = MX[name]
    x = make_blocks()[:64]
    packed = formats.pack_mx(jnp.asarray(x), name)
    codes = np.asarray(packed.codes).reshape(-1, fi.k)
    scales = np.asarray(packed.scales).reshape(-1)
    for i, b in enumerate(x.reshape(-1, fi.k).astype(np.float64)):
        scale = gfloat.compute_scale_amax(fi.etype.emax, b)
        want = list(gfloat.encode_block(fi, scale, b / scale))
        got = [int(scales[i])] + [int(c) for c in codes[i]]
        if fi.etype.is_twos_complement or not fi.etype.has_nz:
            assert got == want, (name, i)
        else:  # gfloat encodes -0 as +0's code when the value rounds to zero; compare values
            dec = np.array(list(gfloat.decode_block(fi, got)))
            np.testing.assert_array_equal(dec, np.array(list(gfloat.decode_block(fi, want))))
            assert got[0] == want[0]


def nvfp4_reference(x: np.ndarray, mode: str) -> np.ndarray:
    """NVFP4 as mx.py's docstring states it, replayed in NumPy float32 with gfloat rounding."""
    f32 = np.float32
    fin = np.isfinite(x)
    ax = np.where(fin, np.abs(x), f32(0))
    amax_t = ax.max()
    g = f32(amax_t / f32(2688.0)) if amax_t > 0 else f32(1.0)
    blocks = x.reshape(-1, 16)
    out = np.empty_like(blocks)
    for i, blk in enumerate(blocks):
        if not np.isfinite(blk).all():
            out[i] = np.nan
            continue
        amax_b = np.abs(blk).max()
        pre = f32(f32(amax_b / f32(6.0)) / g)
        b = f32(gfloat.round_float(gf.format_info_ocp_e4m3, float(pre), RoundMode.TiesToEven,
                                   sat=True))
        S = f32(b * g)
        if S == 0:
            out[i] = np.copysign(f32(0), blk)
            continue
        y = (blk / S).astype(f32)
        q = gfloat.round_ndarray(gf.format_info_ocp_e2m1, y.astype(np.float64), MODES[mode],
                                 sat=True).astype(f32)
        out[i] = S * q
    return out.reshape(x.shape)


@pytest.mark.parametrize("mode", list(MODES))
def test_nvfp4_matches_reference(mode):
    x = make_blocks(block=16)
    x = x[np.abs(x).max(axis=1) > 2.0**-90]  # the documented float32 normal-range assumption
    got = np.asarray(formats.quantize_mx(jnp.asarray(x), "nvfp4", rounding=mode))
    want = nvfp4_reference(x, mode)
    bad = _bits(got) != _bits(want)
    assert not bad.any(), (mode, x[bad][:4], got[bad][:4], want[bad][:4])
    packed = formats.pack_mx(jnp.asarray(x), "nvfp4", rounding=mode)
    np.testing.assert_array_equal(_bits(formats.dequantize_mx(packed)), _bits(got))
    assert packed.storage_bits == x.size * 4 + x.size // 16 * 8 + 32


def test_nvfp4_hand_computed():
    """amax_tensor = 2688 makes g = 1; a block with max 6 has scale 1: 5 and -1.25 are ties and go
    to the even neighbours 4 and -1, 0.25 to 0; a block with max 3 has scale 0.5: 2.5 / 0.5 = 5
    ties to 4 (-> 2.0), 0.7 / 0.5 = 1.4 rounds to 1.5 (-> 0.75)."""
    x = np.zeros((2, 16), np.float32)
    x[0, :4] = [2688.0, 0, 0, 0]
    x[1, :5] = [6.0, 5.0, -1.25, 0.25, -0.0]
    y = np.zeros((1, 16), np.float32)
    y[0, :3] = [3.0, 2.5, 0.7]
    got = np.asarray(formats.quantize_mx(jnp.asarray(np.concatenate([x, y])), "nvfp4"))
    assert got[0, 0] == 2688.0
    np.testing.assert_array_equal(got[1, :5], [6.0, 4.0, -1.0, 0.0, -0.0])
    assert np.signbit(got[1, 4])
    np.testing.assert_array_equal(got[2, :3], [3.0, 2.0, 0.75])


@pytest.mark.parametrize("name", list(mx.BLOCK_FORMATS))
def test_nan_and_inf_poison_only_their_block(name):
    bs = mx.BLOCK_FORMATS[name].block_size
    x = np.ones((4, bs), np.float32)
    x[1, 3], x[2, 0] = np.nan, -np.inf
    got = np.asarray(formats.quantize_mx(jnp.asarray(x), name))
    assert np.isnan(got[1:3]).all()
    assert (got[[0, 3]] == 1.0).all()
    packed = formats.pack_mx(jnp.asarray(x), name)
    assert np.isnan(np.asarray(formats.dequantize_mx(packed))[1:3]).all()


def test_zero_block_and_outlier_block():
    x = np.zeros((2, 32), np.float32)
    x[1, 0], x[1, 1:] = 1e6, 1.0
    got = np.asarray(formats.quantize_mx(jnp.asarray(x), "mxfp4_e2m1"))
    assert (got[0] == 0).all() and not np.signbit(got[0]).any()
    # scale 2^(19 - 2): 1e6 -> 6 * 2^17 = 786432 (saturated); 1.0 underflows to zero
    assert got[1, 0] == 786432.0 and (got[1, 1:] == 0).all()
    assert int(np.asarray(formats.pack_mx(jnp.asarray(x), "mxfp4_e2m1").scales)[1, 0]) == 127 + 17


def test_axis_jit_and_gradient():
    x = jax.random.normal(jax.random.key(0), (64, 96), jnp.float32)
    a = formats.quantize_mx(x, "mxfp8_e4m3", axis=0)
    b = formats.quantize_mx(x.T, "mxfp8_e4m3", axis=-1).T
    np.testing.assert_array_equal(_bits(a), _bits(b))
    f = jax.jit(lambda v: formats.quantize_mx(v, "nvfp4"))
    np.testing.assert_array_equal(_bits(f(x)), _bits(formats.quantize_mx(x, "nvfp4")))
    v = jax.vmap(lambda row: formats.quantize_mx(row, "mxfp6_e3m2"))(x)  # row = its own tensor
    np.testing.assert_array_equal(_bits(v), _bits(formats.quantize_mx(x, "mxfp6_e3m2")))
    g = jax.grad(lambda v: jnp.sum(formats.quantize_mx(v, "mxfp4_e2m1") * 3.0))(x)
    np.testing.assert_array_equal(np.asarray(g), 3.0)
    k = jax.random.key(1)
    s1 = formats.quantize_mx(x, "mxfp4_e2m1", rounding="stochastic", key=k)
    s2 = formats.quantize_mx(x, "mxfp4_e2m1", rounding="stochastic", key=k)
    np.testing.assert_array_equal(_bits(s1), _bits(s2))
    lo = formats.quantize_mx(x, "mxfp4_e2m1", rounding="toward_negative")
    hi = formats.quantize_mx(x, "mxfp4_e2m1", rounding="toward_positive")
    assert bool(jnp.all((s1 == lo) | (s1 == hi))) and bool(jnp.any(s1 != lo))


def test_errors_name_the_problem():
    x = jnp.ones((4, 30), jnp.float32)
    with pytest.raises(ValueError, match="length 30, not a multiple of the block size 32"):
        formats.quantize_mx(x, "mxfp4_e2m1")
    with pytest.raises(ValueError, match="not a multiple of the block size 16 of nvfp4"):
        formats.quantize_mx(jnp.ones((4, 24), jnp.float32), "nvfp4")
    with pytest.raises(ValueError, match="unknown block format 'mxfp5'"):
        formats.quantize_mx(jnp.ones((32,), jnp.float32), "mxfp5")
    with pytest.raises(ValueError, match="float32"):
        formats.quantize_mx(jnp.ones((32,), jnp.int32), "mxint8")
    with pytest.raises(ValueError, match="unknown rounding mode"):
        formats.quantize_mx(jnp.ones((32,), jnp.float32), "mxint8", rounding="up")
