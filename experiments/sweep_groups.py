"""Replica batches: sweep cells trained together in one program (`arith_precision/train_group`).

`group_jobs(jobs, size)` puts cells whose resolved configs differ only in `seed`, `data_seed`
and the precision arm into groups of at most `size`; `run_group` trains one group with
`train_group.train_group` and returns one progress record per cell. Every cell still writes its
own checkpoints, metrics and summary.json, bit-identical to a run of its own, so a grouped sweep's
cells.csv and results.csv are those of an ungrouped one (tests/test_sweep_groups.py), and a cell
can be resumed, alone or in another group.

The group's stdout/stderr go to the first cell's log.txt; the others' log.txt name it.
"""

from __future__ import annotations

import json
import os
import time
import traceback
from collections.abc import Mapping, Sequence
from typing import Any

from experiments import sweep_cells

VARYING = ("seed", "data_seed", "precision")  # what may differ inside one replica batch


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


def run_group(job: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Train a group job's cells in one program; one progress record per cell, errors recorded
    in each cell's error.json (a failure of the program fails every cell of the group)."""
    if "members" not in job:
        return [sweep_cells.run_cell(job)]
    cells, start = members(job), time.time()
    first_log = os.path.join(cells[0]["dir"], "log.txt")
    for cell in cells:
        os.makedirs(cell["dir"], exist_ok=True)
        error_path = os.path.join(cell["dir"], "error.json")
        if os.path.exists(error_path):
            os.remove(error_path)  # a retry
        sweep_cells.write_json(os.path.join(cell["dir"], "worker.json"),
                               {"pid": os.getpid(), "start": start, "group": job["name"]})
        if cell is not cells[0]:
            with open(os.path.join(cell["dir"], "log.txt"), "a") as log:
                log.write(f"trained in one program with {job['name']}; log: {first_log}\n")
    records = [{"name": c["name"], "status": "error", "exact_match": None, "error": None}
               for c in cells]
    try:
        with sweep_cells.output_to(first_log):
            from arith_precision import train_group

            summaries = train_group.train_group([c["config"] for c in cells],
                                                [c["dir"] for c in cells])
        for record, cell, summary in zip(records, cells, summaries, strict=True):
            record["status"] = summary["status"]
            record["exact_match"] = summary["exact_match"].get(str(cell["config"].task.n))
            record["diverged_at_step"] = summary["diverged_at_step"]
    except Exception as e:  # noqa: BLE001 -- a failed group is recorded per cell, not fatal
        trace = traceback.format_exc()
        for record, cell in zip(records, cells, strict=True):
            record["error"] = f"{type(e).__name__}: {e}"
            sweep_cells.write_json(os.path.join(cell["dir"], "error.json"),
                                   {"status": "error", "error": record["error"],
                                    "traceback": trace, "time": time.time()})
        with open(first_log, "a") as log:
            log.write(trace)
    for record in records:
        record["wall_time_s"] = time.time() - start
    return records
