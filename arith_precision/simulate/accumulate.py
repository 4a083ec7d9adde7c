"""Summation order and rounding inside reductions and contractions.

Four semantics for a sum s = x_1 + ... + x_K of already-rounded terms:

  once        s = round(round_acc(x_1 + ... + x_K computed in the carrier)) -- hardware with a wide
              accumulator (float32 for bf16/fp8 MMA units). One rounding when `accum` is unset
              (it defaults to the compute format, and rounding twice to one format is rounding
              once); a narrower `accum` (e.g. e8m13, ~14 bits as DeepSeek-V3 reports for H800
              FP8 tensor cores) models an accumulator that holds fewer bits than the carrier.
  chunked:C   the terms are cut into consecutive chunks of C (the last may be shorter); each
              chunk is summed in the carrier (c_j, unrounded: for a contraction, one carrier
              dot product of exact products, as under `once`), and the chunk results are
              added in order into an accumulator rounded to `accum`: a_1 = round_acc(c_1),
              a_j = round_acc(a_{j-1} + c_j), s = round(a_last). Models tensor cores that
              promote partial sums to a wider register every C terms (DeepSeek-V3: C = 128).
              chunked:1 is `sequential` on unrounded-product terms; C >= K is `once`.
              Under `once` and `chunked:C` the accumulator rounds a carrier sum by definition,
              so `accum` may be any format whose values the carrier holds (e8m13 on float32),
              not only those the carrier's no-double-rounding rule admits.
  sequential  s_1 = x_1, s_j = round_acc(s_{j-1} + x_j), s = round(s_K) -- the theory's model (Li,
              Liu, Zhou, Ma, ICLR 2024): rounding after every addition, left to right. K-1
              roundings; error can grow linearly in K.
  pairwise    adjacent pairs are added and rounded, level by level ((x1+x2)+(x3+x4))+..., an odd
              element left over at a level is carried up unchanged. Error grows like log K.

For a contraction (`dot_general`) the terms are the products a_k * b_k, each rounded to the compute
format first (a product of two formats that fit the carrier is exact in the carrier, so this is
one correct rounding). The functions here work on plain arrays; `round_out` rounds to the compute
format and `round_acc` to the accumulation format. `sequential` is a `lax.scan` over the summed
axis (jit-able, memory of one partial sum); `pairwise` materialises all K terms (memory K times
the output).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import lax

Round = Callable[[jax.Array], jax.Array]


def chunk_size(mode: str) -> int | None:
    """C for "chunked:C" (C >= 1), None for the other modes; a ValueError for a bad C."""
    if not mode.startswith("chunked:"):
        return None
    text = mode[len("chunked:"):]
    if not text.isdigit() or int(text) < 1:
        raise ValueError(
            f"accumulation {mode!r}: chunked:C needs a positive integer chunk size C, got {text!r}")
    return int(text)


def _accumulate_chunks(chunks_J: jax.Array, round_acc: Round) -> jax.Array:
    """a_1 = round_acc(c_1), a_j = round_acc(a_{j-1} + c_j) over axis 0; returns a_last."""
    def step(acc, chunk):
        return round_acc(acc + chunk), None

    total, _ = lax.scan(step, round_acc(chunks_J[0]), chunks_J[1:])
    return total


def _chunk_stack(terms_K: jax.Array, size: int) -> jax.Array:
    """(K, ...) -> (ceil(K / size), size, ...), padded with zeros (which add nothing)."""
    num = terms_K.shape[0]
    pad = -num % size
    if pad:
        terms_K = jnp.concatenate([terms_K, jnp.zeros((pad,) + terms_K.shape[1:], terms_K.dtype)])
    return terms_K.reshape((-1, size) + terms_K.shape[1:])


def sum_leading(terms_K: jax.Array, mode: str, round_out: Round, round_acc: Round) -> jax.Array:
    """Sum a stack of already-rounded terms over axis 0 (shape (K, ...)) in the given order."""
    num = terms_K.shape[0]
    if num == 0:
        return round_out(jnp.zeros(terms_K.shape[1:], terms_K.dtype))
    if mode == "once":
        return round_out(round_acc(jnp.sum(terms_K, axis=0)))
    if (size := chunk_size(mode)) is not None:
        chunks = jnp.sum(_chunk_stack(terms_K, size), axis=1)
        return round_out(_accumulate_chunks(chunks, round_acc))
    if mode == "sequential":
        def step(partial, term):
            return round_acc(partial + term), None

        total, _ = lax.scan(step, terms_K[0], terms_K[1:])
        return round_out(total)
    if mode == "pairwise":
        level = terms_K
        while level.shape[0] > 1:
            half = level.shape[0] // 2
            summed = round_acc(level[0 : 2 * half : 2] + level[1 : 2 * half : 2])
            level = jnp.concatenate([summed, level[2 * half :]], axis=0) if level.shape[0] % 2 \
                else summed
        return round_out(level[0])
    raise ValueError(f"unknown accumulation {mode!r}")


def reduce_sum(x: jax.Array, axes, mode: str, round_out: Round, round_acc: Round) -> jax.Array:
    """`lax.reduce_sum_p` over `axes` with the given accumulation order (row-major over axes)."""
    axes = tuple(sorted(int(a) for a in axes))
    if mode == "once":
        return round_out(round_acc(jnp.sum(x, axis=axes)))
    kept = [d for d in range(x.ndim) if d not in axes]
    out_shape = tuple(x.shape[d] for d in kept)
    terms = jnp.transpose(x, axes + tuple(kept))  # (reduced..., kept...)
    terms_K = terms.reshape((math.prod(x.shape[a] for a in axes),) + out_shape)  # (K, out...)
    return sum_leading(terms_K, mode, round_out, round_acc)


def cumsum(x: jax.Array, axis: int, reverse: bool, mode: str, round_out: Round,
           round_acc: Round) -> jax.Array:
    """`lax.cumsum_p`: every prefix sum rounded; the prefix tree for `pairwise` is Hillis-Steele.
    Under chunked:C the i-th prefix is round_acc(a_{j-1} + partial sum of its chunk up to i), a
    the chunk accumulator of `sum_leading` (the last prefix of each chunk is then a_j)."""
    if mode == "once":
        return round_out(round_acc(lax.cumsum(x, axis=axis, reverse=reverse)))
    xs = jnp.moveaxis(x, axis, 0)  # (K, ...)
    if reverse:
        xs = xs[::-1]
    if (size := chunk_size(mode)) is not None:
        num = xs.shape[0]
        stack = _chunk_stack(xs, size)  # (J, C, ...)
        partial = jnp.cumsum(stack, axis=1)  # carrier prefix sums within each chunk

        def step(acc, part):
            prefixes = round_acc(acc + part)  # acc is a_{j-1} (0 before the first chunk)
            return prefixes[-1], prefixes

        _, out = lax.scan(step, jnp.zeros(xs.shape[1:], xs.dtype), partial)
        out = round_out(out.reshape((-1,) + xs.shape[1:])[:num])
    elif mode == "sequential":
        def step(partial, term):
            partial = round_acc(partial + term)
            return partial, partial

        _, rest = lax.scan(step, xs[0], xs[1:])
        out = jnp.concatenate([xs[:1], rest], axis=0)
    elif mode == "pairwise":
        out, shift = xs, 1
        while shift < xs.shape[0]:
            shifted = jnp.concatenate([jnp.zeros_like(out[:shift]), out[:-shift]], axis=0)
            out = jnp.concatenate([out[:shift], round_acc(out[shift:] + shifted[shift:])], axis=0)
            shift *= 2
    else:
        raise ValueError(f"unknown accumulation {mode!r}")
    out = round_out(out)
    if reverse:
        out = out[::-1]
    return jnp.moveaxis(out, 0, axis)


def dot_general(lhs: jax.Array, rhs: jax.Array, dimension_numbers, mode: str, round_out: Round,
                round_acc: Round, **params) -> jax.Array:
    """`lax.dot_general_p` with rounded products and the given accumulation order.

    `once` is one carrier-precision contraction (precision HIGHEST: no TF32 shortcuts on GPUs),
    rounded once. The other modes bring both operands to (batch, free, K) form and sum the K
    rounded products a[..., k] * b[..., k] in order.
    """
    (lc, rc), (lb, rb) = dimension_numbers
    if mode == "once":
        params = dict(params, precision=(lax.Precision.HIGHEST, lax.Precision.HIGHEST))
        return round_out(round_acc(lax.dot_general_p.bind(
            lhs, rhs, dimension_numbers=dimension_numbers, **params)))
    if (size := chunk_size(mode)) is not None:
        return _chunked_dot(lhs, rhs, dimension_numbers, size, round_out, round_acc, **params)
    out_dtype = params.get("preferred_element_type") or jnp.result_type(lhs, rhs)
    lfree = [d for d in range(lhs.ndim) if d not in lc and d not in lb]
    rfree = [d for d in range(rhs.ndim) if d not in rc and d not in rb]
    batch_shape = tuple(lhs.shape[d] for d in lb)
    lfree_shape = tuple(lhs.shape[d] for d in lfree)
    rfree_shape = tuple(rhs.shape[d] for d in rfree)
    k = math.prod(lhs.shape[d] for d in lc)
    nb, m, n = math.prod(batch_shape), math.prod(lfree_shape), math.prod(rfree_shape)
    # (K, nb, M) and (K, nb, N): contraction axis first, so it can be scanned or split in pairs.
    a_KxBxM = jnp.transpose(lhs, tuple(lc) + tuple(lb) + tuple(lfree)).reshape(k, nb, m)
    b_KxBxN = jnp.transpose(rhs, tuple(rc) + tuple(rb) + tuple(rfree)).reshape(k, nb, n)
    a_KxBxM, b_KxBxN = a_KxBxM.astype(out_dtype), b_KxBxN.astype(out_dtype)
    out_shape = batch_shape + lfree_shape + rfree_shape

    def product(a_BxM, b_BxN):  # (nb, M, N): exact in the carrier, then one rounding
        return round_out(a_BxM[:, :, None] * b_BxN[:, None, :])

    if k == 0:
        return round_out(jnp.zeros(out_shape, out_dtype))
    if mode == "sequential":
        def step(partial, ab):
            return round_acc(partial + product(*ab)), None

        total, _ = lax.scan(step, product(a_KxBxM[0], b_KxBxN[0]), (a_KxBxM[1:], b_KxBxN[1:]))
        return round_out(total).reshape(out_shape)
    if mode == "pairwise":
        terms = jax.vmap(product)(a_KxBxM, b_KxBxN)  # (K, nb, M, N)
        return sum_leading(terms, mode, round_out, round_acc).reshape(out_shape)
    raise ValueError(f"unknown accumulation {mode!r}")


def _chunked_dot(lhs, rhs, dimension_numbers, size: int, round_out: Round, round_acc: Round,
                 **params):
    """chunked:C for a contraction: per chunk of C contraction indices one carrier dot product
    (precision HIGHEST), then the chunk results accumulated as `sum_leading` does."""
    (lc, rc), (lb, rb) = dimension_numbers
    out_dtype = params.get("preferred_element_type") or jnp.result_type(lhs, rhs)
    lfree = [d for d in range(lhs.ndim) if d not in lc and d not in lb]
    rfree = [d for d in range(rhs.ndim) if d not in rc and d not in rb]
    k = math.prod(lhs.shape[d] for d in lc)
    out_shape = (tuple(lhs.shape[d] for d in lb) + tuple(lhs.shape[d] for d in lfree)
                 + tuple(rhs.shape[d] for d in rfree))
    if k == 0:
        return round_out(jnp.zeros(out_shape, out_dtype))
    # Contraction axes flattened and moved first: (K, batch..., free...), then chunked.
    a = jnp.transpose(lhs, tuple(lc) + tuple(lb) + tuple(lfree))
    b = jnp.transpose(rhs, tuple(rc) + tuple(rb) + tuple(rfree))
    a = _chunk_stack(a.reshape((k,) + a.shape[len(lc):]).astype(out_dtype), size)
    b = _chunk_stack(b.reshape((k,) + b.shape[len(rc):]).astype(out_dtype), size)
    nb = len(lb)
    # a: (J, C, B..., M...), b: (J, C, B..., N...): contract C, batch over J and B.
    dims = (((1,), (1,)), ((0,) + tuple(range(2, 2 + nb)), (0,) + tuple(range(2, 2 + nb))))
    chunks = lax.dot_general(a, b, dims, precision=(lax.Precision.HIGHEST,) * 2,
                             preferred_element_type=out_dtype)  # (J, B..., M..., N...)
    return round_out(_accumulate_chunks(chunks, round_acc)).reshape(out_shape)
