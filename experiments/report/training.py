"""The table of the training arms: per (task, n), each arm's exact match per seed and the step at
which each run converged (rows of `experiments.training_verdict.points`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from experiments import training_verdict as tv
from experiments.report import markdown


def _exact_matches(p: Mapping, arm: str) -> str:
    d = p["exact_match"].get(arm, {})
    return " / ".join(f"{v:.3f}" for v in d.values()) or "-"


def _convergence(p: Mapping, arm: str) -> str:
    steps, how = p["steps_to_converge"].get(arm, {}), p["convergence"].get(arm, {})
    if not steps:
        return "-"
    return " / ".join(str(steps[s]) if steps[s] is not None else (how.get(s) or "-")
                      for s in steps)


def training_table(cells: Sequence[Mapping]) -> list[str]:
    """Markdown lines: per (task, n), each arm's exact match per seed and its steps to converge."""
    pts = tv.points(cells)
    if not pts:
        return []
    arms = [a for a in tv.ARMS if any(a in p["exact_match"] for p in pts)]
    return markdown.table(
        ["task", "n", "layers", *arms, *(f"steps to converge: {a}" for a in arms)],
        ([tv.name(p).rsplit(" n=", 1)[0], p["n"], p["layers"],
          *(_exact_matches(p, a) for a in arms), *(_convergence(p, a) for a in arms)]
         for p in pts))
