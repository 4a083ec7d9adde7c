"""Greedy decoding of `model.Transformer`: with the KV cache (`greedy_decode`, what every
evaluation and construction check runs, jitted by `evaluate.decoder`) and without it
(`greedy_decode_no_cache`, the reference it is tested against).

Shape suffixes as in model.py: B batch, T prompt length, N generated tokens, V vocab_size.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp

from arith_precision import model as model_lib


def _check_decode(config: model_lib.TransformerConfig, prompt_BxT: jax.Array,
                  num_steps: int) -> None:
    if prompt_BxT.ndim != 2 or prompt_BxT.shape[1] < 1:
        raise ValueError(f"prompt must be B x T with T >= 1, got shape {prompt_BxT.shape}")
    if not model_lib.is_int(num_steps) or num_steps < 1:
        raise ValueError(f"num_steps must be a positive int, got {num_steps!r}")
    needed = prompt_BxT.shape[1] + num_steps - 1  # the last generated token is never fed back
    if needed > config.max_len:
        raise ValueError(
            f"prompt length {prompt_BxT.shape[1]} + num_steps {num_steps} - 1 = {needed} "
            f"positions exceed max_len={config.max_len}"
        )


PREFILL_SEGMENTS = 8  # compiled prefill bodies; the scores formed are (1 + 1/8) / 2 of T x T


def _prefill(model, variables, prompt_BxT: jax.Array, cache, chunk: int):
    """Feed the prompt through `cache` `chunk` tokens at a time; return (logits at T - 1, cache).

    The T // C full chunks are split into up to PREFILL_SEGMENTS runs of consecutive chunks;
    each run is a `lax.fori_loop` (one compiled body) over a prefix of the cache that ends where
    the run ends, so a chunk's queries score only the slots at or before the run's end, not all
    S. The remaining T mod C tokens are one more call. C >= T is one call over the whole cache.
    """
    prompt_len = prompt_BxT.shape[1]
    if chunk >= prompt_len:
        logits_BxTxV, cache = model.apply(variables, prompt_BxT, cache=cache, start=0)
        return logits_BxTxV[:, -1], cache
    full = prompt_len // chunk
    runs = min(full, PREFILL_SEGMENTS)
    bounds = [full * r // runs for r in range(runs + 1)]  # chunk indices where runs start
    # The loops carry the last chunk's final logits (float32 or wider, as Transformer returns).
    last_BxV = jnp.zeros((prompt_BxT.shape[0], model.config.vocab_size),
                         jnp.promote_types(model.config.dtype, jnp.float32))
    for first, stop in itertools.pairwise(bounds):
        slots = stop * chunk
        prefix = jax.tree.map(lambda a, s=slots: a[:, :s], cache)

        def body(i, carry):
            prefix, _ = carry
            tokens_BxC = jax.lax.dynamic_slice_in_dim(prompt_BxT, i * chunk, chunk, axis=1)
            logits_BxCxV, prefix = model.apply(variables, tokens_BxC, cache=prefix,
                                               start=i * chunk)
            return prefix, logits_BxCxV[:, -1]

        prefix, last_BxV = jax.lax.fori_loop(first, stop, body, (prefix, last_BxV))
        cache = jax.tree.map(lambda a, p: a.at[:, :p.shape[1]].set(p), cache, prefix)
    if full * chunk < prompt_len:
        start = full * chunk
        prefix = jax.tree.map(lambda a: a[:, :prompt_len], cache)
        logits_BxLxV, prefix = model.apply(variables, prompt_BxT[:, start:], cache=prefix,
                                           start=start)
        cache = jax.tree.map(lambda a, p: a.at[:, :prompt_len].set(p), cache, prefix)
        last_BxV = logits_BxLxV[:, -1]
    return last_BxV, cache


def greedy_decode(
    params: model_lib.Params,
    config: model_lib.TransformerConfig,
    prompt_BxT: jax.Array,
    num_steps: int,
    *,
    return_logits: bool = False,
    prefill_chunk: int | None = None,
):
    """Greedy continuation with a KV cache: prefill the prompt, then `num_steps - 1` one-token
    steps in a `lax.fori_loop`; token n = argmax of the logits at position T - 1 + n.

    Returns tokens_BxN (int32), or (tokens_BxN, logits_BxNxV) with the float32 logits each token
    was chosen from. Jit with ``jax.jit(greedy_decode, static_argnames=("config", "num_steps",
    "return_logits", "prefill_chunk"))``. Ties go to the lowest id (jnp.argmax).

    `prefill_chunk` = C: the prompt goes through the cache C tokens at a time (`_prefill`), so
    the attention scores held at once are B x H x C x S' instead of B x H x T x S, with S' <= T
    the cache slots a chunk can see (a prompt of 65k tokens: 0.5 GB per head at C = 2048
    instead of 17 GB). It is also faster on a CPU: about half the scores of one prefill (the
    chunks before the diagonal are never formed) and a score block that stays in cache. Every
    query row sees the same unmasked keys, so the arithmetic is that of one prefill except the
    order of the float32 sums over a row (masked slots add exact zeros; XLA may block a shorter
    row differently). One difference: a later position's key and value are not written yet, so
    a NaN or inf value there no longer reaches earlier rows through the dense 0 x v product
    (`CausalAttention`).
    """
    prompt_BxT = jnp.asarray(prompt_BxT)
    _check_decode(config, prompt_BxT, num_steps)
    if prefill_chunk is not None and (not model_lib.is_int(prefill_chunk) or prefill_chunk < 1):
        raise ValueError(f"prefill_chunk must be a positive int or None, got {prefill_chunk!r}")
    model = model_lib.Transformer(config)
    variables = {"params": params}
    batch, prompt_len = prompt_BxT.shape

    cache = model_lib.init_cache(config, batch)
    chunk = prompt_len if prefill_chunk is None else min(prefill_chunk, prompt_len)
    first_BxV, cache = _prefill(model, variables, prompt_BxT, cache, chunk)
    tokens_BxN = jnp.zeros((batch, num_steps), jnp.int32)
    tokens_BxN = tokens_BxN.at[:, 0].set(jnp.argmax(first_BxV, axis=-1).astype(jnp.int32))
    logits_BxNxV = None
    if return_logits:
        logits_BxNxV = jnp.zeros((batch, num_steps, config.vocab_size),
                                 jnp.promote_types(config.dtype, jnp.float32))
        logits_BxNxV = logits_BxNxV.at[:, 0].set(first_BxV)

    def step(n, carry):
        tokens_BxN, logits_BxNxV, cache = carry
        prev_Bx1 = jax.lax.dynamic_slice_in_dim(tokens_BxN, n - 1, 1, axis=1)
        step_Bx1xV, cache = model.apply(variables, prev_Bx1, cache=cache, start=prompt_len + n - 1)
        next_Bx1 = jnp.argmax(step_Bx1xV, axis=-1).astype(jnp.int32)
        tokens_BxN = jax.lax.dynamic_update_slice_in_dim(tokens_BxN, next_Bx1, n, axis=1)
        if logits_BxNxV is not None:
            logits_BxNxV = jax.lax.dynamic_update_slice_in_dim(logits_BxNxV, step_Bx1xV, n, axis=1)
        return tokens_BxN, logits_BxNxV, cache

    tokens_BxN, logits_BxNxV, _ = jax.lax.fori_loop(
        1, num_steps, step, (tokens_BxN, logits_BxNxV, cache)
    )
    return (tokens_BxN, logits_BxNxV) if return_logits else tokens_BxN


def greedy_decode_no_cache(
    params: model_lib.Params,
    config: model_lib.TransformerConfig,
    prompt_BxT: jax.Array,
    num_steps: int,
    *,
    return_logits: bool = False,
):
    """Reference for `greedy_decode`: each step recomputes the full forward pass on the prefix.

    Same outputs and conventions (a Python loop, so under jit it unrolls num_steps forwards).
    """
    prompt_BxT = jnp.asarray(prompt_BxT)
    _check_decode(config, prompt_BxT, num_steps)
    model = model_lib.Transformer(config)
    seq_BxL = prompt_BxT.astype(jnp.int32)
    step_logits = []
    for _ in range(num_steps):
        last_BxV = model.apply({"params": params}, seq_BxL)[:, -1]
        step_logits.append(last_BxV)
        next_Bx1 = jnp.argmax(last_BxV, axis=-1).astype(jnp.int32)[:, None]
        seq_BxL = jnp.concatenate([seq_BxL, next_Bx1], axis=1)
    tokens_BxN = seq_BxL[:, prompt_BxT.shape[1] :]
    if return_logits:
        return tokens_BxN, jnp.stack(step_logits, axis=1)
    return tokens_BxN
