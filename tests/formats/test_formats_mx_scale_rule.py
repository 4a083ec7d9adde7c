"""MX shared-scale rules (`scale_rule` = floor | ceil | even), bit for bit.

Each rule has a Fraction reference for the scale exponent, written from its definition in
`mx.py`; gfloat 0.5.2's `quantize_block` (which takes the scale as a callable, and has only the
OCP floor rule built in) then rounds and saturates the elements, and `quantize_mx` must give the
same bits. The floor reference is itself checked against gfloat's `compute_scale_amax`.
"""

from __future__ import annotations

import math
from fractions import Fraction

import gfloat
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from arith_precision import formats
from arith_precision.formats import mx
from arith_precision.simulate import Policy, simulate
from tests.formats.test_formats_exact import floor_log2
from tests.formats.test_formats_mx import MX, make_blocks
from tests.gfloat_modes import MODES


def ref_scale_exponent(amax: Fraction, bf: mx.BlockFormat, rule: str) -> int:
    """s from the definitions: floor(log2 amax) - emax_elem; the least s with
    amax <= max_elem * 2^s; floor(log2 of amax rounded half up to M_elem fraction bits) -
    emax_elem. Clipped to [-127, 127]; -127 for an all-zero block."""
    if amax == 0:
        return -127
    top = Fraction(bf.element.max_exact)
    e = floor_log2(amax)
    if rule == "floor":
        s = e - bf.emax_element
    elif rule == "ceil":
        s = e - bf.emax_element - 2
        while amax > top * Fraction(2) ** s:
            s += 1
    else:
        m = bf.element_fraction_bits
        scaled = amax / Fraction(2) ** e * 2**m  # in [2^m, 2^(m+1))
        rounded = math.floor(scaled + Fraction(1, 2))  # half up
        s = e + (1 if rounded >= 2 ** (m + 1) else 0) - bf.emax_element
    return max(-127, min(127, s))


def _compute_scale(name: str, rule: str):
    bf = mx.BLOCK_FORMATS[name]

    def compute(emax, vals):
        assert emax == bf.emax_element
        amax = max(abs(Fraction(float(v))) for v in vals)
        return float(Fraction(2) ** ref_scale_exponent(amax, bf, rule))

    return compute


def _bits(a):
    return np.asarray(a, np.float32).view(np.uint32)


def blocks_for_rules(seed=0):
    """make_blocks plus blocks whose maxima sit at, just below and just above every rule's
    thresholds: max_elem * 2^k, (2 - 2^-(M+1)) * 2^k, 2^k, and their float32 neighbours."""
    x = make_blocks(seed=seed)
    rng = np.random.default_rng(seed)
    rows = []
    for name in MX:
        bf = mx.BLOCK_FORMATS[name]
        m = bf.element_fraction_bits
        for k in (-140, -20, 0, 3, 100):
            for t in (float(bf.element.max_exact) / 2**bf.emax_element, 2 - 2.0 ** -(m + 1), 1.0):
                v = np.float32(t * 2.0**k)
                for top in (v, np.nextafter(v, np.float32(0)), np.nextafter(v, np.float32(9e9))):
                    if not np.isfinite(top) or top == 0:
                        continue
                    row = (rng.uniform(-1, 1, 32) * top).astype(np.float32)
                    row[rng.integers(32)] = top * rng.choice([-1, 1])
                    rows.append(row)
    return np.concatenate([x, np.stack(rows).astype(np.float32)])


def test_floor_reference_is_gfloats_amax_rule():
    x = blocks_for_rules()
    for name, fi in MX.items():
        bf = mx.BLOCK_FORMATS[name]
        for blk in x.reshape(-1, 32)[::7]:
            amax = max(abs(Fraction(float(v))) for v in blk)
            want = gfloat.compute_scale_amax(fi.etype.emax, blk.astype(np.float64))
            assert Fraction(2) ** ref_scale_exponent(amax, bf, "floor") == Fraction(want)


GFLOAT_CASES = [
    pytest.param(name, rule, mode, marks=() if mode == "nearest_even" or name == "mxfp4_e2m1"
                 else pytest.mark.slow)
    for name in MX for rule in formats.MX_SCALE_RULES
    for mode in ("nearest_even", "toward_zero", "to_odd")]


@pytest.mark.parametrize("name,rule,mode", GFLOAT_CASES)
def test_scale_rules_match_gfloat_quantize_block(name, rule, mode):
    x = blocks_for_rules()
    got = np.asarray(formats.quantize_mx(jnp.asarray(x), name, rounding=mode, scale_rule=rule))
    packed = formats.pack_mx(jnp.asarray(x), name, rounding=mode, scale_rule=rule)
    np.testing.assert_array_equal(_bits(formats.dequantize_mx(packed)), _bits(got))
    bf = mx.BLOCK_FORMATS[name]
    scales = np.asarray(packed.scales).astype(int).ravel() - 127
    want_s = [ref_scale_exponent(max(abs(Fraction(float(v))) for v in blk), bf, rule)
              for blk in x.reshape(-1, 32)]
    np.testing.assert_array_equal(scales, want_s)
    if mode == "to_odd":
        return  # gfloat 0.5.2 has no ToOdd; test_formats_to_odd covers the elements
    fi = MX[name]
    compute = _compute_scale(name, rule)
    want = np.stack([gfloat.quantize_block(fi, b.astype(np.float64), compute, MODES[mode])
                     for b in x.reshape(-1, 32)]).reshape(x.shape).astype(np.float32)
    bad = _bits(got) != _bits(want)
    assert not bad.any(), (name, rule, mode, x[bad][:4], got[bad][:4], want[bad][:4])


@pytest.mark.parametrize("name", list(MX))
def test_rules_are_ordered_and_ceil_never_clips(name):
    """floor <= even <= ceil <= floor + 1, and under ceil every |x_i| / X <= max_elem."""
    x = blocks_for_rules(seed=1)
    s = {rule: np.asarray(formats.pack_mx(jnp.asarray(x), name, scale_rule=rule).scales)
         .astype(int) for rule in formats.MX_SCALE_RULES}
    assert (s["floor"] <= s["even"]).all() and (s["even"] <= s["ceil"]).all()
    assert (s["ceil"] <= s["floor"] + 1).all()
    assert (s["ceil"] > s["floor"]).any() and (s["even"] > s["floor"]).any()
    assert (s["ceil"] > s["even"]).any()
    bf = mx.BLOCK_FORMATS[name]
    amax = np.abs(x.reshape(-1, 32)).max(axis=1).astype(np.float64)
    ok = (s["ceil"].ravel() == 127 + 127) | (
        amax <= float(bf.element.max_exact) * np.exp2(s["ceil"].ravel() - 127.0))
    assert ok.all()


def test_hand_computed_e2m1_scales():
    """E2M1 (grid ..., 4, 6; emax 2, max 6 = 1.5 * 2^2, M = 1): a block maximum of
    6 -> floor 0, ceil 0, even 0; 6.5 -> 0, 1, 0 (6.5 saturates to 6 under floor and even);
    7 -> 0, 1, 1 (7 = 1.75 * 4 rounds half up to 2 * 4 at one fraction bit); 3.9 = 1.95 * 2 ->
    -1, 0, 0 (under floor 3.9 / 0.5 = 7.8 saturates to 6: 3.0)."""
    rows = np.zeros((4, 32), np.float32)
    rows[:, 0] = [6.0, 6.5, 7.0, 3.9]
    rows[:, 1] = 0.5
    want = {"floor": [0, 0, 0, -1], "ceil": [0, 1, 1, 0], "even": [0, 0, 1, 0]}
    for rule, s in want.items():
        packed = formats.pack_mx(jnp.asarray(rows), "mxfp4_e2m1", scale_rule=rule)
        np.testing.assert_array_equal(np.asarray(packed.scales).astype(int)[:, 0] - 127, s)
    floor = np.asarray(formats.quantize_mx(jnp.asarray(rows), "mxfp4_e2m1"))
    ceil = np.asarray(formats.quantize_mx(jnp.asarray(rows), "mxfp4_e2m1", scale_rule="ceil"))
    np.testing.assert_array_equal(floor[:, 0], [6.0, 6.0, 6.0, 3.0])
    np.testing.assert_array_equal(ceil[:, 0], [6.0, 6.0, 8.0, 4.0])
    np.testing.assert_array_equal(floor[:3, 1], [0.5, 0.5, 0.5])
    np.testing.assert_array_equal(ceil[1:3, 1], [0.0, 0.0])  # 0.5 / 2 = 0.25 ties to 0 (even)


def test_floor_is_the_default_bit_for_bit():
    x = jnp.asarray(blocks_for_rules(seed=2))
    for name in MX:
        np.testing.assert_array_equal(
            _bits(formats.quantize_mx(x, name)),
            _bits(formats.quantize_mx(x, name, scale_rule="floor")))


def test_nvfp4_and_unknown_rules_are_refused():
    x = jnp.ones((4, 32), jnp.float32)
    with pytest.raises(ValueError, match="scale_rule='ceil' does not apply to nvfp4"):
        formats.quantize_mx(x, "nvfp4", scale_rule="ceil")
    with pytest.raises(ValueError, match="scale_rule='even' does not apply to nvfp4"):
        formats.pack_mx(x, "nvfp4", scale_rule="even")
    formats.quantize_mx(x, "nvfp4", scale_rule="floor")
    with pytest.raises(ValueError, match=r"unknown scale_rule 'round'; expected one of "
                                         r"\('floor', 'ceil', 'even'\)"):
        formats.quantize_mx(x, "mxfp8_e4m3", scale_rule="round")
    with pytest.raises(ValueError, match="Policy.block_scale_rule: unknown scale_rule 'up'"):
        Policy("bf16", matmul_block="mxfp4_e2m1", block_scale_rule="up")
    with pytest.raises(ValueError, match="Policy.block_scale_rule: scale_rule='ceil' does not"):
        Policy("bf16", weight_block="nvfp4", block_scale_rule="ceil")


@pytest.mark.parametrize("field", ["matmul_block", "weight_block"])
def test_policy_block_scale_rule_reaches_the_contraction(field):
    rng = np.random.default_rng(3)
    a = jnp.asarray(rng.standard_normal((8, 64)).astype(np.float32) * 3)
    w = jnp.asarray(rng.standard_normal((64, 16)).astype(np.float32) * 3)
    outs = {}
    for rule in formats.MX_SCALE_RULES:
        policy = Policy("fp32", **{field: "mxfp4_e2m1"}, block_scale_rule=rule)
        out = simulate(lambda p, v: v @ p, policy, param_argnums=(0,))(w, a)
        qw = formats.quantize_mx(w.T, "mxfp4_e2m1", scale_rule=rule).T
        qa = a if field == "weight_block" else formats.quantize_mx(a, "mxfp4_e2m1",
                                                                   scale_rule=rule)
        want = jax.lax.dot(qa, qw, precision=jax.lax.Precision.HIGHEST)
        np.testing.assert_array_equal(np.asarray(out), np.asarray(want))
        outs[rule] = np.asarray(out)
    assert (outs["floor"] != outs["ceil"]).any() and (outs["floor"] != outs["even"]).any()
