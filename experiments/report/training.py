"""The training arms in the report: each arm's verdict as a paragraph (`render`, from
`experiments.training_verdict.verdict`'s data and the templates below), and the table: per
(task, n), each arm's exact match per seed and the step at which each run converged (rows of
`experiments.training_verdict.points`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from arith_precision.common import markdown
from experiments import training_verdict as tv

# One sentence per failed condition (`training_verdict.FAILED_CONDITIONS`); {items} lists the
# condition's points with their per-seed numbers.
FAILED_TEXT = {
    "no_hard_cell": "no IterADD / MUL cell has both fp32 and {arm}",
    "fp32_not_learned": ("fp32 does not reach {fp32_min} on every one of >= {min_seeds} seeds at "
                         "any IterADD / MUL length run (best: {items})"),
    "no_collapse": ("where fp32 reaches {fp32_min}, {arm} is not {collapse_gap} below it on "
                    "every seed ({items})"),
    "no_control": "no ADD control cell has both arms",
    "control_fails": ("the ADD control does not hold (fp32 >= {fp32_min} and {arm} within "
                      "{control_tolerance} on every seed): {items}"),
    "paper_range_match": ("at lengths where the paper shows the collapse, {arm} matches fp32: "
                          "{items}"),
    "too_few_unseen": ("left out of the unseen verdict, fewer than {min_unseen} distinct "
                       "held-out inputs: {items}"),
}
SHOWN_TEXT = "fp32 vs {arm}, per seed: {collapses}; ADD control: {control}. "


def _numbers(pairs) -> str:
    return ", ".join(f"seed {s}: {f:.3f} vs {a:.3f}" for s, f, a in pairs)


def _items(points, sep: str = "; ", point_sep: str = ": ") -> str:
    return sep.join(f"{c['point']}{point_sep}{_numbers(c['pairs'])}" for c in points)


def render(v: Mapping) -> str:
    """One paragraph from a `training_verdict.verdict` dict."""
    arm = v["arm"]
    protocol = f" [{v['protocol']} protocol]" if v.get("protocol") else ""
    head = f"**{arm}**{protocol} ({tv.ARM_MEANING.get(arm, arm)}): **{v['status']}**. "
    if v["status"] == "shown":
        return head + SHOWN_TEXT.format(arm=arm, collapses=_items(v["collapses"]),
                                        control=_items(v["control"]))
    reasons = []
    for f in v["failed"]:
        sep = ", " if f["condition"] == "fp32_not_learned" else ": "
        if f["condition"] == "too_few_unseen":
            items = ", ".join(f"{e['point']} ({e['distinct']})" for e in v["excluded"])
        else:
            items = _items(f["points"], point_sep=sep)
        reasons.append(FAILED_TEXT[f["condition"]].format(
            arm=arm, fp32_min=v["fp32_min"], min_seeds=v["min_seeds"],
            min_unseen=tv.MIN_UNSEEN_INPUTS,
            collapse_gap=v["collapse_gap"], control_tolerance=v["control_tolerance"],
            items=items))
    return head + ("; ".join(reasons) + ". " if reasons else "")


def _exact_matches(p: Mapping, arm: str) -> str:
    d = p["exact_match"].get(arm, {})
    return " / ".join(f"{v:.3f}" for v in d.values()) or "-"


def _readings(p: Mapping, arm: str) -> str:
    """Per seed: the curve reading (converged@S, plateau, rising, diverged), or steps to
    converge where an older row has no reading."""
    steps, how = p["steps_to_converge"].get(arm, {}), p["convergence"].get(arm, {})
    if not steps:
        return "-"
    return " / ".join(how.get(s) or (f"converged@{steps[s]}" if steps[s] is not None else "-")
                      for s in steps)


def training_table(cells: Sequence[Mapping], protocol: str = "unseen") -> list[str]:
    """Markdown lines: per (task, n), each arm's exact match per seed under `protocol`, the
    fewest distinct inputs a run of the point scored (marked * where the rows predate that
    count: then the held-out inputs of the whole space, exact up to 2^22 inputs, else 1/16 of
    it), and each run's curve reading."""
    pts = tv.points(cells, protocol)
    if not pts:
        return []
    arms = [a for a in tv.ARMS if any(a in p["exact_match"] for p in pts)]
    arms += sorted({a for p in pts for a in p["exact_match"]} - set(arms))
    return markdown.table(
        ["task", "n", "layers", f"distinct {protocol} inputs", *arms,
         *(f"curve: {a}" for a in arms)],
        ([tv.name(p).rsplit(" n=", 1)[0], p["n"], p["layers"],
          "-" if p["distinct"] is None else p["distinct"] if p["distinct_measured"]
          else f"{p['distinct']} held out*",
          *(_exact_matches(p, a) for a in arms), *(_readings(p, a) for a in arms)]
         for p in pts))


REGION_TEXT = ("**{arm}** ({meaning}): **{status}** (seeds {seeds}: fp32 {fp32}, pure_bf16 "
               "{pure}, {arm} {scores}; D = {d}, G = {g}). ")


def render_region(v: Mapping, meaning: str = "") -> str:
    """One sentence from a `training_verdict.region_verdict` dict."""
    if v["status"] == "not run":
        return f"**{v['arm']}** ({meaning}): **not run** (no seed has fp32, pure_bf16 and it). "

    def nums(xs):
        return " / ".join(f"{x:.3f}" for x in xs)

    return REGION_TEXT.format(arm=v["arm"], meaning=meaning, status=v["status"],
                              seeds=", ".join(map(str, v["seeds"])), fp32=nums(v["fp32"]),
                              pure=nums(v["pure_bf16"]), scores=nums(v["arm_scores"]),
                              d=f"{v['D']:.3f}", g=f"{v['G']:.3f}")
