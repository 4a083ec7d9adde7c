"""A sweep directory's results as rows: one per cell (`collect`), one per group of seeds (`group`).

Rows are plain dicts with the columns `CELL_COLUMNS` / `RESULT_COLUMNS`; `experiments.sweep.render`
renders them (CSV, plots, report.md).
"""

from __future__ import annotations

import collections
import csv
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

from arith_precision.tasks.spec import TASKS
from arith_precision.training import curve
from experiments.sweep.cells import DONE, cell_status, read_json
from experiments.sweep.grid import COORDS

CELL_COLUMNS = (*COORDS, "status", "exact_match", "digit_accuracy", "exact_match_iid",
                "distinct_iid", "iid_in_training_split", "exact_match_unseen", "distinct_unseen",
                "diverged_at_step", "steps", "steps_to_converge", "convergence", "curve_iid",
                "curve_unseen", "validation_last", "wall_time_s", "name", "error")
GROUP_COORDS = ("task", "base", "n", "k", "l", "precision", "accumulation", "layers")
STATUSES = ("completed", "diverged", "error", "pending")
RESULT_COLUMNS = (*GROUP_COORDS, "num_seeds", "exact_match_mean", "exact_match_std",
                  "exact_match_min", "exact_match_max", "digit_accuracy_mean", "digit_accuracy_std",
                  "exact_match_iid_mean", "exact_match_iid_std", "exact_match_unseen_mean",
                  "exact_match_unseen_std", *(f"num_{s}" for s in STATUSES), "num_converged",
                  "steps_to_converge_max", "convergence")


def collect(workdir: str) -> list[dict[str, Any]]:
    """One row per cell directory of `workdir` (any shard, any sweep), sorted by name."""
    rows = []
    for name in sorted(os.listdir(workdir)) if os.path.isdir(workdir) else []:
        cell_dir = os.path.join(workdir, name)
        meta_path = os.path.join(cell_dir, "cell.json")
        if not os.path.isfile(meta_path):
            continue
        meta = read_json(meta_path)
        row = dict(meta["coords"], name=meta["name"], index=meta.get("index", 0),
                   status=cell_status(cell_dir),
                   **dict.fromkeys(CELL_COLUMNS[len(COORDS) + 1:-2]), error=None)
        if row["status"] in DONE:
            s = read_json(os.path.join(cell_dir, "summary.json"))
            key = str(row["n"])
            history = s.get("validation") or []
            final = (s.get("eval") or {}).get(key) or {}
            row.update(exact_match=s["exact_match"].get(key),
                       digit_accuracy=s["digit_accuracy"].get(key),
                       **{k: final.get(k) for k in ("exact_match_iid", "distinct_iid",
                                                    "iid_in_training_split",
                                                    "exact_match_unseen", "distinct_unseen")},
                       diverged_at_step=s.get("diverged_at_step"), steps=s.get("steps"),
                       steps_to_converge=s.get("steps_to_converge"),
                       validation_last=history[-1]["exact_match"] if history else None,
                       wall_time_s=s.get("wall_time_s"))
            if s.get("early_stop"):  # early stopping off: no validation curve, nothing to say
                rule = curve.CurveRule(threshold=s["early_stop"]["threshold"],
                                       patience=s["early_stop"]["patience"])
                row["convergence"] = curve.reading(history, status=s["status"], rule=rule)
                for p in ("iid", "unseen"):
                    if any(f"exact_match_{p}" in h for h in history):
                        row[f"curve_{p}"] = curve.reading(history, status=s["status"],
                                                          protocol=p, rule=rule)
        elif row["status"] == "error":
            row["error"] = read_json(os.path.join(cell_dir, "error.json"))["error"]
        rows.append(row)
    return rows


def _mean(xs: Sequence[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def _std(xs: Sequence[float]) -> float | None:
    """Sample standard deviation (ddof=1); 0 for a single value, None for none."""
    if not xs:
        return None
    if len(xs) == 1:
        return 0.0
    m = sum(xs) / len(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def _group_order(key: tuple) -> tuple:
    task, base, n, k, l, precision, accumulation, layers = key
    return (TASKS.index(task), base, k, l, layers, precision, accumulation, n)


def group(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One result per GROUP_COORDS over seeds; statistics over completed cells only.

    A diverged or failed cell has no evaluation; it is counted (num_diverged, num_error), not
    averaged in as 0. exact_match_std is the sample standard deviation (0 for one seed).
    """
    groups: dict[tuple, list] = collections.defaultdict(list)
    for row in rows:
        groups[tuple(row[k] for k in GROUP_COORDS)].append(row)
    out = []
    for key in sorted(groups, key=lambda k: (min(r["index"] for r in groups[k]),
                                             _group_order(k))):  # the grid's order
        members = groups[key]
        em = [r["exact_match"] for r in members if r["exact_match"] is not None]
        da = [r["digit_accuracy"] for r in members if r["digit_accuracy"] is not None]
        res = dict(zip(GROUP_COORDS, key, strict=True), num_seeds=len(members),
                   exact_match_mean=_mean(em), exact_match_std=_std(em),
                   exact_match_min=min(em) if em else None,
                   exact_match_max=max(em) if em else None,
                   digit_accuracy_mean=_mean(da), digit_accuracy_std=_std(da),
                   first_index=min(r["index"] for r in members))  # grid order, not in the csv
        for metric in ("exact_match_iid", "exact_match_unseen"):
            xs = [r[metric] for r in members if r.get(metric) is not None]
            res.update({f"{metric}_mean": _mean(xs), f"{metric}_std": _std(xs)})
        statuses = collections.Counter(r["status"] for r in members)
        for s in STATUSES:
            res[f"num_{s}"] = statuses.get(s, 0)
        steps = [r["steps_to_converge"] for r in members if r["steps_to_converge"] is not None]
        res.update(num_converged=len(steps), steps_to_converge_max=max(steps) if steps else None,
                   convergence=_convergence_summary(members))
        out.append(res)
    return out


def _convergence_summary(members: Sequence[Mapping[str, Any]]) -> str | None:
    """Per seed, in seed order, the curve reading (`curve.reading`: converged@S, plateau,
    rising, diverged; a cell without one shows its status); None when no member used early
    stopping."""
    if all(r.get("convergence") is None for r in members):
        return None
    return " ".join(r.get("convergence") or r["status"]
                    for r in sorted(members, key=lambda r: r["seed"]))


_INTS = ("base", "n", "k", "l", "layers", "seed", "diverged_at_step", "steps",
         "steps_to_converge", "distinct_iid", "distinct_unseen", "index")
_FLOATS = ("exact_match", "digit_accuracy", "exact_match_iid", "exact_match_unseen",
           "iid_in_training_split", "validation_last", "wall_time_s")


def read_cells(path: str) -> list[dict]:
    """cells.csv back into cell rows (numbers typed; missing columns None). A file written
    before the curve readings existed has readings by an earlier rule ("rising" / "flat": the
    last validation against the best of the first half + 0.05); they are marked as such."""
    with open(path) as f:
        reader = csv.DictReader(f)
        raw, columns = list(reader), set(reader.fieldnames or ())
    earlier_rule = "curve_unseen" not in columns  # written before `curve.reading` existed
    rows = []
    for i, r in enumerate(raw):
        row = {k: (r.get(k) if r.get(k) not in ("", None) else None) for k in CELL_COLUMNS}
        for key in _INTS:
            if row.get(key) is not None:
                row[key] = int(float(row[key]))
        for key in _FLOATS:
            if row.get(key) is not None:
                row[key] = float(row[key])
        row["index"] = i
        if earlier_rule and row.get("convergence"):
            row["convergence"] = (f"converged@{row['steps_to_converge']}"
                                  if row["convergence"] == "converged"
                                  else f"{row['convergence']} (earlier rule)")
        rows.append(row)
    return rows
