"""chunked:C and narrow-accumulator semantics, policy rounding modes and block-format matmuls,
pinned on hand-computed sums."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from arith_precision import formats
from arith_precision.simulate import Policy, simulate

# e5m2 keeps 3 significant bits: on [2, 4) its values are 2, 2.5, 3, 3.5.
TERMS = np.array([1.0] + [0.25] * 9, np.float32)  # exact sum 3.25


def _sum(accumulation, accum="e5m2"):
    policy = Policy(compute="fp32", accum=accum, accumulation=accumulation)
    return float(simulate(jnp.sum, policy)(jnp.asarray(TERMS)))


@pytest.mark.parametrize("accumulation,want", [
    # chunks of 4: 1.75, 1.0, 0.5 -> a = 1.75, round(2.75) = 3.0 (tie to even), round(3.5) = 3.5
    ("chunked:4", 3.5),
    # sequential: 1, 1.25, 1.5, 1.75, 2.0, round(2.25) = 2.0 (tie to even), and 2.0 from then on
    ("sequential", 2.0),
    ("chunked:1", 2.0),
    # once: the carrier sum 3.25, rounded to the e5m2 accumulator: a tie, to 3.0
    ("once", 3.0),
    ("chunked:16", 3.0),
    # chunks of 3: 1.5, 0.75, 0.75, 0.25 -> 1.5, round(2.25) = 2.0, round(2.75) = 3.0, 3.25 -> 3.0
    ("chunked:3", 3.0),
])
def test_chunked_and_once_hand_computed(accumulation, want):
    assert _sum(accumulation) == want


def test_dot_and_cumsum_follow_the_same_rule():
    policy = Policy(compute="fp32", accum="e5m2", accumulation="chunked:4")
    ones = jnp.ones((2, TERMS.size), jnp.float32)
    out = simulate(lambda a, b: a @ b, policy)(ones, jnp.asarray(TERMS))
    np.testing.assert_array_equal(np.asarray(out), [3.5, 3.5])
    prefixes = simulate(jnp.cumsum, policy)(jnp.asarray(TERMS))
    np.testing.assert_array_equal(np.asarray(prefixes),
                                  [1, 1.25, 1.5, 1.75, 2.0, 2.0, 2.5, 3.0, 3.0, 3.5])
    # A contraction axis that is not first, with batch axes, against the plain definition.
    a = jax.random.normal(jax.random.key(0), (3, 37, 5), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (3, 4, 37), jnp.float32)
    got = simulate(lambda x, y: jnp.einsum("bkm,bnk->bmn", x, y),
                   Policy(compute="fp32", accum="bf16", accumulation="chunked:8"))(a, b)
    chunks = [jnp.einsum("bkm,bnk->bmn", a[:, i:i + 8], b[:, :, i:i + 8],
                         precision="highest") for i in range(0, 37, 8)]
    acc = formats.quantize(chunks[0], "bf16")
    for c in chunks[1:]:
        acc = formats.quantize(acc + c, "bf16")
    np.testing.assert_array_equal(np.asarray(got), np.asarray(acc))


def test_narrow_accumulator_under_once():
    """1 + 2^-15 + 2^-15 = 1 + 2^-14 in float32; an e8m13 accumulator (quantum 2^-13 at 1)
    sees a tie and keeps 1.0; without `accum` the fp32 sum is exact."""
    x = jnp.asarray([1.0, 2.0**-15, 2.0**-15], jnp.float32)
    assert float(simulate(jnp.sum, Policy("fp32", accum="e8m13"))(x)) == 1.0
    assert float(simulate(jnp.sum, Policy("fp32"))(x)) == 1.0 + 2.0**-14
    y = jnp.asarray([[1.0, 2.0**-15, 2.0**-15]], jnp.float32)
    dot = simulate(lambda a, b: a @ b, Policy("fp32", accum="e8m13"))(y, jnp.ones((3,)))
    assert float(dot[0]) == 1.0


@pytest.mark.parametrize("bad", ["chunked:0", "chunked:-2", "chunked:", "chunked:2.5", "blocks"])
def test_bad_accumulation_is_named(bad):
    with pytest.raises(ValueError, match="chunked"):
        Policy("bf16", accumulation=bad)


@pytest.mark.parametrize("mode", ["nearest_away", "toward_zero", "toward_positive",
                                  "toward_negative"])
def test_policy_rounding_mode(mode):
    a = jax.random.normal(jax.random.key(2), (256,), jnp.float32)
    b = jax.random.normal(jax.random.key(3), (256,), jnp.float32)
    got = simulate(lambda x, y: x * y, Policy("e4m3", rounding=mode))(a, b)
    qa, qb = formats.quantize(a, "e4m3", mode), formats.quantize(b, "e4m3", mode)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(formats.quantize(qa * qb, "e4m3",
                                                                               mode)))


def test_policy_stochastic_rounding():
    a = jax.random.normal(jax.random.key(4), (4096,), jnp.float32)
    f = simulate(lambda x: x * 1.0, Policy("fp32", param="e4m3", rounding="stochastic"),
                 param_argnums=(0,))
    got = np.asarray(f(a))
    lo = np.asarray(formats.quantize(a, "e4m3", "toward_negative"))
    hi = np.asarray(formats.quantize(a, "e4m3", "toward_positive"))
    assert np.all((got == lo) | (got == hi))
    off = lo != hi
    frac_up = np.mean(got[off] == hi[off])
    assert 0.3 < frac_up < 0.7, frac_up
    np.testing.assert_array_equal(got, np.asarray(f(a)))  # deterministic
    with pytest.raises(ValueError, match="unknown rounding 'up'"):
        Policy("bf16", rounding="up")


def test_matmul_block_quantizes_operands_along_the_contraction_axis():
    a = jax.random.normal(jax.random.key(5), (8, 64), jnp.float32)
    w = jax.random.normal(jax.random.key(6), (64, 16), jnp.float32)
    got = simulate(lambda x, y: x @ y, Policy("fp32", matmul_block="mxfp4_e2m1"))(a, w)
    want = jnp.matmul(formats.quantize_mx(a, "mxfp4_e2m1", axis=1),
                      formats.quantize_mx(w, "mxfp4_e2m1", axis=0), precision="highest")
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    with pytest.raises(ValueError, match="multiple of 16"):
        simulate(lambda x, y: x @ y, Policy("fp32", matmul_block="nvfp4"))(a[:, :24], w[:24])
    with pytest.raises(ValueError, match="unknown block format"):
        Policy("fp32", matmul_block="mxfp5")


def test_p3109_formats_work_as_policy_and_scheme_strings():
    from arith_precision.quant import quantized
    from arith_precision.quant import scheme as quant_scheme

    a = jax.random.normal(jax.random.key(7), (64,), jnp.float32)
    got = simulate(lambda x: x * x, Policy("p3109_k8p4"))(a)
    qa = formats.quantize(a, "p3109_k8p4")
    np.testing.assert_array_equal(np.asarray(got),
                                  np.asarray(formats.quantize(qa * qa, "p3109_k8p4")))
    w = jax.random.normal(jax.random.key(8), (32, 16), jnp.float32)
    q = quantized.quantize_array(w, "p3109_k8p3")
    np.testing.assert_array_equal(np.asarray(quantized.dequantize_array(q)),
                                  np.asarray(formats.quantize(w, "p3109_k8p3")))
    assert quant_scheme.bits_per_weight("p3109_k8p3", (32, 16)) == 8


def test_weight_block_equals_block_quantized_kernels():
    """weight_block blocks the parameters where they enter a contraction: on the tiny model
    (fp32 compute) that is the model applied to kernels quantized by `quantized` (which blocks
    each kernel along its input axis); the embedding table, only gathered, stays fp32."""
    from tiny_model import dense_apply, params, tokens

    from arith_precision.quant import quantized

    p, t = params(), tokens()
    policy = Policy("fp32", weight_block="nvfp4")
    got = simulate(lambda q, x: dense_apply(q, x), policy, param_argnums=(0,))(p, t)
    pq = quantized.dequantize_params(
        quantized.quantize_params(p, "nvfp4", skip=("embed", "pos_embedding")))
    want = dense_apply(pq, t)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))  # bit for bit
    plain = dense_apply(p, t)
    assert np.abs(np.asarray(want) - np.asarray(plain)).max() > 1e-3  # blocking did something
    # Activations are not blocked: matmul_block (both operands) gives something else.
    both = simulate(lambda q, x: dense_apply(q, x), Policy("fp32", matmul_block="nvfp4"),
                    param_argnums=(0,))
    with pytest.raises(ValueError, match="contraction length that is a multiple of 16"):
        both(p, t)  # the attention scores contract head_dim = 8
