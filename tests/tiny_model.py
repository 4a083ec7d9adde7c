"""The tiny model and batch shared by the quantization and LoRA tests."""

import functools

import jax
import jax.numpy as jnp

from arith_precision import model as model_lib
from arith_precision import tasks

SPEC = tasks.TaskSpec("add", base=10, n=2)
# head_dim != d_model / num_heads, so the 3-D kernels' matrix views are not square.
CFG = model_lib.TransformerConfig(vocab_size=SPEC.vocab_size, max_len=SPEC.sequence_length,
                                  num_layers=2, d_model=32, num_heads=2, head_dim=8, d_ff=64)


@functools.cache
def params():
    return model_lib.init_params(CFG, jax.random.key(0))


def tokens():
    return jnp.asarray(tasks.sample_batch(SPEC, data_seed=0, step=0, batch_size=4).tokens[:, :-1])


def dense_apply(p, toks):
    return model_lib.Transformer(CFG).apply({"params": p}, toks)
