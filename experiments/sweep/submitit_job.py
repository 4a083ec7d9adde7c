"""What one submitit job runs: its cells, resumed where a killed run left them.

Imported only by the submitit launcher (`launch.py`) and inside its jobs, so the library works
without submitit installed.

Requeue (time limit, preemption): Slurm signals the job `signal_delay_s` before its limit (and
on preemption); submitit's handler calls `CellJob.checkpoint`, which returns a re-submission of
this same job, and requeues it. Nothing needs saving at that moment: training saves an orbax
checkpoint every `train.checkpoint_every` steps, so the requeued job skips the cells already
done and resumes the others from their newest checkpoint, bit-identical to an uninterrupted run
(`arith_precision/training/loop.py`); the steps since that checkpoint are trained again.

The job's own process only supervises: its cells train in spawned worker processes
(`pool.run_parallel`, even for one worker), which ignore the signal. submitit's handler ends
the job's process by raising SystemExit wherever it is interrupted; inside a JAX compile that
can crash the process (measured here: a segmentation fault, so the local executor saw no
requeue), while a process that only waits on its workers stops cleanly and kills them.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import submitit

from experiments.sweep import cells as sweep_cells
from experiments.sweep import devices, runner
from experiments.sweep import pool as sweep_pool


class CellJob(submitit.helpers.Checkpointable):
    """A submitit callable: train `cells` (cell jobs {"name", "dir", "config"}) with up to
    `replicas` per program; returns one record per cell, as the sweep's own pool does.

    The job's cells run like a sweep on a machine with the job's GPUs: one worker process with
    one GPU or none, one per GPU with several (`devices.visible_gpus`: Slurm sets
    CUDA_VISIBLE_DEVICES to the allocation's). The environment is the pool workers'
    (`pool.worker_env`), so a cell's parameters are the ones the local pool would train.
    """

    def __init__(self, cells: Sequence[Mapping[str, Any]], replicas: int | str = "auto"):
        self.cells = [dict(cell) for cell in cells]
        self.replicas = replicas

    def __call__(self) -> list[dict[str, Any]]:
        sweep_pool.apply_env(sweep_pool.worker_env(2), override=False)
        records, todo = [], []
        for cell in self.cells:
            if sweep_cells.cell_status(cell["dir"]) in sweep_cells.DONE:
                records.append(sweep_cells.record_from_disk(cell))  # done before a requeue
            else:
                todo.append(cell)
        gpus = devices.visible_gpus()
        workers = len(gpus) if len(gpus) >= 2 else 1
        print(f"[sweep] job: {len(self.cells)} cells, {len(records)} already done; "
              f"{workers} worker(s); GPUs: {', '.join(gpus) or 'none'}", flush=True)
        runner.run_here(todo, workers=workers, replicas=self.replicas, on_record=records.append,
                        log=lambda line: print(line, flush=True), gpus=gpus, in_process=False)
        return records

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        """Called by submitit when the job is signalled: requeue this same job (see the module
        docstring: the cells' own orbax checkpoints carry their progress). Says so in the job's
        log and in the log of each cell not done."""
        running = [c for c in self.cells
                   if sweep_cells.cell_status(c["dir"]) not in sweep_cells.DONE]
        line = ("[sweep] job signalled (time limit or preemption): requeued; unfinished cells "
                "resume from their newest checkpoints")
        print(f"{line}: {', '.join(c['name'] for c in running)}", file=sys.stderr, flush=True)
        for cell in running:
            if os.path.isdir(cell["dir"]):
                with open(os.path.join(cell["dir"], "log.txt"), "a") as log:
                    log.write(f"{line} (at step {sweep_cells.current_step(cell['dir'])})\n")
        return super().checkpoint(*args, **kwargs)
