"""Running a list of sweep cells on this machine: the sweep's own pool and every submitit job.

`run_here(jobs, workers, replicas, ...)` groups cell jobs into replica batches (`groups.py`) and
trains them one after another in this process (`workers` = 1) or in a pool of `workers` spawned
processes, each pinned to one GPU when several are visible (`pool.run_parallel`,
`devices.slot_envs`). `run_sweep` calls it for the cells of a sweep; a submitit job
(`submitit_job.CellJob`) calls it for the cells of its job, with the GPUs its allocation shows:
the same code trains a cell wherever it runs, so its files and numbers are the same.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from experiments.sweep import cells as sweep_cells
from experiments.sweep import devices
from experiments.sweep import groups as sweep_groups
from experiments.sweep import pool as sweep_pool


def run_here(jobs: Sequence[Mapping[str, Any]], *, workers: int, replicas: int | str,
             on_record: Callable[[dict], None], log: Callable[[str], None],
             gpus: Sequence[str] = (), in_process: bool | None = None) -> None:
    """Train cell jobs ({"name", "dir", "config"}) on this machine; one record per cell to
    `on_record` as each program ends.

    `replicas`: up to R cells that differ only in seed and precision arm per program ("auto":
    `groups.resolve_replicas`). `gpus`: the visible GPUs (`devices.visible_gpus`); with
    `workers` > 1 and two or more, worker slot i is pinned to GPU i mod G. `in_process`: train
    in this process (the default with one worker) or always in spawned workers (a process that
    must stay responsive to signals while cells train: a submitit job).
    """
    if not jobs:
        return
    in_process = workers == 1 if in_process is None else in_process
    if in_process and workers != 1:
        raise ValueError(f"in_process needs workers = 1, got {workers}")
    replicas, why = sweep_groups.resolve_replicas(replicas, workers, in_process=in_process)
    log(f"[sweep] replica batches: up to {replicas} cell(s) per program ({why}; "
        "--replicas=off or R to choose)")
    batches = sweep_groups.group_jobs(jobs, replicas)
    if in_process:
        for job in batches:
            log(f"[sweep] running {job['name']} (log: {os.path.join(job['dir'], 'log.txt')})")
            for record in sweep_cells.run_cells(job):
                on_record(record)
        return
    sweep_pool.run_parallel(batches, workers, on_record, runner=sweep_cells.run_cells,
                             slot_envs=devices.slot_envs(workers, gpus))
