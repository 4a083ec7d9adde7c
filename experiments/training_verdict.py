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

`verdict` returns data (status, rule, the per-(task, n) numbers, the failed conditions); the
report layer (`experiments/report/training.py`) writes the paragraph from it. Inputs are the
sweep's cell rows (`sweep_lib.collect`).
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
# The shortest length at which the paper's Figure 2 already shows the collapse (the upper ends
# of the ranges it reports), per (task, base); "contradicted" is only claimed at or past these.
PAPER_COLLAPSE_N = {("iter_add", 2): 10, ("mul", 2): 9, ("mul", 10): 4}


@dataclasses.dataclass(frozen=True)
class Rule:
    fp32_min: float = 0.95
    collapse_gap: float = 0.2
    control_tolerance: float = 0.05
    min_seeds: int = 2

    def text(self) -> str:
        return (f"shown: at some IterADD / MUL length with >= {self.min_seeds} seeds, fp32 >= "
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
)


def points(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One point per (task, base, k, l, layers, n) of `once` cells: per arm, {seed: exact match}
    and {seed: steps_to_converge}, over completed cells."""
    by: dict[tuple, dict] = collections.defaultdict(
        lambda: {"exact_match": collections.defaultdict(dict),
                 "steps_to_converge": collections.defaultdict(dict),
                 "convergence": collections.defaultdict(dict)})
    for r in rows:
        if r.get("accumulation", "once") != "once" or r["precision"] not in ARMS:
            continue
        if r.get("exact_match") is None:
            continue
        key = (r["task"], r["base"], r["k"], r["l"], r["layers"], r["n"])
        p = by[key]
        p["exact_match"][r["precision"]][r["seed"]] = r["exact_match"]
        p["steps_to_converge"][r["precision"]][r["seed"]] = r.get("steps_to_converge")
        p["convergence"][r["precision"]][r["seed"]] = r.get("convergence")
    out = []
    order = ("add", "iter_add", "mul")
    for key in sorted(by, key=lambda k: (order.index(k[0]), *k[1:])):
        task, base, k, l, layers, n = key
        p = by[key]
        out.append(dict(task=task, base=base, k=k, l=l, layers=layers, n=n,
                        **{name: {arm: dict(sorted(v.items())) for arm, v in d.items()}
                           for name, d in p.items()}))
    return out


def _paired(point: Mapping, arm: str) -> list[tuple[int, float, float]]:
    """(seed, fp32, arm) for the seeds both arms completed."""
    fp32, other = point["exact_match"].get("fp32", {}), point["exact_match"].get(arm, {})
    return [(s, fp32[s], other[s]) for s in sorted(set(fp32) & set(other))]


def name(point: Mapping) -> str:
    task = {"add": "ADD", "iter_add": f"IterADD (k={point['k']})", "mul": "MUL"}[point["task"]]
    return f"{task} base {point['base']} n={point['n']}"


def verdict(rows: Sequence[Mapping[str, Any]], arm: str, rule: Rule = RULE) -> dict[str, Any]:
    """The arm's verdict against fp32 (see the module doc): a dict with `status`, `arm`, `rule`
    (its text) and its thresholds, `collapses` / `matches` / `control` (the points that decide,
    each {point, pairs: [[seed, fp32, arm], ...]}) and `failed`: the conditions that kept it from
    "shown", as data, in `FAILED_CONDITIONS` order, each {condition, points}."""
    pts = points(rows)
    hard = [p for p in pts if p["task"] in HARD_TASKS and _paired(p, arm)]
    control = [p for p in pts if p["task"] == "add" and _paired(p, arm)]
    out = {"arm": arm, "rule": rule.text(), "status": "not run", "collapses": [],
           "matches": [], "control": [], "failed": [],
           "fp32_min": rule.fp32_min, "collapse_gap": rule.collapse_gap,
           "control_tolerance": rule.control_tolerance, "min_seeds": rule.min_seeds}
    if not hard:
        out["failed"].append({"condition": "no_hard_cell", "points": []})
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
    return out
