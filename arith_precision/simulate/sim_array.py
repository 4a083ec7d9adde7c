"""`SimArray`: an implicit array (a quax `ArrayValue`) whose every operation is rounded.

A `SimArray` holds a carrier array (float32 or float64) whose values are representable in the
policy's compute format, and the policy itself (static). Under `quax.quaxify`, every JAX primitive
applied to a `SimArray` goes through `SimArray.default` (or a registered accumulation rule):

  1. inputs are unwrapped; plain floating inputs (constants closed over by the function, e.g.
     `x * 0.1`) are rounded to the compute format first, as a native low-precision dtype would hold
     them;
  2. the primitive runs on the carrier;
  3. every floating output is rounded to the compute format and re-wrapped. Primitives that only
     move or select values (reshape, slice, max, ...) skip the rounding: their outputs are already
     representable. Integer and boolean outputs pass through untouched.

Reductions and contractions (`reduce_sum`, `cumsum`, `dot_general`) are registered separately and
follow the policy's accumulation order (`accumulate.py`). Higher-order primitives (`jit`, `scan`,
`cond`, `while`, `custom_jvp`) are handled by quax, which runs their bodies under the same rules;
`custom_vjp` functions run their primal under simulation (see `simulate.py`).

Numerical assumption (the carrier rule of `arith_precision.formats`): rounding a carrier result to
the format equals rounding the exact result, because the carrier has more than twice the format's
significand bits. Outputs in other float dtypes (a function that casts to real bfloat16 inside a
simulation) are left as they are.
"""

from __future__ import annotations

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import quax
from jax import lax
from jaxtyping import ArrayLike
from quax import _primitives as _quax_rules

from arith_precision import formats
from arith_precision.simulate import accumulate
from arith_precision.simulate.policy import Policy

CARRIERS = (jnp.dtype(jnp.float32), jnp.dtype(jnp.float64))

# Primitives whose floating outputs are a selection or rearrangement of their (rounded) inputs.
_VALUE_PRESERVING = frozenset({
    "reshape", "broadcast_in_dim", "transpose", "squeeze", "expand_dims", "slice",
    "dynamic_slice", "dynamic_update_slice", "gather", "scatter", "concatenate", "pad", "select_n",
    "rev", "copy", "copy_p", "reduce_max", "reduce_min", "max", "min", "neg", "abs", "sign",
    "floor", "ceil", "round", "sort", "clamp", "stop_gradient", "optimization_barrier",
    "sharding_constraint", "device_put", "argmax", "argmin", "reduce_precision",
})


# Unary rearrangements after which a parameter still counts as one (`Policy.weight_block`).
_KEEPS_PARAM = frozenset({"reshape", "transpose", "squeeze", "expand_dims", "copy", "copy_p",
                          "convert_element_type"})


@functools.cache
def _identity_format(fmt, dtype) -> bool:
    """True when rounding to `fmt` on this carrier is the identity (fp32 on float32, ...)."""
    native = {jnp.dtype(jnp.float32): "e8m23", jnp.dtype(jnp.float64): "e11m52"}.get(dtype)
    return native is not None and fmt == formats.as_format(native)


def _key_for(x, rounding: str, seed: int):
    """The key of a stochastic rounding: key(seed) folded with a hash of the bits of `x`."""
    if rounding != "stochastic":
        return None
    uint = jnp.uint32 if x.dtype == jnp.float32 else jnp.uint64
    bits = lax.bitcast_convert_type(lax.stop_gradient(x), uint).ravel()
    mix = jnp.arange(1, bits.size + 1, dtype=uint) * uint(0x9E3779B1)
    digest = lax.reduce(bits * mix, uint(0), lax.bitwise_xor, (0,))
    return jax.random.fold_in(jax.random.key(seed), digest.astype(jnp.uint32))


def _quantize(x, fmt, rounding: str, seed: int, values_only: bool = False):
    return formats.quantize(x, fmt, rounding, _key_for(x, rounding, seed),
                            values_only=values_only)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3, 4, 5))
def _round_with_grad(x, fmt, grad_fmt, rounding, seed, values_only):
    return _quantize(x, fmt, rounding, seed, values_only)


def _round_with_grad_fwd(x, fmt, grad_fmt, rounding, seed, values_only):
    return _quantize(x, fmt, rounding, seed, values_only), None


def _round_with_grad_bwd(fmt, grad_fmt, rounding, seed, values_only, _, g):
    return (_quantize(g, grad_fmt, rounding, seed + 1),)


_round_with_grad.defvjp(_round_with_grad_fwd, _round_with_grad_bwd)


def round_array(x, fmt, grad_fmt=None, rounding: str = "nearest_even", seed: int = 0,
                values_only: bool = False):
    """Round a carrier array to `fmt` (identity gradient, or cotangent rounded to `grad_fmt`).
    `values_only`: see `formats.quantize` (used for accumulator registers)."""
    if not hasattr(x, "dtype") or jnp.dtype(x.dtype) not in CARRIERS:
        return x
    if grad_fmt is not None:
        return _round_with_grad(x, fmt, grad_fmt, rounding, seed, values_only)
    if _identity_format(fmt, jnp.dtype(x.dtype)):
        return x
    return _quantize(x, fmt, rounding, seed, values_only)


def policy_round(x, fmt, policy: Policy, values_only: bool = False):
    """`round_array` with the policy's gradient format, rounding mode and seed."""
    return round_array(x, fmt, policy.grad, policy.rounding, policy.seed, values_only)


def is_carrier(x) -> bool:
    return hasattr(x, "dtype") and jnp.dtype(x.dtype) in CARRIERS


class SimArray(quax.ArrayValue):
    """A carrier array whose values lie in `policy.compute`; all operations on it are rounded."""

    array: jax.Array
    policy: Policy = eqx.field(static=True)
    is_param: bool = eqx.field(static=True, default=False)  # a parameter, for weight_block

    def aval(self):
        return jax.core.ShapedArray(self.array.shape, self.array.dtype)

    def materialise(self):
        return self.array

    @staticmethod
    def default(primitive, values, params):
        policy = _policy_of(values)
        arrays = [_unwrap(v, policy) for v in values]
        out = primitive.bind(*arrays, **params)
        preserve = primitive.name in _VALUE_PRESERVING
        if primitive.multiple_results:
            return [_wrap(o, policy, preserve) for o in out]
        out = _wrap(out, policy, preserve)
        if (primitive.name in _KEEPS_PARAM and isinstance(out, SimArray)
                and any(isinstance(v, SimArray) and v.is_param for v in values)):
            out = SimArray(out.array, policy, is_param=True)  # still the parameter's values
        return out


def _policy_of(values) -> Policy:
    for v in values:
        if isinstance(v, SimArray):
            return v.policy
    raise AssertionError("no SimArray among the values")  # quax only calls us with one


def _unwrap(v, policy: Policy):
    if isinstance(v, SimArray):
        return v.array
    if isinstance(v, quax.Value):
        v = type(v).materialise(v)
    return policy_round(v, policy.compute, policy) if is_carrier(v) else v


def _wrap(out, policy: Policy, preserve: bool = False):
    if not is_carrier(out):
        return out
    if not preserve:
        out = policy_round(out, policy.compute, policy)
    return SimArray(out, policy)


# ---- accumulation rules ---------------------------------------------------------------------
def _rounders(policy: Policy):
    def round_out(x):
        return policy_round(x, policy.compute, policy)

    def round_acc(x):
        if policy.accum is None and policy.accumulation == "once":
            return x  # round_out follows at once: rounding twice to one format is once
        # Under once / chunked the register holds a carrier sum by definition: rounding that
        # value needs only the format's values in the carrier (accum="e8m13" on float32).
        register = policy.accumulation == "once" or policy.accumulation.startswith("chunked:")
        return policy_round(x, policy.accum_format, policy, values_only=register)

    return round_out, round_acc


def _reduce_sum(x, *, axes, **params):
    policy = _policy_of([x])
    array = x.array
    if not is_carrier(array):
        return lax.reduce_sum_p.bind(array, axes=axes, **params)
    out = accumulate.reduce_sum(array, axes, policy.accumulation, *_rounders(policy))
    return SimArray(out, policy)


def _cumsum(x, *, axis, reverse):
    policy = _policy_of([x])
    out = accumulate.cumsum(x.array, axis, reverse, policy.accumulation, *_rounders(policy))
    return SimArray(out, policy)


def _dot_general(lhs, rhs, *, dimension_numbers, **params):
    policy = _policy_of([lhs, rhs])
    a, b = _unwrap(lhs, policy), _unwrap(rhs, policy)
    if not (is_carrier(a) and is_carrier(b)):
        return _wrap(lax.dot_general_p.bind(a, b, dimension_numbers=dimension_numbers, **params),
                     policy)
    (lc, rc), _ = dimension_numbers
    for block, lhs_too, rhs_too in (
            (policy.matmul_block, True, True),
            (policy.weight_block, _is_param(lhs), _is_param(rhs))):
        if block is not None and lhs_too:
            a = _block_along(a, lc, block, (a.shape, b.shape, lc, rc))
        if block is not None and rhs_too:
            b = _block_along(b, rc, block, (a.shape, b.shape, lc, rc))
    out = accumulate.dot_general(a, b, dimension_numbers, policy.accumulation, *_rounders(policy),
                                 **params)
    return SimArray(out, policy)


def _is_param(v) -> bool:
    return isinstance(v, SimArray) and v.is_param


def _block_along(x, axes, block_fmt: str, where):
    """x block-quantized along its contraction axes, flattened in the order given (so the k-th
    contraction index of both operands falls in the same block)."""
    axes = tuple(int(d) for d in axes)
    size = formats.BLOCK_FORMATS[block_fmt].block_size
    k = int(np.prod([x.shape[d] for d in axes]))
    if not axes or k % size:
        lhs, rhs, lc, rc = where
        raise ValueError(
            f"block format {block_fmt} needs a contraction length that is a multiple of {size}; "
            f"got a dot_general of shapes {lhs} x {rhs} contracting axes {tuple(lc)} x "
            f"{tuple(rc)} (length {k})")
    free = tuple(d for d in range(x.ndim) if d not in axes)
    moved = jnp.transpose(x, free + axes)
    flat = moved.reshape(moved.shape[:len(free)] + (k,)).astype(jnp.float32)
    q = formats.quantize_mx(flat, block_fmt, axis=-1).astype(x.dtype).reshape(moved.shape)
    return jnp.transpose(q, tuple(int(i) for i in np.argsort(free + axes)))


# ---- control flow: promote plain floating operands (e.g. a constant initial carry) -------------
# quax traces a loop body once against the types it is given; a carry that enters as a plain array
# would stay unsimulated in the body (`c * 1.01` on it would not be rounded), so every floating
# operand of a loop or branch is made a SimArray first, and quax's own rule then runs the body.


def _promote(args):
    policy = next(a.policy for a in args if isinstance(a, SimArray))
    return [a if isinstance(a, quax.Value) or not is_carrier(a)
            else SimArray(policy_round(a, policy.compute, policy), policy) for a in args]


@quax.register(lax.scan_p, precedence=1)
def _(*args: SimArray | ArrayLike, **params):
    return _quax_rules.scan_quax(*_promote(args), **params)


@quax.register(lax.while_p, precedence=1)
def _(*args: SimArray | ArrayLike, **params):
    return _quax_rules.while_quax(*_promote(args), **params)


@quax.register(lax.cond_p, precedence=1)
def _(index: ArrayLike, *args: SimArray | ArrayLike, **params):
    return _quax_rules.cond_quax(index, *_promote(args), **params)


@quax.register(lax.reduce_sum_p)
def _(x: SimArray, **params):
    return _reduce_sum(x, **params)


@quax.register(lax.cumsum_p)
def _(x: SimArray, **params):
    return _cumsum(x, **params)


@quax.register(lax.dot_general_p)
def _(lhs: SimArray, rhs: SimArray, **params):
    return _dot_general(lhs, rhs, **params)


@quax.register(lax.dot_general_p)
def _(lhs: SimArray, rhs: ArrayLike, **params):
    return _dot_general(lhs, rhs, **params)


@quax.register(lax.dot_general_p)
def _(lhs: ArrayLike, rhs: SimArray, **params):
    return _dot_general(lhs, rhs, **params)
