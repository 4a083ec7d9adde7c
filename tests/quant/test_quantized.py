"""Post-training weight quantization as implicit arrays: exactness, errors, schemes, jit, eval."""

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from arith_precision import decode, tasks
from arith_precision import evaluate as evaluate_lib
from arith_precision import model as model_lib
from arith_precision.quant import quantized
from arith_precision.quant import scheme as quant_scheme
from arith_precision.quant.quantized import QuantizedArray
from tests.tiny_model import CFG, SPEC
from tests.tiny_model import dense_apply as _dense_apply
from tests.tiny_model import params as _params
from tests.tiny_model import tokens as _tokens

VALID = ["int8", "int4", "int2", "int4_g16", "int8_g32", "int4_g64", "int8_tensor", "nf4",
         "nf4_g64", "nf4_g16", "bf16", "fp16", "e4m3", "e4m3fn", "e5m2", "e2m1fn", "fixed4.8",
         " INT4_G16 "]
EXACT_SCHEMES = ["int8", "int4", "int4_g16", "int8_tensor", "nf4_g16", "bf16", "e4m3"]


# ---- schemes ------------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", VALID)
def test_every_scheme_string_parses(scheme):
    sch = quant_scheme.parse_scheme(scheme)
    assert sch.kind in ("int", "nf4", "format", "block")
    assert 1 <= sch.bits <= 16


@pytest.mark.parametrize("bad", ["int9", "int1", "int4_g0", "int4_g", "nf3", "nf4_g0", "foo",
                                 "int8_channel", "e0m3", ""])
def test_bad_scheme_names_the_value(bad):
    with pytest.raises(ValueError, match=re.escape(repr(bad))):
        quant_scheme.parse_scheme(bad)
    with pytest.raises(ValueError, match=re.escape(repr(bad))):
        quantized.quantize_params(_params(), bad)


def test_bits_per_weight():
    shape = (64, 48)  # (in, out)
    assert quant_scheme.bits_per_weight("int8", shape) == 8 + 32 / 64
    assert quant_scheme.bits_per_weight("int4", shape) == 4 + 32 / 64
    assert quant_scheme.bits_per_weight("int4_g16", shape) == 4 + 32 / 16
    assert quant_scheme.bits_per_weight("int8_tensor", shape) == 8 + 32 / (64 * 48)
    assert quant_scheme.bits_per_weight("nf4", shape) == 4.5
    assert quant_scheme.bits_per_weight("bf16", shape) == 16
    assert quant_scheme.bits_per_weight("e4m3", shape) == 8
    w = jax.random.normal(jax.random.key(0), shape)
    for scheme in ("int8", "int4_g16", "int8_tensor", "nf4", "e4m3"):
        q = quantized.quantize_array(w, scheme)
        assert q.nominal_bits == quant_scheme.bits_per_weight(scheme, shape) * w.size


# ---- exactness and error ------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", EXACT_SCHEMES)
def test_quantized_apply_equals_dequantized_apply_bit_exact(scheme):
    params_q = quantized.quantize_params(_params(), scheme, skip=())
    tokens = _tokens()
    got = quantized.apply_quantized(params_q, CFG, tokens)
    want = _dense_apply(quantized.dequantize_params(params_q), tokens)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    assert not np.array_equal(np.asarray(want), np.asarray(_dense_apply(_params(), tokens)))


@pytest.mark.parametrize("scheme", ["int4_g16", "nf4_g16"])
def test_jit_quantized_apply_equals_jit_dequantized_apply(scheme):
    params_q = quantized.quantize_params(_params(), scheme)
    tokens = _tokens()
    got = jax.jit(quantized.apply_quantized, static_argnums=1)(params_q, CFG, tokens)
    want = jax.jit(lambda q, t: _dense_apply(quantized.dequantize_params(q), t))(params_q, tokens)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    eager = quantized.apply_quantized(params_q, CFG, tokens)  # jit vs eager: last bits only
    np.testing.assert_allclose(np.asarray(got), np.asarray(eager), rtol=1e-5, atol=1e-5)


def _rel_error(w, scheme, **kw):
    wq = quantized.dequantize_array(quantized.quantize_array(w, scheme, **kw))
    assert wq.shape == w.shape and wq.dtype == w.dtype
    return float(jnp.linalg.norm(wq - w) / jnp.linalg.norm(w))


def test_error_ordering_on_random_weights():
    w = jax.random.normal(jax.random.key(1), (64, 48)) * 0.1
    err = {s: _rel_error(w, s) for s in ("int8", "int4", "int4_g16", "int4_tensor", "nf4_g16",
                                         "bf16")}
    assert err["bf16"] < err["int8"] < err["int4_g16"] < err["int4"] < err["int4_tensor"]
    assert err["nf4_g16"] < err["int4_g16"]
    assert err["int8"] < 0.01 and err["int4"] < 0.2


def test_int_per_channel_error_bound_and_3d_layout():
    w_DxHxK = jax.random.normal(jax.random.key(2), (32, 2, 8))  # a query kernel
    q = quantized.quantize_array(w_DxHxK, "int4", split=1, contract_axis=0)
    assert q.codes.shape == (32, 16) and q.scales.shape == (1, 16)
    assert q.shape == (32, 2, 8) and q.dtype == jnp.float32
    err = np.abs(np.asarray(quantized.dequantize_array(q) - w_DxHxK)).reshape(32, 16)
    assert np.all(err <= np.asarray(q.scales) * (0.5 + 1e-5))
    w_HxKxD = jax.random.normal(jax.random.key(3), (2, 8, 32))  # an out kernel: groups over H*Dh
    q = quantized.quantize_array(w_HxKxD, "int8_g4", split=2, contract_axis=0)
    assert q.codes.shape == (16, 32) and q.scales.shape == (4, 32)


# ---- parameter trees ----------------------------------------------------------------------------


def _kinds(tree):
    flat = jax.tree_util.tree_flatten_with_path(tree, is_leaf=quantized.is_implicit)[0]
    return {quantized.path_str(p): isinstance(x, QuantizedArray) for p, x in flat}


def test_quantize_params_targets_skip_and_min_size():
    params = _params()
    kinds = _kinds(quantized.quantize_params(params, "int8"))
    assert {p for p, q in kinds.items() if q} == {
        f"layer_{i}/{m}/{n}/kernel" for i in range(2)
        for m, names in (("attn", ("query", "key", "value", "out")), ("mlp", ("fc1", "fc2")))
        for n in names}
    assert not any(q for p, q in kinds.items() if "bias" in p or "scale" in p)
    everything = _kinds(quantized.quantize_params(params, "int8", skip=()))
    assert everything["embed"] and everything["pos_embedding"] and everything["unembed/kernel"]
    skip = (*quantized.DEFAULT_SKIP, "layer_1", "fc1", "*/query/*")
    some = _kinds(quantized.quantize_params(params, "int8", skip=skip))
    assert {p for p, q in some.items() if q} == {"layer_0/attn/key/kernel",
                                                 "layer_0/attn/value/kernel",
                                                 "layer_0/attn/out/kernel",
                                                 "layer_0/mlp/fc2/kernel"}
    small = _kinds(quantized.quantize_params(params, "int8", min_size=32 * 64))
    assert {p for p, q in small.items() if q} == {f"layer_{i}/mlp/{n}/kernel" for i in range(2)
                                                  for n in ("fc1", "fc2")}
    params_q = quantized.quantize_params(params, "int4")
    assert params_q["layer_0"]["ln_attn"]["scale"] is params["layer_0"]["ln_attn"]["scale"]
    model_lib.check_params(quantized.dequantize_params(params_q), CFG)


def test_quantize_params_errors():
    params = _params()
    with pytest.raises(ValueError, match=r"'layer_0/attn/key/kernel'.*group size 64.*length 32"):
        quantized.quantize_params(params, "int4_g64")
    with pytest.raises(ValueError, match="min_size"):
        quantized.quantize_params(params, "int8", min_size=-1)
    with pytest.raises(ValueError, match="already an implicit array"):
        quantized.quantize_params(quantized.quantize_params(params, "int8"), "int4")


def test_model_code_is_unchanged():
    # quantized.py brings no model of its own: the stock Transformer, under quax.quaxify.
    assert not [v for v in vars(quantized).values()
                if isinstance(v, type) and issubclass(v, nn.Module)]


def test_memory_report():
    params = _params()
    report = quantized.memory_report(quantized.quantize_params(params, "int4"))
    total = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))
    assert report["num_params"] == total and report["fp32_bits"] == 32 * total
    assert 4 < report["bits_per_quantized_weight"] < 5
    assert report["nominal_bits"] < report["stored_bits"] < report["fp32_bits"]
    assert report["compression"] > 1
    assert report["schemes"]["layer_0/mlp/fc1/kernel"] == "int4"
    plain = quantized.memory_report(params)
    assert plain["num_quantized"] == 0 and plain["bits_per_param"] == 32


# ---- jit and evaluation -------------------------------------------------------------------------


def test_quantized_params_through_jitted_decoder_and_evaluate():
    params_q = quantized.quantize_params(_params(), "int4")
    prompt = tasks.sample_batch(SPEC, data_seed=0, step=0, batch_size=8,
                                split="eval").input_tokens
    got = evaluate_lib.decoder(CFG, SPEC.answer_tokens, implicit=True)(params_q, prompt)
    want = jax.jit(lambda q, p: decode.greedy_decode(quantized.dequantize_params(q), CFG, p,
                                                        SPEC.answer_tokens))(params_q, prompt)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    kw = dict(num_examples=12, batch_size=8, data_seed=0)
    metrics = quantized.evaluate_quantized(params_q, CFG, SPEC, **kw)
    assert metrics == evaluate_lib.evaluate(quantized.dequantize_params(params_q), CFG, SPEC,
                                            **kw)
    assert set(metrics) == {"exact_match", "digit_accuracy", "num_examples", "distinct_inputs",
                            "held_out_fraction"}


def test_the_decoder_factory_refuses_options_that_do_not_combine():
    with pytest.raises(ValueError, match="implicit-array decoder takes no policy"):
        evaluate_lib.decoder(CFG, SPEC.answer_tokens, "bf16", implicit=True)
    with pytest.raises(ValueError, match="runtime_bits needs a policy"):
        evaluate_lib.decoder(CFG, SPEC.answer_tokens, runtime_bits=True)


# ---- block formats (OCP MX, NVFP4) --------------------------------------------------------------


@pytest.mark.parametrize("scheme,bits", [("mxfp4_e2m1", 4 + 8 / 32), ("mxfp6_e2m3", 6 + 8 / 32),
                                         ("mxfp8_e4m3", 8 + 8 / 32), ("mxint8", 8 + 8 / 32),
                                         ("nvfp4", 4 + 8 / 16 + 32 / (64 * 48))])
def test_block_scheme_is_quantize_mx_along_the_input_axis(scheme, bits):
    from arith_precision import formats

    sch = quant_scheme.parse_scheme(scheme)
    assert sch.kind == "block"
    assert quant_scheme.bits_per_weight(scheme, (64, 48)) == bits
    w = jax.random.normal(jax.random.key(0), (64, 48))
    q = quantized.quantize_array(w, scheme)
    assert q.nominal_bits == bits * w.size
    np.testing.assert_array_equal(np.asarray(quantized.dequantize_array(q)),
                                  np.asarray(formats.quantize_mx(w, scheme, axis=0)))
    with pytest.raises(ValueError, match="does not divide the input length 40"):
        quantized.quantize_array(w[:40], scheme)


def test_nvfp4_model_apply_equals_dequantized_apply_bit_exact():
    params_q = quantized.quantize_params(_params(), "nvfp4", skip=())
    tokens = _tokens()
    got = quantized.apply_quantized(params_q, CFG, tokens)
    want = _dense_apply(quantized.dequantize_params(params_q), tokens)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    report = quantized.memory_report(params_q)
    assert 4.5 < report["bits_per_quantized_weight"] < 4.6


@pytest.mark.parametrize("rule", ["floor", "ceil", "even"])
def test_mx_scheme_takes_the_scale_rule(rule):
    from arith_precision import formats

    w = jnp.asarray(np.random.default_rng(3).standard_t(3, size=(64, 24)).astype(np.float32))
    sch = quant_scheme.parse_scheme(f"mxfp4_e2m1@{rule}")
    assert (sch.kind, sch.fmt, sch.scale_rule) == ("block", "mxfp4_e2m1", rule)
    got = quantized.dequantize_array(quantized.quantize_array(w, f"mxfp4_e2m1@{rule}"))
    want = formats.quantize_mx(w, "mxfp4_e2m1", axis=0, scale_rule=rule)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_scale_rules_differ_and_bad_rules_are_named():
    w = jnp.asarray(np.random.default_rng(3).standard_t(3, size=(64, 24)).astype(np.float32))
    floor, ceil = (np.asarray(quantized.dequantize_array(quantized.quantize_array(w, s)))
                   for s in ("mxfp4_e2m1", "mxfp4_e2m1@ceil"))
    assert not np.array_equal(floor, ceil)
    for bad in ("mxfp4_e2m1@up", "nvfp4@ceil"):
        with pytest.raises(ValueError, match=re.escape(repr(bad))):
            quant_scheme.parse_scheme(bad)
