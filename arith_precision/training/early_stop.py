"""Early stopping at convergence: "held-out exact match >= threshold at `patience` consecutive
validations, each on >= `num_examples` examples".

A run with `early_stop.every = E > 0` decodes `num_examples` validation examples every E steps
(held-out inputs, i.e. never trained on, drawn from their own random stream `split="valid"`, so
the final evaluation's examples are not the ones the stopping rule looked at), at the run's own
precision. Each validation is one line of `validation.jsonl` ({"step", "exact_match",
"digit_accuracy"}). The run stops at the step S whose validation completes the streak;
`summary.json` then records `steps_to_converge = S` (null when the rule never fired).

Why the rule is safe to resume: a validation is a pure function of the parameters at its step,
so a run killed anywhere and restarted from its checkpoint at step C recomputes a validation that
was due at C but not written, keeps the lines up to C, and takes exactly the same decisions
(tested: bit-identical parameters and the same stopping step).

For a run that did not converge, `trend` separates "needs more steps" from "never gets there"
by a stated rule on the validation curve (see `trend`).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

from arith_precision.common import atomic

FILENAME = "validation.jsonl"
RISING_BY = 0.05  # `trend`: "still rising" when the last half of training gained this much


@dataclasses.dataclass(frozen=True)
class EarlyStop:
    """The stopping rule: every `every` steps, `num_examples` validation examples."""

    every: int
    threshold: float = 0.99
    num_examples: int = 1000
    patience: int = 2
    batch_size: int = 500

    def converged(self, history: Sequence[Mapping[str, Any]]) -> bool:
        """Whether the last `patience` validations all reach `threshold`."""
        tail = list(history)[-self.patience:]
        return len(tail) == self.patience and all(
            h["exact_match"] >= self.threshold for h in tail)


def from_config(config) -> EarlyStop | None:
    """The config's rule (`config.early_stop`), None when it is off (every = 0) or absent."""
    block = config.get("early_stop") if hasattr(config, "get") else None
    if not block or not block.get("every"):
        return None
    return EarlyStop(every=int(block["every"]), threshold=float(block["threshold"]),
                     num_examples=int(block["num_examples"]), patience=int(block["patience"]),
                     batch_size=int(block["batch_size"]))


def read_history(workdir: str, up_to: int | None = None) -> list[dict[str, Any]]:
    """The validation lines of a run (those at steps <= up_to when given), in step order."""
    path = os.path.join(workdir, FILENAME)
    if not os.path.exists(path):
        return []
    with open(path) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [r for r in rows if up_to is None or r["step"] <= up_to]


def rewrite_history(workdir: str, history: Sequence[Mapping[str, Any]]) -> None:
    """Replace validation.jsonl with `history` (after a resume dropped later lines)."""
    atomic.write_lines(os.path.join(workdir, FILENAME),
                       (json.dumps(dict(h)) + "\n" for h in history))


def append(workdir: str, row: Mapping[str, Any]) -> None:
    with open(os.path.join(workdir, FILENAME), "a") as f:
        f.write(json.dumps(dict(row)) + "\n")
        f.flush()


def trend(history: Sequence[Mapping[str, Any]], converged_at: int | None) -> str:
    """One word for a run's validation curve.

    "converged" when the rule fired. Otherwise, with v(s) the validation exact match: "rising"
    when the last validation is at least RISING_BY above the best one in the first half of the
    run's validated steps (more steps would likely help), "flat" when not (more steps of this
    recipe are unlikely to get there), "unknown" with fewer than 2 validations.
    """
    if converged_at is not None:
        return "converged"
    if len(history) < 2:
        return "unknown"
    last_step = history[-1]["step"]
    first_half = [h["exact_match"] for h in history if h["step"] <= last_step / 2] or \
        [history[0]["exact_match"]]
    return "rising" if history[-1]["exact_match"] >= max(first_half) + RISING_BY else "flat"
