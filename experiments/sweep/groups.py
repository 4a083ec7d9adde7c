"""Replica batches: sweep cells trained together in one program (`arith_precision/train_group`).

`group_jobs(jobs, size)` puts cells whose resolved configs differ only in `seed`, `data_seed`
and the precision arm into groups of at most `size`; `cells.run_cells` trains one group
with `training.train_group` and returns one progress record per cell. Every cell still writes
its own checkpoints, metrics and summary.json, bit-identical to a run of its own, so a grouped
sweep's cells.csv and results.csv are those of an ungrouped one
(tests/experiments/sweep/test_sweep_groups.py), and
a cell can be resumed, alone or in another group.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from experiments.sweep import cells as sweep_cells

VARYING = ("seed", "data_seed", "precision")  # what may differ inside one replica batch
# `replicas="auto"`: the batch size on an accelerator. On CPU one program of R unrolled copies
# trains no faster than R runs one after another (benchmarks/train_bench.py --replicas: 1.01-1.04x
# at R = 4, 8), so auto does not group there.
AUTO_REPLICAS = 8
ACCELERATORS = ("gpu", "cuda", "rocm", "tpu")


def _probe_backend() -> str:
    """The default JAX backend, found in a child process so that this one does not initialise an
    accelerator (and take its memory) before the workers that train on it."""
    env = dict(os.environ, XLA_PYTHON_CLIENT_PREALLOCATE="false", TF_CPP_MIN_LOG_LEVEL="3")
    out = subprocess.run([sys.executable, "-c", "import jax; print(jax.default_backend())"],
                         env=env, capture_output=True, text=True, timeout=300, check=True)
    return out.stdout.strip().splitlines()[-1]


def resolve_replicas(value: int | str, workers: int = 1, *,
                     in_process: bool | None = None) -> tuple[int, str]:
    """(R, why) for `replicas` = an integer >= 1 (or its string), "off" (= 1) or "auto".

    auto: AUTO_REPLICAS on an accelerator backend, 1 on CPU. When cells train in this process
    (`in_process`; by default when workers = 1) it may look at the backend itself; otherwise a
    child process looks.
    """
    if isinstance(value, str) and value not in ("auto", "off"):
        try:
            value = int(value)
        except ValueError:
            raise ValueError(f"replicas must be auto, off or an integer >= 1, got {value!r}"
                             ) from None
    if value == "off":
        return 1, "off"
    if value == "auto":
        if (workers == 1) if in_process is None else in_process:
            import jax

            backend = jax.default_backend()
        else:
            backend = _probe_backend()
        if backend in ACCELERATORS:
            return AUTO_REPLICAS, f"auto: {backend} backend"
        return 1, (f"auto: {backend} backend, where one program of R copies is no faster than R "
                   "runs")
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"replicas must be auto, off or an integer >= 1, got {value!r}")
    return value, "as asked"


def _shape_key(config) -> str:
    d = sweep_cells.normalized(config)
    return json.dumps({k: v for k, v in d.items() if k not in VARYING}, sort_keys=True,
                      default=str)


def group_jobs(jobs: Sequence[Mapping[str, Any]], size: int) -> list[dict[str, Any]]:
    """Cell jobs -> jobs of up to `size` cells that differ only in VARYING (size 1: as given).

    A group job is {"name", "dir" (its first cell's), "members": [cell jobs]}; a lone cell stays
    a plain cell job. Order: groups in the order of their first cell.
    """
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"replicas must be an integer >= 1, got {size!r}")
    if size == 1:
        return list(jobs)
    buckets: dict[str, list[Mapping[str, Any]]] = {}
    for job in jobs:
        buckets.setdefault(_shape_key(job["config"]), []).append(job)
    out = []
    for members in buckets.values():
        for i in range(0, len(members), size):
            chunk = list(members[i:i + size])
            out.append(chunk[0] if len(chunk) == 1 else
                       {"name": "+".join(m["name"] for m in chunk), "dir": chunk[0]["dir"],
                        "members": chunk})
    return out


def members(job: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The cell jobs of a job (a plain cell job is its own only member)."""
    return list(job.get("members", [job]))
