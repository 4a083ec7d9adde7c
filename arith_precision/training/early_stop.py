"""Early stopping at convergence: "validation exact match >= threshold at `patience` consecutive
validations, each on `num_examples` examples".

A run with `early_stop.every = E > 0` validates every E steps at the run's own precision, under
both test protocols (`evaluate.evaluate_protocols`, on their validation streams: other random
draws than the final evaluation's, so the final evaluation is not what the rule selected):
`unseen` (held-out inputs, never trained on) and `iid` (the task distribution, the paper's
protocol). `protocol` says which one the rule reads (default unseen; iid where the held-out set
is too small to judge, e.g. MUL at small n). Each validation is one line of `validation.jsonl`:

    step, exact_match (the rule's protocol), digit_accuracy (the same), exact_match_iid,
    exact_match_unseen, digit_accuracy_iid, digit_accuracy_unseen, distinct_iid, distinct_unseen,
    loss (answer-token cross-entropy on the first iid validation batch, float32)

The run stops at the step S whose validation completes the streak; `summary.json` then records
`steps_to_converge = S` (null when the rule never fired). `min_steps` keeps a run going until at
least that step whatever its validations say.

Why the rule is safe to resume: a validation is a pure function of the parameters at its step,
so a run killed anywhere and restarted from its checkpoint at step C recomputes a validation that
was due at C but not written, keeps the lines up to C, and takes exactly the same decisions
(tested: bit-identical parameters and the same stopping step). How a finished run's curve reads
(converged, plateau, rising, diverged) is `curve.reading`.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

from arith_precision.common import atomic

FILENAME = "validation.jsonl"
PROTOCOLS = ("unseen", "iid")


@dataclasses.dataclass(frozen=True)
class EarlyStop:
    """The stopping rule: every `every` steps, `num_examples` validation examples."""

    every: int
    threshold: float = 0.99
    num_examples: int = 1000
    patience: int = 2
    batch_size: int = 500
    protocol: str = "unseen"
    min_steps: int = 0

    def __post_init__(self):
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"early_stop.protocol {self.protocol!r}: expected one of "
                             f"{PROTOCOLS}")

    def converged(self, history: Sequence[Mapping[str, Any]]) -> bool:
        """Whether the last `patience` validations all reach `threshold` (and the last one is at
        step >= `min_steps`)."""
        tail = list(history)[-self.patience:]
        return len(tail) == self.patience and tail[-1]["step"] >= self.min_steps and all(
            h["exact_match"] is not None and h["exact_match"] >= self.threshold for h in tail)


def from_config(config) -> EarlyStop | None:
    """The config's rule (`config.early_stop`), None when it is off (every = 0) or absent."""
    block = config.get("early_stop") if hasattr(config, "get") else None
    if not block or not block.get("every"):
        return None
    return EarlyStop(every=int(block["every"]), threshold=float(block["threshold"]),
                     num_examples=int(block["num_examples"]), patience=int(block["patience"]),
                     batch_size=int(block["batch_size"]),
                     protocol=str(block.get("protocol", "unseen")),
                     min_steps=int(block.get("min_steps", 0)))


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
