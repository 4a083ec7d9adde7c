"""The simulation layer: every floating op rounded; accumulation orders against Python loops."""


import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

from arith_precision import formats
from arith_precision.simulate import Policy, simulate

ML = {"bf16": ml_dtypes.bfloat16, "fp16": np.float16, "e4m3": ml_dtypes.float8_e4m3,
      "e5m2": ml_dtypes.float8_e5m2}


def rnd(v, fmt):
    """Independent reference rounding of a Python float (through float32, as the carrier)."""
    return float(np.asarray(v, np.float32).astype(ML[fmt]).astype(np.float32))


def representable(x, fmt):
    x = np.asarray(x, np.float32)
    return np.array_equal(x, x.astype(ML[fmt]).astype(np.float32), equal_nan=True)


# ---- Python references for the three accumulation orders --------------------------------------
def py_sequential(terms, fmt):
    s = terms[0]
    for t in terms[1:]:
        s = rnd(s + t, fmt)
    return s


def py_pairwise(terms, fmt):
    level = list(terms)
    while len(level) > 1:
        nxt = [rnd(level[i] + level[i + 1], fmt) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


def py_once(terms, fmt):
    return rnd(float(np.sum(np.asarray(terms, np.float32), dtype=np.float32)), fmt)


PY_SUM = {"sequential": py_sequential, "pairwise": py_pairwise}


def _rounded(values, fmt):
    return np.asarray(values, np.float32).astype(ML[fmt]).astype(np.float32)


def _inputs():
    rng = np.random.default_rng(0)
    yield "random", rng.normal(size=37).astype(np.float32)
    # Absorption: a big term followed by many terms below half its ulp.
    yield "absorb", np.array([256.0] + [0.5] * 40, np.float32)
    # Cancellation and mixed magnitudes.
    yield "cancel", np.array([1e4, 3.0, -1e4, 0.125, 7.0, -3.0, 1e-3] * 3, np.float32)
    yield "all_equal", np.full(64, 0.1, np.float32)


@pytest.mark.parametrize("fmt", ["bf16", "e4m3"])
@pytest.mark.parametrize("mode", ["once", "sequential", "pairwise"])
def test_reduce_sum_orders_match_python(fmt, mode):
    for name, raw in _inputs():
        x = _rounded(raw, fmt)
        got = float(jax.jit(simulate(jnp.sum, fmt, mode))(jnp.asarray(x)))
        terms = [float(v) for v in x]
        want = py_once(terms, fmt) if mode == "once" else PY_SUM[mode](terms, fmt)
        assert got == want or (np.isnan(got) and np.isnan(want)), (name, got, want)


def test_orders_really_differ_on_adversarial_input():
    x = jnp.asarray([256.0] + [0.5] * 40, jnp.float32)
    once = float(simulate(jnp.sum, "bf16", "once")(x))
    seq = float(simulate(jnp.sum, "bf16", "sequential")(x))
    pair = float(simulate(jnp.sum, "bf16", "pairwise")(x))
    assert seq == 256.0  # every 0.5 is absorbed: 256 + 0.5 rounds back to 256 in bf16
    assert once == 276.0 and seq < pair <= once  # pairwise absorbs less than sequential


@pytest.mark.parametrize("mode", ["once", "sequential", "pairwise"])
def test_dot_general_orders_match_python(mode):
    fmt = "bf16"
    rng = np.random.default_rng(1)
    a = _rounded(rng.normal(size=(3, 2, 19)), fmt)  # (batch, M, K)
    b = _rounded(rng.normal(size=(3, 19, 4)) * 30, fmt)  # (batch, K, N)
    f = jax.jit(simulate(lambda a, b: jnp.einsum("bmk,bkn->bmn", a, b), fmt, mode))
    got = np.asarray(f(jnp.asarray(a), jnp.asarray(b)))
    for i in range(3):
        for m in range(2):
            for n in range(4):
                prods = [rnd(float(a[i, m, k]) * float(b[i, k, n]), fmt) for k in range(19)]
                if mode == "once":
                    exact = float(np.dot(a[i, m].astype(np.float64), b[i, :, n]))
                    want = rnd(exact, fmt)  # one rounding of the (here exact) carrier sum
                else:
                    want = PY_SUM[mode](prods, fmt)
                assert got[i, m, n] == want, (mode, i, m, n, got[i, m, n], want)


@pytest.mark.parametrize("mode", ["once", "sequential", "pairwise"])
def test_cumsum_orders(mode):
    x = _rounded(np.random.default_rng(2).normal(size=13) * 10, "bf16")
    got = np.asarray(simulate(jnp.cumsum, "bf16", mode)(jnp.asarray(x)))
    assert representable(got, "bf16")
    if mode == "sequential":
        want = [py_sequential([float(v) for v in x[: i + 1]], "bf16") for i in range(13)]
        np.testing.assert_array_equal(got, np.asarray(want, np.float32))
    if mode == "once":
        np.testing.assert_array_equal(got, _rounded(np.cumsum(x, dtype=np.float32), "bf16"))
    rev = np.asarray(simulate(lambda v: jax.lax.cumsum(v, reverse=True), "bf16", mode)(
        jnp.asarray(x)))
    fwd = np.asarray(simulate(jnp.cumsum, "bf16", mode)(jnp.asarray(x[::-1])))
    np.testing.assert_array_equal(rev, fwd[::-1])


def test_every_elementwise_op_is_rounded():
    x = _rounded(np.linspace(0.1, 3.0, 11), "bf16")

    def f(x):
        return jnp.exp(x) * 1.1 + jnp.sin(x) / 3.0

    got = np.asarray(jax.jit(simulate(f, "bf16"))(jnp.asarray(x)))
    c11, third = rnd(1.1, "bf16"), rnd(3.0, "bf16")
    for i, v in enumerate(x):
        e = rnd(float(np.exp(np.float32(v))), "bf16")
        s = rnd(float(np.sin(np.float32(v))), "bf16")
        want = rnd(rnd(e * c11, "bf16") + rnd(s / third, "bf16"), "bf16")
        assert got[i] == want, (i, got[i], want)
    # And the unsimulated function differs: the rounding is real.
    assert not np.array_equal(got, np.asarray(f(jnp.asarray(x))))


def test_control_flow_and_nested_jit():
    def body(c, xi):
        return c * 1.01 + xi, c

    @jax.jit
    def inner(y):
        return y * 3.0

    def g(x):
        y, ys = jax.lax.scan(body, jnp.float32(0.0), x)
        z = jax.lax.cond(y > 0, inner, lambda v: v, y)
        _, w = jax.lax.while_loop(lambda c: c[0] < 3, lambda c: (c[0] + 1, c[1] * 1.1), (0, z))
        return w, ys

    x = _rounded(np.linspace(0.1, 2.0, 9), "bf16")
    w, ys = jax.jit(simulate(g, "bf16"))(jnp.asarray(x))
    c = 0.0
    c101, c11 = rnd(1.01, "bf16"), rnd(1.1, "bf16")
    for v in x:
        c = rnd(rnd(c * c101, "bf16") + float(v), "bf16")
    want = rnd(c * 3.0, "bf16")
    for _ in range(3):
        want = rnd(want * c11, "bf16")
    assert float(w) == want
    assert representable(ys, "bf16")


def test_custom_jvp_functions_are_simulated():
    x = _rounded(np.random.default_rng(3).normal(size=(4, 9)) * 3, "bf16")
    for fn in (jax.nn.softmax, jax.nn.gelu, jax.nn.relu, jax.nn.silu, jax.nn.logsumexp):
        out = simulate(fn, "bf16")(jnp.asarray(x))
        assert representable(out, "bf16"), fn
        np.testing.assert_allclose(out, fn(jnp.asarray(x)), rtol=3e-2, atol=3e-2)
    g = simulate(jax.grad(lambda v: jax.nn.softmax(v)[..., 0].sum()), "bf16")(jnp.asarray(x))
    assert representable(g, "bf16")


def test_custom_vjp_inside_and_outside_grad():
    @jax.custom_vjp
    def h(x):
        return jnp.sin(x)

    h.defvjp(lambda x: (jnp.sin(x), jnp.cos(x)), lambda c, g: (2.0 * g * c,))  # rule = 2 cos
    x = jnp.asarray(_rounded(np.linspace(0.1, 1.5, 6), "bf16"))
    inside = simulate(jax.grad(lambda v: h(v).sum()), "bf16")(x)
    np.testing.assert_array_equal(inside, _rounded(2.0 * _rounded(np.cos(x), "bf16"), "bf16"))
    outside = jax.grad(simulate(lambda v: h(v).sum(), "bf16"))(x)  # grad of the simulated primal
    np.testing.assert_allclose(outside, np.cos(x), rtol=1e-6)
    assert representable(simulate(h, "bf16")(x), "bf16")


def test_integers_and_bools_pass_untouched():
    def f(i, b, x):
        return i * 3 + 1, jnp.logical_not(b), jnp.where(b, x, -x), jnp.argmax(x)

    i = jnp.arange(300, 310, dtype=jnp.int32)  # not representable in e4m3 as floats
    b = jnp.arange(10) % 2 == 0
    x = jnp.linspace(-1, 1, 10, dtype=jnp.float32)
    oi, ob, ox, am = simulate(f, "e4m3")(i, b, x)
    assert oi.dtype == jnp.int32 and np.array_equal(oi, np.arange(300, 310) * 3 + 1)
    assert ob.dtype == jnp.bool_ and np.array_equal(ob, ~np.asarray(b))
    assert representable(ox, "e4m3") and int(am) == 9


def test_policy_param_and_grad_formats():
    w = jnp.asarray([1.0 + 2**-9, 3.0], jnp.float32)  # w[0] is not a bf16 value
    x = jnp.asarray([1.0, 1.0], jnp.float32)
    # Parameters (argument 0) in bf16, compute in fp32: only w is rounded.
    f = simulate(lambda w, x: w * (x + 2**-20), Policy("fp32", param="bf16"), param_argnums=(0,))
    np.testing.assert_array_equal(f(w, x)[0], np.float32(1.0) * np.float32(1 + 2**-20))
    # Cotangents rounded to e5m2 when grad is taken outside.
    g = jax.grad(simulate(lambda w: jnp.sum(w * 1.3), Policy("fp32", grad="e5m2")))(w)
    assert representable(g, "e5m2") and not representable(jnp.full(2, 1.3), "e5m2")


def test_native_mode_agrees_with_simulation_elementwise_and_matmul():
    rng = np.random.default_rng(4)
    x = jnp.asarray(rng.normal(size=(8, 32)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(32, 16)), jnp.float32)

    def f(x, w):
        return jnp.tanh(x * 1.7 + 0.3), x @ w

    nat = Policy("bf16", native=True)
    with jax.disable_jit():  # op by op: no fusion may keep excess precision between ops
        native = simulate(f, nat)(x, w)
    simulated = jax.jit(simulate(f, "bf16"))(x, w)
    for a, b in zip(native, simulated, strict=True):
        assert a.dtype == jnp.float32
        np.testing.assert_array_equal(a, b)


def test_simulated_function_keeps_signature_and_pytrees():
    def f(params, batch, *, scale):
        return {"y": params["w"] * batch[0] * scale, "n": batch[1] + 1}

    out = simulate(f, "bf16")({"w": jnp.ones(3)}, (jnp.full(3, 1.001), jnp.arange(3)), scale=2.0)
    assert set(out) == {"y", "n"} and out["n"].dtype == jnp.int32
    np.testing.assert_array_equal(out["y"], np.full(3, 2.0, np.float32))


def test_float64_carrier_for_wide_formats():
    with jax.enable_x64(True):
        x = jnp.asarray([1.0 + 2**-30, 2.0], jnp.float64)
        y = simulate(lambda v: v * 3.0, "e11m20")(x)
        assert y.dtype == jnp.float64
        np.testing.assert_array_equal(np.asarray(formats.quantize(y, "e11m20")), np.asarray(y))
    with pytest.raises(ValueError, match="e11m20"):
        simulate(lambda v: v * 3.0, "e11m20")(jnp.ones(2, jnp.float32))


@pytest.mark.parametrize("bad, match", [
    (dict(fmt_or_policy="bf17"), "bf17"),
    (dict(fmt_or_policy="bf16", accumulation="kahan"), "kahan"),
    (dict(fmt_or_policy=Policy("e4m3", native=False), accumulation="tree"), "tree"),
])
def test_bad_input_errors(bad, match):
    with pytest.raises(ValueError, match=match):
        simulate(jnp.sum, **bad)


def test_bad_policies():
    with pytest.raises(ValueError, match="e4m3"):
        Policy("e4m3", native=True)
    with pytest.raises(ValueError, match="sequential"):
        Policy("bf16", native=True, accumulation="sequential")
    with pytest.raises(ValueError, match="None"):
        Policy(None)


def test_presets():
    assert Policy.preset("pure_bf16").param_format == formats.as_format("bf16")
    assert Policy.preset("bf16").param is None
    assert Policy.preset("fp16").compute == formats.as_format("fp16")
    assert Policy.preset("e5m2", accumulation="pairwise").accumulation == "pairwise"


