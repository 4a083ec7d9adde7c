"""`simulate(fn, fmt_or_policy, accumulation="once")`: run a JAX function at a simulated precision.

    logits = simulate(model.apply, "bf16")(params, tokens)
    loss, grads = simulate(jax.value_and_grad(loss_fn), "e4m3", accumulation="sequential")(p, b)
    step = jax.jit(simulate(train_step, Policy("bf16", grad="e5m2")))

The returned function has the same signature as `fn`. Every floating input leaf (float32/float64)
is rounded on entry (to `policy.param_format` for the arguments in `param_argnums`, to
`policy.compute` for the rest) and wrapped in a `SimArray`; the function then runs under
`quax.quaxify`, so every floating-point primitive output inside it, however deep (Flax modules,
`jit`, `scan`, `cond`, `while_loop`, `custom_jvp` functions such as `jax.nn.softmax`, `jax.grad`
taken inside), is rounded as `sim_array.py` describes. Outputs come back as plain carrier arrays.
Integer and boolean inputs and outputs pass through untouched.

Notes:
  * Subexpressions that depend on no input (`jnp.arange(8) * 0.1` built inside `fn`) are computed
    in the carrier and rounded when they first meet simulated data, as constants would be.
  * `custom_vjp` functions: their primal runs under simulation. If `jax.grad` is taken *inside* the
    simulated function (the usual simulated train step), JAX applies the custom rule first and its
    backward pass is simulated too; if `jax.grad` is taken *outside*, the gradient is that of the
    simulated primal (with straight-through rounding), not the custom rule.
  * `policy.native=True` skips simulation: float inputs are cast to real `jnp.bfloat16` /
    `jnp.float16` and floating outputs cast back to their input carrier (float32).
  * float64 carriers need `jax_enable_x64`; formats wider than float32 can carry (M > 10 or
    E > 8) raise a clear error on float32 inputs instead of double rounding.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import quax
from jax._src import core as jax_core
from quax import _trace as _quax_trace

from arith_precision.simulate import regions, runtime_format
from arith_precision.simulate.policy import as_policy, native_dtype
from arith_precision.simulate.regions import RegionPolicy
from arith_precision.simulate.sim_array import SimArray, is_carrier, round_array


def _process_custom_vjp_call(self, primitive, fun, fwd, bwd, tracers, **_):
    """quax (0.4) has no custom_vjp rule: run the primal under this trace, as eager JAX does."""
    del primitive, fwd, bwd
    with jax_core.set_current_trace(self):
        return fun.call_wrapped(*tracers)


if "process_custom_vjp_call" not in vars(_quax_trace._QuaxTrace):
    _quax_trace._QuaxTrace.process_custom_vjp_call = _process_custom_vjp_call


def _materialise(tree):
    return jax.tree_util.tree_map(
        lambda x: x.array if isinstance(x, SimArray) else x, tree,
        is_leaf=lambda x: isinstance(x, SimArray))


def simulate(fn, fmt_or_policy, accumulation: str | None = None, *, param_argnums=()):
    """Return `fn` with every floating intermediate rounded as the policy says.

    Args:
      fn: any JAX-traceable function.
      fmt_or_policy: a format string or object (`"bf16"`, `"e4m3"`, `"fixed8.8"`, ...), a preset
        (`"pure_bf16"`), a `Policy`, or a `RegionPolicy` (a policy per named region of a Flax
        model or train step, see `regions.py`).
      accumulation: `"once"`, `"sequential"`, `"pairwise"`, `"chunked:C"` (see `accumulate.py`)
        or `"tensor_core:<gpu>"` (`tensor_core_models.py`); None keeps the
        policy's own (default `"once"`).
      param_argnums: positions of the arguments rounded to `policy.param_format` on entry.
    """
    if isinstance(fmt_or_policy, RegionPolicy):
        table = fmt_or_policy.with_accumulation(accumulation)
        policy = table.base
    else:
        table, policy = None, as_policy(fmt_or_policy, accumulation)
    param_argnums = tuple(param_argnums)

    if policy.native:
        compute = native_dtype(policy.compute)
        param = native_dtype(policy.param_format)

        @functools.wraps(fn)
        def native_fn(*args, **kwargs):
            def cast(dtype):
                return lambda x: x.astype(dtype) if is_carrier(x) else x

            args = [jax.tree_util.tree_map(cast(param if i in param_argnums else compute), a)
                    for i, a in enumerate(args)]
            kwargs = jax.tree_util.tree_map(cast(compute), kwargs)
            out = fn(*args, **kwargs)
            return jax.tree_util.tree_map(
                lambda x: x.astype(jnp.float32)
                if hasattr(x, "dtype") and x.dtype in (jnp.bfloat16, jnp.float16) else x, out)

        return native_fn

    def enter(fmt, is_param=False):
        def wrap(x):
            if not is_carrier(x):
                return x
            bits = runtime_format.current_bits()
            rounded = round_array(jnp.asarray(x), fmt, policy.grad, bits, policy.rounding,
                                  policy.seed, random_bits=policy.random_bits)
            return SimArray(rounded, policy, (), table, bits, is_param)
        return wrap

    @functools.wraps(fn)
    def simulated(*args, **kwargs):
        args = [jax.tree_util.tree_map(
            enter(policy.param_format, True) if i in param_argnums else enter(policy.compute), a)
            for i, a in enumerate(args)]
        kwargs = jax.tree_util.tree_map(enter(policy.compute), kwargs)
        if table is None:
            return _materialise(quax.quaxify(fn)(*args, **kwargs))
        with regions.tracing(table):
            return _materialise(quax.quaxify(fn)(*args, **kwargs))

    return simulated
