"""Sweeps: a grid of training runs, run resumably (in parallel, sharded), then tables and plots.

`run_sweep(config, workdir)` runs every cell of a sweep config that is not done and aggregates
the directory. The parts, one module each:

    grid.py      the sweep config schema, the ARGS of config files, the grid's cells (`expand`)
                 and shards
    cells.py     a cell's files on disk, running one program of cells, progress and
                 heartbeat lines
    pool.py      the worker pool: cells in spawned processes, one GPU per worker slot
    devices.py   the visible GPUs (`--workers=auto`) and one GPU per worker
    runner.py    a list of cells on this machine: replica batches, in this process or a pool
    launch.py    the cells as submitit jobs (Slurm, or local processes): `--launcher=submitit`
    submitit_job.py  what one such job runs (requeued on time-out and preemption)
    groups.py    replica batches: cells that differ only in seed and arm, one program
    results.py   the directory's rows: per cell (`collect`), per group of seeds (`group`)
    render.py    cells.csv, results.csv, plots, report.md (`aggregate`)
    cost.py      `--estimate`: the grid's cost from measured step rates
    __main__.py  the command line (`python -m experiments.sweep`)

This package re-exports their public names (`sweep.expand`, `sweep.collect`, `sweep.plot`, ...),
the one import that configs, notebooks and the CLI use.

With several GPUs, `--workers=auto` runs one worker per GPU, each pinned to its GPU (a cell
uses every device it sees); several machines share a grid with `--shard=i/N` or a Slurm
cluster takes it with `--launcher=submitit`; `aggregate` then reads the union of the cells.

Why it is built this way: a sweep is hours of GPU time, so it must survive being killed (cells
are skipped once done, resumed when half done), must not stop at one bad cell (a divergence is a
result, an exception is recorded), and must split over machines (`shard`) with the results of
all shards aggregated from the directory alone (`aggregate`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from experiments.sweep import cells as sweep_cells
from experiments.sweep import devices, runner
from experiments.sweep import groups as sweep_groups
from experiments.sweep import launch as sweep_launch
from experiments.sweep.cells import DONE, Heartbeat, Progress, cell_status, run_cell
from experiments.sweep.grid import (
    COORDS,
    GRID_ARGS,
    GRID_KEYS,
    TOP_KEYS,
    Cell,
    apply_grid_args,
    cell_name,
    check_sweep_config,
    expand,
    parse_args,
    parse_shard,
    select_shard,
    sweep_config,
)
from experiments.sweep.render import aggregate, plot, report
from experiments.sweep.results import (
    CELL_COLUMNS,
    GROUP_COORDS,
    RESULT_COLUMNS,
    STATUSES,
    collect,
    group,
)

__all__ = ["CELL_COLUMNS", "COORDS", "DONE", "GRID_ARGS", "GRID_KEYS", "GROUP_COORDS",
           "RESULT_COLUMNS", "STATUSES", "TOP_KEYS", "Cell", "Heartbeat", "Progress", "aggregate",
           "apply_grid_args", "cell_name", "cell_status", "check_sweep_config", "collect",
           "expand", "group", "parse_args", "parse_shard", "plot", "report", "run_cell",
           "run_sweep", "select_shard", "sweep_config"]


def run_sweep(c, workdir: str, *, workers: int | str = 1, shard: str | tuple | None = None,
              log: Callable[[str], None] = print, replicas: int | str = "auto",
              submitit: sweep_launch.Options | None = None) -> dict[str, Any]:
    """Run the cells of sweep config `c` (this shard's) that are not done, then `aggregate`.

    `workers`: W >= 1 processes on this machine (1: in this process), or "auto": one per
    visible GPU where there are two or more, else 1 (`devices.py`, which also pins each worker
    to one GPU). `submitit`: submit the cells as batch jobs instead (Slurm, or local processes;
    `launch.py`); `workers` is then the jobs' business and must stay 1.

    `replicas` > 1 trains cells that differ only in seed and precision arm together, up to
    `replicas` per program (`groups.py`); every cell's files and numbers are the same.
    "auto" (default): `sweep_groups.AUTO_REPLICAS` on a GPU / TPU, 1 on CPU (where R copies in
    one program measured no faster); "off" = 1. Under submitit each job resolves "auto" on its
    own backend.

    Returns {"cells": selected count, "skipped": already done, "counts": {status: n} over the
    cells run now, "outputs": aggregate's paths}.
    """
    workers = devices.parse_workers(workers)
    if submitit is not None:
        submitit = sweep_launch.checked(submitit)
        if workers != 1:
            raise ValueError(f"workers={workers!r} applies to the local pool; a submitit job runs "
                             "one worker per GPU of its own")
    if replicas != "auto":  # checked before anything runs; auto looks at the backend later
        replicas, _ = sweep_groups.resolve_replicas(replicas, 1)
    shard = parse_shard(shard) if isinstance(shard, str) or shard is None else shard
    grid = expand(c)
    cells = select_shard(grid, shard)
    os.makedirs(workdir, exist_ok=True)
    sweep_cells.check_reuse(cells, workdir)
    todo = [cell for cell in cells
            if cell_status(os.path.join(workdir, cell.name)) not in DONE]
    jobs = [sweep_cells.job(cell, workdir) for cell in todo]
    if submitit is not None:
        sweep_launch.check_no_active_jobs(jobs, workdir)  # before anything is written
    # The last sweep run here, for the report.
    sweep_cells.write_json(os.path.join(workdir, "sweep.json"),
                           {"name": c.name, "description": c.description,
                            "config": c.to_dict(), "cells": [cell.name for cell in grid]})
    for cell in todo:
        cell_dir = os.path.join(workdir, cell.name)
        os.makedirs(cell_dir, exist_ok=True)
        if not os.path.exists(os.path.join(cell_dir, "cell.json")):
            sweep_cells.write_json(os.path.join(cell_dir, "cell.json"),
                                   {"name": cell.name, "index": cell.index, "sweep": c.name,
                                    "coords": cell.coords,
                                    "config": sweep_cells.normalized(cell.config)})
    skipped = len(cells) - len(todo)
    where = f"shard {shard[0]}/{shard[1]}, " if shard else ""
    if submitit is None:
        gpus = devices.visible_gpus() if workers == "auto" or workers > 1 else []
        workers, why = devices.resolve_workers(workers, gpus)
        how, parallel = f"with {workers} worker(s) ({why})", workers
    else:
        plan = sweep_launch.plan_jobs(jobs, submitit.cells_per_job)
        how = f"as {len(plan)} submitit job(s) ({submitit.cluster})"
        parallel = sweep_launch.concurrency(submitit, len(plan))
    log(f"[sweep] {c.name}: {where}{len(cells)} cells, {skipped} already done, {len(todo)} to "
        f"run {how} in {workdir}")
    progress = Progress(len(cells), skipped, log, parallel)
    if submitit is not None:
        sweep_launch.run(jobs, submitit, workdir=workdir, name=c.name, replicas=replicas,
                         on_record=progress.update, log=log)
    else:
        with Heartbeat(jobs, log):
            runner.run_here(jobs, workers=workers, replicas=replicas, on_record=progress.update,
                            log=log, gpus=gpus)
    outputs = aggregate(workdir)
    log(f"[sweep] results: {outputs['results']}, report: {outputs['report']}")
    return {"cells": len(cells), "skipped": skipped, "counts": dict(progress.counts),
            "outputs": outputs}
