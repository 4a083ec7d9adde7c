"""Precision by region: boundaries exact, regions under jit / grad / loops, bad region names."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from arith_precision import formats, tasks
from arith_precision import model as model_lib
from arith_precision import training as train
from arith_precision.simulate import REGIONS, RegionPolicy, simulate
from tests import tiny_model

CFG1 = model_lib.TransformerConfig(
    vocab_size=tiny_model.SPEC.vocab_size, max_len=tiny_model.SPEC.sequence_length,
    num_layers=1, d_model=32, num_heads=2, head_dim=8, d_ff=64)


@pytest.fixture(scope="module")
def params1():
    return model_lib.init_params(CFG1, jax.random.key(1))


def _apply(cfg):
    return lambda p, t: model_lib.Transformer(cfg).apply({"params": p}, t)


def _by_hand(params, tokens, *, fmt, plain):
    """The 1-layer model piece by piece: pieces in `plain` unrounded (fp32, inputs and weights
    already in `fmt`), the others simulated at `fmt`; a plain output is rounded where it is used."""
    cfg = CFG1
    t = model_lib.Transformer(cfg)
    sim = (lambda f: simulate(f, fmt))
    rounded = jax.tree_util.tree_map(lambda w: formats.quantize(w, fmt), params)

    def piece(name, f):
        return (lambda *a: f(*a)) if name in plain else sim(f)

    lp = params["layer_0"]
    ln = (lambda name: lambda p, x: model_lib.LayerNorm(
        cfg.norm_eps, cfg.use_bias, cfg.dtype, cfg.param_dtype).apply({"params": p}, x))
    x0 = sim(lambda p, tk: t.apply({"params": p}, tk, method=t.embed_tokens))(params, tokens)
    h = sim(ln("ln_attn"))(lp["ln_attn"], x0)
    attn = piece("attention", lambda p, x: model_lib.CausalAttention(cfg).apply(
        {"params": p}, x, cache=None, start=0)[0])
    att = attn(rounded["layer_0"]["attn"] if "attention" in plain else lp["attn"], h)
    a = sim(jnp.add)(x0, att)
    mlp = piece("mlp", lambda p, x: model_lib.Mlp(cfg).apply({"params": p}, x))
    m = mlp(rounded["layer_0"]["mlp"] if "mlp" in plain else lp["mlp"], sim(ln("ln_mlp"))(
        lp["ln_mlp"], a))
    y = sim(jnp.add)(a, m)
    return sim(lambda p, x: t.apply({"params": p}, x, method=t.head))(params, y)


@pytest.mark.parametrize("plain", [("mlp",), ("attention",), ("attention", "mlp")])
def test_fp32_region_in_bf16_model_is_the_region_unrounded(params1, plain):
    tokens = tiny_model.tokens()
    rp = RegionPolicy.of("bf16", {name: "fp32" for name in plain})
    got = simulate(_apply(CFG1), rp)(params1, tokens)
    want = _by_hand(params1, tokens, fmt="bf16", plain=set(plain))
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    everywhere = simulate(_apply(CFG1), "bf16")(params1, tokens)
    assert not np.array_equal(np.asarray(got), np.asarray(everywhere))  # the region mattered


def test_no_regions_is_the_plain_policy_and_carrier_regions_are_fp32(params1):
    tokens = tiny_model.tokens()
    plain = np.asarray(simulate(_apply(CFG1), "bf16")(params1, tokens))
    np.testing.assert_array_equal(
        np.asarray(simulate(_apply(CFG1), RegionPolicy.of("bf16", {}))(params1, tokens)), plain)
    # By hand, the whole model piece by piece at bf16 is the simulated model (the reference
    # composes the same way the regions do).
    np.testing.assert_array_equal(
        np.asarray(_by_hand(params1, tokens, fmt="bf16", plain=set())), plain)


def test_region_alone_changes_only_that_region(params1):
    tokens = tiny_model.tokens()
    fp32 = np.asarray(_apply(CFG1)(params1, tokens))
    for name in ("attention_scores", "attention_mixing", "mlp", "norm", "residual", "logits",
                 "embed"):
        got = np.asarray(simulate(_apply(CFG1), RegionPolicy.only(name, "e8m2"))(params1, tokens))
        assert not np.array_equal(got, fp32), name
    # Inner regions win: attention at e8m2 with its two inner parts at fp32 leaves only the
    # projections rounded, which differs from rounding the whole attention.
    whole = simulate(_apply(CFG1), RegionPolicy.only("attention", "e8m2"))(params1, tokens)
    inner = simulate(_apply(CFG1), RegionPolicy.of("fp32", {
        "attention": "e8m2", "attention_scores": "fp32", "attention_mixing": "fp32"}))(
        params1, tokens)
    assert not np.array_equal(np.asarray(whole), np.asarray(inner))


def test_except_attention_and_path_patterns(params1):
    tokens = tiny_model.tokens()
    ex = RegionPolicy.except_attention("e8m3")
    assert ex.names == ("attention_scores", "attention_mixing")
    out = simulate(_apply(CFG1), ex)(params1, tokens)
    assert not np.array_equal(np.asarray(out), np.asarray(simulate(_apply(CFG1), "e8m3")(
        params1, tokens)))
    by_name = simulate(_apply(CFG1), RegionPolicy.only("mlp", "e8m2"))(params1, tokens)
    by_path = simulate(_apply(CFG1), RegionPolicy.only("layer_*/mlp", "e8m2"))(params1, tokens)
    np.testing.assert_array_equal(np.asarray(by_name), np.asarray(by_path))


def test_regions_under_jit_grad_and_decode_loop(params1):
    tokens = tiny_model.tokens()
    # The region rounds (e8m10, not fp32): an unrounded float32 region is fused and reassociated
    # by XLA under jit, so op-by-op and jitted gradients may differ in float32's last bit, and a
    # bf16 rounding downstream can carry that one ulp on (4 of 512 embedding gradients on an
    # AMD EPYC host). With every op rounded, both must agree bit for bit.
    rp = RegionPolicy.of("bf16", {"attention_scores": "e8m10"})
    f = simulate(_apply(CFG1), rp)
    np.testing.assert_array_equal(np.asarray(jax.jit(f)(params1, tokens)),
                                  np.asarray(f(params1, tokens)))

    def loss(p):
        return jnp.sum(_apply(CFG1)(p, tokens) ** 2)

    g = simulate(jax.grad(loss), rp)(params1)
    g_jit = jax.jit(simulate(jax.grad(loss), rp))(params1)
    chex.assert_trees_all_equal(g, g_jit)
    g_bf16 = simulate(jax.grad(loss), "bf16")(params1)
    assert not all(jax.tree_util.tree_leaves(jax.tree_util.tree_map(
        lambda a, b: bool(jnp.array_equal(a, b)), g, g_bf16)))
    # Inside a loop body (greedy decoding runs the model in a fori_loop): the model traced in the
    # body is staged before simulation sees it, and the regions still apply.
    only = RegionPolicy.of("bf16", {"mlp": "e8m1"})

    def looped(p, t):
        zero = jnp.zeros(t.shape + (CFG1.vocab_size,), jnp.float32)
        return jax.lax.fori_loop(0, 1, lambda i, acc: acc + _apply(CFG1)(p, t), zero)

    in_loop = np.asarray(jax.jit(simulate(looped, only))(params1, tokens))
    np.testing.assert_array_equal(
        in_loop, np.asarray(jax.jit(simulate(_apply(CFG1), only))(params1, tokens)))
    assert not np.array_equal(in_loop, np.asarray(simulate(_apply(CFG1), "bf16")(params1, tokens)))


def test_train_step_regions():
    spec = tiny_model.SPEC
    tx = optax.sgd(0.1)  # not Adam: its first step is sign(g), blind to rounding g
    params = model_lib.init_params(CFG1, jax.random.key(2))
    state = {"params": params, "opt_state": tx.init(params), "step": jnp.zeros((), jnp.int32)}
    tokens = jnp.asarray(tasks.sample_batch(spec, data_seed=0, step=0, batch_size=4).tokens)

    def run(policy):
        precision = train.StepPrecision(policy, whole_step=True)
        step = jax.jit(train.make_train_step(CFG1, spec, tx, precision))
        return step(state, tokens)[0]["params"]

    base = run(RegionPolicy.of("fp32", {}))
    for name in ("gradients", "optimizer_update"):
        got = run(RegionPolicy.only(name, "e8m2"))
        assert not all(jax.tree_util.tree_leaves(jax.tree_util.tree_map(
            lambda a, b: bool(jnp.array_equal(a, b)), got, base))), name
    # The gradients region rounds the backward pass only: the loss is the fp32 one.
    plain = jax.jit(train.make_train_step(CFG1, spec, tx, train.StepPrecision(None, False)))
    chex.assert_trees_all_equal(base, plain(state, tokens)[0]["params"])


@pytest.mark.parametrize("bad,match", [
    ({"attn": "bf16"}, "unknown region 'attn'"),
    ({"mlp": "bf17"}, "bf17"),
])
def test_bad_region_policies(bad, match):
    with pytest.raises(ValueError, match=match):
        RegionPolicy.of("bf16", bad)


def test_region_that_does_not_occur_is_an_error(params1):
    tokens = tiny_model.tokens()
    for rp in (RegionPolicy.only("layer_7/mlp", "bf16"), RegionPolicy.only("gradients", "bf16")):
        with pytest.raises(ValueError, match="do not occur"):
            simulate(_apply(CFG1), rp)(params1, tokens)
    assert set(REGIONS) >= {"attention_scores", "attention_mixing", "mlp", "norm", "residual",
                            "logits", "gradients", "optimizer_update"}
