"""How a run's validation curve reads: converged@STEP, plateau, rising or diverged.

`reading(history, status=..., protocol=...)` applies one stated rule (`RULE` prints it) to the
validation lines of a run (`validation.jsonl`: step and exact match under each protocol):

    diverged        the run stopped on a non-finite loss (a verdict counts it as exact match 0)
    converged@S     `patience` consecutive validations reach `threshold`; S is the step of the
                    last of them (where early stopping with the same rule stops the run)
    plateau         not converged, and the best score of the last quarter of the validated steps
                    is within `plateau_gain` of the best score of the quarter before it:
                    more steps of this recipe are unlikely to get there
    rising          anything else: the last quarter still gained more than `plateau_gain` (or a
                    quarter holds no validation, so a plateau cannot be told)

Quarters are of the step range (0, last validated step]: the last quarter holds the validations
at steps > 3/4 of it, the one before those at steps in (1/2, 3/4].
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

READINGS = ("converged", "plateau", "rising", "diverged")


@dataclasses.dataclass(frozen=True)
class CurveRule:
    threshold: float = 0.95
    patience: int = 2
    plateau_gain: float = 0.02

    def text(self) -> str:
        return (f"diverged: a non-finite loss stopped the run (counted as exact match 0); "
                f"converged@S: {self.patience} consecutive validations >= {self.threshold}, S "
                f"the step of the last; plateau: not converged, and the best validation score "
                f"of the last quarter of the validated steps is within {self.plateau_gain} of "
                f"the best of the quarter before; rising: otherwise")


RULE = CurveRule()


def _score(row: Mapping[str, Any], protocol: str | None) -> float | None:
    key = "exact_match" if protocol is None else f"exact_match_{protocol}"
    value = row.get(key)
    return None if value is None else float(value)


def converged_at(history: Sequence[Mapping[str, Any]], protocol: str | None = None,
                 rule: CurveRule = RULE) -> int | None:
    """The step at which `patience` consecutive validations first all reach the threshold."""
    streak = 0
    for row in history:
        score = _score(row, protocol)
        streak = streak + 1 if score is not None and score >= rule.threshold else 0
        if streak >= rule.patience:
            return int(row["step"])
    return None


def reading(history: Sequence[Mapping[str, Any]], *, status: str = "completed",
            protocol: str | None = None, rule: CurveRule = RULE) -> str:
    """One of "converged@S", "plateau", "rising", "diverged" (see the module docstring).

    `protocol`: "iid" or "unseen" reads `exact_match_<protocol>`; None reads `exact_match` (the
    early-stopping protocol's score, also what older validation files hold).
    """
    if status == "diverged":
        return "diverged"
    rows = sorted((r for r in history if _score(r, protocol) is not None),
                  key=lambda r: r["step"])
    step = converged_at(rows, protocol, rule)
    if step is not None:
        return f"converged@{step}"
    if not rows:
        return "rising"
    last = rows[-1]["step"]
    late = [_score(r, protocol) for r in rows if r["step"] > 0.75 * last]
    before = [_score(r, protocol) for r in rows if 0.5 * last < r["step"] <= 0.75 * last]
    if not late or not before:
        return "rising"
    return "plateau" if max(late) <= max(before) + rule.plateau_gain else "rising"


def counted_score(score: float | None, reading_text: str) -> float | None:
    """The score a verdict counts: 0 for a diverged run, else the score itself."""
    return 0.0 if reading_text == "diverged" else score
