"""`accumulation="tensor_core:<gpu>"`: the tensor-core models, bit for bit.

Three references:
  * the GPUs themselves: the hardware outputs published with the models (`model_validation/` of
    github.com/north-numerical-computing/MATLAB-tensor-core, BSD-2) for every modelled GPU and
    input format. They are not redistributed here: the `slow` test reads them from an npz named
    by ARITH_PRECISION_TENSOR_CORE_VECTORS (layout in docs/hardware_numerics.md) and skips,
    saying so, without it;
  * a Fraction reference written here from the model's definition (`tensor_core_models.py`
    docstring), on adversarial inputs: wide exponent spreads, cancellation, subnormal inputs and
    results, several blocks with a ragged last one, a nonzero starting accumulator, special
    values, overflow;
  * hand-derived cases (truncation instead of rounding, the 13-bit H100 fp8 accumulator, the
    alignment floor, +0 results).
"""

from __future__ import annotations

import math
import os
from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from arith_precision import formats
from arith_precision.simulate import (
    ACCUMULATION_FORMS,
    Policy,
    RegionPolicy,
    is_accumulation,
    simulate,
)
from arith_precision.simulate import tensor_core_models as tcm

VECTORS_ENV = "ARITH_PRECISION_TENSOR_CORE_VECTORS"
COMPUTE = {"fp16": "fp16", "bf16": "bf16", "tf32": "tf32", "e4m3": "e4m3fn", "e5m2": "e5m2"}
_inner = jax.jit(tcm.inner_products, static_argnums=(2,))


def model_d(a_rows, b_rows, c, model):
    """D for each row: a_rows, b_rows (n, K), c (n,) float32 -> (n,) float32."""
    a = jnp.asarray(np.asarray(a_rows, np.float32).T[:, :, None])
    b = jnp.asarray(np.asarray(b_rows, np.float32).T[:, :, None])
    return np.asarray(_inner(a, b, model, jnp.asarray(np.asarray(c, np.float32)[:, None, None])))[
        :, 0, 0]


def _same_bits(x, y):
    x, y = np.asarray(x, np.float32), np.asarray(y, np.float32)
    return (x.view(np.uint32) == y.view(np.uint32)) | (np.isnan(x) & np.isnan(y))


# ---- the hardware --------------------------------------------------------------------------------
def _vectors():
    path = os.environ.get(VECTORS_ENV)
    if not path:
        pytest.skip(f"the published hardware outputs are not redistributed here: set {VECTORS_ENV} "
                    "to an npz built from them (docs/hardware_numerics.md)")
    return np.load(path)


@pytest.mark.slow
def test_every_model_has_hardware_vectors():
    data = _vectors()
    assert {f"{g}_{n}" for g, n in tcm.MODELS} == {k[:-2] for k in data.files}


@pytest.mark.slow
@pytest.mark.parametrize("gpu,name", list(tcm.MODELS), ids=lambda v: str(v))
def test_matches_published_hardware_outputs(gpu, name):
    data = _vectors()
    key = f"{gpu}_{name}"
    a, b = data[key + "_a"].view(np.float32), data[key + "_b"].view(np.float32)
    c, d = data[key + "_c"].view(np.float32), data[key + "_d"].view(np.float32)
    assert len(d) >= 149
    model = tcm.MODELS[(gpu, name)]
    got = model_d(a, b, c, model)
    bad = ~_same_bits(got, d)
    assert not bad.any(), (gpu, name, np.flatnonzero(bad)[:5], got[bad][:5], d[bad][:5])
    # The values are the input format's (the GPU received them as such).
    fmt = COMPUTE[name]
    np.testing.assert_array_equal(np.asarray(formats.quantize(jnp.asarray(a), fmt)), a)


# ---- a Fraction reference ------------------------------------------------------------------------
def _flog2(a: Fraction) -> int:
    e = a.numerator.bit_length() - a.denominator.bit_length()
    return e if Fraction(2) ** e <= a else e - 1


def _trunc_e8m(v: Fraction, mantissa: int) -> Fraction:
    if v == 0:
        return Fraction(0)
    q = Fraction(2) ** (max(_flog2(abs(v)), -126) - mantissa)
    r = math.floor(abs(v) / q) * q
    return r if v > 0 else -r


def reference(a, b, c, model) -> float:
    """The model of `tensor_core_models.py`'s docstring, step by step, in Fractions."""
    specials = []
    for x, y in zip(a, b, strict=True):
        if math.isnan(x) or math.isnan(y) or (math.isinf(x) and y == 0) or (
                math.isinf(y) and x == 0):
            specials.append(math.nan)
        elif math.isinf(x) or math.isinf(y):
            specials.append(math.copysign(math.inf, x) * math.copysign(1.0, y))
    if not math.isfinite(c):
        specials.append(c)
    if specials:
        if any(math.isnan(s) for s in specials) or {math.inf, -math.inf} <= set(specials):
            return math.nan
        return specials[0]
    emin = 1 - model.input_format.bias
    f_bits = model.acc_mantissa + model.extra_bits
    acc = Fraction(c)
    for start in range(0, len(a), model.block):
        terms = []
        for x, y in zip(a[start:start + model.block], b[start:start + model.block], strict=True):
            if x == 0 or y == 0:
                continue
            fx, fy = Fraction(x), Fraction(y)
            terms.append((fx * fy, max(_flog2(abs(fx)), emin) + max(_flog2(abs(fy)), emin)))
        if acc != 0:
            terms.append((acc, max(_flog2(abs(acc)), -126)))
        if not terms:
            acc = Fraction(0)
            continue
        e_max = max(e for _, e in terms)
        if model.min_exp is not None:
            e_max = max(e_max, model.min_exp)
        u = Fraction(2) ** (e_max - f_bits)
        total = sum((1 if t > 0 else -1) * math.floor(abs(t) / u) for t, _ in terms)
        acc = _trunc_e8m(total * u, model.acc_mantissa)
        if abs(acc) >= Fraction(2) ** 128:
            return math.copysign(math.inf, acc)  # an infinite accumulator stays infinite
    return float(acc)


def adversarial(model, n, k, seed):
    """Rows of k inputs of the model's format: normal values with exponents spread over a wide
    or narrow range, subnormals, zeros, exact cancellations, and (for bf16 / tf32) values near
    the top and bottom of the range; starting accumulators of all sizes and zeros."""
    rng = np.random.default_rng(seed)
    fmt = COMPUTE[model.input_name]
    top = math.log2(formats.parse(fmt).max_value)
    low = math.log2(formats.parse(fmt).min_positive)
    spread = rng.choice([2.0, 8.0, 30.0, top - low], size=(n, 1))
    centre = rng.uniform(low + 2, top - 2, size=(n, 1)) * rng.choice([0.0, 0.3, 1.0], (n, 1))
    expo = np.clip(centre + rng.uniform(-0.5, 0.5, (n, k)) * spread, low - 1, top)
    with np.errstate(over="ignore"):  # beyond float32: inf, saturated to max below
        x = (rng.choice([-1.0, 1.0], (n, k)) * np.exp2(expo) * rng.uniform(1, 2, (n, k))
             ).astype(np.float32)
    x = np.where(rng.random((n, k)) < 0.1, 0.0, x)
    with np.errstate(over="ignore"):
        y = (x[:, ::-1] * rng.uniform(0.5, 2, (n, k))).astype(np.float32)
    half = k // 2  # cancellation: the second half repeats the first with the sign flipped
    flip = rng.random(n) < 0.3
    x[flip, half:2 * half] = -x[flip, :half]
    y[flip, half:2 * half] = y[flip, :half]
    a = np.asarray(formats.quantize(jnp.asarray(x), fmt + "_sat"))
    b = np.asarray(formats.quantize(jnp.asarray(y), fmt + "_sat"))
    c = (rng.standard_normal(n) * np.exp2(rng.uniform(-140, 60, n))).astype(np.float32)
    c = np.where(rng.random(n) < 0.4, np.float32(0), c)
    return a, b, c


@pytest.mark.parametrize("gpu,name", list(tcm.MODELS), ids=lambda v: str(v))
def test_matches_fraction_reference_on_adversarial_inputs(gpu, name):
    model = tcm.MODELS[(gpu, name)]
    k = 2 * model.block + model.block // 2 + 1  # two full blocks and a ragged one
    a, b, c = adversarial(model, 300, k, seed=list(tcm.MODELS).index((gpu, name)))
    got = model_d(a, b, c, model)
    want = np.array([reference(list(map(float, a[i])), list(map(float, b[i])), float(c[i]),
                               model) for i in range(len(c))], np.float32)
    bad = ~_same_bits(got, want)
    assert not bad.any(), (np.flatnonzero(bad)[:4], got[bad][:4], want[bad][:4])
    with np.errstate(over="ignore"):  # exact sums beyond float32 (bf16, tf32): inf
        exact = np.array([float(sum(Fraction(float(u)) * Fraction(float(v))
                                    for u, v in zip(a[i], b[i], strict=True))
                                + Fraction(float(c[i]))) for i in range(len(c))], np.float32)
    assert (got != exact).any()  # the model is not fp32 arithmetic: it differs somewhere


@pytest.mark.parametrize("name", ["bf16", "tf32"])
def test_specials_and_overflow_match_reference(name):
    """NaN inputs, 0 * inf, +inf with -inf, infinite products, an infinite or NaN starting
    accumulator, and finite products whose sum passes 2^128 (bf16 / tf32 only)."""
    model = tcm.MODELS[("h100", name)]
    k = 20
    big = np.float32(2.0**100)
    cases = [  # (index, a value, b value) placed in rows of a = 1, b = 0.5
        [(3, np.nan, 1.0)], [(3, np.inf, 0.0)], [(3, 0.0, np.inf)], [(3, np.inf, 1.0), (17, 1.0,
        -np.inf)], [(3, np.inf, 2.0)], [(17, -np.inf, 1.0)], [(3, big, big)],
        [(3, -big, big), (17, big, big)], [(3, big, big), (4, big, big), (17, -big, big)]]
    rows = []
    for case in cases:
        a = np.ones(k, np.float32)
        b = np.full(k, np.float32(0.5))
        for j, u, v in case:
            a[j], b[j] = u, v
        rows.append((a, b))
    a = np.stack([r[0] for r in rows] * 3)
    b = np.stack([r[1] for r in rows] * 3)
    n = len(rows)
    c = np.concatenate([np.zeros(n), np.full(n, np.inf), np.full(n, np.nan)]).astype(np.float32)
    got = model_d(a, b, c, model)
    want = np.array([reference(list(map(float, a[i])), list(map(float, b[i])), float(c[i]),
                               model) for i in range(len(c))], np.float32)
    assert _same_bits(got, want).all(), (got, want)
    assert np.isnan(got[:4]).all() and got[4] == np.inf and got[5] == -np.inf
    assert got[6] == np.inf  # 2^200 overflows the accumulator: +inf, and stays so


# ---- hand-derived cases --------------------------------------------------------------------------
def test_h100_fp8_accumulator_has_13_bits():
    """On H100 with e4m3 inputs, 1 + 2^-15 (products 1 * 1 and 2^-8 * 2^-7) is 1: the block
    sum keeps 13 fraction bits below the largest exponent, truncating. bf16 on H100 (25 bits)
    keeps it, and so does the fp32 carrier sum of `once`."""
    a = jnp.asarray([1.0, 2.0**-8], jnp.float32).reshape(2, 1, 1)
    b = jnp.asarray([1.0, 2.0**-7], jnp.float32).reshape(2, 1, 1)
    assert float(_inner(a, b, tcm.MODELS[("h100", "e4m3")])[0, 0, 0]) == 1.0
    assert float(_inner(a, b, tcm.MODELS[("h100", "bf16")])[0, 0, 0]) == 1 + 2**-15
    once = jnp.einsum("kbm,kbn->bmn", a, b, precision=jax.lax.Precision.HIGHEST)
    assert float(once[0, 0, 0]) == 1 + 2**-15
    # 2^-13 is the last bit kept: 1 + 2^-13 survives (2^-7 * 2^-6, both e4m3 values)
    b2 = jnp.asarray([1.0, 2.0**-5], jnp.float32).reshape(2, 1, 1)
    assert float(_inner(a, b2, tcm.MODELS[("h100", "e4m3")])[0, 0, 0]) == 1 + 2**-13
    # ... and across blocks: the accumulator itself is an e8m13 number
    ones = jnp.ones((64, 1, 1), jnp.float32)
    small = jnp.concatenate([jnp.ones((1, 1, 1)), jnp.full((63, 1, 1), 2.0**-9)])
    d = float(_inner(ones, small, tcm.MODELS[("h100", "e4m3")])[0, 0, 0])
    assert d == 1 + 31 * 2.0**-9 + 32 * 2.0**-9  # every 2^-9 is a multiple of 2^-13: exact
    other = jnp.concatenate([jnp.ones((1, 1, 1)), jnp.full((63, 1, 1), 2.0**-6)])
    d = float(_inner(small, other, tcm.MODELS[("h100", "e4m3")])[0, 0, 0])
    assert d == 1.0  # 1 and 63 products 2^-9 * 2^-6 = 2^-15, each below its block's 2^-13 grid
    assert float(jnp.sum(small * other)) == 1 + 63 * 2.0**-15


def test_truncation_not_rounding():
    """A100 fp16, one block: 1 + 1.5 * 2^-24 has 24 fraction bits of grid (23 + 1 extra):
    n = 2^24 + 1, and the result truncates to fp32's 23 bits: 1.0 (round-to-nearest gives
    1 + 2^-23). Negative: -1.0 (truncation is toward zero)."""
    model = tcm.MODELS[("a100", "fp16")]
    a = np.array([[1.0, 1.5 * 2**-12], [-1.0, -1.5 * 2**-12]], np.float32)
    b = np.array([[1.0, 2**-12], [1.0, 2**-12]], np.float32)
    np.testing.assert_array_equal(model_d(a, b, np.zeros(2), model), [1.0, -1.0])
    assert np.float32(1 + 1.5 * 2**-24) == np.float32(1 + 2**-23)


def test_extra_alignment_bit_matters():
    """1 + (-2^-25): on A100 (24 grid bits below the block's exponent 0) the aligned -2^-25 is
    below the 2^-24 grid and becomes 0: 1.0 (V100, 23 bits, alike); H100 (25 bits) keeps it,
    and 1 - 2^-25 truncates toward zero to the fp32 value 1 - 2^-24."""
    a = np.array([[1.0, -(2.0**-13)]], np.float32)
    b = np.array([[1.0, 2.0**-12]], np.float32)
    assert model_d(a, b, [0.0], tcm.MODELS[("a100", "fp16")])[0] == 1.0
    assert model_d(a, b, [0.0], tcm.MODELS[("h100", "fp16")])[0] == np.float32(1 - 2.0**-24)
    assert model_d(a, b, [0.0], tcm.MODELS[("v100", "fp16")])[0] == 1.0


def test_alignment_floor_and_subnormal_results():
    """A100 bf16: a lone product 1.5 * 2^-150 (1.5 * 2^-75 * 2^-75) is below fp32's smallest
    subnormal 2^-149 and truncates to +0 (nearest would give 2^-149); 1.75 * 2^-148 = 3.5 *
    2^-149 truncates to 3 * 2^-149 (nearest: 4 * 2^-149). The alignment exponent never goes
    below -132: products of 2^-170 (E = -170, grid 2^(-132-24)) vanish however many."""
    model = tcm.MODELS[("a100", "bf16")]
    a = np.array([[1.5 * 2.0**-75] + [0] * 7, [1.75 * 2.0**-74] + [0] * 7,
                  [2.0**-85] * 8], np.float32)
    b = np.array([[2.0**-75] + [0] * 7, [2.0**-74] + [0] * 7, [2.0**-85] * 8], np.float32)
    got = model_d(a, b, np.zeros(3), model)
    np.testing.assert_array_equal(got, [0.0, 3 * 2.0**-149, 0.0])
    assert not np.signbit(got).any()


def test_zero_results_are_positive():
    model = tcm.MODELS[("h100", "fp16")]
    a = np.array([[1.0, -1.0], [-0.0, 2.0], [-0.0, -0.0]], np.float32)
    b = np.array([[1.0, 1.0], [1.0, 0.0], [1.0, 1.0]], np.float32)
    got = model_d(a, b, np.array([0.0, 0.0, -0.0], np.float32), model)
    np.testing.assert_array_equal(got, [0.0, 0.0, 0.0])
    assert not np.signbit(got).any()


def test_block_boundaries():
    """H100 fp16 sums 16 products per step: 1 and 2^-24 in one block give 1 + 2^-24, truncated
    to 1.0 (23 bits); the same 2^-24 fifteen times in the first block and once more in the
    second: the first block keeps 1 + 15 * 2^-24 -> 1 + 14 * 2^-24 (truncated to even), and the
    second adds 2^-24 to it: 1 + 15 * 2^-24 -> 1 + 14 * 2^-24 again."""
    model = tcm.MODELS[("h100", "fp16")]
    a = np.zeros((2, 17), np.float32)
    b = np.zeros((2, 17), np.float32)
    a[0, :2], b[0, :2] = [1.0, 2.0**-12], [1.0, 2.0**-12]
    a[1, :] = [1.0] + [2.0**-12] * 16
    b[1, :] = [1.0] + [2.0**-12] * 16
    got = model_d(a, b, np.zeros(2), model)
    np.testing.assert_array_equal(got, [1.0, np.float32(1 + 14 * 2.0**-24)])
    # The exact sum 1 + 2^-20 is an fp32 number; the tensor core does not reach it.
    assert float(got[1]) != 1 + 2.0**-20


# ---- the policy layer ----------------------------------------------------------------------------
def test_accumulation_names():
    for gpu in ("v100", "a100", "h100", "b200", "h200"):
        assert is_accumulation(f"tensor_core:{gpu}")
    for gpu in ("v100", "a100", "h100", "b200"):
        assert f"tensor_core:{gpu}" in ACCUMULATION_FORMS
    assert not is_accumulation("tensor_core:rtx4090") and not is_accumulation("tensor_core:")
    with pytest.raises(ValueError, match=r"accumulation 'tensor_core:a10': unknown GPU 'a10'; "
                                         r"known: tensor_core:v100, tensor_core:a100, "
                                         r"tensor_core:h100, tensor_core:b200, tensor_core:h200"):
        Policy("bf16", accumulation="tensor_core:a10")


@pytest.mark.parametrize("mode,fmt", [("tensor_core:h100", "fp32"), ("tensor_core:a100", "e4m3fn"),
                                      ("tensor_core:v100", "bf16"), ("tensor_core:h100", "e3m2fn"),
                                      ("tensor_core:b200", "e4m3fn"),
                                      ("tensor_core:h100", "fixed4.4")])
def test_uncovered_compute_formats_are_refused(mode, fmt):
    with pytest.raises(ValueError, match=f"accumulation '{mode}' has no model for compute "
                                         f"format {formats.parse(fmt)}") as err:
        Policy(fmt, accumulation=mode)
    assert "\n" not in str(err.value)


def test_accum_and_block_formats_are_refused():
    with pytest.raises(ValueError, match="accum must be None, got e8m13"):
        Policy("bf16", accum="e8m13", accumulation="tensor_core:h100")
    for field in ("matmul_block", "weight_block"):
        with pytest.raises(ValueError, match=f"{field}='mxfp8_e4m3' \\(block-scaled MMA\\) "
                                             "is not modelled"):
            Policy("e4m3fn", accumulation="tensor_core:h100", **{field: "mxfp8_e4m3"})


def test_operands_in_another_format_are_cast_to_the_input_format():
    """A bf16 parameter in an e4m3fn policy enters the H100 fp8 MMA as e4m3fn (a cast before
    the GEMM), never with bits the input format does not have."""
    rng = np.random.default_rng(4)
    w = jnp.asarray(rng.standard_normal((64, 8)).astype(np.float32))
    x = formats.quantize(jnp.asarray(rng.standard_normal((4, 64)).astype(np.float32)), "e4m3fn")
    policy = Policy("e4m3fn", param="bf16", accumulation="tensor_core:h100")
    out = jax.jit(simulate(lambda p, v: v @ p, policy, param_argnums=(0,)))(w, x)
    w8 = formats.quantize(formats.quantize(w, "bf16"), "e4m3fn")
    d = _inner(x.T[:, None, :], w8[:, None, :], tcm.MODELS[("h100", "e4m3")])[0]
    np.testing.assert_array_equal(np.asarray(out), np.asarray(formats.quantize(d, "e4m3fn")))


@pytest.mark.parametrize("fmt,mode", [
    ("bf16", "tensor_core:h100"), ("e4m3fn", "tensor_core:h100"), ("fp16", "tensor_core:v100"),
    pytest.param("e5m2", "tensor_core:h200", marks=pytest.mark.slow),
    pytest.param("tf32", "tensor_core:a100", marks=pytest.mark.slow),
    pytest.param("e4m3", "tensor_core:h100", marks=pytest.mark.slow)])
def test_simulated_matmul_is_the_model_then_rounded(fmt, mode):
    rng = np.random.default_rng(0)
    x = formats.quantize(jnp.asarray(rng.standard_normal((2, 3, 40)).astype(np.float32)), fmt)
    w = formats.quantize(jnp.asarray(rng.standard_normal((40, 5)).astype(np.float32)), fmt)
    out = jax.jit(simulate(lambda u, v: u @ v, Policy(fmt, accumulation=mode)))(x, w)
    model = tcm.model_for(mode, formats.parse(fmt))
    a = jnp.transpose(x.reshape(6, 40))[:, None, :]
    d = _inner(a, w[:, None, :], model)[0].reshape(2, 3, 5)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(formats.quantize(d, fmt)))
    # dot_general with batch dimensions and two contracting axes
    y = formats.quantize(jnp.asarray(rng.standard_normal((4, 5, 8, 3)).astype(np.float32)), fmt)
    z = formats.quantize(jnp.asarray(rng.standard_normal((4, 8, 3, 7)).astype(np.float32)), fmt)
    dims = (((2, 3), (1, 2)), ((0,), (0,)))  # batch b; contract (k, c), k-major
    got = jax.jit(simulate(lambda u, v: jax.lax.dot_general(u, v, dims),
                           Policy(fmt, accumulation=mode)))(y, z)
    a = jnp.transpose(y.reshape(4, 5, 24), (2, 0, 1))
    b = jnp.transpose(z.reshape(4, 24, 7), (1, 0, 2))
    np.testing.assert_array_equal(np.asarray(got),
                                  np.asarray(formats.quantize(_inner(a, b, model), fmt)))


def test_reductions_follow_once_and_gradients_pass_straight_through():
    x = formats.quantize(jax.random.normal(jax.random.key(0), (64, 48)), "bf16")
    tc = Policy("bf16", accumulation="tensor_core:h100")
    once = Policy("bf16")
    for f in (jnp.sum, lambda v: jnp.cumsum(v, 0)):
        np.testing.assert_array_equal(jax.jit(simulate(f, tc))(x), jax.jit(simulate(f, once))(x))
    w = formats.quantize(jax.random.normal(jax.random.key(1), (48, 8)), "bf16")
    g = jax.jit(jax.grad(lambda v: jnp.sum(simulate(lambda p, q: p @ q, tc)(v, w))))(x)
    np.testing.assert_array_equal(np.asarray(g), np.broadcast_to(np.asarray(w).sum(1), x.shape))
    inside = jax.jit(simulate(jax.grad(lambda v, q: jnp.sum((v @ q) ** 2)), tc))(x, w)
    assert np.isfinite(np.asarray(inside)).all()


def test_region_policies_take_the_mode():
    rp = RegionPolicy.of(Policy("e4m3fn", accumulation="tensor_core:h100"), {"mlp": "bf16"})
    assert rp.policy_for("mlp").accumulation == "tensor_core:h100"
    with pytest.raises(ValueError, match="has no model for compute format e8m23"):
        RegionPolicy.only("mlp", "bf16").with_accumulation("tensor_core:h100")
