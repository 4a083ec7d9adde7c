"""NF4: the 4-bit NormalFloat data type of QLoRA (Dettmers et al., 2023), blockwise absmax.

The 16 levels are quantiles of the standard normal N(0, 1), normalised to [-1, 1], with an exact
zero: 8 positive levels at Phi^-1 of linspace(0.9677083, 0.5, 9)[:-1], 7 negative levels at
-Phi^-1 of linspace(0.9677083, 0.5, 8)[:-1], and 0, divided by the largest (bitsandbytes'
`create_normal_map`). `NF4_LEVELS` is the published table (as bitsandbytes ships it, rounded to
float32); the test suite re-derives it from the quantile definition.

A weight is cut into contiguous blocks of `block_size` elements along `axis` (bitsandbytes uses
64 along the flattened weight); each block stores its absmax (a float scale) and, per element,
the index (0..15, as int8) of the level nearest to w / absmax. Dequantization is
levels[code] * absmax. QLoRA's second-level ("double") quantization of the absmax values is not
applied: the scales stay in the weight's dtype. Weights must be finite.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from arith_precision.formats.float_format import check_int

# bitsandbytes.functional.get_4bit_type("nf4"), identical to QLoRA's Appendix table.
NF4_LEVELS = np.array(
    [
        -1.0,
        -0.6961928009986877,
        -0.5250730514526367,
        -0.39491748809814453,
        -0.28444138169288635,
        -0.18477343022823334,
        -0.09105003625154495,
        0.0,
        0.07958029955625534,
        0.16093020141124725,
        0.24611230194568634,
        0.33791524171829224,
        0.44070982933044434,
        0.5626170039176941,
        0.7229568362236023,
        1.0,
    ],
    dtype=np.float64,
)


@dataclasses.dataclass(frozen=True)
class NF4Quantized:
    """NF4 codes and per-block absmax scales (a JAX pytree; codes/scales are the leaves).

    Attributes:
        codes: int8 array shaped like the weight, entries in 0..15 (indices into NF4_LEVELS).
        absmax: float array, the weight's shape with `axis` replaced by the number of blocks.
        block_size: elements per block along `axis`.
        axis: the (non-negative) axis the blocks run along.
    """

    codes: jax.Array
    absmax: jax.Array
    block_size: int
    axis: int


jax.tree_util.register_dataclass(
    NF4Quantized, data_fields=["codes", "absmax"], meta_fields=["block_size", "axis"]
)


def _blocked(x, axis: int, block_size: int):
    shape = x.shape
    return x.reshape(*shape[:axis], shape[axis] // block_size, block_size, *shape[axis + 1 :])


def quantize_nf4(w, block_size: int = 64, axis: int = -1) -> NF4Quantized:
    """Blockwise NF4 quantization of `w` (see the module docstring).

    Codes are the nearest level to w / absmax, found by comparing with the midpoints between
    consecutive levels (a value within one rounding of a midpoint may take either neighbour).

    Raises:
        ValueError: a non-floating weight, a bad axis, or a block_size that is not a positive
            divisor of the axis length.
    """
    w = jnp.asarray(w)
    if not jnp.issubdtype(w.dtype, jnp.floating):
        raise ValueError(f"quantize_nf4 needs a floating weight, got dtype {w.dtype}")
    if isinstance(axis, bool) or not isinstance(axis, int) or not -w.ndim <= axis < w.ndim:
        raise ValueError(f"axis {axis!r} is out of range for an array of rank {w.ndim}")
    axis %= w.ndim
    check_int("block_size", block_size, 1)
    if w.shape[axis] % block_size:
        raise ValueError(
            f"block_size {block_size} does not divide the length {w.shape[axis]} of axis {axis}"
        )
    return _quantize_nf4(w, block_size, axis)


@functools.partial(jax.jit, static_argnums=(1, 2))
def _quantize_nf4(w, block_size: int, axis: int) -> NF4Quantized:
    wb = _blocked(w, axis, block_size)
    absmax = jnp.max(jnp.abs(wb), axis=axis + 1, keepdims=True)
    normalized = wb / jnp.where(absmax == 0, jnp.ones_like(absmax), absmax)
    midpoints = jnp.asarray((NF4_LEVELS[1:] + NF4_LEVELS[:-1]) / 2, dtype=w.dtype)
    # Index of the level nearest to v = number of midpoints below v (ties go to the lower level).
    codes = jnp.searchsorted(midpoints, normalized, side="left").astype(jnp.int8)
    return NF4Quantized(codes.reshape(w.shape), jnp.squeeze(absmax, axis + 1), block_size, axis)


@jax.jit
def dequantize_nf4(q: NF4Quantized):
    """levels[codes] * absmax, in the dtype of `absmax`, shaped like the original weight."""
    levels = jnp.asarray(NF4_LEVELS, dtype=q.absmax.dtype)[q.codes.astype(jnp.int32)]
    blocked = _blocked(levels, q.axis, q.block_size) * jnp.expand_dims(q.absmax, q.axis + 1)
    return blocked.reshape(q.codes.shape)
