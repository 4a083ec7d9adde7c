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
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import quax
from jax import lax
from jaxtyping import ArrayLike
from quax import _primitives as _quax_rules

from arith_precision import formats
from arith_precision.simulate import accumulate, tensor_core, tensor_core_models
from arith_precision.simulate import regions as regions_lib
from arith_precision.simulate.policy import Policy, reduction_mode
from arith_precision.simulate.runtime_format import RuntimeMantissa, round_runtime

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


def _quantize(x, fmt, rounding: str, seed: int, values_only: bool = False, random_bits=None):
    return formats.quantize(x, fmt, rounding, _key_for(x, rounding, seed),
                            random_bits=random_bits, values_only=values_only)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3, 4, 5, 6))
def _round_with_grad(x, fmt, grad_fmt, rounding, seed, values_only, random_bits):
    return _quantize(x, fmt, rounding, seed, values_only, random_bits)


def _round_with_grad_fwd(x, fmt, grad_fmt, rounding, seed, values_only, random_bits):
    return _quantize(x, fmt, rounding, seed, values_only, random_bits), None


def _round_with_grad_bwd(fmt, grad_fmt, rounding, seed, values_only, random_bits, _, g):
    return (_quantize(g, grad_fmt, rounding, seed + 1, random_bits=random_bits),)


_round_with_grad.defvjp(_round_with_grad_fwd, _round_with_grad_bwd)


def round_array(x, fmt, grad_fmt=None, bits=None, rounding: str = "nearest_even", seed: int = 0,
                values_only: bool = False, random_bits: int | None = None):
    """Round a carrier array to `fmt` (identity gradient, or cotangent rounded to `grad_fmt`).

    `bits`: the widths of `RuntimeMantissa` formats (`runtime_format.py`), carried as data.
    `rounding`, `seed`, `random_bits`: the policy's rounding mode (and the seed and random-bit
    count of stochastic rounding).
    `values_only`: see `formats.quantize` (used for accumulator registers).
    """
    if not hasattr(x, "dtype") or jnp.dtype(x.dtype) not in CARRIERS:
        return x
    if isinstance(fmt, RuntimeMantissa):
        if grad_fmt is not None:
            raise ValueError(f"{fmt}: a rounded gradient format is not supported with it")
        return round_runtime(x, fmt, bits)
    if grad_fmt is not None:
        return _round_with_grad(x, fmt, grad_fmt, rounding, seed, values_only, random_bits)
    if _identity_format(fmt, jnp.dtype(x.dtype)):
        return x
    return _quantize(x, fmt, rounding, seed, values_only, random_bits)


def is_carrier(x) -> bool:
    return hasattr(x, "dtype") and jnp.dtype(x.dtype) in CARRIERS


class SimArray(quax.ArrayValue):
    """A carrier array whose values lie in `policy.compute`; all operations on it are rounded."""

    array: jax.Array
    policy: Policy = eqx.field(static=True)
    # Region bookkeeping (`regions.py`): the names of the regions this value is inside, innermost
    # last, and the RegionPolicy that maps them to policies (None without regions).
    scope: tuple = eqx.field(static=True, default=())
    regions: Any = eqx.field(static=True, default=None)
    # The widths of RuntimeMantissa formats (an int32 vector, or None): data, not static, so
    # that it flows into loop bodies as an operand rather than a closed-over tracer.
    bits: Any = None
    is_param: bool = eqx.field(static=True, default=False)  # a parameter, for weight_block

    def aval(self):
        return jax.core.ShapedArray(self.array.shape, self.array.dtype)

    def materialise(self):
        return self.array

    @staticmethod
    def default(primitive, values, params):
        owner = _owner_of(values)
        arrays = [_unwrap(v, owner) for v in values]
        out = primitive.bind(*arrays, **params)
        preserve = primitive.name in _VALUE_PRESERVING
        if primitive.multiple_results:
            return [_wrap(o, owner, preserve) for o in out]
        out = _wrap(out, owner, preserve)
        if (primitive.name in _KEEPS_PARAM and isinstance(out, SimArray)
                and any(isinstance(v, SimArray) and v.is_param for v in values)):
            # still the parameter's values
            out = SimArray(out.array, out.policy, out.scope, out.regions, out.bits, True)
        return out

    def retag(self, array, policy: Policy, scope: tuple) -> SimArray:
        return SimArray(array, policy, scope, self.regions, self.bits)

    def round(self, x, fmt, grad_fmt=None, values_only: bool = False):
        """Round to `fmt` with this value's policy's rounding mode (its region's policy)."""
        return round_array(x, fmt, grad_fmt, self.bits, self.policy.rounding, self.policy.seed,
                           values_only, self.policy.random_bits)


def _owner_of(values) -> SimArray:
    """The SimArray whose policy an operation follows: the most deeply nested region's."""
    owner = None
    for v in values:
        if isinstance(v, SimArray) and (owner is None or len(v.scope) > len(owner.scope)):
            owner = v
    if owner is None:
        raise AssertionError("no SimArray among the values")  # quax only calls us with one
    return owner


def _policy_of(values) -> Policy:
    return _owner_of(values).policy


def _unwrap(v, owner: SimArray):
    compute = owner.policy.compute
    if isinstance(v, SimArray):
        if v.policy.compute == compute:
            return v.array
        # A value from another region (a parameter used inside a region, say) is rounded to the
        # format of the operation that consumes it.
        return owner.round(v.array, compute)
    if isinstance(v, quax.Value):
        v = type(v).materialise(v)
    return owner.round(v, compute) if is_carrier(v) else v


def _wrap(out, owner: SimArray, preserve: bool = False):
    if not is_carrier(out):
        return out
    if not preserve:
        out = owner.round(out, owner.policy.compute, owner.policy.grad)
    return owner.retag(out, owner.policy, owner.scope)


# ---- accumulation rules ---------------------------------------------------------------------
def _rounders(owner: SimArray):
    policy = owner.policy

    def round_out(x):
        return owner.round(x, policy.compute, policy.grad)

    mode = reduction_mode(policy.accumulation)

    def round_acc(x):
        if policy.accum is None and mode == "once":
            return x  # round_out follows at once: rounding twice to one format is once
        # Under once / chunked the register holds a carrier sum by definition: rounding that
        # value needs only the format's values in the carrier (accum="e8m13" on float32).
        register = mode == "once" or mode.startswith("chunked:")
        return owner.round(x, policy.accum_format, policy.grad, values_only=register)

    return round_out, round_acc


def _reduce_sum(x, *, axes, **params):
    policy = x.policy
    array = x.array
    if not is_carrier(array):
        return lax.reduce_sum_p.bind(array, axes=axes, **params)
    out = accumulate.reduce_sum(array, axes, reduction_mode(policy.accumulation), *_rounders(x))
    return x.retag(out, policy, x.scope)


def _cumsum(x, *, axis, reverse):
    policy = x.policy
    out = accumulate.cumsum(x.array, axis, reverse, reduction_mode(policy.accumulation),
                            *_rounders(x))
    return x.retag(out, policy, x.scope)


def _dot_general(lhs, rhs, *, dimension_numbers, **params):
    owner = _owner_of([lhs, rhs])
    policy = owner.policy
    a, b = _unwrap(lhs, owner), _unwrap(rhs, owner)
    if not (is_carrier(a) and is_carrier(b)):
        return _wrap(lax.dot_general_p.bind(a, b, dimension_numbers=dimension_numbers, **params),
                     owner)
    (lc, rc), _ = dimension_numbers
    for block, lhs_too, rhs_too in (
            (policy.matmul_block, True, True),
            (policy.weight_block, _is_param(lhs), _is_param(rhs))):
        if block is not None and lhs_too:
            a = _block_along(a, lc, block, (a.shape, b.shape, lc, rc), policy.block_scale_rule)
        if block is not None and rhs_too:
            b = _block_along(b, rc, block, (a.shape, b.shape, lc, rc), policy.block_scale_rule)
    if tensor_core_models.gpu_of(policy.accumulation) is not None:
        model = tensor_core_models.model_for(policy.accumulation, policy.compute)
        # The MMA takes inputs in its input format, the compute format: an operand held in
        # another one (a parameter at `param`) is cast first (the identity when it already is).
        a, b = owner.round(a, policy.compute), owner.round(b, policy.compute)
        out = tensor_core_models.dot_general(a, b, dimension_numbers, model,
                                             _rounders(owner)[0], **params)
    elif tensor_core.applies(policy, a, b, params):
        out = tensor_core.dot_general(a, b, dimension_numbers, *_rounders(owner), **params)
    else:
        out = accumulate.dot_general(a, b, dimension_numbers, policy.accumulation,
                                     *_rounders(owner), **params)
    return owner.retag(out, policy, owner.scope)


# ---- region markers (`regions.py`): re-tag with the region's policy, round to its format --------
@quax.register(regions_lib.region_p)
def _(x: SimArray, *, name, mode):
    table = x.regions
    inside = bool(x.scope) and x.scope[-1] == name
    if table is None or name not in table.names or (mode == "through" and inside):
        return x
    if mode == "through":  # round to the region's format, stay where the value is
        policy = table.policy_for(name)
        return x.retag(x.round(x.array, policy.compute, policy.grad), x.policy, x.scope)
    if mode == "enter":
        scope = x.scope + (name,)
    elif inside:
        scope = x.scope[:-1]
    else:  # an exit marker on a value outside `name`: the identity (see backward_region)
        return x
    policy = table.policy_of_scope(scope)
    return x.retag(x.round(x.array, policy.compute, policy.grad), policy, scope)


def _is_param(v) -> bool:
    return isinstance(v, SimArray) and v.is_param


def _block_along(x, axes, block_fmt: str, where, scale_rule: str = "floor"):
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
    q = formats.quantize_mx(flat, block_fmt, axis=-1, scale_rule=scale_rule)
    q = q.astype(x.dtype).reshape(moved.shape)
    return jnp.transpose(q, tuple(int(i) for i in np.argsort(free + axes)))


# ---- control flow: promote plain floating operands (e.g. a constant initial carry) -------------
# quax traces a loop body once against the types it is given; a carry that enters as a plain array
# would stay unsimulated in the body (`c * 1.01` on it would not be rounded), so every floating
# operand of a loop or branch is made a SimArray first, and quax's own rule then runs the body.


def _promote(args):
    owner = _owner_of(args)
    policy = owner.policy
    return [a if isinstance(a, quax.Value) or not is_carrier(a)
            else owner.retag(owner.round(a, policy.compute, policy.grad), policy, owner.scope)
            for a in args]


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
