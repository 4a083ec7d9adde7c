r"""The main job: reproduce the paper's three claims in one command and write DIR/REPORT.md.

    python -m experiments.reproduce --workdir=DIR --quick     # <= 20 min on a 2-core CPU
    python -m experiments.reproduce --workdir=DIR --medium    # <= 2.5 h on 2 cores, resumable
    python -m experiments.reproduce --workdir=DIR --long      # the long study, resumable
    python -m experiments.reproduce --workdir=DIR             # the GPU-sized grid (days)
    python -m experiments.reproduce --workdir=DIR --smoke     # plumbing only, ~1-2 min
        [--workers=W] [--phases=frontier,sweep,quant,report]

Phases (each prints progress lines with its elapsed time, and every 30 s a whole-job line says
the phase, how far it is and an ETA for the job; re-running reuses finished work):
  1. frontier  The hand-built ADD / IterADD / MUL Transformers (`constructions/`): the fewest
               float mantissa bits (e8mM) for which each stays exact at size n, against n. The
               paper's positive results say log precision suffices, so the bits should grow
               like log n and any fixed format (bf16 = e8m7) should fail past some n.
               Cached in DIR/frontier/*.json.
  2. sweep     Training from scratch in three arms (`experiments/training_verdict.py`): fp32;
               pure_bf16 (weights, activations, gradients, optimizer state in bf16: the paper's
               most likely "bfloat16"); bf16 (mixed: bf16 compute, fp32 master weights and
               optimizer), simulated (`experiments/sweep/__init__.py`); exact match against n. The
               paper: ADD unaffected, IterADD and MUL collapsing in bf16. Each low-precision
               arm gets a verdict computed by a stated rule. DIR/sweep/ (resumable cell by cell).
  3. quant     `experiments/quant_study.py` on the sweep's fp32 models: post-training int8 / int4
               / NF4 / fp8 / bf16 / MX / NVFP4 weights, then LoRA on the fp32 base vs QLoRA on
               the int4 base (and, in quick / full, on mxfp4_e2m1 and nvfp4 bases).
               The paper (LLaMA-3.1-8B): int4 and QLoRA behind bf16 and LoRA, more so at larger
               n. DIR/quant/ (rows cached).
  4. probe     `experiments/precision_probe.py` on the sweep's fp32 models: the fewest e8mM
               mantissa bits at which each still matches its fp32 exact match (within 0.01), with
               every operation rounded, each model region alone, and all but attention; plotted
               beside the constructions' frontier. DIR/probe/ (rows cached).
  5. report    DIR/REPORT.md: every table and plot (relative links) and one paragraph per claim
               stating, with this run's numbers, what was and was not shown.

Modes:
  --smoke  ADD base 2 frontier at n=2,3; a 2 x 2 sweep (ADD, IterADD at n=3; fp32, bf16; 10
           steps); the quant study on the ADD model with int8 / int4 and 5-step LoRA / QLoRA.
           Checks that every phase and the report work; the numbers mean nothing.
  --quick  Frontiers (mantissa bits only, accumulation `once`, 30 random inputs on top of the
           exhaustive / adversarial sets): ADD base 10 n=4,8,16,32; IterADD base 2 k=3 n=4,8,16;
           MUL base 2 n=2,4,16. Sweep (2 workers, one seed, 2 layers, d_model 64, batch 64, lr
           3e-3, fp32, pure_bf16 and bf16): ADD base 2 n=6 (1500 steps), IterADD base 2 k=3
           n=4 (1000) and n=6 (2000), MUL base 2 n=4 (1500): 12 cells. Quant study on the 4
           fp32 cells, 7 schemes, 100-step LoRA / QLoRA on the IterADD cells. Precision probe
           on the 4 fp32 cells (accumulation once, every region set, 256 examples, e8m2..e8m10
           and bf16).
           Measured on a shared, overloaded 2-core CPU (load average 6-9): 12m30s-13m wall
           (frontier ~3 min, sweep ~8 min, quant ~1.5 min); limit 20 min.
           What it shows: the frontier growing with log n (the constructions need no training),
           and int4 post-training quantization losing exact match, more at larger n. What it
           cannot: a few thousand CPU steps are ~1% of the paper's 100k-step runs, so fp32 does
           not become near-perfect on IterADD / MUL at the lengths where the paper sees bf16
           collapse; the report says so with the numbers.
  --medium The training evidence: the quick frontiers, then ADD base 2 n=8 (<= 3000 steps),
           IterADD base 2 k=3 n=6 (<= 4000) and n=8 (<= 8000), MUL base 2 n=4 (<= 4000) and n=5
           (<= 8000); fp32, pure_bf16 and bf16; seeds 0 and 1 (30 cells, 2 workers); 2 layers,
           d_model 64, batch 128, lr 3e-3, early stopping (validation every 250 steps, stop at
           exact match >= 0.99 twice in a row on 1000 held-out examples); 1000 evaluation
           examples. Quant study and probe as in quick, on its fp32 models. Worst case (no run
           converges): 162k steps, sized for <= 2.5 h on a quiet 2-core CPU; the committed run's
           measured time is in results/reproduce_medium/REPORT.md. Kill it any time and re-run the
           same command: finished cells are kept, a running cell resumes from its checkpoint.
  --long   The training claim decided on a CPU (`experiments/configs/long_study.py`): the quick
           frontiers, then groups of cells in order of importance (IterADD base 2 n=8, seeds 0
           and 1; the ADD control; IterADD base 10 n=3-5; n=8's seed 2; MUL under the iid
           protocol; the region arms; longer ADD and IterADD n=10), each fp32 first and then
           pure_bf16 and bf16 with twice fp32's steps to converge; the learning rate decays only
           on a plateau, early stopping, both test protocols, learning curves kept. Kill it
           any time; the same command continues.
  full     Frontiers with `constructions.frontier.run_frontier` (float and fixed point, bf16 /
           fp16 / e4m3 / e5m2, accumulation once and sequential, 200 random inputs): ADD base 10
           n=4..128, IterADD base 2 k=3 n=4..64, MUL base 2 n=2..16. The sweep is
           `experiments/configs/paper_fig2.py` (558 cells: 3 tasks x 2 bases x 2 depths x 3 seeds
           x fp32/pure_bf16/bf16, batch 512, <= 100k steps with early stopping). The quant
           study on every fp32 cell (1000-step LoRA / QLoRA on IterADD and MUL, 2000 examples).
           Runtime: the sweep dominates; its GPU cost is not measured (`python -m
           experiments.sweep --config=experiments/configs/paper_fig2.py --estimate
           --from=gpu_check.json` prices it from `benchmarks/gpu_check.py`); spread it with
           --workers or `experiments.sweep --shard=i/N` over machines, then re-run this command
           to finish. The frontiers take
           ~2-6 hours of CPU (the sequential accumulation is the slow part); the quant study
           ~1-2 GPU-hours.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from arith_precision.common import atomic
from experiments import trained_runs
from experiments.configs.modes import MODES, SETTINGS, Settings
from experiments.report import frontier as report_frontier
from experiments.reproduce import document
from experiments.reproduce import frontier as frontier_phase
from experiments.reproduce import progress as job_progress

PHASES = ("frontier", "sweep", "quant", "probe", "report")

__all__ = ["MODES", "PHASES", "SETTINGS", "main", "reproduce"]


# ---- the phases --------------------------------------------------------------------------------


def run_frontiers(workdir: str, s: Settings, log: Callable[[str], None],
                  on_entry: Callable[[int], None] = lambda n: None) -> list[dict]:
    """Compute (or reuse) every task's frontier; write frontier/frontier.{md,png}."""
    results = frontier_phase.run_frontiers(workdir, s, log, on_entry)
    report_frontier.write_outputs(results, os.path.join(workdir, "frontier"))
    return results


def run_training_sweep(workdir: str, s: Settings, workers: int,
                       log: Callable[[str], None]) -> dict:
    """The mode's sweep; a staged one (`Settings.stages`) runs its stages in order into the same
    directory, each built from the rows the earlier stages finished."""
    from experiments import sweep as sweep_lib

    sweep_dir = os.path.join(workdir, "sweep")
    if s.stages is None:
        return sweep_lib.run_sweep(s.sweep(), sweep_dir, workers=workers, log=log)
    total = {"cells": 0, "skipped": 0}
    stages = s.stages()
    for i, stage in enumerate(stages):
        config = stage(sweep_lib.collect(sweep_dir))
        log(f"[sweep] stage {i + 1}/{len(stages)}")
        result = sweep_lib.run_sweep(config, sweep_dir, workers=workers, log=log)
        total["cells"] += result["cells"]
        total["skipped"] += result["skipped"]
    return dict(result, **total)


def run_quant(workdir: str, s: Settings, log: Callable[[str], None]) -> dict | None:
    from experiments import quant_study

    runs = trained_runs.sweep_runs(os.path.join(workdir, "sweep"), tasks=s.quant_tasks)
    if not runs:
        log("[quant] no completed fp32 sweep cell to quantize: skipped (run the sweep phase)")
        return None
    finetune = []
    for name, cell_dir in runs.items():
        with open(os.path.join(cell_dir, "cell.json")) as f:
            if json.load(f)["coords"]["task"] in s.quant_finetune_tasks:
                finetune.append(name)
    return quant_study.run_quant_study(os.path.join(workdir, "quant"), base_runs=runs,
                                       finetune_runs=finetune, progress=log, **s.quant)


def run_probe(workdir: str, s: Settings, frontiers: Sequence[dict],
              log: Callable[[str], None]) -> dict | None:
    from experiments import precision_probe
    from experiments.report import probe as report_probe

    runs = trained_runs.sweep_runs(os.path.join(workdir, "sweep"))
    if not runs:
        log("[probe] no completed fp32 sweep cell to probe: skipped (run the sweep phase)")
        return None
    out_dir = os.path.join(workdir, "probe")
    result = precision_probe.probe(runs, out_dir, progress=log, **s.probe)
    report_probe.write_outputs(result, out_dir, frontiers)
    return result


# ---- driver ------------------------------------------------------------------------------------


def reproduce(workdir: str, mode: str = "quick", *, workers: int | None = None,
              phases: Sequence[str] = PHASES, settings: Settings | None = None,
              log: Callable[[str], None] = print, command: str = "",
              progress_every: float = 30.0) -> dict[str, Any]:
    """Run the phases of a mode into `workdir`; returns {"report", "phases", "frontiers"}.

    `settings` replaces the mode's (a hook for tests and custom runs). Phases already done are
    reused: frontier JSONs, finished sweep cells and cached quant rows. Every `progress_every`
    seconds a whole-job progress line with an ETA is logged (`experiments.reproduce.progress`).
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; expected one of {MODES}")
    bad = [p for p in phases if p not in PHASES]
    if bad or not phases:
        raise ValueError(f"unknown phase(s) {bad or phases!r}; phases are {PHASES}")
    s = settings or SETTINGS[mode]()
    workers = s.workers if workers is None else workers
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
    os.makedirs(workdir, exist_ok=True)
    start = time.time()
    times_path = os.path.join(workdir, "phases.json")
    phase_times = {}
    if os.path.exists(times_path):
        with open(times_path) as f:
            phase_times = json.load(f)
    tracker = job_progress.JobProgress([p for p in PHASES if p in phases],
                                       job_progress.expected_times(s.name, phase_times), log,
                                       every=progress_every)

    def timed(name, fn, reused=lambda value: False, fraction=None):
        """Run a phase; a phase that only reused earlier work keeps the earlier wall time."""
        t0 = time.time()
        log(f"[reproduce] phase {name}: start (total elapsed {time.time() - start:.0f}s)")
        with tracker.phase(name, fraction):
            value = fn()
        seconds = time.time() - t0
        old = phase_times.get(name)
        if reused(value) and old and old.get("mode") == s.name:
            phase_times[name] = dict(old, reused=True, rerun_seconds=round(seconds, 1))
        else:
            phase_times[name] = {"seconds": round(seconds, 1), "mode": s.name}
        atomic.write_json(times_path, phase_times, indent=1)
        log(f"[reproduce] phase {name}: done in {seconds:.0f}s (total elapsed "
            f"{time.time() - start:.0f}s)")
        return value

    frontiers, report = None, None
    with tracker:
        if "frontier" in phases:
            sizes = max(1, sum(len(ns) for _, ns in s.frontiers))
            done = []
            frontiers = timed("frontier", lambda: run_frontiers(workdir, s, log, done.append),
                              lambda results: all(r.get("reused") for r in results),
                              fraction=lambda: len(done) / sizes)
        if "sweep" in phases:
            configs = [stage([]) for stage in s.stages()] if s.stages else s.sweep()
            fraction = job_progress.sweep_fraction(configs, os.path.join(workdir, "sweep"))
            timed("sweep", lambda: run_training_sweep(workdir, s, workers, log),
                  lambda result: result["skipped"] == result["cells"], fraction)
        if "quant" in phases:
            timed("quant", lambda: run_quant(workdir, s, log),
                  lambda result: result is not None and result["skipped"] == len(result["rows"]))
        if frontiers is None:
            frontiers = frontier_phase.cached_frontiers(workdir, s)
        if "probe" in phases:
            timed("probe", lambda: run_probe(workdir, s, frontiers, log))
        if "report" in phases:
            report = timed("report", lambda: document.write_report(
                workdir, s, {k: v for k, v in phase_times.items() if k != "report"}, frontiers,
                command or f"python -m experiments.reproduce --workdir={workdir} --{s.name}"))
            log(f"[reproduce] report: {report} (total {time.time() - start:.0f}s)")
    return {"report": report, "phases": phase_times, "frontiers": frontiers}


def main(argv: Sequence[str] | None = None) -> int:
    """Exit status 0 done, 2 bad input (one line `error: <flag>: <value>: <why>`, checked before
    any phase runs), 1 an internal error (with its traceback)."""
    from arith_precision.common import cli_errors

    ap = cli_errors.ArgumentParser(prog="python -m experiments.reproduce", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", required=True, help="output directory (re-use it to resume)")
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="the <= 20 min CPU reproduction")
    mode.add_argument("--medium", action="store_true",
                      help="the <= 2.5 h CPU run with 2 seeds and early stopping (resumable)")
    mode.add_argument("--long", action="store_true",
                      help="the long training study (about 12+ CPU-hours, resumable across runs)")
    mode.add_argument("--smoke", action="store_true", help="tiny everything (plumbing only)")
    ap.add_argument("--workers", type=int, default=None,
                    help="sweep worker processes (default: 2; full mode: 4)")
    ap.add_argument("--phases", default=",".join(PHASES),
                    help=f"comma-separated subset of {','.join(PHASES)}")
    ap.add_argument("--rerender", action="store_true",
                    help="render a committed run's tables, plots and REPORT.md from the rows it "
                         "kept (runs nothing; `experiments/reproduce/rerender.py`)")
    args = ap.parse_args(argv)
    name = ("quick" if args.quick else "smoke" if args.smoke else "medium" if args.medium
            else "long" if args.long else "full")
    phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    command = "python -m experiments.reproduce " + " ".join(
        sys.argv[1:] if argv is None else list(argv))
    try:
        if args.workers is not None and args.workers < 1:
            raise cli_errors.UsageError("--workers", args.workers, "--workers must be >= 1, "
                                        f"got {args.workers}")
        bad = [p for p in phases if p not in PHASES]
        if bad or not phases:
            raise cli_errors.UsageError("--phases", args.phases, f"unknown phase(s) "
                                        f"{bad or phases!r}; phases are {PHASES}")
        cli_errors.check_writable_dir("--workdir", args.workdir)
    except cli_errors.UsageError as e:
        print(f"error: {e.line()}", file=sys.stderr)
        return 2
    start = time.time()
    if args.rerender:
        from experiments.reproduce.rerender import rerender

        print(f"[reproduce] re-rendered: {rerender(args.workdir, name)}", flush=True)
        return 0
    reproduce(args.workdir, name, workers=args.workers, phases=phases, command=command)
    print(f"[reproduce] finished in {time.time() - start:.0f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
