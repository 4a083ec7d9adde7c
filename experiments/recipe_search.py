"""The recipe search's table: how far each fp32 trial got, from its run directory alone.

    python -m experiments.recipe_search --runs=DIR1,DIR2,... [--out=recipe.md] \
        [--csv=recipe.csv]

Each DIR is a finished (or stopped) `experiments.main` run: its `summary.json` (the resolved
config, wall time, final evaluation) when it finished; a run stopped before the end is listed
from its `validation.jsonl` and `metrics.jsonl`, with the config and a note from `trial.json`
({"config", "note"}) when it has one. A file `DIR.time` beside the directory
(`/usr/bin/time -f "user %U sys %S wall %e"`) gives the CPU time. One row per trial:

    trial, d_model, layers, heads, d_ff, learning rate and schedule, batch, steps run,
    steps to 0.95 (the first validation at >= 0.95, the threshold of the verdicts), best
    validation exact match and its step, the final exact match, wall and CPU time, the curve
    reading (`training.curve`)

The search it documents: IterADD base 2 (k = 3) at n = 10, fp32 only, a warmup then a constant
learning rate (no decay before convergence), validation every 500 steps on 1000 held-out
examples, at most about one CPU-hour a trial.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from arith_precision.common import atomic, cli_errors, markdown
from arith_precision.training import curve

COLUMNS = ("trial", "d_model", "layers", "heads", "d_ff", "lr", "schedule", "batch", "steps_run",
           "steps_to_0.95", "best", "best_step", "final_exact_match", "wall_min", "cpu_min",
           "reading", "note")
THRESHOLD = 0.95


def _lines(path: str) -> list[dict]:
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def _time_file(run_dir: str) -> dict[str, str]:
    """{"user", "sys", "wall"} of DIR.time (a line "user U sys S wall W", possibly after a
    "Command terminated by signal" line); {} without the file."""
    path = os.path.normpath(run_dir) + ".time"
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        words = f.read().split()
    start = words.index("user") if "user" in words else len(words)
    return dict(zip(words[start::2], words[start + 1::2], strict=False))


def _cpu_minutes(run_dir: str) -> float | None:
    values = _time_file(run_dir)
    try:
        return (float(values["user"]) + float(values["sys"])) / 60
    except (KeyError, ValueError):
        return None


def _wall_minutes(run_dir: str) -> float | None:
    values = _time_file(run_dir)
    return float(values["wall"]) / 60 if "wall" in values else None


def trial_row(run_dir: str) -> dict[str, Any]:
    """The table row of one trial directory (see the module docstring)."""
    summary_path = os.path.join(run_dir, "summary.json")
    summary = None
    if os.path.isfile(summary_path):
        with open(summary_path) as f:
            summary = json.load(f)
    history = summary["validation"] if summary else _lines(
        os.path.join(run_dir, "validation.jsonl"))
    metrics = _lines(os.path.join(run_dir, "metrics.jsonl"))
    row = dict.fromkeys(COLUMNS)
    row["trial"] = os.path.basename(os.path.normpath(run_dir))
    trial_path = os.path.join(run_dir, "trial.json")
    trial = None
    if os.path.isfile(trial_path):
        with open(trial_path) as f:
            trial = json.load(f)
    config = summary["config"] if summary else (trial or {}).get("config")
    if config:
        c = config
        o = c["optim"]
        decay = "constant" if o["final_lr_fraction"] == 1.0 else \
            f"cosine to {o['final_lr_fraction']:g}x"
        row.update(d_model=c["model"]["d_model"], layers=c["model"]["num_layers"],
                   heads=c["model"]["num_heads"], d_ff=c["model"]["d_ff"], lr=o["learning_rate"],
                   schedule=f"warmup {o['warmup_steps']}, {decay}",
                   batch=c["train"]["batch_size"])
    if summary:
        row.update(steps_run=summary["steps"],
                   final_exact_match=next(iter(summary["exact_match"].values()), None),
                   wall_min=summary["wall_time_s"] / 60)
    elif metrics:
        row["steps_run"] = metrics[-1]["step"]
    row["note"] = (trial or {}).get("note")
    scores = [(h["step"], h["exact_match"]) for h in history if h.get("exact_match") is not None]
    if scores:
        best_step, best = max(scores, key=lambda x: (x[1], -x[0]))
        row.update(best=best, best_step=best_step,
                   **{"steps_to_0.95": next((s for s, v in scores if v >= THRESHOLD), None)})
        row["reading"] = curve.reading(history, status=(summary or {}).get("status",
                                                                           "completed"))
    row["cpu_min"] = _cpu_minutes(run_dir)
    if row["wall_min"] is None and row["cpu_min"] is not None:
        row["wall_min"] = _wall_minutes(run_dir)
    return row


def to_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    def fmt(key, value):
        if value is None:
            return "-" if key != "steps_to_0.95" else "not reached"
        if key in ("best", "final_exact_match"):
            return f"{value:.3f}"
        if key in ("wall_min", "cpu_min"):
            return f"{value:.0f}"
        return str(value)

    header = ["trial", "d_model", "layers", "heads", "d_ff", "lr", "schedule", "batch",
              "steps run", "steps to 0.95", "best validation (step)", "final exact match",
              "wall min", "CPU min", "curve"]
    body = []
    for r in rows:
        cells = [fmt(k, r[k]) for k in COLUMNS[:-1]]
        best = f"{cells[10]} ({cells[11]})" if r["best"] is not None else "-"
        body.append(cells[:10] + [best] + cells[12:])
    notes = [f"{r['trial']}: {r['note']}" for r in rows if r.get("note")]
    return "\n".join(markdown.table(header, body) + ([""] + notes if notes else []))


def main(argv: Sequence[str] | None = None) -> int:
    return cli_errors.run_cli(lambda: _main(argv))


def _main(argv) -> int:
    ap = cli_errors.ArgumentParser(prog="python -m experiments.recipe_search",
                                   description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", required=True, help="comma-separated trial directories")
    ap.add_argument("--out", default=None, help="markdown file (default: print)")
    ap.add_argument("--csv", default=None, help="also write the rows as CSV")
    args = ap.parse_args(argv)
    dirs = [d for d in args.runs.split(",") if d.strip()]
    bad = [d for d in dirs if not os.path.isdir(d)]
    if not dirs or bad:
        raise cli_errors.UsageError("--runs", args.runs,
                                    f"not a directory: {', '.join(bad) or '(none)'}")
    rows = [trial_row(d) for d in dirs]
    text = to_markdown(rows)
    if args.out:
        atomic.write_text(args.out, text + "\n")
    else:
        print(text)
    if args.csv:
        atomic.write_csv(args.csv, COLUMNS, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
