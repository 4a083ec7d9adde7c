"""Summation order and rounding inside reductions and contractions.

Three semantics for a sum s = x_1 + ... + x_K of already-rounded terms:

  once        s = round(x_1 + ... + x_K computed in the carrier)      -- hardware with a wide
              accumulator (float32 for bf16/fp8 MMA units). One rounding.
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


def sum_leading(terms_K: jax.Array, mode: str, round_out: Round, round_acc: Round) -> jax.Array:
    """Sum a stack of already-rounded terms over axis 0 (shape (K, ...)) in the given order."""
    num = terms_K.shape[0]
    if num == 0:
        return round_out(jnp.zeros(terms_K.shape[1:], terms_K.dtype))
    if mode == "once":
        return round_out(jnp.sum(terms_K, axis=0))
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
        return round_out(jnp.sum(x, axis=axes))
    kept = [d for d in range(x.ndim) if d not in axes]
    out_shape = tuple(x.shape[d] for d in kept)
    terms = jnp.transpose(x, axes + tuple(kept))  # (reduced..., kept...)
    terms_K = terms.reshape((math.prod(x.shape[a] for a in axes),) + out_shape)  # (K, out...)
    return sum_leading(terms_K, mode, round_out, round_acc)


def cumsum(x: jax.Array, axis: int, reverse: bool, mode: str, round_out: Round,
           round_acc: Round) -> jax.Array:
    """`lax.cumsum_p`: every prefix sum rounded; the prefix tree for `pairwise` is Hillis-Steele."""
    if mode == "once":
        return round_out(lax.cumsum(x, axis=axis, reverse=reverse))
    xs = jnp.moveaxis(x, axis, 0)  # (K, ...)
    if reverse:
        xs = xs[::-1]
    if mode == "sequential":
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
        return round_out(lax.dot_general_p.bind(lhs, rhs, dimension_numbers=dimension_numbers,
                                                **params))
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
