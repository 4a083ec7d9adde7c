"""Tests for arith_precision.model: shapes, causality, KV cache, param tree, residuals, errors."""

import dataclasses
import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from arith_precision.decode import greedy_decode, greedy_decode_no_cache
from arith_precision.model import (
    Transformer,
    TransformerConfig,
    check_params,
    init_cache,
    init_params,
    logits_from_residual,
    param_shapes,
)

V, S, D, H, F, NL = 11, 16, 16, 2, 24, 2
BASE = TransformerConfig(vocab_size=V, max_len=S, num_layers=NL, d_model=D, num_heads=H, d_ff=F)
# Tolerance for cached vs. full-forward logits (float32; different reduction lengths only).
CACHE_ATOL = CACHE_RTOL = 1e-5


def _cfg(**kw):
    return dataclasses.replace(BASE, **kw)


@functools.cache
def _cached_params(cfg):
    return init_params(cfg, jax.random.key(0))


def _params(cfg):
    """Seed-0 params, initialised once per config (a fresh copy of the tree each call)."""
    return jax.tree.map(lambda x: x, _cached_params(cfg))


def _tokens(batch, length, seed=0):
    return jax.random.randint(jax.random.key(seed), (batch, length), 0, V, dtype=jnp.int32)


def _eager_apply(params, cfg, tokens, **kw):
    return Transformer(cfg).apply({"params": params}, tokens, **kw)


# Jitted forward used by most tests (eager dispatch of many small ops is slow on CPU).
_apply = jax.jit(_eager_apply, static_argnames=("cfg", "return_residuals"))
_decode = jax.jit(greedy_decode,
                  static_argnames=("config", "num_steps", "return_logits", "prefill_chunk"))
_decode_no_cache = jax.jit(
    greedy_decode_no_cache, static_argnames=("config", "num_steps", "return_logits")
)


def _expected_tree(cfg):
    """The parameter tree exactly as documented in the model's module docstring."""
    dh = cfg.effective_head_dim
    d, h, f, v = cfg.d_model, cfg.num_heads, cfg.d_ff, cfg.vocab_size

    def dense(kernel, bias):
        return {"kernel": kernel, "bias": bias} if cfg.use_bias else {"kernel": kernel}

    def ln():
        return {"scale": (d,), "bias": (d,)} if cfg.use_bias else {"scale": (d,)}

    tree = {"embed": (v, d)}
    if cfg.pos in ("learned", "table"):
        tree["pos_embedding"] = (cfg.max_len, d)
    for i in range(cfg.num_layers):
        layer = {
            "attn": {
                "query": dense((d, h, dh), (h, dh)),
                "key": dense((d, h, dh), (h, dh)),
                "value": dense((d, h, dh), (h, dh)),
                "out": dense((h, dh, d), (d,)),
            },
            "mlp": {"fc1": dense((d, f), (f,)), "fc2": dense((f, d), (d,))},
        }
        if cfg.norm == "pre_ln":
            layer["ln_attn"] = ln()
            layer["ln_mlp"] = ln()
        tree[f"layer_{i}"] = layer
    if cfg.norm == "pre_ln":
        tree["ln_final"] = ln()
    if not cfg.tied_embedding:
        tree["unembed"] = dense((d, v), (v,))
    return tree


OPTION_GRID = [
    dict(pos=pos, norm=norm, tied_embedding=tied, activation=act, use_bias=bias)
    for (pos, norm, tied), (act, bias) in zip(
        itertools.product(
            ("learned", "sinusoidal", "none", "table"), ("pre_ln", "none"), (False, True)
        ),
        itertools.cycle([("gelu", True), ("relu", False), ("relu", True), ("gelu", False)]),
        strict=False,
    )
]


@pytest.mark.parametrize("opts", OPTION_GRID, ids=lambda o: "-".join(map(str, o.values())))
def test_shapes_and_param_tree(opts):
    cfg = _cfg(**opts)
    shapes = param_shapes(cfg)
    assert shapes == _expected_tree(cfg)
    # Abstract evaluation (no compilation) of init and forward for every option combination.
    params = jax.eval_shape(lambda key: init_params(cfg, key), jax.random.key(0))
    assert jax.tree.map(lambda s: s.shape, params) == shapes
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(params))
    check_params(params, cfg)
    logits = jax.eval_shape(lambda p, t: _eager_apply(p, cfg, t), params, _tokens(3, 7))
    assert logits.shape == (3, 7, V) and logits.dtype == jnp.float32


@pytest.mark.parametrize("opts", OPTION_GRID[::3], ids=lambda o: "-".join(map(str, o.values())))
def test_forward_runs(opts):
    cfg = _cfg(**opts)
    params = init_params(cfg, jax.random.key(0))
    assert jax.tree.map(np.shape, params) == param_shapes(cfg)
    logits = _eager_apply(params, cfg, _tokens(3, 7))
    assert logits.shape == (3, 7, V) and logits.dtype == jnp.float32
    assert np.all(np.isfinite(logits))


def test_head_dim_explicit():
    cfg = _cfg(d_model=12, num_heads=5, head_dim=3)
    params = _params(cfg)
    assert params["layer_0"]["attn"]["query"]["kernel"].shape == (12, 5, 3)
    assert params["layer_0"]["attn"]["out"]["kernel"].shape == (5, 3, 12)
    assert _apply(params, cfg, _tokens(2, 4)).shape == (2, 4, V)


@pytest.mark.parametrize("pos", ["learned", "sinusoidal"])
def test_causality_exact(pos):
    cfg = _cfg(pos=pos)
    params = _params(cfg)
    fwd = jax.jit(lambda t: _eager_apply(params, cfg, t))
    tokens = _tokens(2, S, seed=3)
    base = np.asarray(fwd(tokens))
    for t in (0, 5, S - 1):
        changed = tokens.at[:, t].set((tokens[:, t] + 1) % V)
        out = np.asarray(fwd(changed))
        np.testing.assert_array_equal(out[:, :t], base[:, :t])
        assert not np.array_equal(out[:, t], base[:, t])


@pytest.mark.parametrize("pos", ["learned", "sinusoidal", "none", "table"])
def test_kv_cache_decoding_matches_full_recompute(pos):
    cfg = _cfg(pos=pos)
    params = _params(cfg)
    if pos == "table":  # a zero table would make positions invisible; set it by hand
        params["pos_embedding"] = jax.random.normal(jax.random.key(9), (S, D))
    prompt_len = 6
    steps = S - prompt_len + 1 if pos == "learned" else 4  # "learned": up to the last position
    prompt = _tokens(4, prompt_len, seed=4)
    tokens, logits = _decode(params, cfg, prompt, num_steps=steps, return_logits=True)
    ref_tokens, ref_logits = _decode_no_cache(
        params, cfg, prompt, num_steps=steps, return_logits=True
    )
    assert tokens.shape == (4, steps) and tokens.dtype == jnp.int32
    assert logits.shape == (4, steps, V) and logits.dtype == jnp.float32
    np.testing.assert_array_equal(tokens, ref_tokens)
    np.testing.assert_allclose(logits, ref_logits, atol=CACHE_ATOL, rtol=CACHE_RTOL)
    np.testing.assert_array_equal(tokens, jnp.argmax(logits, axis=-1))
    if pos != "learned":
        return
    # And against one teacher-forced forward over prompt + generated tokens.
    full = _apply(params, cfg, jnp.concatenate([prompt, tokens[:, :-1]], axis=1))
    np.testing.assert_allclose(logits, full[:, prompt_len - 1 :], atol=CACHE_ATOL, rtol=CACHE_RTOL)


@pytest.mark.parametrize("length, chunk", [(7, 1), (7, 4), (7, 7), (7, 100), (13, 1), (13, 2),
                                           (13, 3), (13, 6)])
def test_greedy_decode_prefill_chunk_matches_one_prefill(length, chunk):
    # prompt 7 tokens: chunks of 1 (token by token), 4 (4 + 3), 7 (one) and more than T.
    # prompt 13: 13 chunks of 1 in PREFILL_SEGMENTS = 8 runs of 1 or 2 chunks; 6 x 2 + 1 (six
    # runs of one chunk, then the rest); 4 x 3 + 1; 2 x 6 + 1.
    cfg = _cfg()
    params = _params(cfg)
    prompt = _tokens(3, length, seed=5)
    steps = min(5, S - length + 1)
    want_tokens, want_logits = _decode(params, cfg, prompt, num_steps=steps, return_logits=True)
    tokens, logits = _decode(params, cfg, prompt, num_steps=steps, return_logits=True,
                             prefill_chunk=chunk)
    np.testing.assert_array_equal(tokens, want_tokens)
    np.testing.assert_allclose(logits, want_logits, atol=CACHE_ATOL, rtol=CACHE_RTOL)


def test_greedy_decode_rejects_bad_prefill_chunk():
    cfg = _cfg()
    for bad in (0, -2, 1.5):
        with pytest.raises(ValueError, match="prefill_chunk"):
            greedy_decode(_params(cfg), cfg, _tokens(1, 4), 2, prefill_chunk=bad)


def test_chunked_prefill_with_cache():
    cfg = _cfg(num_layers=2)
    params = _params(cfg)
    tokens = _tokens(2, 12, seed=6)
    full = _apply(params, cfg, tokens)
    cache = init_cache(cfg, 2)
    out1, cache = _apply(params, cfg, tokens[:, :5], cache=cache, start=0)
    out2, cache = _apply(params, cfg, tokens[:, 5:9], cache=cache, start=5)
    out3, cache = _apply(params, cfg, tokens[:, 9:], cache=cache, start=jnp.int32(9))
    chunked = jnp.concatenate([out1, out2, out3], axis=1)
    np.testing.assert_allclose(chunked, full, atol=CACHE_ATOL, rtol=CACHE_RTOL)
    assert cache["layer_1"]["k"].shape == (2, S, H, D // H)


def test_prefix_cache_covers_its_slots_only():
    # A cache of S' < max_len slots (a prefix of init_cache's, what the chunked prefill uses)
    # gives the full forward's logits over positions [0, S'), and nothing beyond.
    cfg = _cfg(num_layers=2)
    params = _params(cfg)
    tokens = _tokens(2, 9, seed=7)
    prefix = jax.tree.map(lambda a: a[:, :9], init_cache(cfg, 2))
    out1, prefix = _apply(params, cfg, tokens[:, :5], cache=prefix, start=0)
    out2, prefix = _apply(params, cfg, tokens[:, 5:], cache=prefix, start=5)
    np.testing.assert_allclose(jnp.concatenate([out1, out2], axis=1), _apply(params, cfg, tokens),
                               atol=CACHE_ATOL, rtol=CACHE_RTOL)
    assert prefix["layer_0"]["k"].shape == (2, 9, H, D // H)
    with pytest.raises(ValueError, match=r"outside \[0, cache slots=9\)"):
        _eager_apply(params, cfg, tokens[:, :2], cache=prefix, start=8)
    longer = jax.tree.map(lambda a: jnp.zeros((2, S + 1) + a.shape[2:], a.dtype), prefix)
    with pytest.raises(ValueError, match=r"1 <= S <= max_len=16"):
        _eager_apply(params, cfg, tokens[:, :2], cache=longer)
    mixed = dict(prefix, layer_1=jax.tree.map(lambda a: a[:, :8], prefix["layer_1"]))
    with pytest.raises(ValueError, match=r"layer_1/k has shape \(2, 8, 2, 8\)"):
        _eager_apply(params, cfg, tokens[:, :2], cache=mixed)


def test_hand_built_numpy_params_run():
    cfg = _cfg(pos="table", tied_embedding=True)
    rng = np.random.default_rng(0)
    params = jax.tree.map(
        lambda s: rng.normal(size=s).astype(np.float32),
        param_shapes(cfg),
        is_leaf=lambda s: isinstance(s, tuple),
    )
    j = np.arange(S, dtype=np.float32)
    params["pos_embedding"] = np.zeros((S, D), np.float32)
    params["pos_embedding"][:, :3] = np.stack([np.ones(S), j, j**2], axis=1)  # (1, j, j^2)
    check_params(params, cfg)
    logits = _apply(params, cfg, _tokens(2, S))
    assert logits.shape == (2, S, V) and np.all(np.isfinite(logits))
    # The hand-set table is really used: changing it changes the output.
    params2 = dict(params, pos_embedding=params["pos_embedding"] * 2)
    assert not np.allclose(_apply(params2, cfg, _tokens(2, S)), logits)


def test_check_params_reports_bad_tree():
    cfg = _cfg()
    params = _params(cfg)
    bad = jax.tree.map(lambda x: x, params)
    bad["layer_1"]["mlp"]["fc1"]["kernel"] = np.zeros((D, F + 1), np.float32)
    del bad["ln_final"]
    bad["extra"] = np.zeros(3)
    with pytest.raises(ValueError) as err:
        check_params(bad, cfg)
    msg = str(err.value)
    assert "layer_1/mlp/fc1/kernel" in msg and f"{(D, F + 1)}" in msg
    assert "ln_final: missing" in msg and "extra: unexpected" in msg


@pytest.mark.parametrize("norm", ["pre_ln", "none"])
def test_residual_capture(norm):
    cfg = _cfg(norm=norm, num_layers=3)
    params = _params(cfg)
    tokens = _tokens(2, 9)
    logits, res = _apply(params, cfg, tokens, return_residuals=True)
    names = ["embed"] + [f"layer_{i}/{s}" for i in range(3) for s in ("attn", "mlp")]
    assert list(res) == names
    for x in res.values():
        assert x.shape == (2, 9, D)
    np.testing.assert_allclose(
        logits_from_residual(params, cfg, res["layer_2/mlp"]), logits, rtol=1e-6, atol=1e-6
    )
    # Embedding residual is E[tok] + P[pos].
    emb = params["embed"][tokens] + params["pos_embedding"][None, :9]
    np.testing.assert_allclose(res["embed"], emb, rtol=1e-6, atol=1e-6)
    # With a cache: (logits, cache, residuals).
    out = jax.eval_shape(
        lambda p, t, c: _eager_apply(p, cfg, t, cache=c, return_residuals=True),
        params,
        tokens,
        init_cache(cfg, 2),
    )
    assert len(out) == 3 and list(out[2]) == names and out[1]["layer_2"]["v"].shape == (2, S, H, 8)


@pytest.mark.parametrize(
    "kw, needle",
    [
        (dict(activation="swish"), "'swish'"),
        (dict(norm="post_ln"), "'post_ln'"),
        (dict(pos="rope"), "'rope'"),
        (dict(d_model=10, num_heads=3), "d_model=10"),
        (dict(num_layers=0), "num_layers"),
        (dict(vocab_size=-2), "-2"),
        (dict(d_ff=2.5), "2.5"),
        (dict(head_dim=0), "head_dim"),
        (dict(tied_embedding="yes"), "'yes'"),
        (dict(dtype=jnp.int32), "dtype"),
        (dict(norm_eps=0.0), "norm_eps"),
    ],
)
def test_bad_config_raises(kw, needle):
    with pytest.raises(ValueError, match=None) as err:
        _cfg(**kw)
    assert needle in str(err.value)


def test_bad_calls_raise():
    cfg = _cfg()
    params = _params(cfg)
    with pytest.raises(ValueError, match="max_len"):
        _eager_apply(params, cfg, _tokens(1, S + 1))
    with pytest.raises(ValueError, match="start=12"):
        _eager_apply(params, cfg, _tokens(1, 5), cache=init_cache(cfg, 1), start=12)
    with pytest.raises(ValueError, match="expected"):
        _eager_apply(params, cfg, _tokens(2, 5), cache=init_cache(cfg, 1))
    with pytest.raises(ValueError, match="exceed max_len"):
        greedy_decode(params, cfg, _tokens(1, 10), S - 10 + 2)
    with pytest.raises(ValueError, match="num_steps"):
        greedy_decode(params, cfg, _tokens(1, 10), 0)
    with pytest.raises(ValueError, match="B x L"):
        _eager_apply(params, cfg, jnp.zeros((4,), jnp.int32))


def test_jit_and_grad():
    cfg = _cfg(pos="table")
    params = _params(cfg)
    tokens = _tokens(4, S)

    def loss(p):
        logits = _eager_apply(p, cfg, tokens[:, :-1])
        logp = jax.nn.log_softmax(logits)
        return -jnp.mean(jnp.take_along_axis(logp, tokens[:, 1:, None], axis=-1))

    value, grads = jax.jit(jax.value_and_grad(loss))(params)
    assert np.isfinite(value)
    assert jax.tree.structure(grads) == jax.tree.structure(params)
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
    assert np.any(grads["layer_0"]["attn"]["query"]["kernel"] != 0)
    assert np.all(grads["pos_embedding"] == 0)  # "table" is used under stop_gradient


def test_bfloat16_compute():
    cfg = _cfg(dtype=jnp.bfloat16)
    params = _params(cfg)
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(params))
    logits, cache = _apply(params, cfg, _tokens(2, 5), cache=init_cache(cfg, 2))
    assert logits.dtype == jnp.float32 and cache["layer_0"]["k"].dtype == jnp.bfloat16
    ref = _apply(params, _cfg(), _tokens(2, 5))
    np.testing.assert_allclose(logits, ref, atol=0.1, rtol=0.1)
    tokens = _decode(params, cfg, _tokens(2, 5), num_steps=4)
    assert tokens.shape == (2, 4)


def test_sinusoidal_has_no_param_and_is_position_dependent():
    cfg = _cfg(pos="sinusoidal")
    params = _params(cfg)
    assert "pos_embedding" not in params
    same = jnp.full((1, 6), 3, jnp.int32)
    _, res = _apply(params, cfg, same, return_residuals=True)
    assert not np.allclose(res["embed"][0, 0], res["embed"][0, 1])
