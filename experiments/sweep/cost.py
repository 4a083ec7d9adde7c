"""What a sweep costs: cells, FLOPs and device-hours from measured step rates.

    python -m experiments.sweep --config=experiments/configs/paper_fig2.py --workdir=DIR \
        --estimate [--from=gpu_check.json] [--converged_from=SWEEP_DIR]

Counted, not guessed:
  * FLOPs per training step, analytic (matmuls only; elementwise work and rounding are not
    counted): with d = d_model, f = d_ff, V = vocabulary, L = input length (sequence - 1),
    N layers and B examples, one forward pass is
        F = B L [ N (2 (4 d^2 + 2 d f) + 2 * 2 L d) + 2 d V ]
    (projections and MLP; attention scores and mixing over all L keys; the logits), and a
    training step is 3 F (forward, and a backward pass of twice the forward).
  * device time: a measurement (`benchmarks/gpu_check.py`'s JSON) gives, per precision arm,
    layer count and replica count R, steps/s at a stated size, hence an achieved FLOP rate
    R * flops_per_step * steps/s. A cell's time is its FLOPs over the rate of its arm, at the
    measured layer count nearest its own. Small cells (short sequences) use the GPU worse than
    the measured size does, so for them this is optimistic; the measured size is the paper's
    (d = 256, batch 512).
  * with early stopping: each cell's steps are scaled by the fraction of its step budget that
    finished runs of the same (task, base, precision) used (`steps` / `train.steps` in their
    summary.json, from `--converged_from`); groups without finished runs count in full.
    Without such runs the figure is "not measured".

A measurement taken on CPU is labelled "CPU measurement" (its hours are CPU-hours at that
machine's rate, not GPU-hours); without a measurement the hours say "not measured".
"""

from __future__ import annotations

import dataclasses
import glob
import json
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

GOAL_GPU_HOURS = 24.0  # issue 22: the full paper_fig2 grid on one H100-class GPU
SCHEMA = 1
ARMS = ("fp32", "bf16_carrier", "bf16_tc", "native_bf16", "pure_bf16")


def step_flops(d_model: int, d_ff: int, num_layers: int, vocab_size: int, input_length: int,
               batch: int) -> float:
    """3 F of the module docstring: matmul FLOPs of one training step."""
    d, f, L = d_model, d_ff, input_length
    per_token = num_layers * (2 * (4 * d * d + 2 * d * f) + 4 * L * d) + 2 * d * vocab_size
    return 3.0 * batch * L * per_token


def cell_step_flops(config) -> float:
    """`step_flops` of a training config (a sweep cell's)."""
    from arith_precision import training as train

    spec = train.task_spec(config.task)
    m = config.model
    return step_flops(m.d_model, m.d_ff, m.num_layers, spec.vocab_size, spec.sequence_length - 1,
                      config.train.batch_size)


def arm_of(config) -> str | None:
    """The measured arm a cell runs as on a GPU (`tensor_core_dot` auto: bf16 on tensor cores),
    None for arms gpu_check does not measure (other formats, accumulation orders)."""
    p = config.precision
    if p.accumulation != "once" or p.get("param") or p.get("accum") or p.get("grad"):
        return None
    if p.native:
        return "native_bf16" if p.name == "bf16" else None
    tc = p.get("tensor_core_dot", "auto")
    if p.name == "fp32":
        return "fp32"
    if p.name == "bf16":
        return "bf16_carrier" if tc == "off" else "bf16_tc"
    if p.name == "pure_bf16" and tc != "off":
        return "pure_bf16"
    return None


def load_measurement(path: str) -> dict[str, Any]:
    """gpu_check's JSON, checked; ValueError naming the file and what is wrong."""
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"cannot read a gpu_check JSON from {path}: {e}") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise ValueError(f"{path} is not a gpu_check JSON of schema {SCHEMA}")
    for i, row in enumerate(data.get("steps_per_sec", [])):
        for key in ("arm", "layers", "replicas", "steps_per_sec", "flops_per_step"):
            if key not in row:
                raise ValueError(f"{path}: steps_per_sec[{i}] has no {key!r}")
    return data


def label(measurement: Mapping[str, Any] | None) -> str:
    if measurement is None:
        return "not measured"
    kind = measurement.get("device_kind", "?")
    if measurement.get("platform") == "gpu":
        return f"GPU measurement ({kind})"
    return f"CPU measurement ({kind}; CPU-hours at this machine's rate, not GPU-hours)"


def _rates(measurement) -> dict[tuple[str, int, int], float]:
    """(arm, layers, replicas) -> achieved FLOP/s (all replicas together)."""
    out = {}
    for row in measurement.get("steps_per_sec", []):
        if row.get("steps_per_sec"):
            out[(row["arm"], row["layers"], row["replicas"])] = (
                row["replicas"] * row["flops_per_step"] * row["steps_per_sec"])
    return out


def _rate_for(rates, arm: str, layers: int, replicas: int) -> float | None:
    options = [(abs(lay - layers), lay) for (a, lay, r) in rates if a == arm and r == replicas]
    if not options:
        return None
    return rates[(arm, min(options)[1], replicas)]


def converged_fractions(workdir: str) -> dict[tuple, tuple[float, int]]:
    """(task, base, precision) -> (mean fraction of the step budget used, runs), from the
    completed runs' summary.json files in a sweep workdir."""
    groups: dict[tuple, list[float]] = {}
    for path in glob.glob(os.path.join(workdir, "*", "summary.json")):
        with open(path) as f:
            s = json.load(f)
        if s.get("status") != "completed":
            continue
        cfg = s["config"]
        key = (cfg["task"]["task"], cfg["task"]["base"], cfg["precision"]["name"])
        groups.setdefault(key, []).append(s["steps"] / cfg["train"]["steps"])
    return {k: (sum(v) / len(v), len(v)) for k, v in groups.items()}


def estimate(cells: Sequence, measurement: Mapping[str, Any] | None = None,
             fractions: Mapping[tuple, tuple[float, int]] | None = None) -> dict[str, Any]:
    """Rows per arm and totals (hours None where not measured)."""
    rates = _rates(measurement) if measurement else {}
    replica_counts = sorted({r for (_, _, r) in rates}) or [1]
    arms: dict[str, dict[str, Any]] = {}
    total = {"cells": 0, "steps": 0, "flops": 0.0, "flops_es": 0.0}
    hours = {r: 0.0 for r in replica_counts}
    hours_es = {r: 0.0 for r in replica_counts}
    missing = {r: set() for r in replica_counts}
    per_cell = []
    for cell in cells:
        cfg = cell.config
        arm = arm_of(cfg) or f"unmeasured:{cfg.precision.name}-{cfg.precision.accumulation}"
        steps = cfg.train.steps
        flops = cell_step_flops(cfg) * steps
        frac = 1.0
        if fractions:
            key = (cfg.task.task, cfg.task.base, cfg.precision.name)
            frac = fractions.get(key, (1.0, 0))[0]
        row = arms.setdefault(arm, {"arm": arm, "cells": 0, "steps": 0, "flops": 0.0})
        row["cells"] += 1
        row["steps"] += steps
        row["flops"] += flops
        total["cells"] += 1
        total["steps"] += steps
        total["flops"] += flops
        total["flops_es"] += flops * frac
        cost = {"name": cell.name, "dir": None, "config": cfg,  # job-shaped: `wall_clock`
                "flops": flops, "flops_es": flops * frac, "hours": {}, "hours_es": {}}
        per_cell.append(cost)
        for r in replica_counts:
            rate = _rate_for(rates, arm, cfg.model.num_layers, r)
            if rate is None:
                missing[r].add(arm)
                continue
            row[f"hours_R{r}"] = row.get(f"hours_R{r}", 0.0) + flops / rate / 3600
            hours[r] += flops / rate / 3600
            hours_es[r] += flops * frac / rate / 3600
            cost["hours"][r] = flops / rate / 3600
            cost["hours_es"][r] = flops * frac / rate / 3600
    return {"arms": list(arms.values()), "total": total, "replicas": replica_counts,
            "hours": {r: (None if missing[r] or not rates else hours[r]) for r in replica_counts},
            "hours_es": {r: (None if missing[r] or not rates or not fractions else hours_es[r])
                         for r in replica_counts},
            "missing": {r: sorted(m) for r, m in missing.items()}, "per_cell": per_cell}


def _h(x: float | None) -> str:
    return "not measured" if x is None else f"{x:.1f} h"


def render(name: str, result: Mapping[str, Any], measurement, fractions,
           converged_from: str | None = None) -> str:
    t = result["total"]
    where = label(measurement)
    lines = [f"estimate for {name}: {t['cells']} cells, {t['steps']:.3g} steps, "
             f"{t['flops']:.3g} FLOPs (analytic, matmuls; see experiments/sweep/cost.py)",
             f"device time: {where}"]
    header = f"  {'arm':34s} {'cells':>6s} {'FLOPs':>10s}"
    for r in result["replicas"]:
        header += f" {'hours R=' + str(r):>14s}"
    lines.append(header)
    for row in result["arms"]:
        line = f"  {row['arm']:34s} {row['cells']:6d} {row['flops']:10.3g}"
        for r in result["replicas"]:
            line += f" {_h(row.get(f'hours_R{r}') if measurement else None):>14s}"
        lines.append(line)
    for r in result["replicas"]:
        if measurement and result["missing"][r]:
            lines.append(f"  R={r}: no measurement for {', '.join(result['missing'][r])}: "
                         f"total not measured")
    for r in result["replicas"]:
        tag = "one run at a time" if r == 1 else f"{r} replicas per program"
        lines.append(f"total ({tag}): without early stopping {_h(result['hours'][r])}; with "
                     f"early stopping {_h(result['hours_es'][r])}")
    if fractions:
        used = sum(n for _, n in fractions.values())
        lines.append(f"early stopping: step fractions from {used} finished runs in "
                     f"{converged_from} ({t['flops_es'] / t['flops']:.2f} of the FLOPs)")
    else:
        lines.append("early stopping: not measured (give --converged_from=SWEEP_DIR with "
                     "finished early-stopping runs)")
    best = [h for h in list(result["hours"].values()) + list(result["hours_es"].values())
            if h is not None]
    if measurement is None or measurement.get("platform") != "gpu" or not best:
        verdict = "not measured (needs a gpu_check.json from a GPU)"
    else:
        verdict = (f"{'met' if min(best) <= GOAL_GPU_HOURS else 'NOT met'} "
                   f"(best design above: {min(best):.1f} GPU-hours)")
    if name != "paper_fig2":
        verdict = f"applies to the full paper_fig2 grid, not {name}"
    lines.append(f"goal <= {GOAL_GPU_HOURS:g} GPU-hours on one H100-class GPU: {verdict}")
    return "\n".join(lines)


# ---- wall clock on several GPUs ----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Layout:
    """How cells spread over GPUs: `jobs_at_once` jobs of `gpus_per_job` GPUs each, every job
    holding up to `cells_per_job` cells (None: one job of every cell: the local pool, with
    `gpus_per_job` workers). `how` says it in words."""

    gpus_per_job: int
    jobs_at_once: int = 1
    cells_per_job: int | None = None
    how: str = ""

    @property
    def gpus(self) -> int:
        return max(1, self.gpus_per_job) * max(1, self.jobs_at_once)


def makespan(durations: Sequence[float], machines: int) -> float:
    """When the last of some indivisible tasks ends on `machines` machines, longest first, each
    to the least loaded machine (list scheduling; within 4/3 of the best schedule)."""
    loads = [0.0] * max(1, machines)
    for d in sorted(durations, reverse=True):
        loads[loads.index(min(loads))] += d
    return max(loads)


def wall_clock(costs: Sequence[Mapping[str, Any]], layout: Layout, replicas: int = 1) -> float:
    """Wall-clock time of cells with costs `costs[i]["t"]` (hours, or any unit) on `layout`:
    jobs as the submitit launcher packs them (`launch.plan_jobs`), replica batches of up to
    `replicas` inside each (a batch's time: its cells' times added, as the measured rate at R
    replicas is all R together), batches over the job's GPUs, jobs over the jobs running at
    once. Queue waits and the steps redone after a requeue are not counted."""
    from experiments.sweep import groups, launch

    jobs = ([list(costs)] if layout.cells_per_job is None else
            launch.plan_jobs(costs, layout.cells_per_job))
    job_times = []
    for cells in jobs:
        batches = groups.group_jobs(cells, replicas)
        job_times.append(makespan([sum(c["t"] for c in groups.members(b)) for b in batches],
                                  max(1, layout.gpus_per_job)))
    return makespan(job_times, layout.jobs_at_once)


def render_wall_clock(result: Mapping[str, Any], layout: Layout) -> list[str]:
    """`--estimate`'s wall-clock lines: one GPU next to `layout`'s GPUs, per measured replica
    count; without a measurement, the speed-up the cells' FLOPs allow."""
    cells, lines = result["per_cell"], []
    where = f"{layout.gpus} GPU(s) ({layout.how})" if layout.how else f"{layout.gpus} GPU(s)"
    if not any(result["hours"][r] is not None for r in result["replicas"]):
        flops = [dict(c, t=c["flops"]) for c in cells]
        speedup = sum(c["t"] for c in flops) / max(wall_clock(flops, layout), 1e-300)
        return [f"wall clock: not measured (give --from=gpu_check.json); on {where} the "
                f"cells' FLOPs schedule to {speedup:.1f}x the speed of one GPU"]
    for r in result["replicas"]:
        if result["hours"][r] is None:
            continue
        tag = "one run at a time" if r == 1 else f"{r} replicas per program"
        if r > 1 and layout.cells_per_job is not None and layout.cells_per_job < r:
            lines.append(f"wall clock ({tag}): needs --cells_per_job >= {r} (a job batches only "
                         "its own cells)")
            continue
        one, many, longest = [], [], []
        for key in ("hours", "hours_es"):
            if result[key][r] is None:
                one.append(None)
                many.append(None)
                continue
            timed = [dict(c, t=c[key][r]) for c in cells]
            one.append(result[key][r])
            many.append(wall_clock(timed, layout, r))
            longest.append(max(c["t"] for c in timed))
        lines.append(f"wall clock ({tag}): one GPU {_h(one[0])} without early stopping, "
                     f"{_h(one[1])} with; {where}: {_h(many[0])} without, {_h(many[1])} with "
                     f"(longest cell {_h(longest[0])}; queue waits and steps redone after a "
                     "requeue not counted)")
    return lines


def run(sweep_config, measurement_path: str | None = None,
        converged_from: str | None = None, layout: Layout | None = None) -> str:
    """The text `--estimate` prints (a UsageError naming --from / --converged_from for a bad
    measurement file or workdir); with `layout`, the wall clock on its GPUs too."""
    from arith_precision.common.cli_errors import UsageError
    from experiments.sweep import grid

    cells = grid.expand(sweep_config)
    try:
        measurement = load_measurement(measurement_path) if measurement_path else None
    except ValueError as e:
        raise UsageError("--from", measurement_path, str(e)) from None
    fractions = None
    if converged_from:
        if not os.path.isdir(converged_from):
            raise UsageError("--converged_from", converged_from, "is not a directory")
        fractions = converged_fractions(converged_from) or None
    result = estimate(cells, measurement, fractions)
    text = render(sweep_config.name, result, measurement, fractions, converged_from)
    if layout is not None:
        text = "\n".join([text, *render_wall_clock(result, layout)])
    assert math.isfinite(result["total"]["flops"])
    return text
