"""The sweep's worker pool: cells in spawned processes, one GPU per worker slot, deaths survived.

`workers > 1` runs each job (a cell, or a replica batch of cells: `cells.run_cells`) in a fresh
process of a "spawn" pool (nothing leaks between cells: JAX state, compilation caches, memory),
at most one per worker slot at a time. Workers set XLA_PYTHON_CLIENT_PREALLOCATE=false (several
may share one GPU; these models are far too small to fill one) and, on CPU, one XLA thread
each; a slot may add its own variables (`devices.slot_envs`: CUDA_VISIBLE_DEVICES, one GPU per
slot), set before the process's JAX backend starts. Workers exit when the sweep process dies,
so a killed sweep leaves no orphans; they ignore submitit's requeue signal, which the process
that owns the pool handles (it kills them).
"""

from __future__ import annotations

import collections
import contextlib
import functools
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from experiments.sweep.cells import DONE, cell_status, read_json, run_cells, write_json


def worker_env(workers: int) -> dict[str, str]:
    """Environment for worker processes sharing one machine (set before JAX loads).

    With `workers` > 1 XLA gets one CPU thread per process: W workers each using every core
    would oversubscribe the machine. The thread count is part of a CPU run's bits, so every
    process that must reproduce a pool worker's parameters (a submitit job) uses this too.
    """
    env = {"XLA_PYTHON_CLIENT_PREALLOCATE": "false",  # several processes may share one GPU
           "TF_CPP_MIN_LOG_LEVEL": "1"}
    flags = os.environ.get("XLA_FLAGS", "")
    if workers > 1 and "xla_cpu_multi_thread_eigen" not in flags:
        flags = f"{flags} --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    env["XLA_FLAGS"] = flags.strip()
    return env


def _jax_backend_started() -> bool:
    if "jax" not in sys.modules:
        return False
    from jax._src import xla_bridge

    return bool(getattr(xla_bridge, "backends_are_initialized", lambda: False)())


def apply_env(env: Mapping[str, str], *, override: bool = True) -> None:
    """Set `env` in this process before its JAX backend starts (after that, XLA_FLAGS and
    CUDA_VISIBLE_DEVICES no longer change anything: RuntimeError). XLA_FLAGS are appended to
    the flags already set; other variables replace theirs, or with `override=False` only fill
    variables that are unset (a user's own setting wins)."""
    if not env:
        return
    if _jax_backend_started():
        raise RuntimeError(f"cannot set {sorted(env)}: this process's JAX backend has started")
    for key, value in env.items():
        if key == "XLA_FLAGS":
            # New flags first: XLA stops reading XLA_FLAGS at a token that is not a flag.
            have = os.environ.get(key, "").split()
            os.environ[key] = " ".join([f for f in value.split() if f not in have] + have)
        elif override or key not in os.environ:
            os.environ[key] = value


def _init_worker(parent_pid: int, env: Mapping[str, str]) -> None:
    for key, value in env.items():
        if key == "XLA_FLAGS" or key not in os.environ:
            os.environ[key] = value
    # Slurm signals every process of a job near its time limit (submitit's preemption signal,
    # USR2 unless SUBMITIT_PREEMPT_SIGNAL says otherwise); the job's own process handles it (it
    # requeues and kills its workers), a worker must not die of it first.
    name = "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2")
    if hasattr(signal, name):
        signal.signal(getattr(signal, name), signal.SIG_IGN)

    def watch():  # a killed sweep must not leave orphans training into its cell directories
        while True:
            if os.getppid() != parent_pid:
                os._exit(1)
            time.sleep(1.0)

    threading.Thread(target=watch, daemon=True).start()


def _run_in_slot(runner: Callable[[Mapping[str, Any]], Any], env: Mapping[str, str],
                 job: Mapping[str, Any]):
    """A pool task: the slot's environment (one fresh process per task), then the job."""
    apply_env(env)
    return runner(job)


def run_parallel(jobs: list[dict], workers: int, on_record: Callable[[dict], None],
                 runner: Callable[[Mapping[str, Any]], Any] = run_cells,
                 slot_envs: Sequence[Mapping[str, str]] | None = None) -> None:
    """Run jobs in `workers` spawned processes, one fresh process per job (no state leaks).

    `runner(job)` returns one record, or a list of records for a job of several cells (a replica
    batch, `run_cells`; such a job has "members", the cell jobs). Each of the `workers` slots
    runs one job at a time, in a process whose environment has `slot_envs[slot]` added
    (`devices.slot_envs`: the slot's GPU); jobs start in order as slots free up. If a worker dies
    (killed, out of memory, segfault) the pool breaks and every running job fails; cells that
    had started in that pool are charged one death and re-queued, one cell per job, ahead of the
    jobs not yet started, in a fresh pool. A cell charged twice is recorded as an error. If this
    process is interrupted (KeyboardInterrupt, SystemExit: a submitit job told to requeue), the
    workers are killed before the exception goes on (their cells resume from their checkpoints).
    """
    envs = [dict(e) for e in slot_envs] if slot_envs is not None else [{}] * workers
    if len(envs) != workers:
        raise ValueError(f"{len(envs)} slot environments for {workers} workers")
    ctx = multiprocessing.get_context("spawn")
    deaths: collections.Counter = collections.Counter()
    queue = list(jobs)
    while queue:
        round_start, retry = time.time(), []
        slots = min(workers, len(queue))
        with ProcessPoolExecutor(max_workers=slots, mp_context=ctx, initializer=_init_worker,
                                 initargs=(os.getpid(), worker_env(workers)),
                                 max_tasks_per_child=1) as pool:
            try:
                died = functools.partial(_after_death, round_start=round_start, deaths=deaths,
                                         on_record=on_record, retry=retry)
                _run_round(pool, queue, list(range(slots)), envs, runner, on_record, died)
            except BaseException:
                _kill_workers(pool)
                raise
        queue = retry + queue


def _run_round(pool: ProcessPoolExecutor, queue: list, free: list[int], envs: Sequence[Mapping],
               runner: Callable, on_record: Callable[[dict], None],
               died: Callable[[Mapping[str, Any]], None]) -> None:
    """Start queued jobs on free slots until the queue is empty or the pool breaks; `queue` keeps
    the jobs not started."""
    running: dict = {}
    broken = False
    while running or (queue and not broken):
        while queue and free and not broken:
            slot, job = free.pop(0), queue.pop(0)
            try:
                running[pool.submit(_run_in_slot, runner, envs[slot], job)] = (job, slot)
            except BrokenProcessPool:
                queue.insert(0, job)
                free.insert(0, slot)
                broken = True
        if not running:
            return
        done, _ = wait(running, return_when=FIRST_COMPLETED)
        for future in done:
            job, slot = running.pop(future)
            free.append(slot)
            try:
                result = future.result()
            except BrokenProcessPool:
                broken = True
                for member in job.get("members", [job]):
                    died(member)
                continue
            for record in result if isinstance(result, list) else [result]:
                on_record(record)


def _kill_workers(pool: ProcessPoolExecutor) -> None:
    """Kill a pool's worker processes now (shutting down would wait for their jobs)."""
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        with contextlib.suppress(Exception):
            process.kill()
    pool.shutdown(wait=False, cancel_futures=True)


def _after_death(job: Mapping[str, Any], round_start: float, deaths: collections.Counter,
                 on_record: Callable[[dict], None], retry: list) -> None:
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
        retry.append(job)
