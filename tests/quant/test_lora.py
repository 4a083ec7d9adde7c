"""LoRA / QLoRA as implicit arrays: exact start, the low-rank formula, training, frozen base."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from arith_precision import evaluate as evaluate_lib
from arith_precision import model as model_lib
from arith_precision import tasks
from arith_precision.quant import lora, quantized
from arith_precision.quant.lora import LoraArray
from arith_precision.quant.quantized import QuantizedArray
from tests.tiny_model import CFG, SPEC
from tests.tiny_model import dense_apply as _dense_apply
from tests.tiny_model import params as _params
from tests.tiny_model import tokens as _tokens

H, DH, D, F = 2, 8, 32, 64


def _random_b(adapters, seed=1):
    """The same adapters with a nonzero B (as after some training)."""
    return {p: {"a": ab["a"], "b": 0.1 * jax.random.normal(jax.random.key(seed + i),
                                                           ab["b"].shape)}
            for i, (p, ab) in enumerate(sorted(adapters.items()))}


def test_adapter_shapes_follow_the_matrix_views():
    adapters = lora.init_adapters(_params(), rank=4, seed=0)
    assert set(adapters) == {f"layer_{i}/{m}/kernel" for i in range(2)
                             for m in ("attn/query", "attn/key", "attn/value", "attn/out",
                                       "mlp/fc1", "mlp/fc2")}
    shapes = {p: (ab["a"].shape, ab["b"].shape) for p, ab in adapters.items()}
    assert shapes["layer_0/attn/query/kernel"] == ((D, 4), (4, H * DH))  # (D, H, Dh)
    assert shapes["layer_0/attn/out/kernel"] == ((H * DH, 4), (4, D))    # (H, Dh, D)
    assert shapes["layer_0/mlp/fc1/kernel"] == ((D, 4), (4, F))
    assert all(not np.any(np.asarray(ab["b"])) for ab in adapters.values())
    assert lora.num_trainable(adapters) == sum(np.prod(a) + np.prod(b) for a, b in shapes.values())
    only_mlp = lora.init_adapters(_params(), rank=2, targets=("fc1",), seed=0)
    assert set(only_mlp) == {"layer_0/mlp/fc1/kernel", "layer_1/mlp/fc1/kernel"}


def test_materialise_is_base_plus_scaled_low_rank_product():
    params = _params()
    adapters = _random_b(lora.init_adapters(params, rank=4, seed=0))
    tree = lora.lora_params(params, adapters, alpha=8.0)
    for path, shape in (("layer_0/attn/query/kernel", (D, H, DH)),
                        ("layer_1/attn/out/kernel", (H, DH, D)), ("layer_0/mlp/fc2/kernel",
                                                                   (F, D))):
        *parents, name = path.split("/")
        leaf, base = tree, params
        for p in parents:
            leaf, base = leaf[p], base[p]
        leaf, base = leaf[name], base[name]
        assert isinstance(leaf, LoraArray) and leaf.shape == shape and leaf.scale == 2.0
        a, b = (np.asarray(adapters[path][k], np.float64) for k in ("a", "b"))
        want = np.asarray(base, np.float64) + 2.0 * (a @ b).reshape(shape)
        np.testing.assert_allclose(np.asarray(leaf.materialise()), want, rtol=1e-5, atol=1e-6)


def test_lora_at_init_equals_the_base_exactly():
    params, tokens = _params(), _tokens()
    adapters = lora.init_adapters(params, rank=4, seed=0)
    got = quantized.apply_quantized(lora.lora_params(params, adapters, 16.0), CFG, tokens)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(_dense_apply(params, tokens)))
    params_q = quantized.quantize_params(params, "nf4_g16")  # QLoRA: equals the quantized base
    got_q = quantized.apply_quantized(lora.lora_params(params_q, adapters, 16.0), CFG, tokens)
    want_q = quantized.apply_quantized(params_q, CFG, tokens)
    np.testing.assert_array_equal(np.asarray(got_q), np.asarray(want_q))


def test_jit_lora_apply_and_merge():
    params, tokens = _params(), _tokens()
    adapters = _random_b(lora.init_adapters(params, rank=4, seed=0))
    tree = lora.lora_params(params, adapters, 8.0)
    got = jax.jit(quantized.apply_quantized, static_argnums=1)(tree, CFG, tokens)
    want = jax.jit(lambda t, x: _dense_apply(quantized.dequantize_params(t), x))(tree, tokens)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    merged = lora.merge_lora(params, adapters, 8.0)
    leaves = jax.tree.leaves(merged, is_leaf=quantized.is_implicit)
    assert not any(map(quantized.is_implicit, leaves))
    model_lib.check_params(merged, CFG)
    np.testing.assert_allclose(np.asarray(_dense_apply(merged, tokens)), np.asarray(got),
                               rtol=1e-5, atol=1e-5)
    assert not np.allclose(np.asarray(got), np.asarray(_dense_apply(params, tokens)))


def test_gradients_reach_only_the_factors():
    params = _params()
    batch = jnp.asarray(tasks.sample_batch(SPEC, data_seed=0, step=0, batch_size=8).tokens)
    adapters = _random_b(lora.init_adapters(params, rank=4, seed=0))
    kw = dict(alpha=8.0, config=CFG, mask_T=tasks.target_mask(SPEC))
    grads = jax.grad(lambda ad: lora.lora_loss(ad, params, batch, **kw)[0])(adapters)
    assert jax.tree.structure(grads) == jax.tree.structure(adapters)
    assert all(np.any(np.asarray(g)) for g in jax.tree.leaves(grads))
    # Differentiating through the base anyway: the adapted kernels are behind stop_gradient.
    base_grads = jax.grad(lambda p: lora.lora_loss(adapters, p, batch, **kw)[0])(params)
    for path, g in jax.tree_util.tree_flatten_with_path(base_grads)[0]:
        if quantized.path_str(path) in adapters:
            assert not np.any(np.asarray(g)), path
    assert np.any(np.asarray(base_grads["embed"]))  # the rest of the base is differentiable
    assert np.any(np.asarray(base_grads["layer_0"]["mlp"]["fc1"]["bias"]))


def test_lora_finetuning_reduces_the_loss_and_is_deterministic():
    kw = dict(steps=30, rank=4, alpha=8.0, lr=1e-2, batch_size=32, data_seed=0, seed=0)
    result = lora.finetune(_params(), CFG, SPEC, **kw)
    assert result.losses.shape == (30,) and np.all(np.isfinite(result.losses))
    # A random base cannot add; the factors alone still fit the answer-digit marginals.
    assert result.losses[-5:].mean() < 0.75 * result.losses[:3].mean()
    again = lora.finetune(_params(), CFG, SPEC, **dict(kw, steps=3))
    np.testing.assert_array_equal(again.losses, result.losses[:3])


def test_qlora_base_stays_quantized():
    params_q = quantized.quantize_params(_params(), "int4")
    before = jax.tree.map(np.array, params_q, is_leaf=lambda x: isinstance(x, jax.Array))
    result = lora.finetune(params_q, CFG, SPEC, steps=8, rank=4, alpha=8.0, lr=1e-2,
                           batch_size=16, data_seed=0, seed=0)
    assert result.base_params is params_q
    assert result.losses[-1] < result.losses[0]
    kernel = result.base_params["layer_0"]["mlp"]["fc1"]["kernel"]
    assert isinstance(kernel, QuantizedArray) and kernel.codes.dtype == jnp.int8
    for x, y in zip(jax.tree.leaves(before), jax.tree.leaves(result.base_params), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))  # codes, scales, fp32 rest
    assert all(np.any(np.asarray(ab["b"])) for ab in result.adapters.values())
    leaf = result.params["layer_0"]["mlp"]["fc1"]["kernel"]
    assert isinstance(leaf, LoraArray) and isinstance(leaf.base, QuantizedArray)
    kw = dict(num_examples=8, batch_size=8, data_seed=0)
    metrics = result.evaluate(**kw)
    assert metrics == evaluate_lib.evaluate(result.merged(), CFG, SPEC, **kw)


def test_bad_inputs():
    params = _params()
    with pytest.raises(ValueError, match="rank must be an integer >= 1, got 0"):
        lora.init_adapters(params, rank=0)
    with pytest.raises(ValueError, match=r"\('nope',\) match no kernel"):
        lora.init_adapters(params, rank=2, targets=("nope",))
    adapters = lora.init_adapters(params, rank=2, targets=("fc1",))
    bad = {"layer_0/mlp/fc1/kernel": {"a": jnp.zeros((5, 2)), "b": jnp.zeros((2, F))}}
    with pytest.raises(ValueError, match="do not fit a kernel of shape"):
        lora.lora_params(params, bad, 4.0)
    with pytest.raises(ValueError, match="not a kernel"):
        lora.lora_params(params, {"layer_0/mlp/fc1/bias": adapters["layer_0/mlp/fc1/kernel"]},
                         4.0)
    with pytest.raises(ValueError, match="steps must be an integer >= 1, got 0"):
        lora.finetune(params, CFG, SPEC, steps=0, rank=2, alpha=4.0, lr=1e-3, batch_size=4,
                      data_seed=0, seed=0)


def test_qlora_on_a_block_format_base():
    """QLoRA on an NVFP4 base (the tiny model's kernels have 16-multiple input axes): the packed
    base is untouched and the loss falls."""
    params_q = quantized.quantize_params(_params(), "nvfp4")
    result = lora.finetune(params_q, CFG, SPEC, steps=8, rank=4, alpha=8.0, lr=1e-2,
                           batch_size=16, data_seed=0, seed=0)
    assert result.losses[-1] < result.losses[0]
    kernel = result.base_params["layer_0"]["mlp"]["fc1"]["kernel"]
    assert isinstance(kernel, QuantizedArray) and kernel.codes.dtype == jnp.uint8
