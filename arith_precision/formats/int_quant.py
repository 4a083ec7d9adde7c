"""Symmetric integer weight quantization (int8, int4, ...): per-tensor, per-channel, grouped.

A weight w is stored as integer codes c and floating scales s with w ~ c * s:

    qmax  = 2^(bits-1) - 1                  (127 for int8, 7 for int4; -2^(bits-1) is unused,
                                             so the grid is symmetric and 0 is exact)
    s     = max|w| / qmax                   over each group of elements sharing a scale
    c     = round_half_even(w / s)          in [-qmax, qmax]

so in exact arithmetic |w - c * s| <= s / 2. With floating w / s and c * s the bound picks up
the two roundings: |w - dequantize| <= s * (1/2 + 2 * qmax * u), u the unit roundoff of the
scale dtype. A group whose weights are all zero gets scale 0 and codes 0 (dequantizes to 0).
Weights must be finite (NaN / inf give undefined codes).

Which elements share a scale (the numpy `axis` convention of a reduction):
  axis=None, group_size=None   one scale for the tensor;
  axis=a (int or tuple)        max|w| is taken over axis a: one scale per index of the other
                               axes. For a (in, out) weight, axis=0 gives per-output-channel
                               scales, shape (1, out);
  axis=a, group_size=g         axis a is cut into contiguous groups of g (g must divide its
                               length), one scale per group and per index of the other axes;
                               scales have shape w.shape with axis a replaced by len/g.

`IntQuantized` is a frozen dataclass registered as a JAX pytree (codes and scales are leaves,
the rest static), so it can cross `jit` boundaries and live in parameter trees.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from arith_precision.formats.float_format import check_int

MAX_INT_BITS = 8  # codes are stored as int8


@dataclasses.dataclass(frozen=True)
class IntQuantized:
    """Integer codes and scales; `dequantize(q)` gives back the approximate weight.

    Attributes:
        codes: int8 array shaped like the weight, entries in [-qmax, qmax].
        scales: float array (the weight's dtype); broadcastable against `codes` (per-tensor and
            per-channel: reduced axes kept with size 1) or, when grouped, `codes.shape` with
            `axis` replaced by the number of groups.
        bits: code width (2..8); qmax = 2^(bits-1) - 1.
        axis: the reduced axes as a tuple of non-negative ints, or None (per-tensor).
        group_size: group length along the single axis in `axis`, or None.
    """

    codes: jax.Array
    scales: jax.Array
    bits: int = 8
    axis: tuple[int, ...] | None = None
    group_size: int | None = None

    @property
    def qmax(self) -> int:
        return 2 ** (self.bits - 1) - 1


jax.tree_util.register_dataclass(
    IntQuantized, data_fields=["codes", "scales"], meta_fields=["bits", "axis", "group_size"]
)


def _normalize_axes(axis, ndim: int) -> tuple[int, ...] | None:
    if axis is None:
        return None
    axes = (axis,) if isinstance(axis, int) and not isinstance(axis, bool) else tuple(axis)
    out = []
    for a in axes:
        if isinstance(a, bool) or not isinstance(a, int) or not -ndim <= a < ndim:
            raise ValueError(f"axis {a!r} is out of range for an array of rank {ndim}")
        out.append(a % ndim)
    if len(set(out)) != len(out):
        raise ValueError(f"axis {axis!r} repeats an axis")
    return tuple(sorted(out))


def _grouped(x, axis: int, group_size: int):
    """Reshape axis `axis` of x into (n_groups, group_size)."""
    shape = x.shape
    return x.reshape(*shape[:axis], shape[axis] // group_size, group_size, *shape[axis + 1 :])


def _codes(w, scales, qmax: int):
    safe = jnp.where(scales == 0, jnp.ones_like(scales), scales)
    # |w| <= max|w| = qmax * s, so w / s is within [-qmax, qmax] up to one rounding of the
    # division; the clip only absorbs that rounding, it never changes a code by more than it.
    return jnp.clip(jnp.round(w / safe), -qmax, qmax).astype(jnp.int8)


def quantize_int(w, bits: int = 8, axis=None, group_size: int | None = None) -> IntQuantized:
    """Symmetric integer quantization of `w` (see the module docstring for the conventions).

    Raises:
        ValueError: bits outside 2..8, a non-floating weight, a bad axis, group_size without a
            single axis, or a group_size that does not divide the axis length.
    """
    check_int("bits", bits, 2, MAX_INT_BITS)
    w = jnp.asarray(w)
    if not jnp.issubdtype(w.dtype, jnp.floating):
        raise ValueError(f"quantize_int needs a floating weight, got dtype {w.dtype}")
    axes = _normalize_axes(axis, w.ndim)
    if group_size is not None:
        check_int("group_size", group_size, 1)
        if axes is None or len(axes) != 1:
            raise ValueError(
                f"group_size needs a single int axis to group along, got axis={axis!r}"
            )
        if w.shape[axes[0]] % group_size:
            raise ValueError(
                f"group_size {group_size} does not divide the length {w.shape[axes[0]]} of "
                f"axis {axes[0]}"
            )
    return _quantize_int(w, bits, axes, group_size)


# Jitted with the layout static, so an eager call compiles one program instead of many ops.
@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _quantize_int(w, bits: int, axes, group_size):
    qmax = 2 ** (bits - 1) - 1
    if group_size is None:
        absmax = jnp.max(jnp.abs(w), axis=axes, keepdims=True)
        scales = absmax / qmax
        return IntQuantized(_codes(w, scales, qmax), scales, bits, axes, None)
    (a,) = axes
    wg = _grouped(w, a, group_size)
    scales = jnp.max(jnp.abs(wg), axis=a + 1, keepdims=True) / qmax
    codes = _codes(wg, scales, qmax).reshape(w.shape)
    return IntQuantized(codes, jnp.squeeze(scales, a + 1), bits, axes, group_size)


@jax.jit
def dequantize_int(q: IntQuantized):
    """codes * scales in the scales' dtype, shaped like the original weight."""
    codes = q.codes.astype(q.scales.dtype)
    if q.group_size is None:
        return codes * q.scales
    (a,) = q.axis
    grouped = _grouped(codes, a, q.group_size) * jnp.expand_dims(q.scales, a + 1)
    return grouped.reshape(q.codes.shape)
