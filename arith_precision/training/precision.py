"""From a run's `precision` config block to what the train step simulates.

    name          what runs                                             simulated region
    fp32          real float32, matmuls at precision "highest"          nothing
    bf16, fp16,   compute in that format, fp32 master weights and      loss and gradient
    any format    fp32 optimizer (mixed precision)
    pure_<fmt>    everything in the format: parameters, gradients,     the whole train step
    (pure_bf16)   optimizer moments and the update (like casting the
                  whole model and optimizer to bf16)

`accumulation` (once | sequential | pairwise) applies inside the simulated region; `native=True`
uses real bf16/fp16 arrays instead of simulation (hardware accumulation, fast on accelerators).
`param`, `accum`, `grad` optionally override the policy's formats (empty string: default).
`tensor_core_dot` (auto | on | off) is the policy's switch for bf16 x bf16 -> fp32 contractions
under `once` (`simulate/tensor_core.py`); a run config sets it as `precision.tensor_core_dot`
(absent: auto, i.e. on GPU/TPU only).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from arith_precision.simulate import Policy


@dataclasses.dataclass(frozen=True)
class StepPrecision:
    """`policy` is None for plain fp32; `whole_step` says whether the optimizer is simulated too."""

    policy: Policy | None
    whole_step: bool

    @property
    def description(self) -> str:
        if self.policy is None:
            return "fp32 (native)"
        p = self.policy
        where = "whole step" if self.whole_step else "loss+grad, fp32 master weights"
        mode = "native" if p.native else f"simulated, accumulation={p.accumulation}"
        if not p.native and p.tensor_core_dot != "auto":
            mode += f", tensor_core_dot={p.tensor_core_dot}"
        return f"{p.compute} ({mode}; {where})"


def step_precision(name: str, accumulation: str = "once", native: bool = False, param: str = "",
                   accum: str = "", grad: str = "",
                   tensor_core_dot: str = "auto") -> StepPrecision:
    """Resolve a precision preset or format name (see the module docstring)."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"precision name must be a non-empty string, got {name!r}")
    whole_step = name.startswith("pure_")
    fmt = name[len("pure_"):] if whole_step else name
    overrides = {k: v for k, v in (("param", param), ("accum", accum), ("grad", grad)) if v}
    if fmt == "fp32" and accumulation == "once" and not overrides and not whole_step:
        return StepPrecision(None, False)
    try:
        policy = Policy(compute=fmt, accumulation=accumulation, native=native,
                        tensor_core_dot=tensor_core_dot, **overrides)
    except ValueError as e:
        raise ValueError(
            f"bad precision {name!r}: expected fp32, bf16, fp16, pure_<format> or a format "
            f"string ({e})") from None
    if whole_step and "param" not in overrides:
        policy = policy.replace(param=policy.compute)
    if not policy.native:
        # Training runs on float32 carriers; a format float32 cannot carry exactly would only
        # fail deep inside the first step, so reject it here, by name.
        from arith_precision import formats

        for role in ("compute", "param", "accum", "grad"):
            fmt = getattr(policy, role, None)
            if fmt is not None and formats.carrier_dtype(fmt) != np.float32:
                raise ValueError(
                    f"bad precision {name!r}: the {role} format {fmt} needs a float64 carrier, "
                    f"but training simulates on float32 (formats with at most 10 mantissa and 8 "
                    f"exponent bits, fixed point with I + F <= 11)")
    return StepPrecision(policy, whole_step)
