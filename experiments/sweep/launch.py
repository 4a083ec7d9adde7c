r"""Sweep cells as batch jobs through submitit: Slurm on a cluster, or processes on this machine.

    python -m experiments.sweep --config=... --workdir=DIR --launcher=submitit \
        [--cluster=auto|slurm|local] [--partition=P] [--gpus_per_job=1] [--cpus_per_job=C] \
        [--time_limit_min=240] [--cells_per_job=1] [--array_parallelism=64] \
        [--signal_delay_s=90] [--max_timeouts=3] [--dry_run]

What happens (`run`):
  * The cells not done are packed into jobs of up to `cells_per_job` cells, cells that can share
    a replica batch (the same cell but for seed and precision arm) together (`plan_jobs`). On
    Slurm every job goes into one job array, at most `array_parallelism` of them running at
    once; with `cluster="local"` (submitit's LocalExecutor: each job a process tree on this
    machine, with real time limits and requeues) this process starts at most that many at a time.
  * A job (`submitit_job.CellJob`) trains its cells as the sweep's own pool would, with the
    job's GPUs: one after another with one GPU, one worker per GPU with several. A cell's files,
    cells.csv row and parameters are the same as from the local pool.
  * This process waits: one line per finished cell (as with the local pool) and every 30 s one
    line with the running cells' steps, the jobs' states and an ETA; then it aggregates.
  * Time limit and preemption: Slurm signals a job `signal_delay_s` before its limit (and when it
    is preempted); submitit checkpoints and requeues it (`CellJob.checkpoint`), and its cells
    resume from their orbax checkpoints, bit-identically. A job is requeued after at most
    `max_timeouts` time-outs (preemptions do not count); after that its unfinished cells are
    recorded as errors and a re-run of the command retries them.
  * Every cell directory gets job.json (cluster, job id, submitit folder). A re-run of the same
    command submits only the cells not done, and refuses (exit status 2) while a job of an
    earlier run still holds one of them: two jobs must never train one cell directory.
  * Stopping this process (Ctrl-C, a lost login) does not stop Slurm jobs; re-run the command
    when they have ended to collect them and submit what is left. (Local jobs are children of
    this process: Ctrl-C in its terminal ends them too; their cells resume on a re-run.)
  * Logs: DIR/submitit/<job id>_0_log.out and .err (the job's), each cell's log.txt (training's).

submitit is an optional dependency (`pip install -e '.[slurm]'`), imported only here, inside
functions, and in the jobs.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import shlex
import shutil
import socket
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from arith_precision.common.cli_errors import UsageError, check_int
from experiments.sweep import cells as sweep_cells
from experiments.sweep import groups as sweep_groups

CLUSTERS = ("auto", "slurm", "local")
# Slurm job states of a job that has not ended (it may still train its cells).
ACTIVE_SLURM_STATES = {"PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED",
                       "CONFIGURING", "COMPLETING", "RESIZING", "SUSPENDED", "SIGNALING",
                       "STAGE_OUT", "STOPPED"}
FOLDER = "submitit"  # under the sweep's workdir: submitit's pickles and the jobs' logs


@dataclasses.dataclass(frozen=True)
class Options:
    """The submitit launcher's flags (same names on the command line, with --)."""

    cluster: str = "auto"  # slurm | local | auto: slurm where `srun` is on PATH, else local
    partition: str | None = None  # Slurm partition (None: the cluster's default)
    gpus_per_job: int = 1
    cpus_per_job: int | None = None  # Slurm --cpus-per-task (None: the cluster's default)
    time_limit_min: float = 240.0
    cells_per_job: int = 1
    array_parallelism: int = 64  # jobs running at once
    signal_delay_s: int = 90  # the requeue signal comes this long before the time limit
    max_timeouts: int = 3  # time-outs after which a job is not requeued again


def checked(options: Options, *, dry_run: bool = False) -> Options:
    """`options` with cluster "auto" resolved; a UsageError naming the flag for a value out of
    range, for submitit not installed, or for Slurm asked for where there is none (a dry run
    needs no Slurm)."""
    try:
        import submitit  # noqa: F401
    except ImportError:
        raise UsageError("--launcher", "submitit", "needs the submitit package (pip install "
                         "-e '.[slurm]')") from None
    cluster = options.cluster
    if cluster not in CLUSTERS:
        raise UsageError("--cluster", cluster, f"must be one of {', '.join(CLUSTERS)}")
    if cluster == "auto":
        cluster = "slurm" if shutil.which("srun") else "local"
    elif cluster == "slurm" and not dry_run and not shutil.which("srun"):
        raise UsageError("--cluster", cluster, "no `srun` on PATH: this is not a Slurm host "
                         "(--dry_run prints the jobs without one)")
    check_int("--gpus_per_job", options.gpus_per_job, 0, 64)
    if options.cpus_per_job is not None:
        check_int("--cpus_per_job", options.cpus_per_job, 1, 4096)
    check_int("--cells_per_job", options.cells_per_job, 1, 100_000)
    check_int("--array_parallelism", options.array_parallelism, 1, 100_000)
    check_int("--max_timeouts", options.max_timeouts, 0, 1000)
    check_int("--signal_delay_s", options.signal_delay_s, 1)
    limit = options.time_limit_min
    if isinstance(limit, bool) or not isinstance(limit, int | float) or \
            not math.isfinite(limit) or limit <= 0:
        raise UsageError("--time_limit_min", limit, "must be a number of minutes > 0")
    if limit > 525_600:
        raise UsageError("--time_limit_min", limit, "must be <= 525600 (a year)")
    if cluster == "slurm" and limit != int(limit):
        raise UsageError("--time_limit_min", limit, "Slurm takes whole minutes")
    if options.signal_delay_s >= limit * 60:
        raise UsageError("--signal_delay_s", options.signal_delay_s,
                         f"must be shorter than the time limit ({limit * 60:g} s)")
    if options.partition is not None:
        if cluster != "slurm":
            raise UsageError("--partition", options.partition, "applies to Slurm jobs "
                             "(--cluster=slurm), not to local ones")
        if not re.fullmatch(r"[\w.,-]+", options.partition):
            raise UsageError("--partition", options.partition, "is not a partition name")
    if options.cpus_per_job is not None and cluster != "slurm":
        raise UsageError("--cpus_per_job", options.cpus_per_job, "applies to Slurm jobs "
                         "(--cluster=slurm), not to local ones")
    return dataclasses.replace(options, cluster=cluster)


def plan_jobs(cell_jobs: Sequence[Mapping[str, Any]],
              cells_per_job: int) -> list[list[Mapping[str, Any]]]:
    """Cell jobs -> the cells of each submitit job: replica batch siblings (`groups.group_jobs`)
    together, then packed first-fit, largest first, into jobs of up to `cells_per_job` cells."""
    packed: list[list[Mapping[str, Any]]] = []
    batches = sweep_groups.group_jobs(cell_jobs, cells_per_job)
    for batch in sorted(batches, key=lambda b: -len(sweep_groups.members(b))):
        members = sweep_groups.members(batch)
        for job in packed:
            if len(job) + len(members) <= cells_per_job:
                job.extend(members)
                break
        else:
            packed.append(list(members))
    return packed


def concurrency(options: Options, jobs: int) -> int:
    """Cells that can train at once: GPUs per job (at least 1) x jobs running at once."""
    return max(1, options.gpus_per_job) * max(1, min(options.array_parallelism, jobs))


def slurm_parameters(options: Options, name: str) -> dict[str, Any]:
    """submitit SlurmExecutor parameters (sbatch options) for these options."""
    params: dict[str, Any] = {"job_name": f"sweep_{name}", "time": int(options.time_limit_min),
                              "nodes": 1, "ntasks_per_node": 1,
                              "array_parallelism": options.array_parallelism,
                              "signal_delay_s": options.signal_delay_s}
    if options.gpus_per_job:
        params["gpus_per_node"] = options.gpus_per_job
    if options.partition:
        params["partition"] = options.partition
    if options.cpus_per_job:
        params["cpus_per_task"] = options.cpus_per_job
    return params


def _summary(options: Options, plan: Sequence[Sequence], folder: str) -> str:
    cells = sum(len(p) for p in plan)
    where = (f"Slurm{f' partition {options.partition}' if options.partition else ''}, one job "
             f"array" if options.cluster == "slurm" else "local processes (submitit "
             "LocalExecutor)")
    return (f"[sweep] submitit ({where}): {len(plan)} job(s) for {cells} cell(s), up to "
            f"{options.cells_per_job} per job; {options.gpus_per_job} GPU(s) per job; time limit "
            f"{options.time_limit_min:g} min, requeued on time-out (up to "
            f"{options.max_timeouts} times) and preemption, signalled {options.signal_delay_s} s "
            f"before the limit; at most {options.array_parallelism} job(s) at once; logs in "
            f"{folder}")


def describe(plan: Sequence[Sequence[Mapping[str, Any]]], options: Options, workdir: str,
             name: str) -> list[str]:
    """`--dry_run`: the jobs that would be submitted, each with its cells and their status, and
    on Slurm the sbatch script of the job array."""
    folder = os.path.join(os.path.abspath(workdir), FOLDER)
    lines = [_summary(options, plan, folder)]
    for i, cells in enumerate(plan):
        listed = ", ".join(f"{c['name']} ({sweep_cells.cell_status(c['dir'])})" for c in cells)
        lines.append(f"job {i:4d}: {len(cells)} cell(s): {listed}")
    if options.cluster == "slurm" and plan:
        from submitit.slurm import slurm as submitit_slurm

        command = (f"{shlex.quote(sys.executable)} -u -m submitit.core._submit "
                   f"{shlex.quote(folder)}")
        script = submitit_slurm._make_sbatch_string(  # what SlurmExecutor would write
            command=command, folder=folder, map_count=len(plan),
            **slurm_parameters(options, name))
        lines += ["sbatch script of the job array (submitit writes it, with its own paths):",
                  *script.rstrip().splitlines()]
    return lines


def _executor(options: Options, folder: str, name: str):
    import submitit

    if options.cluster == "slurm":
        executor = submitit.SlurmExecutor(folder, max_num_timeout=options.max_timeouts)
        executor.update_parameters(**slurm_parameters(options, name))
    else:
        executor = submitit.LocalExecutor(folder, max_num_timeout=options.max_timeouts)
        executor.update_parameters(timeout_min=options.time_limit_min,
                                   gpus_per_node=options.gpus_per_job,
                                   signal_delay_s=options.signal_delay_s)
    return executor


# ---- jobs of earlier runs ----------------------------------------------------------------------


def _mark(cells: Sequence[Mapping[str, Any]], job, options: Options, folder: str) -> None:
    """job.json in each cell directory: which job holds the cell."""
    for cell in cells:
        sweep_cells.write_json(os.path.join(cell["dir"], "job.json"),
                               {"cluster": options.cluster, "job_id": str(job.job_id),
                                "folder": folder, "host": socket.gethostname(),
                                "submitted": time.time()})


def _local_job_alive(mark: Mapping[str, Any]) -> bool:
    """A local job's id is its controller's pid: alive when that process still runs submitit."""
    if mark.get("host") != socket.gethostname():
        return False
    try:
        with open(f"/proc/{int(mark['job_id'])}/cmdline", "rb") as f:
            return b"submitit" in f.read()
    except (OSError, ValueError):
        return False


def active_jobs(cell_jobs: Sequence[Mapping[str, Any]]) -> list[tuple[str, str, str, str]]:
    """(cell, cluster, job id, state) for each cell not done whose job.json names a job that has
    not ended (Slurm: `sacct` through submitit; local: its controller process)."""
    marks = []
    for cell in cell_jobs:
        path = os.path.join(cell["dir"], "job.json")
        if os.path.exists(path) and sweep_cells.cell_status(cell["dir"]) not in sweep_cells.DONE:
            marks.append((cell["name"], sweep_cells.read_json(path)))
    if not marks:
        return []
    slurm_jobs = {}
    if any(m["cluster"] == "slurm" for _, m in marks):
        import submitit

        slurm_jobs = {m["job_id"]: submitit.SlurmJob(folder=m["folder"], job_id=m["job_id"])
                      for _, m in marks if m["cluster"] == "slurm"}
    out = []
    for name, mark in marks:
        if mark["cluster"] == "slurm":
            state = slurm_jobs[mark["job_id"]].state
            if state.split()[0].upper() in ACTIVE_SLURM_STATES:
                out.append((name, "slurm", mark["job_id"], state))
        elif _local_job_alive(mark):
            out.append((name, "local", mark["job_id"], "RUNNING"))
    return out


def check_no_active_jobs(cell_jobs: Sequence[Mapping[str, Any]], workdir: str) -> None:
    """UsageError (--workdir) while a job of an earlier run still holds one of these cells."""
    active = active_jobs(cell_jobs)
    if not active:
        return
    shown = "; ".join(f"{name}: job {job_id} {state}" for name, _, job_id, state in active[:3])
    slurm = sorted({j for _, c, j, _ in active if c == "slurm"})
    local = sorted({j for _, c, j, _ in active if c == "local"})
    cancel = " or ".join(x for x in (f"scancel {' '.join(slurm)}" if slurm else "",
                                     f"kill {' '.join(local)}" if local else "") if x)
    raise UsageError("--workdir", workdir, f"{len(active)} cell(s) are still held by jobs of an "
                     f"earlier run that have not ended ({shown}): wait for them to end (or cancel "
                     f"them: {cancel}), then run again")


# ---- submitting and waiting --------------------------------------------------------------------


def _error_line(text: str) -> str:
    """The last 'SomeError: message' line of a job's error (a traceback), else its first line."""
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    found = [ln for ln in lines if re.match(r"^[\w.]*(Error|Exception): ", ln)]
    line = (found or lines or ["unknown error"])[-1 if found else 0]
    return re.sub(r"^[\w]+(\.[\w]+)+\.", "", line)  # submitit.core.utils.X -> X


def _collect(job, cells: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One record per cell of an ended job: the job's own, or for a job that ended without
    returning them (killed, time-outs used up, crashed), the cells' state on disk, where a cell
    not done is recorded as an error (error.json; a re-run retries it)."""
    try:
        records, error = list(job.result()), None
    except Exception as e:  # noqa: BLE001 -- submitit's FailedJobError / UncompletedJobError
        records = []
        error = (f"submitit job {job.job_id} ended without finishing this cell "
                 f"({_error_line(str(e))}); job log: {job.paths.stdout}")
    by_name = {r["name"]: r for r in records}
    out = []
    for cell in cells:
        if cell["name"] in by_name:
            out.append(by_name[cell["name"]])
            continue
        why = error or f"submitit job {job.job_id} returned no record for this cell"
        if sweep_cells.cell_status(cell["dir"]) not in sweep_cells.DONE:
            sweep_cells.write_json(os.path.join(cell["dir"], "error.json"),
                                   {"status": "error", "error": why, "time": time.time()})
        out.append(sweep_cells.record_from_disk(cell, why))
    return out


def _states(running: Sequence, waiting: Sequence) -> str:
    counts: dict[str, int] = {}
    for job, _ in running:
        state = str(job.state).split()[0].lower()
        counts[state] = counts.get(state, 0) + 1
    parts = [f"{n} {s}" for s, n in sorted(counts.items())]
    if waiting:
        parts.append(f"{len(waiting)} not submitted yet")
    return "jobs: " + (", ".join(parts) or "none left")


def run(cell_jobs: Sequence[Mapping[str, Any]], options: Options, *, workdir: str, name: str,
        replicas: int | str, on_record: Callable[[dict], None], log: Callable[[str], None],
        poll_s: float = 1.0, heartbeat_s: float = 30.0) -> None:
    """Submit `cell_jobs` ({"name", "dir", "config"}, none done) as submitit jobs, wait for them
    and pass one record per cell to `on_record` (see the module docstring). `options` must be
    `checked`."""
    from experiments.sweep.submitit_job import CellJob

    if not cell_jobs:
        return
    check_no_active_jobs(cell_jobs, workdir)
    folder = os.path.join(os.path.abspath(workdir), FOLDER)
    plan = plan_jobs(cell_jobs, options.cells_per_job)
    executor = _executor(options, folder, name)
    log(_summary(options, plan, folder))
    waiting = [(CellJob(cells, replicas), cells) for cells in plan]
    running: list[tuple[Any, list]] = []
    if options.cluster == "slurm":  # one job array; Slurm keeps array_parallelism running
        with executor.batch():
            jobs = [executor.submit(payload) for payload, _ in waiting]
        running = [(job, cells) for job, (_, cells) in zip(jobs, waiting, strict=True)]
        waiting = []
        for job, cells in running:
            _mark(cells, job, options, folder)
        log(f"[sweep] submitted job array {running[0][0].job_id.split('_')[0]}")
    beat = sweep_cells.Heartbeat(cell_jobs, log, every=heartbeat_s)  # its line(), no thread
    last_beat = time.time()
    try:
        while waiting or running:
            while waiting and len(running) < options.array_parallelism:
                payload, cells = waiting.pop(0)
                job = executor.submit(payload)
                _mark(cells, job, options, folder)
                running.append((job, cells))
            for entry in [e for e in running if e[0].done()]:
                running.remove(entry)
                for record in _collect(*entry):
                    on_record(record)
            if time.time() - last_beat >= heartbeat_s:
                log(f"{beat.line()} | {_states(running, waiting)}")
                last_beat = time.time()
            if waiting or running:
                time.sleep(poll_s)
    except BaseException:
        if running:
            ids = " ".join(str(job.job_id) for job, _ in running)
            log(f"[sweep] stopped waiting for {len(running)} job(s) ({ids}); "
                f"{len(waiting)} not submitted. Slurm jobs go on: run the same command again "
                "once they have ended, to collect them and submit the rest (local jobs end with "
                "this command when it is interrupted from its terminal)")
        raise
