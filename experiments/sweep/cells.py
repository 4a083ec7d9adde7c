"""Sweep cells on disk and how one program of them runs: state files, logs, progress lines.

Files of a cell directory:
    cell.json     coordinates and the resolved training config (written before the run; a later
                  sweep refuses to reuse the directory for a different config)
    summary.json  written by training: status "completed" or "diverged" -> the cell is done
    error.json    the run raised: status "error", the message and traceback (retried on re-run)
    log.txt       the run's stdout/stderr
    worker.json   the process that ran it last (pid, start, CUDA_VISIBLE_DEVICES)
    job.json      with `--launcher=submitit`: the job that holds it (`launch.py`)
    checkpoints/, metrics.jsonl   training's own (an interrupted cell resumes from them)

Several cells at once: `pool.py` (worker processes), `runner.py` (on this machine).
"""

from __future__ import annotations

import collections
import contextlib
import json
import math
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from arith_precision.common import atomic
from experiments.sweep.grid import Cell

# JAX is imported lazily (inside functions): spawned workers must set XLA_FLAGS before it loads.

DONE = ("completed", "diverged")  # statuses that training wrote; such a cell is never re-run

# ---- cell state on disk ------------------------------------------------------------------------


def read_json(path: str):
    with open(path) as f:
        return json.load(f)


def write_json(path: str, obj) -> None:
    """Atomic (several shards may write the same file at once)."""
    atomic.write_json(path, obj, indent=2, sort_keys=True, default=str)


def cell_status(cell_dir: str) -> str:
    """completed | diverged (training's summary) | error | pending (started or planned) | new."""
    summary = os.path.join(cell_dir, "summary.json")
    if os.path.exists(summary):
        return read_json(summary)["status"]
    if os.path.exists(os.path.join(cell_dir, "error.json")):
        return "error"
    return "pending" if os.path.exists(os.path.join(cell_dir, "cell.json")) else "new"


def normalized(config) -> dict:
    return json.loads(json.dumps(config.to_dict(), sort_keys=True, default=str))


def _flatten(d: Mapping, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def check_reuse(cells: Sequence[Cell], workdir: str) -> None:
    """A cell directory written for another config must not be silently skipped or resumed."""
    problems = []
    for cell in cells:
        path = os.path.join(workdir, cell.name, "cell.json")
        if not os.path.exists(path):
            continue
        old = _flatten(read_json(path)["config"])
        new = _flatten(normalized(cell.config))
        diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        if diff:
            shown = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in diff[:4])
            problems.append(f"{cell.name} ({shown})")
    if problems:
        raise ValueError(
            f"{len(problems)} cell directories in {workdir} hold runs of a different config: "
            f"{'; '.join(problems[:5])}. Use another --workdir, or delete those cell "
            f"directories to redo them.")


# ---- running cells -----------------------------------------------------------------------------


@contextlib.contextmanager
def output_to(path: str):
    """Send fds 1 and 2 (Python, absl and XLA output alike) to `path` for the duration."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(path, "a") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def run_cells(job: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Train and evaluate a job's cells in one program; one progress record per cell.

    `job`: a cell job {"name", "dir", "config"}, or a replica batch {"name", "dir", "members":
    [cell jobs]} (`sweep_groups.group_jobs`), trained by `train_group.train_group` as one
    program (one cell: exactly `train.train_and_evaluate`). Every cell writes its own
    checkpoints, metrics and summary.json. An exception is written to each cell's error.json,
    not raised (a failure of the program fails every cell in it). The program's stdout/stderr go
    to the first cell's log.txt; the others' log.txt name it. Each record carries the program's
    `wall_time_s` and `cells_in_program`.
    """
    cells, start = list(job.get("members", [job])), time.time()
    first_log = os.path.join(cells[0]["dir"], "log.txt")
    for cell in cells:
        os.makedirs(cell["dir"], exist_ok=True)
        error_path = os.path.join(cell["dir"], "error.json")
        if os.path.exists(error_path):
            os.remove(error_path)  # a retry
        marker = {"pid": os.getpid(), "start": start,
                  "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}
        if len(cells) > 1:
            marker["group"] = job["name"]
        write_json(os.path.join(cell["dir"], "worker.json"), marker)
        if cell is not cells[0]:
            with open(os.path.join(cell["dir"], "log.txt"), "a") as log:
                log.write(f"trained in one program with {job['name']}; log: {first_log}\n")
    records = [{"name": c["name"], "status": "error", "exact_match": None, "error": None}
               for c in cells]
    try:
        with output_to(first_log):
            from arith_precision.training import loop as train_group

            summaries = train_group.train_group([c["config"] for c in cells],
                                                [c["dir"] for c in cells])
        for record, cell, summary in zip(records, cells, summaries, strict=True):
            record["status"] = summary["status"]
            record["exact_match"] = summary["exact_match"].get(str(cell["config"].task.n))
            record["diverged_at_step"] = summary["diverged_at_step"]
    except Exception as e:  # noqa: BLE001 -- a failed program is recorded per cell, not fatal
        trace = traceback.format_exc()
        for record, cell in zip(records, cells, strict=True):
            record["error"] = f"{type(e).__name__}: {e}"
            write_json(os.path.join(cell["dir"], "error.json"),
                       {"status": "error", "error": record["error"], "traceback": trace,
                        "time": time.time()})
        with open(first_log, "a") as log:
            log.write(trace)
    for record in records:
        record.update(wall_time_s=time.time() - start, cells_in_program=len(cells))
    return records


def record_from_disk(job: Mapping[str, Any], error: str | None = None) -> dict[str, Any]:
    """The progress record of a cell job from its files (a cell finished in an earlier run, or
    in a job that ended without returning its records): status, exact match, no time."""
    status = cell_status(job["dir"])
    record = {"name": job["name"], "status": status, "exact_match": None, "error": None,
              "wall_time_s": 0.0}
    if status in DONE:
        summary = read_json(os.path.join(job["dir"], "summary.json"))
        record.update(exact_match=summary["exact_match"].get(str(job["config"].task.n)),
                      diverged_at_step=summary.get("diverged_at_step"))
    elif status == "error":
        record["error"] = read_json(os.path.join(job["dir"], "error.json")).get("error")
    if error is not None and status not in DONE:
        record.update(status="error", error=error)
    return record


def run_cell(job: Mapping[str, Any]) -> dict[str, Any]:
    """Train and evaluate one cell job {"name", "dir", "config"}: `run_cells`' one-cell case."""
    return run_cells(job)[0]


def job(cell: Cell, workdir: str) -> dict[str, Any]:
    return {"name": cell.name, "dir": os.path.join(workdir, cell.name), "config": cell.config}


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"


class Progress:
    """Prints one line per finished cell: done/total, status counts, elapsed and ETA.

    ETA = (mean time a cell occupies a worker) x (cells left) / (workers busy on them). A cell's
    worker time is its program's wall time divided by the cells trained in that program (a
    replica batch of R cells costs each 1/R). Dividing by the workers matters most for the first
    line: the elapsed time per finished cell would count W cells that ran side by side as W
    cells run one after another (with 2 workers, an ETA twice the truth).
    """

    def __init__(self, total: int, skipped: int, log: Callable[[str], None], workers: int = 1):
        self.total, self.skipped, self.log, self.workers = total, skipped, log, workers
        self.counts: collections.Counter = collections.Counter()
        self.start = time.time()
        self.worker_seconds, self.timed, self.programs = 0.0, 0, 0.0

    def eta(self) -> float:
        """Seconds left for the cells not yet finished (see the class doc)."""
        left = self.total - self.skipped - sum(self.counts.values())
        if left <= 0:
            return 0.0
        if not self.timed:  # only cells that never ran (deaths recorded with no time)
            ran = sum(self.counts.values())
            return (time.time() - self.start) / max(ran, 1) * left
        cells_per_program = self.timed / self.programs
        busy = max(1.0, min(self.workers, math.ceil(left / cells_per_program)))
        return self.worker_seconds / self.timed * left / busy

    def update(self, record: Mapping[str, Any]) -> None:
        self.counts[record["status"]] += 1
        if record.get("wall_time_s"):
            per_program = int(record.get("cells_in_program") or 1)
            self.worker_seconds += record["wall_time_s"] / per_program
            self.timed += 1
            self.programs += 1 / per_program
        done = self.skipped + sum(self.counts.values())
        elapsed = time.time() - self.start
        detail = record["status"]
        if record.get("exact_match") is not None:
            detail += f", exact match {record['exact_match']:.3f}"
        if record.get("error"):
            detail += f": {record['error'][:200]}"
        counts = ", ".join(f"{k} {v}" for k, v in sorted(self.counts.items()))
        self.log(f"[sweep] {done}/{self.total} cells ({self.skipped} skipped; {counts}) | "
                 f"elapsed {duration(elapsed)} | ETA {duration(self.eta())} | {record['name']}: "
                 f"{detail} ({duration(record.get('wall_time_s') or 0.0)})")


def current_step(cell_dir: str) -> int:
    """The last logged training step of a cell (0 before its first log line)."""
    path = os.path.join(cell_dir, "metrics.jsonl")
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.path.getsize(path) - 4096))
            lines = [ln for ln in f.read().decode(errors="replace").splitlines() if ln.strip()]
        return int(json.loads(lines[-1])["step"]) if lines else 0
    except (OSError, ValueError, KeyError, IndexError):
        return 0


class Heartbeat:
    """Between finished cells, one line every `every` seconds: the running cells' steps and an
    ETA from the steps trained so far in this run (an upper bound with early stopping, which can
    end a cell before its last step)."""

    def __init__(self, jobs: Sequence[Mapping[str, Any]], log: Callable[[str], None],
                 every: float = 30.0):
        self.jobs, self.log, self.every = list(jobs), log, every
        self.start = time.time()
        self.first = {j["name"]: current_step(j["dir"]) for j in self.jobs}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        if self.jobs:
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()

    def line(self) -> str:
        done, running, trained, remaining = 0, [], 0, 0
        for j in self.jobs:
            planned = int(j["config"].train.steps)
            step = current_step(j["dir"])
            trained += step - self.first[j["name"]]
            if cell_status(j["dir"]) in DONE:
                done += 1
                continue
            remaining += planned - step
            marker = os.path.join(j["dir"], "worker.json")
            if os.path.exists(marker) and read_json(marker)["start"] >= self.start:
                running.append(f"{j['name']} {step}/{planned}")
        elapsed = time.time() - self.start
        rate = trained / elapsed if trained > 0 else None
        eta = "unknown (no steps logged yet)" if rate is None else \
            f"at most {duration(remaining / rate)} at {rate:.1f} steps/s"
        return (f"[sweep] heartbeat: {done}/{len(self.jobs)} cells of this run done | running: "
                f"{', '.join(running) or 'starting'} | elapsed {duration(elapsed)} | ETA {eta}")

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.log(self.line())
