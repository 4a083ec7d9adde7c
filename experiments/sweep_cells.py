"""Sweep cells on disk and how they run: state files, the worker pool, progress lines.

Files of a cell directory:
    cell.json     coordinates and the resolved training config (written before the run; a later
                  sweep refuses to reuse the directory for a different config)
    summary.json  written by training: status "completed" or "diverged" -> the cell is done
    error.json    the run raised: status "error", the message and traceback (retried on re-run)
    log.txt       the run's stdout/stderr
    checkpoints/, metrics.jsonl   training's own (an interrupted cell resumes from them)

Parallelism: `workers > 1` runs each cell in a fresh process of a "spawn" pool (nothing leaks
between cells: JAX state, compilation caches, memory). Workers set
XLA_PYTHON_CLIENT_PREALLOCATE=false (several share one GPU; these models are far too small to
fill one) and, on CPU, one XLA thread each. Workers exit when the sweep process dies, so a killed
sweep leaves no orphans.
"""

from __future__ import annotations

import collections
import contextlib
import json
import multiprocessing
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from arith_precision import atomic
from experiments.sweep_grid import Cell

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


def run_cell(job: Mapping[str, Any]) -> dict[str, Any]:
    """Train and evaluate one cell; an exception is written to error.json, not raised.

    `job`: {"name", "dir", "config"}. Returns a record for the progress line.
    """
    cell_dir, start = job["dir"], time.time()
    os.makedirs(cell_dir, exist_ok=True)
    error_path = os.path.join(cell_dir, "error.json")
    if os.path.exists(error_path):
        os.remove(error_path)  # a retry
    write_json(os.path.join(cell_dir, "worker.json"), {"pid": os.getpid(), "start": start})
    record = {"name": job["name"], "status": "error", "exact_match": None, "error": None}
    try:
        with output_to(os.path.join(cell_dir, "log.txt")):
            from arith_precision import train

            summary = train.train_and_evaluate(job["config"], cell_dir)
        record["status"] = summary["status"]
        record["exact_match"] = summary["exact_match"].get(str(job["config"].task.n))
        record["diverged_at_step"] = summary["diverged_at_step"]
    except Exception as e:  # noqa: BLE001 -- any failure of one cell is recorded, not fatal
        record["error"] = f"{type(e).__name__}: {e}"
        trace = traceback.format_exc()
        write_json(error_path, {"status": "error", "error": record["error"],
                                 "traceback": trace, "time": time.time()})
        with open(os.path.join(cell_dir, "log.txt"), "a") as log:
            log.write(trace)
    record["wall_time_s"] = time.time() - start
    return record


def _worker_env(workers: int) -> dict[str, str]:
    """Environment for worker processes sharing one machine (set before JAX loads)."""
    env = {"XLA_PYTHON_CLIENT_PREALLOCATE": "false",  # several processes share one GPU
           "TF_CPP_MIN_LOG_LEVEL": "1"}
    flags = os.environ.get("XLA_FLAGS", "")
    if workers > 1 and "xla_cpu_multi_thread_eigen" not in flags:
        # On CPU, W workers each using every core would oversubscribe: one thread each.
        flags = f"{flags} --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    env["XLA_FLAGS"] = flags.strip()
    return env


def _init_worker(parent_pid: int, env: Mapping[str, str]) -> None:
    for key, value in env.items():
        if key == "XLA_FLAGS" or key not in os.environ:
            os.environ[key] = value

    def watch():  # a killed sweep must not leave orphans training into its cell directories
        while True:
            if os.getppid() != parent_pid:
                os._exit(1)
            time.sleep(1.0)

    threading.Thread(target=watch, daemon=True).start()


def job(cell: Cell, workdir: str) -> dict[str, Any]:
    return {"name": cell.name, "dir": os.path.join(workdir, cell.name), "config": cell.config}


def run_parallel(jobs: list[dict], workers: int, on_record: Callable[[dict], None],
                 runner: Callable[[Mapping[str, Any]], Any] = run_cell) -> None:
    """Run jobs in `workers` spawned processes, one fresh process per job (no state leaks).

    `runner(job)` returns one record, or a list of records for a job of several cells (a replica
    batch, `sweep_groups.run_group`; such a job has "members", the cell jobs). If a worker dies
    (killed, out of memory, segfault) the pool breaks and every unfinished future fails; cells
    that had started in that pool are charged one death and re-queued, one cell per job, with
    the rest in a fresh pool. A cell charged twice is recorded as an error.
    """
    ctx = multiprocessing.get_context("spawn")
    deaths: collections.Counter = collections.Counter()
    queue = list(jobs)
    while queue:
        round_start = time.time()
        with ProcessPoolExecutor(max_workers=min(workers, len(queue)), mp_context=ctx,
                                 initializer=_init_worker,
                                 initargs=(os.getpid(), _worker_env(workers)),
                                 max_tasks_per_child=1) as pool:
            futures = {pool.submit(runner, job): job for job in queue}
            queue = []
            for future in as_completed(futures):
                try:
                    result = future.result()
                    for record in result if isinstance(result, list) else [result]:
                        on_record(record)
                    continue
                except BrokenProcessPool:
                    pass
                for job in futures[future].get("members", [futures[future]]):
                    _after_death(job, round_start, deaths, on_record, queue)


def _after_death(job: Mapping[str, Any], round_start: float, deaths: collections.Counter,
                 on_record: Callable[[dict], None], queue: list) -> None:
    """One cell of a job whose worker died: charge it, record it, or queue it again."""
    marker = os.path.join(job["dir"], "worker.json")
    started = os.path.exists(marker) and read_json(marker)["start"] >= round_start
    if started and cell_status(job["dir"]) not in DONE:
        deaths[job["name"]] += 1
    if deaths[job["name"]] >= 2:
        message = ("the worker process running this cell died twice (killed, out of "
                   "memory or crashed); see log.txt")
        write_json(os.path.join(job["dir"], "error.json"),
                   {"status": "error", "error": message, "time": time.time()})
        on_record({"name": job["name"], "status": "error", "error": message,
                   "exact_match": None, "wall_time_s": 0.0})
    elif cell_status(job["dir"]) in DONE:  # finished before the pool broke
        on_record({"name": job["name"], "status": cell_status(job["dir"]),
                   "exact_match": None, "wall_time_s": 0.0})
    else:
        queue.append(job)


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"


class Progress:
    """Prints one line per finished cell: done/total, status counts, elapsed and ETA.

    The ETA extrapolates the wall time per cell run so far (skipped cells excluded), so with W
    workers it already reflects the parallelism.
    """

    def __init__(self, total: int, skipped: int, log: Callable[[str], None]):
        self.total, self.skipped, self.log = total, skipped, log
        self.counts: collections.Counter = collections.Counter()
        self.start = time.time()

    def update(self, record: Mapping[str, Any]) -> None:
        self.counts[record["status"]] += 1
        ran = sum(self.counts.values())
        done = self.skipped + ran
        elapsed = time.time() - self.start
        eta = elapsed / ran * (self.total - done)
        detail = record["status"]
        if record.get("exact_match") is not None:
            detail += f", exact match {record['exact_match']:.3f}"
        if record.get("error"):
            detail += f": {record['error'][:200]}"
        counts = ", ".join(f"{k} {v}" for k, v in sorted(self.counts.items()))
        self.log(f"[sweep] {done}/{self.total} cells ({self.skipped} skipped; {counts}) | "
                 f"elapsed {duration(elapsed)} | ETA {duration(eta)} | {record['name']}: "
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
