"""Precision by region: a policy per named part of a model or of a train step.

    from arith_precision.simulate import RegionPolicy, simulate
    rp = RegionPolicy.of("bf16", {"attention_scores": "fp32"})   # bf16 model, fp32 softmax
    logits = simulate(model.apply, rp)(params, tokens)
    logits = simulate(model.apply, RegionPolicy.only("mlp", "e8m3"))(params, tokens)
    logits = simulate(model.apply, RegionPolicy.except_attention("e8m4"))(params, tokens)

Named regions (the model code names no format: a region is a Flax module method, found by method
interception, `flax.linen.intercept_methods`, or a marked part of a train step):

    region            where                                  covers
    embed             Transformer.embed_tokens               token + position embedding
    norm              LayerNorm.__call__                     layer-norm statistics and scaling
    attention         CausalAttention.__call__               projections, scores, softmax, mixing
    attention_scores  CausalAttention.attention_scores       q k^T / sqrt(Dh), mask, softmax
    attention_mixing  CausalAttention.attention_mixing       A v
    mlp               Mlp.__call__                           both dense layers and the activation
    residual          Block.residual_add                     the residual stream's additions
    logits            Transformer.head                       final layer norm and unembedding
    gradients         train step (`train.make_train_step`)   the backward pass
    optimizer_update  train step                             optimizer update and its application

A key with a "/" names Flax module paths instead: `"layer_0/mlp"`, `"layer_*/attn"` (fnmatch on
the module path, `__call__` only). A key that is neither is an error, and so is a key that never
occurs in the simulated function (checked when it is traced).

Semantics (dataflow, so it survives `jit`, `scan`, `fori_loop` and `grad`): at a region's entry
every floating input passes through a marker primitive that re-tags the `SimArray` with the
region's policy and rounds it to the region's compute format; every floating output passes
through the region's format and then an exit marker that restores the enclosing policy and
rounds to its compute format (so a module that reads parameters only, like the embedding lookup,
still has its output rounded to the region's format). An
operation takes the policy of its most deeply nested input, so parameters (tagged with the base
policy on entry) used inside a region are computed at the region's precision. Regions nest
(`attention_scores` inside `attention`); the innermost listed region wins. The markers are linear
and transpose into each other, so the backward pass through a region runs at the region's
precision; `gradients` tags the cotangent of the loss, so the rest of the backward pass runs at
its precision. Regions not listed in the policy are not marked: a region computed at the carrier
(`"fp32"` on a float32 carrier) is bit-identical to that region computed unrounded by hand, its
inputs rounded to the enclosing format and its outputs rounded on exit.

`except_attention(fmt)`: every operation rounded to `fmt` except inside attention (scores,
softmax and mixing at the carrier). Yang, Cadilhac & Chiang (2025) prove transformers rounded to
fixed precision everywhere except inside attention are exactly C-RASP; this makes that testable.
Note "inside attention" here is computed in float32, not exactly.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import fnmatch
import functools
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn
from jax.extend.core import Primitive
from jax.interpreters import ad, batching, mlir

from arith_precision.simulate.policy import Policy, as_policy

# name -> (Flax module class, method): the regions found by method interception.
MODULE_REGIONS = {
    "embed": ("Transformer", "embed_tokens"),
    "norm": ("LayerNorm", "__call__"),
    "attention": ("CausalAttention", "__call__"),
    "attention_scores": ("CausalAttention", "attention_scores"),
    "attention_mixing": ("CausalAttention", "attention_mixing"),
    "mlp": ("Mlp", "__call__"),
    "residual": ("Block", "residual_add"),
    "logits": ("Transformer", "head"),
}
STEP_REGIONS = ("gradients", "optimizer_update")
REGIONS = tuple(MODULE_REGIONS) + STEP_REGIONS
ATTENTION_INSIDE = ("attention_scores", "attention_mixing")


def _is_path(name: str) -> bool:
    return "/" in name


@dataclasses.dataclass(frozen=True)
class RegionPolicy:
    """A base policy and a policy per region (see the module docstring)."""

    base: Policy
    regions: tuple[tuple[str, Policy], ...]

    def __post_init__(self):
        object.__setattr__(self, "base", as_policy(self.base))
        seen, items = set(), []
        for name, policy in self.regions:
            if not isinstance(name, str) or not (name in REGIONS or _is_path(name)):
                raise ValueError(
                    f"unknown region {name!r}: expected one of {', '.join(REGIONS)} or a Flax "
                    f"module path such as 'layer_0/mlp'")
            if name in seen:
                raise ValueError(f"region {name!r} given twice")
            seen.add(name)
            if not isinstance(policy, Policy):  # a format: the base policy at that format
                policy = self.base.replace(compute=policy)
            if policy.native:
                raise ValueError(f"region {name!r}: native policies cannot be mixed by region")
            items.append((name, policy))
        if self.base.native:
            raise ValueError("RegionPolicy: the base policy cannot be native")
        object.__setattr__(self, "regions", tuple(items))

    @classmethod
    def of(cls, base, regions: Mapping[str, Any]) -> RegionPolicy:
        """`base` (format, preset or Policy) everywhere, `regions[name]` inside each region."""
        return cls(as_policy(base), tuple(regions.items()))

    @classmethod
    def only(cls, region: str, fmt, base="fp32") -> RegionPolicy:
        """Only `region` rounded to `fmt`; everything else at `base` (default: the carrier)."""
        return cls.of(base, {region: fmt})

    @classmethod
    def except_attention(cls, fmt, inside="fp32") -> RegionPolicy:
        """Everything at `fmt` except attention scores, softmax and mixing (at `inside`)."""
        return cls.of(fmt, {name: inside for name in ATTENTION_INSIDE})

    @property
    def native(self) -> bool:  # so code that asks a Policy whether it is native can take this too
        return False

    @property
    def compute(self):
        return self.base.compute

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.regions)

    def policy_for(self, name: str) -> Policy:
        return dict(self.regions)[name]

    def policy_of_scope(self, scope: tuple[str, ...]) -> Policy:
        return self.policy_for(scope[-1]) if scope else self.base

    def with_accumulation(self, accumulation: str | None) -> RegionPolicy:
        if accumulation is None:
            return self
        return RegionPolicy(self.base.replace(accumulation=accumulation),
                            tuple((n, p.replace(accumulation=accumulation))
                                  for n, p in self.regions))


# ---- the marker primitive ----------------------------------------------------------------------
# region_p(x, name, mode) is the identity on values; under simulation (a quax rule in
# sim_array.py) it re-tags a SimArray with the region's policy (mode "enter") or the enclosing one
# ("exit"), or, for a value computed outside the region's dataflow ("through": a module output
# computed from parameters alone, such as the embedding lookup), rounds it to the region's format.

region_p = Primitive("precision_region")
region_p.def_impl(lambda x, **_: x)
region_p.def_abstract_eval(lambda x, **_: x)
batching.defvectorized(region_p)
mlir.register_lowering(region_p, lambda ctx, x, **_: [x])


_ADJOINT = {"enter": "exit", "exit": "enter", "through": "through"}


def _transpose(ct, x, *, name, mode):
    del x
    if type(ct) is ad.Zero:
        return [ct]
    return [region_p.bind(ct, name=name, mode=_ADJOINT[mode])]


ad.deflinear2(region_p, _transpose)


def _floating(x) -> bool:
    return hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.floating)


def mark(tree, name: str, mode: str):
    """Pass every floating leaf of `tree` through the region marker (`mode`: enter/exit/through)."""
    return jax.tree_util.tree_map(
        lambda x: region_p.bind(x, name=name, mode=mode) if _floating(x) else x, tree)


def _leave(out, name: str):
    # Outputs are rounded to the region's format even when no input carried the region (an
    # embedding lookup reads parameters only), then handed back to the enclosing policy.
    return mark(mark(out, name, "through"), name, "exit")


# ---- which regions are active while a function is traced ---------------------------------------

@dataclasses.dataclass
class _Trace:
    names: frozenset
    used: set


_ACTIVE: contextvars.ContextVar[_Trace | None] = contextvars.ContextVar("regions", default=None)


def _active_names(module, method: str, trace: _Trace) -> list[str]:
    cls = type(module).__name__
    path = "/".join(module.path) if module.scope is not None else ""
    found = []
    for name in trace.names:
        if _is_path(name):
            if method == "__call__" and fnmatch.fnmatchcase(path, name):
                found.append(name)
        elif MODULE_REGIONS.get(name) == (cls, method):
            found.append(name)
    return found


def _interceptor(next_fun, args, kwargs, context):
    trace = _ACTIVE.get()
    names = [] if trace is None else _active_names(context.module, context.method_name, trace)
    if not names:
        return next_fun(*args, **kwargs)
    # A module method can match a named region and a path pattern: enter in a fixed order.
    names = sorted(names, key=lambda n: (_is_path(n), n))
    trace.used.update(names)
    for name in names:
        args, kwargs = mark((args, kwargs), name, "enter")
    out = next_fun(*args, **kwargs)
    for name in reversed(names):
        out = _leave(out, name)
    return out


@contextlib.contextmanager
def tracing(policy: RegionPolicy):
    """While `fn` is traced under `policy`: mark its regions, then check each one occurred."""
    trace = _Trace(frozenset(policy.names), set())
    token = _ACTIVE.set(trace)
    try:
        with nn.intercept_methods(_interceptor):
            yield
    finally:
        _ACTIVE.reset(token)
    missing = sorted(set(policy.names) - trace.used)
    if missing:
        raise ValueError(f"region(s) {', '.join(map(repr, missing))} named in the policy do not "
                         f"occur in the simulated function")


def region(name: str, fn):
    """`fn` as the region `name` (for parts of a train step); a no-op unless `name` is active."""
    if name not in REGIONS:
        raise ValueError(f"unknown region {name!r}: expected one of {', '.join(REGIONS)}")

    def wrapped(*args, **kwargs):
        trace = _ACTIVE.get()
        if trace is None or name not in trace.names:
            return fn(*args, **kwargs)
        trace.used.add(name)
        args, kwargs = mark((args, kwargs), name, "enter")
        return _leave(fn(*args, **kwargs), name)

    return wrapped


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _cotangent_in(x, name):
    return x


def _cotangent_in_fwd(x, name):
    return x, x


def _cotangent_in_bwd(name, x, ct):
    # The cotangent seed of jax.grad is a plain array, which the simulation never sees; times a
    # simulated 1 (selected from the saved value, so it is 1 even where x is not finite) it
    # becomes a simulated value, which then enters the region.
    one = jnp.where(True, jnp.ones((), x.dtype), x)
    return (mark(ct * one, name, "enter"),)


_cotangent_in.defvjp(_cotangent_in_fwd, _cotangent_in_bwd)


def backward_region(name: str, loss):
    """Tag the cotangent of `loss` with region `name` (the rest of the backward pass runs there).

    Pair with `end_backward_region` on the gradients. Take `jax.grad` inside the simulated
    function (as a simulated train step does), so that JAX applies this rule.
    """
    trace = _ACTIVE.get()
    if trace is None or name not in trace.names:
        return loss
    trace.used.add(name)
    return _cotangent_in(loss, name)


def end_backward_region(name: str, grads):
    """Leave region `name` (entered by the cotangent, see `backward_region`) on `grads`."""
    trace = _ACTIVE.get()
    if trace is None or name not in trace.names:
        return grads
    return mark(grads, name, "exit")
