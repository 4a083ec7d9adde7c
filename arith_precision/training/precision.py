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

Precision by region and rounding (`simulate.RegionPolicy`, `formats.ROUNDING_MODES`):

    precision.rounding  the rounding mode of every rounding of the step (default nearest_even;
                        stochastic draws its bits from the run's `seed`: the same seed gives
                        the same training, bit for bit, resume included)
    precision.regions   ';'-separated `region=format[@rounding]`: that model region (embed,
                        norm, attention, attention_scores, attention_mixing, mlp, residual,
                        logits) or part of the step (gradients; optimizer_update, whole-step
                        precisions only) at its own format and rounding, e.g.
                        "attention_scores=fp32;attention_mixing=fp32" or
                        "optimizer_update=bf16@stochastic"

Named arms (`REGION_ARMS`, usable as `precision.name`) ask which part of training needs the bits:

    bf16_except_attention  bf16 compute everywhere except inside attention (scores, softmax,
                           mixing at fp32), fp32 master weights (the C-RASP setting)
    bf16_attention_only    fp32 compute except attention (projections, scores, mixing) in bf16
    bf16_mlp_only          fp32 compute except the MLPs in bf16
    bf16_storage           bf16 weights and optimizer state, fp32 compute (the whole step
                           simulated: state rounded to bf16 on entry, arithmetic at fp32)
    pure_bf16_sr_update    pure_bf16 with every rounding inside the optimizer update stochastic
                           (the standard remedy for updates below half an ulp of the weight)
"""

from __future__ import annotations

import dataclasses

import numpy as np

from arith_precision.simulate import Policy, RegionPolicy
from arith_precision.simulate.regions import STEP_REGIONS

# name -> (the precision it starts from, its regions, keyword overrides of the base policy)
REGION_ARMS = {
    "bf16_except_attention": ("bf16", "attention_scores=fp32;attention_mixing=fp32", {}),
    "bf16_attention_only": ("fp32_simulated", "attention=bf16", {}),
    "bf16_mlp_only": ("fp32_simulated", "mlp=bf16", {}),
    "bf16_storage": ("pure_fp32", "", {"param": "bf16"}),
    "pure_bf16_sr_update": ("pure_bf16", "optimizer_update=bf16@stochastic", {}),
}


@dataclasses.dataclass(frozen=True)
class StepPrecision:
    """`policy` is None for plain fp32; `whole_step` says whether the optimizer is simulated too."""

    policy: Policy | RegionPolicy | None
    whole_step: bool

    @property
    def eval_policy(self) -> Policy | RegionPolicy | None:
        """The policy evaluation decodes at: the step's, less the parts of a train step
        (gradients, optimizer_update), which decoding does not run; None for fp32 and native
        precisions (the model computes in the real dtype)."""
        p = self.policy
        if p is None or p.native:
            return None
        if isinstance(p, RegionPolicy):
            kept = tuple((name, q) for name, q in p.regions if name not in STEP_REGIONS)
            return RegionPolicy(p.base, kept) if kept else p.base
        return p

    @property
    def description(self) -> str:
        if self.policy is None:
            return "fp32 (native)"
        where = "whole step" if self.whole_step else "loss+grad, fp32 master weights"
        if isinstance(self.policy, RegionPolicy):
            base = self.policy.base
            parts = ", ".join(f"{name}={p.compute}" + (f"@{p.rounding}" if p.rounding !=
                                                       base.rounding else "")
                              for name, p in self.policy.regions)
            rounding = "" if base.rounding == "nearest_even" else f", rounding={base.rounding}"
            return (f"{base.compute} with regions {parts} (simulated, accumulation="
                    f"{base.accumulation}{rounding}; {where})")
        p = self.policy
        mode = "native" if p.native else f"simulated, accumulation={p.accumulation}"
        if not p.native and p.tensor_core_dot != "auto":
            mode += f", tensor_core_dot={p.tensor_core_dot}"
        if p.rounding != "nearest_even":
            mode += f", rounding={p.rounding}"
        if p.param is not None and p.param != p.compute:
            mode += f", parameters {p.param}"
        return f"{p.compute} ({mode}; {where})"


def step_precision(name: str, accumulation: str = "once", native: bool = False, param: str = "",
                   accum: str = "", grad: str = "", tensor_core_dot: str = "auto",
                   regions: str = "", rounding: str = "nearest_even",
                   seed: int = 0, random_bits: int | None = None) -> StepPrecision:
    """Resolve a precision preset, region arm or format name (see the module docstring).

    `regions`, `rounding`: precision by region and the rounding mode; `seed` keys stochastic
    rounding and `random_bits` (None: the exact rule) sets its random bits per rounding
    (`formats.quantize`). A ValueError names the argument (`regions: ...`, `rounding: ...`,
    `random_bits: ...`) it is about.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"precision name must be a non-empty string, got {name!r}")
    if name in REGION_ARMS:
        base, arm_regions, overrides = REGION_ARMS[name]
        if regions:
            raise ValueError(f"regions: {regions!r}: the arm {name!r} sets its own regions "
                             f"({arm_regions!r})")
        kwargs = dict(param=param, accum=accum, grad=grad)
        kwargs.update(overrides)
        return step_precision(base, accumulation, native, tensor_core_dot=tensor_core_dot,
                              regions=arm_regions, rounding=rounding, seed=seed,
                              random_bits=random_bits, **kwargs)
    whole_step = name.startswith("pure_")
    fmt = name[len("pure_"):] if whole_step else name
    simulated_fp32 = fmt == "fp32_simulated"  # fp32 through the simulation (a region base)
    fmt = "fp32" if simulated_fp32 else fmt
    overrides = {k: v for k, v in (("param", param), ("accum", accum), ("grad", grad)) if v}
    plain = fmt == "fp32" and accumulation == "once" and not overrides and not whole_step
    if plain and not regions and rounding == "nearest_even" and not simulated_fp32:
        return StepPrecision(None, False)
    try:
        policy = Policy(compute=fmt, accumulation=accumulation, native=native,
                        tensor_core_dot=tensor_core_dot, **overrides)
    except ValueError as e:
        raise ValueError(
            f"bad precision {name!r}: expected fp32, bf16, fp16, pure_<format>, a region arm "
            f"({', '.join(REGION_ARMS)}) or a format string ({e})") from None
    if whole_step and "param" not in overrides:
        policy = policy.replace(param=policy.compute)
    if rounding != "nearest_even":
        if policy.native:
            raise ValueError(f"rounding: {rounding!r}: a native precision rounds as the hardware "
                             f"does (nearest_even)")
        try:
            policy = policy.replace(rounding=rounding, seed=seed)
        except ValueError as e:
            raise ValueError(f"rounding: {rounding!r}: {e}") from None
    if random_bits is not None and rounding != "stochastic" and "stochastic" not in regions:
        raise ValueError(f"random_bits: {random_bits!r}: only stochastic rounding draws random "
                         f"bits (precision.rounding is {rounding!r} and no region rounds "
                         f"stochastically)")
    if random_bits is not None and rounding == "stochastic":
        try:
            policy = policy.replace(random_bits=random_bits)
        except ValueError as e:
            raise ValueError(f"random_bits: {random_bits!r}: {e}") from None
    if not policy.native:
        _check_carrier(name, policy)
    if regions:
        policy = _region_policy(policy, regions, whole_step, seed, random_bits)
    return StepPrecision(policy, whole_step)


def _check_carrier(name: str, policy: Policy) -> None:
    """Training runs on float32 carriers; a format float32 cannot carry exactly would only fail
    deep inside the first step, so reject it here, by name."""
    from arith_precision import formats

    for role in ("compute", "param", "accum", "grad"):
        fmt = getattr(policy, role, None)
        if fmt is not None and formats.carrier_dtype(fmt) != np.float32:
            raise ValueError(
                f"bad precision {name!r}: the {role} format {fmt} needs a float64 carrier, "
                f"but training simulates on float32 (formats with at most 10 mantissa and 8 "
                f"exponent bits, fixed point with I + F <= 11)")


def parse_regions(text: str) -> list[tuple[str, str, str | None]]:
    """'a=fmt;b=fmt@rounding' -> [(region, format, rounding or None)] (ValueError naming the
    entry)."""
    out = []
    for item in (t.strip() for t in text.split(";")):
        if not item:
            continue
        region, eq, rest = item.partition("=")
        fmt, _, rounding = rest.partition("@")
        if not eq or not region.strip() or not fmt.strip():
            raise ValueError(f"regions: {text!r}: entry {item!r} is not region=format[@rounding]")
        out.append((region.strip(), fmt.strip(), rounding.strip() or None))
    if not out:
        raise ValueError(f"regions: {text!r}: no region=format entry")
    return out


def _region_policy(base: Policy, text: str, whole_step: bool, seed: int,
                   random_bits: int | None = None) -> RegionPolicy:
    items = []
    for region, fmt, rounding in parse_regions(text):
        if region == "optimizer_update" and not whole_step:
            raise ValueError(f"regions: {text!r}: optimizer_update is simulated only by a "
                             f"whole-step precision (pure_<format>)")
        try:
            policy = base.replace(compute=fmt)
            if rounding is not None:
                policy = policy.replace(rounding=rounding, seed=seed,
                                        random_bits=random_bits if rounding == "stochastic"
                                        else None)
        except ValueError as e:
            raise ValueError(f"regions: {text!r}: {region}: {e}") from None
        _check_carrier(f"{region}={fmt}", policy)
        items.append((region, policy))
    try:
        return RegionPolicy(base, tuple(items))
    except ValueError as e:
        raise ValueError(f"regions: {text!r}: {e}") from None
