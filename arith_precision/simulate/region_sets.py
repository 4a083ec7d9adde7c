"""Region sets: which part of a model a probe rounds, as static or runtime-width policies.

    region set         rounded
    all                every operation (a plain `Policy`)
    <region>           only that model region (`regions.MODEL_REGIONS`), the rest at the carrier
    all_but_attention  everything except inside attention (scores, softmax, mixing)

`region_policy(set, fmt, accumulation)` is the static policy of a set at one format;
`runtime_policy(accumulation)` is one policy for every set and every e8mM width, whose slot widths
`region_bits(set, M)` selects at run time (`runtime_format.py`): slot 0 is the base, slot 1 + i
model region i; 23 bits leave a slot unrounded.
"""

from __future__ import annotations

from collections.abc import Sequence

from arith_precision.simulate.policy import Policy
from arith_precision.simulate.regions import ATTENTION_INSIDE, RegionPolicy
from arith_precision.simulate.runtime_format import MAX_RUNTIME_BITS, RuntimeMantissa

MODEL_REGIONS = ("embed", "norm", "attention_scores", "attention_mixing", "mlp", "residual",
                 "logits")
REGION_SETS = ("all",) + MODEL_REGIONS + ("all_but_attention",)


def check_region_set(region_set: str) -> None:
    if region_set not in REGION_SETS:
        raise ValueError(f"unknown region set {region_set!r}; expected one of {REGION_SETS}")


def region_policy(region_set: str, fmt, accumulation: str = "once"):
    """The static policy of a region set at a format."""
    check_region_set(region_set)
    if region_set == "all":
        return Policy(compute=fmt, accumulation=accumulation)
    if region_set == "all_but_attention":
        return RegionPolicy.except_attention(fmt).with_accumulation(accumulation)
    return RegionPolicy.only(region_set, fmt).with_accumulation(accumulation)


def runtime_policy(accumulation: str = "once",
                   regions: Sequence[str] = MODEL_REGIONS) -> RegionPolicy:
    """One policy for every region set and width (slot 0 the base, slot 1 + i region i)."""

    def at(slot):
        return Policy(compute=RuntimeMantissa(slot=slot), accumulation=accumulation)

    return RegionPolicy(at(0), tuple((r, at(1 + MODEL_REGIONS.index(r))) for r in regions))


def region_bits(region_set: str, m: int) -> list[int]:
    """The slot widths that make `runtime_policy` act as `region_policy(region_set, e8m{m})`."""
    check_region_set(region_set)
    full = MAX_RUNTIME_BITS
    if region_set == "all":
        return [m] * (1 + len(MODEL_REGIONS))
    if region_set == "all_but_attention":
        return [m] + [full if r in ATTENTION_INSIDE else m for r in MODEL_REGIONS]
    return [full] + [m if r == region_set else full for r in MODEL_REGIONS]
