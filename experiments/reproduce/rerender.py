"""Re-render a committed run from the rows it kept: every table, plot and REPORT.md.

    python -m experiments.reproduce --workdir=results/reproduce_medium --medium --rerender

A committed run keeps its rows (frontier/*.json, sweep/cells.csv, quant/quant_results.csv,
probe/probe.json) but not the cell directories (checkpoints are too large). This reads those rows
back and renders them with today's report code, so a report gains what the renderers learned
since (both test protocols, every seed on the plots, fixed labels) without re-running anything.
What rows from before a change cannot hold, the report says: runs without `exact_match_iid`
columns have no iid numbers, and runs without validation files have no learning curves.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

from experiments.configs.modes import SETTINGS
from experiments.report import frontier as report_frontier
from experiments.report import probe as report_probe
from experiments.report import quant as report_quant
from experiments.reproduce import document
from experiments.sweep import render as sweep_render
from experiments.sweep.results import read_cells


def rerender(workdir: str, mode: str, command: str = "") -> str:
    """Render every output of a committed run in `workdir` from its rows; returns REPORT.md."""
    s = SETTINGS[mode]()
    frontiers = []
    frontier_dir = os.path.join(workdir, "frontier")
    for name in sorted(os.listdir(frontier_dir)) if os.path.isdir(frontier_dir) else []:
        if name.endswith(".json") and name != "frontier.json":
            with open(os.path.join(frontier_dir, name)) as f:
                frontiers.append(json.load(f)["result"])  # the phase's cache: settings, result
    if frontiers:
        report_frontier.write_outputs(frontiers, frontier_dir)
    cells_csv = os.path.join(workdir, "sweep", "cells.csv")
    if os.path.exists(cells_csv):
        sweep_render.render_rows(os.path.join(workdir, "sweep"), read_cells(cells_csv))
    qrows = document.quant_rows(workdir)
    if qrows:
        schemes = ["fp32"] + [x for x in dict.fromkeys(r["scheme"] for r in qrows
                                                       if r["stage"] == "ptq") if x != "fp32"]
        report_quant.write_outputs(os.path.join(workdir, "quant"), qrows, schemes=schemes,
                                   qlora_schemes=tuple(s.quant.get("qlora_schemes", ("int4",))))
    probe = document.probe_result(workdir)
    if probe:
        report_probe.write_outputs(probe, os.path.join(workdir, "probe"), frontiers)
    times = {}
    if os.path.exists(os.path.join(workdir, "phases.json")):
        with open(os.path.join(workdir, "phases.json")) as f:
            times = {k: v for k, v in json.load(f).items() if k != "report"}
    return document.write_report(workdir, s, times, frontiers,
                                 command or f"python -m experiments.reproduce "
                                 f"--workdir={workdir} --{mode}")


__all__: Sequence[str] = ("rerender",)
