r"""Launch a sweep: a grid of training runs, then results.csv, report.md and PNG plots.

    python -m experiments.sweep --config=experiments/configs/paper_fig2.py:smoke --workdir=DIR \
        [--workers=W|auto] [--replicas=auto|off|R] [--shard=i/N] [--dry_run] [--aggregate_only] \
        [--config.grid.seeds=(0,1)]
    python -m experiments.sweep --config=... --workdir=DIR --launcher=submitit \
        [--cluster=auto|slurm|local] [--partition=P] [--gpus_per_job=1] [--cpus_per_job=C] \
        [--time_limit_min=240] [--cells_per_job=1] [--array_parallelism=64] \
        [--signal_delay_s=90] [--max_timeouts=3] [--dry_run]

Re-running the same command skips finished cells (completed or diverged), resumes interrupted
ones from their checkpoints and retries failed ones. `--workers=auto` runs one worker per visible
GPU, each pinned to its GPU (`experiments/sweep/devices.py`; on a machine with one GPU or none
it is 1, the default: cells one after another in this process). `--shard=i/N` runs the cells
whose index is i mod N (e.g. one shard per machine, all into one shared DIR); every shard
aggregates over all cells present when it ends, and `--aggregate_only` rebuilds the outputs
without training. `--launcher=submitit` submits the cells as batch jobs (Slurm, or local
processes), requeued on time-out and preemption (`experiments/sweep/launch.py`). Logic:
`experiments/sweep/__init__.py`; the grids: `experiments/configs/*.py`.

`--estimate [--from=gpu_check.json] [--converged_from=SWEEP_DIR] [--gpus=N]` prints the sweep's
cost (cells, FLOPs, device-hours with and without early stopping; `experiments/sweep/cost.py`)
and the wall clock on one GPU next to N GPUs laid out as the launcher flags say, and runs
nothing; --workdir is not needed with it.

Exit status: 0 done, 2 bad input (one line `error: <flag or key>: <value>: <why>`: a flag, the
config file or its ARGS, a --config.* override, --shard, a workdir that cannot be written, a
launcher flag out of range, submitit not installed, jobs of an earlier run still holding cells),
1 an internal error (with its traceback). A cell that fails is recorded and the sweep goes on.
"""

from __future__ import annotations

import os

from absl import app, flags
from ml_collections import config_flags

from arith_precision.common import cli_errors
from experiments.sweep import cost as cost_estimate
from experiments.sweep import launch as sweep_launch

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Path to a sweep config file, optionally with :ARGS.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory holding one sub-directory per cell.")
_WORKERS = flags.DEFINE_string(
    "workers", "1", "Cells run in parallel, each in its own spawned process (1: in this "
    "process), or auto: one worker per visible GPU, each pinned to its GPU, where there are two "
    "or more GPUs, else 1. With W > 1 and several GPUs, worker i is pinned to GPU i mod G.")
_REPLICAS = flags.DEFINE_string(
    "replicas", "auto", "Train up to R cells that differ only in seed and precision arm in one "
    "program (arith_precision/training/loop.py; every cell's files and numbers unchanged): an "
    "integer R >= 1, off (= 1), or auto (8 on a GPU / TPU backend, off on CPU, where one program "
    "of R copies measured no faster than R runs).")
_SHARD = flags.DEFINE_string("shard", None, "i/N: run only the cells with index % N == i.")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "List this shard's cells and their status; run "
                             "nothing.")
_AGGREGATE_ONLY = flags.DEFINE_bool("aggregate_only", False, "Only rebuild results.csv, "
                                    "report.md and the plots from the cells in --workdir.")
_ESTIMATE = flags.DEFINE_bool("estimate", False, "Print the sweep's cost (cells, FLOPs, "
                              "device-hours) and run nothing.")
_FROM = flags.DEFINE_string("from", None, "With --estimate: a benchmarks/gpu_check.py JSON "
                            "whose measured step rates price the cells.")
_CONVERGED_FROM = flags.DEFINE_string("converged_from", None, "With --estimate: a sweep workdir "
                                      "whose finished runs give early stopping's step fractions.")
_GPUS = flags.DEFINE_integer("gpus", None, "With --estimate: the wall clock on this many GPUs "
                             "(default: what --workers, or the submitit flags, give).")
_LAUNCHER = flags.DEFINE_enum("launcher", "local", ["local", "submitit"], "local: this "
                              "machine's worker pool; submitit: the cells as batch jobs.")
# The submitit launcher's flags (experiments/sweep/launch.py); only with --launcher=submitit.
_DEFAULTS = sweep_launch.Options()
_SUBMITIT_FLAGS = {
    "cluster": flags.DEFINE_string("cluster", _DEFAULTS.cluster, "submitit: slurm, local "
                                   "(submitit's LocalExecutor: jobs as processes on this machine) "
                                   "or auto (slurm where `srun` is on PATH, else local)."),
    "partition": flags.DEFINE_string("partition", None, "submitit: the Slurm partition "
                                     "(default: the cluster's)."),
    "gpus_per_job": flags.DEFINE_integer("gpus_per_job", _DEFAULTS.gpus_per_job, "submitit: "
                                         "GPUs per job, 0 to 64; a job runs one worker per GPU."),
    "cpus_per_job": flags.DEFINE_integer("cpus_per_job", None, "submitit: Slurm CPUs per job "
                                         "(--cpus-per-task; default: the cluster's)."),
    "time_limit_min": flags.DEFINE_float("time_limit_min", _DEFAULTS.time_limit_min,
                                         "submitit: a job's time limit in minutes (whole "
                                         "minutes on Slurm); a job that reaches it is "
                                         "requeued and its cells resume."),
    "cells_per_job": flags.DEFINE_integer("cells_per_job", _DEFAULTS.cells_per_job, "submitit: "
                                          "cells per job, >= 1 (replica batch siblings "
                                          "together)."),
    "array_parallelism": flags.DEFINE_integer("array_parallelism", _DEFAULTS.array_parallelism,
                                              "submitit: jobs running at once, >= 1."),
    "signal_delay_s": flags.DEFINE_integer("signal_delay_s", _DEFAULTS.signal_delay_s,
                                           "submitit: seconds before the time limit at which a "
                                           "job is signalled to requeue."),
    "max_timeouts": flags.DEFINE_integer("max_timeouts", _DEFAULTS.max_timeouts, "submitit: "
                                         "time-outs after which a job is not requeued again "
                                         "(preemptions do not count)."),
}


def _submitit_options(dry_run: bool) -> sweep_launch.Options | None:
    """The launcher's options from the flags (None for the local pool); UsageError for a flag
    that does not apply or is out of range."""
    if _LAUNCHER.value != "submitit":
        for name in _SUBMITIT_FLAGS:
            if flags.FLAGS[name].present:
                raise cli_errors.UsageError(f"--{name}", flags.FLAGS[name].value,
                                            "applies with --launcher=submitit")
        return None
    if flags.FLAGS["workers"].present:
        raise cli_errors.UsageError("--workers", _WORKERS.value, "applies to --launcher=local "
                                    "(a submitit job runs one worker per GPU of its own)")
    options = sweep_launch.Options(**{name: f.value for name, f in _SUBMITIT_FLAGS.items()})
    return sweep_launch.checked(options, dry_run=dry_run)


def _layout(options: sweep_launch.Options | None, cells) -> cost_estimate.Layout:
    """--estimate's GPUs: --gpus, else the launcher's (local: --workers; submitit: GPUs per job
    x jobs at once)."""
    from experiments.sweep import devices

    gpus = _GPUS.value
    if gpus is not None:
        cli_errors.check_int("--gpus", gpus, 1, 1_000_000)
    if options is None:
        if gpus is None:
            gpus, _ = devices.resolve_workers(_WORKERS.value, devices.visible_gpus())
        return cost_estimate.Layout(gpus_per_job=gpus, how=f"local pool of {gpus} worker(s)")
    per_job = max(1, options.gpus_per_job)
    jobs = len(sweep_launch.plan_jobs([_plan_job(c) for c in cells], options.cells_per_job))
    at_once = min(options.array_parallelism, jobs) if gpus is None else max(1, gpus // per_job)
    if gpus is not None and gpus % per_job:
        raise cli_errors.UsageError("--gpus", gpus, f"is not a multiple of --gpus_per_job "
                                    f"({per_job})")
    return cost_estimate.Layout(gpus_per_job=per_job, jobs_at_once=at_once,
                                cells_per_job=options.cells_per_job,
                                how=f"submitit: {jobs} job(s) of up to {options.cells_per_job} "
                                f"cell(s), {at_once} at once, {per_job} GPU(s) each")


def _plan_job(cell) -> dict:
    """A cell as the launcher's planner sees it (no directory: nothing is written)."""
    return {"name": cell.name, "dir": None, "config": cell.config}


def main(argv):
    del argv  # parse_absl_flags rejects positional arguments
    from experiments import sweep as sweep_lib
    from experiments.sweep import devices
    from experiments.sweep import groups as sweep_groups

    workdir = _WORKDIR.value
    try:
        if not _ESTIMATE.value:
            for flag in (_FROM, _CONVERGED_FROM, _GPUS):
                if flag.value is not None:
                    raise cli_errors.UsageError(f"--{flag.name}", flag.value,
                                                "only applies with --estimate")
        try:
            devices.parse_workers(_WORKERS.value)
        except ValueError:
            raise cli_errors.UsageError("--workers", _WORKERS.value,
                                        "must be auto or an integer >= 1") from None
        if _REPLICAS.value != "auto":
            try:
                sweep_groups.resolve_replicas(_REPLICAS.value, 1)
            except ValueError:
                raise cli_errors.UsageError("--replicas", _REPLICAS.value,
                                            "must be auto, off or an integer >= 1") from None
        submitit = _submitit_options(dry_run=_DRY_RUN.value or _ESTIMATE.value or
                                     _AGGREGATE_ONLY.value)
        if _ESTIMATE.value:
            if _CONFIG.value is None:
                raise cli_errors.UsageError("--config", "(missing)", "is required")
            try:
                cells = sweep_lib.expand(_CONFIG.value)
                layout = _layout(submitit, cells)
                print(cost_estimate.run(_CONFIG.value, _FROM.value, _CONVERGED_FROM.value,
                                        layout))
            except cli_errors.UsageError:
                raise
            except ValueError as e:
                raise cli_errors.UsageError("--config", flags.FLAGS["config"].config_filename,
                                            str(e)) from None
            return
        if workdir is None:
            raise cli_errors.UsageError("--workdir", "(missing)", "is required (except with "
                                        "--estimate)")
        if _AGGREGATE_ONLY.value:
            if not os.path.isdir(workdir):
                raise cli_errors.UsageError("--workdir", workdir, "is not a directory")
            for name, path in sweep_lib.aggregate(workdir).items():
                print(f"{name}: {path}")
            return
        if _CONFIG.value is None:
            raise cli_errors.UsageError("--config", "(missing)", "is required (except with "
                                        "--aggregate_only)")
        try:
            shard = sweep_lib.parse_shard(_SHARD.value)
            cells = sweep_lib.select_shard(sweep_lib.expand(_CONFIG.value), shard)
        except ValueError as e:
            if "shard" in str(e):
                raise cli_errors.UsageError("--shard", _SHARD.value, str(e)) from None
            raise cli_errors.UsageError("--config", flags.FLAGS["config"].config_filename,
                                        str(e)) from None
        if _DRY_RUN.value:
            if submitit is not None:
                todo = [_plan_job(c) | {"dir": os.path.join(workdir, c.name)} for c in cells
                        if sweep_lib.cell_status(os.path.join(workdir, c.name))
                        not in sweep_lib.DONE]
                plan = sweep_launch.plan_jobs(todo, submitit.cells_per_job)
                print(f"{len(cells)} cells, {len(cells) - len(todo)} already done")
                print("\n".join(sweep_launch.describe(plan, submitit, workdir,
                                                       _CONFIG.value.name)))
                return
            for cell in cells:
                status = sweep_lib.cell_status(f"{workdir}/{cell.name}")
                print(f"{cell.index:5d}  {cell.name}  {status}")
            print(f"{len(cells)} cells")
            return
        cli_errors.check_writable_dir("--workdir", workdir)
        if submitit is not None:
            sweep_launch.check_no_active_jobs(
                [_plan_job(c) | {"dir": os.path.join(workdir, c.name)} for c in cells],
                workdir)
    except cli_errors.UsageError as e:
        cli_errors.usage_exit(e)
    result = sweep_lib.run_sweep(_CONFIG.value, workdir, workers=_WORKERS.value, shard=shard,
                                 replicas=_REPLICAS.value, submitit=submitit)
    ran = ", ".join(f"{k} {v}" for k, v in sorted(result["counts"].items())) or "none"
    print(f"done: {result['cells']} cells; {result['skipped']} were already done; run now: {ran}")


if __name__ == "__main__":
    app.run(main, flags_parser=cli_errors.parse_absl_flags)
