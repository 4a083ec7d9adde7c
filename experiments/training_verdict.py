"""The training claim as a computed verdict: does a low-precision arm collapse where fp32 does not?

The paper (Figure 2): trained from scratch, fp32 models stay near-perfect on ADD, IterADD and MUL
while bf16 training keeps ADD but collapses on IterADD (base 2 around 7-10 digits) and MUL (base
2 around 9 digits, base 10 around 3-4). Its "bf16" most plausibly means the whole model and
optimizer in bf16 (`pure_bf16`); mixed precision (`bf16`: bf16 compute, fp32 master weights and
optimizer) is the forgiving reading. Each arm gets its own verdict by one rule (`RULE`):

  shown         at some (task, n) with task IterADD or MUL and >= `min_seeds` seeds, fp32 reaches
                >= `fp32_min` on every seed and the arm is >= `collapse_gap` below fp32 on every
                seed (paired by seed), while on the ADD control fp32 reaches >= `fp32_min` on every
                seed at every n and the arm is within `control_tolerance` of it on every seed.
  contradicted  not shown, and at an IterADD / MUL length where the paper already shows the
                collapse (`PAPER_COLLAPSE_N`), fp32 reaches >= `fp32_min` on >= `min_seeds` seeds
                and the arm is within `control_tolerance` of it on every seed.
  not shown     anything else; the reasons say which condition failed, with the numbers.
  not run       no IterADD / MUL cell has both fp32 and the arm.

Each verdict is computed under one test protocol (`PROTOCOLS`): `iid` (examples from the task
distribution, overlap with training allowed: the paper's protocol) or `unseen` (held-out inputs
only). Under `unseen`, a point whose held-out set has fewer than `MIN_UNSEEN_INPUTS` distinct
inputs gets no verdict (`too_few_unseen` lists it): 14 unseen pairs cannot judge MUL base 2 n = 4.
A diverged run counts as exact match 0 (`curve.counted_score`).

`region_verdict` asks, for a precision-by-region arm at one cell, whether it carries the pure_bf16
deficit (`REGION_RULE`).

`verdict` returns data (status, rule, the per-(task, n) numbers, the failed conditions); the
report layer (`experiments/report/training.py`) writes the paragraph from it. Inputs are the
sweep's cell rows (`experiments.sweep.collect`).
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

ARMS = ("fp32", "pure_bf16", "bf16")
ARM_MEANING = {
    "fp32": "float32 everything (the reference)",
    "pure_bf16": "bfloat16 weights, activations, gradients and optimizer state (the paper's "
                 "most likely 'bfloat16' arm)",
    "bf16": "mixed precision: bfloat16 compute, float32 master weights and optimizer",
}
HARD_TASKS = ("iter_add", "mul")
PROTOCOLS = ("iid", "unseen")
MIN_UNSEEN_INPUTS = 200  # fewer distinct held-out inputs: no unseen verdict at that point
# The shortest length at which the paper's Figure 2 already shows the collapse (the upper ends
# of the ranges it reports), per (task, base); "contradicted" is only claimed at or past these.
PAPER_COLLAPSE_N = {("iter_add", 2): 10, ("mul", 2): 9, ("mul", 10): 4}


@dataclasses.dataclass(frozen=True)
class Rule:
    fp32_min: float = 0.95
    collapse_gap: float = 0.2
    control_tolerance: float = 0.05
    min_seeds: int = 2

    def text(self, protocol: str = "unseen") -> str:
        return (f"exact match under the {protocol} protocol"
                + (f" (points with fewer than {MIN_UNSEEN_INPUTS} distinct held-out inputs "
                   "excluded)" if protocol == "unseen" else "")
                + "; a diverged run counts as 0. "
                f"shown: at some IterADD / MUL length with >= {self.min_seeds} seeds, fp32 >= "
                f"{self.fp32_min} on every seed and the arm >= {self.collapse_gap} below fp32 on "
                f"every seed, while on ADD fp32 >= {self.fp32_min} and the arm within "
                f"{self.control_tolerance} of it on every seed at every n; contradicted: at a "
                "length where the paper already shows the collapse (IterADD base 2 n >= 10, MUL "
                f"base 2 n >= 9, MUL base 10 n >= 4), fp32 >= {self.fp32_min} and the arm "
                f"within {self.control_tolerance} of it on every seed; otherwise not shown")


RULE = Rule()
# Why a verdict is not "shown" (`verdict(...)["failed"]`), each with the points it names:
FAILED_CONDITIONS = (
    "no_hard_cell",       # no IterADD / MUL point has both arms (status "not run")
    "fp32_not_learned",   # nowhere does fp32 reach fp32_min on >= min_seeds seeds (the best point)
    "no_collapse",        # where fp32 learned, the arm is not collapse_gap below on every seed
    "no_control",         # no ADD point has both arms
    "control_fails",      # the ADD control: fp32 below fp32_min or the arm off by > tolerance
    "paper_range_match",  # the arm matches fp32 where the paper shows the collapse
    "too_few_unseen",     # unseen protocol: points left out (fewer than MIN_UNSEEN_INPUTS)
)


def _score(r: Mapping[str, Any], protocol: str) -> float | None:
    """The row's exact match under `protocol`; 0 for a diverged run (`curve.counted_score`).
    `exact_match` is always the unseen protocol's number (rows written before both protocols
    existed hold only that)."""
    if r.get("status") == "diverged":
        return 0.0
    value = r.get(f"exact_match_{protocol}")
    if value is None and protocol == "unseen":  # `exact_match` is the unseen protocol's number
        value = r.get("exact_match")
    return None if value in (None, "") else float(value)


def held_out_count(task: str, base: int, n: int, k: int) -> int | None:
    """The exact number of held-out inputs of a task (`tasks.is_held_out` over the whole input
    space) when the space has at most 2^22 inputs; None above (then it is about 1/16 of a space
    of more than 4 million inputs, far above MIN_UNSEEN_INPUTS)."""
    import numpy as np

    from arith_precision import tasks

    operands = k if task == "iter_add" else 2
    size = base ** (n * operands)
    if size > 2 ** 22:
        return None
    digits = np.stack(np.unravel_index(np.arange(size), (base,) * (n * operands)), axis=1)
    return int(tasks.is_held_out(digits.astype(np.int8).reshape(size, operands, n)).sum())


def _distinct(r: Mapping[str, Any], protocol: str) -> tuple[int | None, bool]:
    """(distinct inputs, measured): the count the run scored; for an older unseen row, the
    held-out inputs of the whole space (exact up to 2^22 inputs, else 1/16 of the space)."""
    value = r.get(f"distinct_{protocol}")
    if value not in (None, ""):
        return int(value), True
    if protocol == "unseen":
        count = held_out_count(r["task"], int(r["base"]), int(r["n"]), int(r["k"]))
        if count is None:
            operands = int(r["k"]) if r["task"] == "iter_add" else 2
            count = int(r["base"]) ** (int(r["n"]) * operands) // 16
        return count, False
    return None, False


def points(rows: Sequence[Mapping[str, Any]], protocol: str = "unseen") -> list[dict[str, Any]]:
    """One point per (task, base, k, l, layers, n) of `once` cells: per arm, {seed: exact match
    under `protocol`} (diverged: 0), {seed: steps_to_converge}, {seed: curve reading}, and the
    fewest distinct inputs any of its runs scored (`distinct`), over finished cells."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; expected one of {PROTOCOLS}")
    by: dict[tuple, dict] = collections.defaultdict(
        lambda: {"exact_match": collections.defaultdict(dict),
                 "steps_to_converge": collections.defaultdict(dict),
                 "convergence": collections.defaultdict(dict), "distinct": [],
                 "distinct_measured": True})
    for r in rows:
        if r.get("accumulation", "once") != "once":
            continue
        score = _score(r, protocol)
        if score is None:
            continue
        key = (r["task"], r["base"], r["k"], r["l"], r["layers"], r["n"])
        p = by[key]
        p["exact_match"][r["precision"]][r["seed"]] = score
        p["steps_to_converge"][r["precision"]][r["seed"]] = r.get("steps_to_converge")
        p["convergence"][r["precision"]][r["seed"]] = \
            r.get(f"curve_{protocol}") or r.get("convergence")
        d, measured = _distinct(r, protocol)
        if d is not None:
            p["distinct"].append(d)
            p["distinct_measured"] = p.get("distinct_measured", True) and measured
    out = []
    order = ("add", "iter_add", "mul")
    for key in sorted(by, key=lambda k: (order.index(k[0]), *k[1:])):
        task, base, k, l, layers, n = key
        p = by[key]
        out.append(dict(task=task, base=base, k=k, l=l, layers=layers, n=n,
                        distinct=min(p["distinct"]) if p["distinct"] else None,
                        distinct_measured=p["distinct_measured"],
                        **{name: {arm: dict(sorted(v.items())) for arm, v in d.items()}
                           for name, d in p.items()
                           if name not in ("distinct", "distinct_measured")}))
    return out


def _paired(point: Mapping, arm: str) -> list[tuple[int, float, float]]:
    """(seed, fp32, arm) for the seeds both arms completed."""
    fp32, other = point["exact_match"].get("fp32", {}), point["exact_match"].get(arm, {})
    return [(s, fp32[s], other[s]) for s in sorted(set(fp32) & set(other))]


def name(point: Mapping) -> str:
    task = {"add": "ADD", "iter_add": f"IterADD (k={point['k']})", "mul": "MUL"}[point["task"]]
    return f"{task} base {point['base']} n={point['n']}"


def verdict(rows: Sequence[Mapping[str, Any]], arm: str, rule: Rule = RULE,
            protocol: str = "unseen") -> dict[str, Any]:
    """The arm's verdict against fp32 under `protocol` (see the module doc): a dict with
    `status`, `arm`, `protocol`, `rule` (its text) and its thresholds, `collapses` / `matches` /
    `control` (the points that decide, each {point, pairs: [[seed, fp32, arm], ...]}), `excluded`
    (unseen: [{point, distinct}] with too few held-out inputs) and `failed`: the conditions that
    kept it from "shown", as data, in `FAILED_CONDITIONS` order, each {condition, points}."""
    pts = points(rows, protocol)
    excluded = []
    if protocol == "unseen":
        excluded = [p for p in pts if p["distinct"] is not None
                    and p["distinct"] < MIN_UNSEEN_INPUTS and _paired(p, arm)]
        pts = [p for p in pts if p not in excluded]
    hard = [p for p in pts if p["task"] in HARD_TASKS and _paired(p, arm)]
    control = [p for p in pts if p["task"] == "add" and _paired(p, arm)]
    out = {"arm": arm, "protocol": protocol, "rule": rule.text(protocol), "status": "not run",
           "collapses": [], "matches": [], "control": [], "failed": [],
           "excluded": [{"point": name(p), "distinct": p["distinct"]} for p in excluded],
           "fp32_min": rule.fp32_min, "collapse_gap": rule.collapse_gap,
           "control_tolerance": rule.control_tolerance, "min_seeds": rule.min_seeds}
    too_few = ([{"condition": "too_few_unseen",
                 "points": [{"point": name(p), "pairs": _paired(p, arm)} for p in excluded]}]
               if excluded else [])
    if not hard:
        out["failed"] += [{"condition": "no_hard_cell", "points": []}] + too_few
        return out

    def fp32_ok(pairs):
        return len(pairs) >= rule.min_seeds and all(f >= rule.fp32_min for _, f, _ in pairs)

    collapses, learned = [], []
    for p in hard:
        pairs = _paired(p, arm)
        if fp32_ok(pairs):
            learned.append((p, pairs))
            if all(a <= f - rule.collapse_gap for _, f, a in pairs):
                collapses.append((p, pairs))
    control_pairs = [(p, _paired(p, arm)) for p in control]
    control_ok = bool(control_pairs) and all(
        fp32_ok(pairs) and all(abs(f - a) <= rule.control_tolerance for _, f, a in pairs)
        for _, pairs in control_pairs)
    matches = [(p, pairs) for p, pairs in learned
               if p["n"] >= PAPER_COLLAPSE_N.get((p["task"], p["base"]), 10**9)
               and all(a >= f - rule.control_tolerance for _, f, a in pairs)]

    def show(items):
        return [{"point": name(p), "pairs": [list(x) for x in pairs]} for p, pairs in items]

    out.update(collapses=show(collapses), matches=show(matches), control=show(control_pairs))
    if collapses and control_ok:
        out["status"] = "shown"
        return out
    out["status"] = "contradicted" if matches else "not shown"
    failed = out["failed"]
    if not learned:
        best = max(hard, key=lambda p: min(f for _, f, _ in _paired(p, arm)))
        failed.append({"condition": "fp32_not_learned",
                       "points": show([(best, _paired(best, arm))])})
    elif not collapses:
        failed.append({"condition": "no_collapse", "points": show(learned)})
    if not control_pairs:
        failed.append({"condition": "no_control", "points": []})
    elif not control_ok:
        failed.append({"condition": "control_fails", "points": show(control_pairs)})
    if matches:
        failed.append({"condition": "paper_range_match", "points": show(matches)})
    failed += too_few
    return out


# ---- which part of training needs the bits -----------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RegionRule:
    min_deficit: float = 0.2
    share: float = 0.5

    def text(self, protocol: str = "iid") -> str:
        return (f"at the cell, under the {protocol} protocol (diverged runs count 0), with D = "
                f"mean(fp32) - mean(pure_bf16) and G = mean(fp32) - mean(arm) over the seeds "
                f"all three ran: the arm carries the deficit when D >= {self.min_deficit} and "
                f"G >= {self.share} D; it does not carry it when D >= {self.min_deficit} and "
                f"G < {self.share} D; with D < {self.min_deficit} there is no deficit to carry")


REGION_RULE = RegionRule()
REGION_STATUSES = ("carries the deficit", "does not carry the deficit", "no deficit to carry",
                   "not run")


def region_verdict(rows: Sequence[Mapping[str, Any]], arm: str, *, task: str, base: int, n: int,
                   protocol: str = "iid", rule: RegionRule = REGION_RULE) -> dict[str, Any]:
    """Whether a precision-by-region `arm` carries the pure_bf16 deficit at (task, base, n)
    (`REGION_RULE`): {arm, status, rule, seeds, fp32, pure_bf16, arm_scores, D, G}."""
    out = {"arm": arm, "status": "not run", "rule": rule.text(protocol), "protocol": protocol,
           "seeds": [], "D": None, "G": None}
    point = next((p for p in points(rows, protocol) if (p["task"], p["base"], p["n"])
                  == (task, base, n)), None)
    if point is None:
        return out
    em = point["exact_match"]
    seeds = sorted(set(em.get("fp32", {})) & set(em.get("pure_bf16", {})) & set(em.get(arm, {})))
    if not seeds:
        return out

    def mean(a):
        return sum(em[a][s] for s in seeds) / len(seeds)

    d, g = mean("fp32") - mean("pure_bf16"), mean("fp32") - mean(arm)
    out.update(seeds=seeds, D=d, G=g, fp32=[em["fp32"][s] for s in seeds],
               pure_bf16=[em["pure_bf16"][s] for s in seeds],
               arm_scores=[em[arm][s] for s in seeds])
    if d < rule.min_deficit:
        out["status"] = "no deficit to carry"
    else:
        out["status"] = "carries the deficit" if g >= rule.share * d else \
            "does not carry the deficit"
    return out
