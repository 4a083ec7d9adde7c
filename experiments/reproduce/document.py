"""REPORT.md, the main job's document: every table and plot of the phases (relative links) and one
paragraph per claim, rendered from the claims' verdicts (`experiments.reproduce.claims`).

It reads only what the phases left in the work directory (sweep cell directories, the quant
study's CSV, the probe's JSON) plus the frontier results, so it can be rewritten at any time.
"""

from __future__ import annotations

import csv
import datetime
import json
import os
import platform
from collections.abc import Mapping, Sequence

from arith_precision.common import atomic, markdown
from arith_precision.training import curve
from experiments import training_verdict as tv
from experiments.configs.modes import Settings
from experiments.report.frontier import frontier_markdown
from experiments.report.probe import to_markdown as probe_markdown
from experiments.report.quant import report_markdown as quant_markdown
from experiments.report.training import render_region, training_table
from experiments.reproduce import claims as claims_lib
from experiments.sweep.results import collect, read_cells

TITLE = "# Reproduction: How Numerical Precision Affects Arithmetical Reasoning of LLMs"
PROTOCOLS_TEXT = (
    "Two test protocols, each with its own verdict. **iid**: evaluation examples drawn from the "
    "task's own distribution, overlap with training allowed (the paper's protocol: its test "
    "samples come from the distribution it trained on, so at small input spaces it measures "
    "fitting). **unseen**: held-out inputs only, never trained on (1/16 of the input space, "
    "chosen by a fixed hash of the input: the same inputs for every seed). A point whose "
    f"held-out set has fewer than {tv.MIN_UNSEEN_INPUTS} distinct inputs gets no unseen verdict.")
DISTINCT_NOTE = ("\\* These rows predate the count of distinct inputs scored: the number is the "
                 "held-out inputs of the whole input space (exact up to 2^22 inputs, else 1/16 "
                 "of the space).")
EARLIER_RULE_NOTE = ("Readings marked \"earlier rule\" come from rows written before the curve "
                     "readings above: \"rising\" meant the last validation was at least 0.05 "
                     "above the best of the first half, \"flat\" that it was not. The "
                     "validation curves of this run were not kept, so today's rule cannot be "
                     "applied to them.")
IID_MISSING = ("Not measured in this run: its rows were written before every evaluation scored "
               "both protocols, so they hold held-out (unseen) numbers only.")
REGION_MEANING = {
    "bf16_except_attention": "bf16 everywhere except inside attention, the C-RASP setting",
    "bf16_attention_only": "bf16 only in attention",
    "bf16_mlp_only": "bf16 only in the MLPs",
    "bf16_storage": "bf16 weights and optimizer state, fp32 compute",
    "pure_bf16_sr_update": "pure_bf16 with stochastic rounding in the weight update",
}


def recipe_section(workdir: str) -> list[str]:
    """The recipe search's table (recipe.md beside the report), when the run has one."""
    path = os.path.join(workdir, "recipe.md")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return ["### The recipe", "", f.read().strip(), ""]


def region_section(cells: Sequence[Mapping]) -> list[str]:
    """Which part of training needs the bits: a verdict per region arm at its cell."""
    arms = [a for a in REGION_MEANING if any(c["precision"] == a for c in cells)]
    if not arms:
        return []
    point = next(c for c in cells if c["precision"] == arms[0])
    where = dict(task=point["task"], base=point["base"], n=point["n"])
    lines = ["### Which part of training needs the bits", "",
             f"At {tv.name(dict(point, k=point['k']))}: rule: {tv.REGION_RULE.text()}.", ""]
    for arm in arms:
        lines.append(render_region(tv.region_verdict(cells, arm, **where), REGION_MEANING[arm]))
    return lines + [""]


def sweep_cells(workdir: str) -> list[dict]:
    """The sweep's cell rows (`experiments.sweep.results.collect`), [] if none; a committed run
    kept without its cell directories is read back from its cells.csv."""
    sweep_dir = os.path.join(workdir, "sweep")
    rows = collect(sweep_dir) if os.path.isdir(sweep_dir) else []
    if not rows and os.path.exists(os.path.join(sweep_dir, "cells.csv")):
        rows = read_cells(os.path.join(sweep_dir, "cells.csv"))
    return rows


def quant_rows(workdir: str) -> list[dict]:
    """The quant study's rows as its CSV holds them, numbers converted back ([] if none)."""
    path = os.path.join(workdir, "quant", "quant_results.csv")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        for key in ("base", "k", "n", "finetune_steps"):
            r[key] = int(r[key]) if r[key] not in ("", None) else r[key]
        for key in ("exact_match", "digit_accuracy", "bits_per_weight"):
            r[key] = float(r[key]) if r[key] not in ("", None) else None
    return rows


def probe_result(workdir: str) -> dict | None:
    """The probe's result (probe/probe.json), None if the probe has not run."""
    path = os.path.join(workdir, "probe", "probe.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def eval_examples(workdir: str) -> int | None:
    """Held-out examples per evaluation in the sweep (from a finished cell), None if unknown."""
    sweep_dir = os.path.join(workdir, "sweep")
    for name in sorted(os.listdir(sweep_dir)) if os.path.isdir(sweep_dir) else []:
        path = os.path.join(sweep_dir, name, "summary.json")
        if os.path.isfile(path):
            with open(path) as f:
                evals = json.load(f).get("eval") or {}
            for result in evals.values():
                return int(result["num_examples"])
    return None


def _device() -> str:
    try:
        import jax

        d = jax.devices()[0]
        return f"{jax.device_count()} x {d.device_kind}"
    except Exception:  # noqa: BLE001 -- a description only
        return "unknown device"


def _phase_times(phase_times: Mapping[str, Mapping]) -> str:
    return "Phase wall times: " + ", ".join(
        f"{p} {v['seconds']:.0f}s"
        + (f" (measured when computed; the last run reused it in {v['rerun_seconds']:.0f}s)"
           if v.get("reused") else "")
        for p, v in phase_times.items()) + "."


FILES = ["## Files", "",
         "- `frontier/`: one JSON per task (cached; delete to recompute), frontier.md, "
         "frontier.png",
         "- `sweep/`: one directory per training run (checkpoints, metrics, summary), "
         "report.md, results.csv, cells.csv, plots",
         "- `quant/`: quant_results.csv, quant_report.md, plots, quant_rows.jsonl (cache)",
         "- `probe/`: probe.json, probe.md, probe.png, probe_rows.jsonl (cache)",
         "- `phases.json`: wall time of each phase of the last run", ""]


def write_report(workdir: str, s: Settings, phase_times: Mapping[str, Mapping],
                 frontiers: Sequence[dict], command: str) -> str:
    """Write DIR/REPORT.md from whatever the phases left in DIR; return its path."""
    cells = sweep_cells(workdir)
    qrows = quant_rows(workdir)
    qloras = tuple(s.quant.get("qlora_schemes", ("int4",)))
    frontier_v = claims_lib.frontier_claim(frontiers)
    training = claims_lib.training_claims(cells, eval_examples(workdir))
    quant_v = claims_lib.quant_claim(qrows, qloras[0])  # the paper's arm (int4) carries it
    verdicts = [frontier_v, *training, quant_v]
    lines = [TITLE, "", f"Feng et al. (2024), arXiv 2410.13857. Mode **{s.name}**; command: "
             f"`{command}`; written {datetime.datetime.now().isoformat(timespec='seconds')} on "
             f"{platform.node() or 'unknown host'} ({platform.machine()}, "
             f"{os.cpu_count()} CPUs, {_device()}).", ""]
    if s.name != "full":
        lines += [f"The `{s.name}` settings are a small fraction of the paper's (see "
                  "`experiments/reproduce/pipeline.py`); each paragraph below says what they can "
                  "and cannot show, with this run's numbers.", ""]
    lines += markdown.table(["claim", "verdict in this run"],
                            ([v.claim, v.status] for v in verdicts))
    lines += ["", _phase_times(phase_times), ""]

    lines += ["## 1. Constructions: the precision frontier", "",
              claims_lib.paragraph(frontier_v), ""]
    if frontiers:
        lines += ["![precision frontier](frontier/frontier.png)", "",
                  frontier_markdown(frontiers), ""]

    lines += ["## 2. Training: fp32 vs pure_bf16 vs bf16", "",
              "Claim (Figure 2): trained from scratch, fp32 models stay near-perfect on ADD, "
              "IterADD and MUL, while bf16 training keeps ADD but collapses on IterADD (base 2 "
              "around 7-10 digits) and MUL (base 2 around 9, base 10 around 3-4 digits). Arms: "
              + "; ".join(f"`{a}`: {m}" for a, m in tv.ARM_MEANING.items()) + ".", "",
              PROTOCOLS_TEXT, ""]
    lines += recipe_section(workdir)
    for protocol in tv.PROTOCOLS:
        lines += [f"### 2.{tv.PROTOCOLS.index(protocol) + 1} The {protocol} protocol", ""]
        if cells and protocol == "iid" and all(c.get("exact_match_iid") is None for c in cells):
            lines += [IID_MISSING, ""]
            continue
        lines += [f"Rule, applied to the numbers below for each arm: {tv.RULE.text(protocol)}.",
                  ""]
        lines += [claims_lib.paragraph(v) for v in training
                  if v.numbers.get("protocol") == protocol] + [""]
        if cells:
            img = f"exact_match_{protocol}"
            if os.path.exists(os.path.join(workdir, "sweep", f"{img}.png")):
                lines += [f"![{img.replace('_', ' ')}](sweep/{img}.png)", ""]
            lines += [f"Exact match per seed (seed 0 / seed 1 ...) under the {protocol} "
                      "protocol, the fewest distinct inputs any run of the point scored, and "
                      f"each run's curve reading ({curve.RULE.text()}):", ""]
            table = training_table(cells, protocol)
            lines += table + [""]
            if any("held out*" in line for line in table):
                lines += [DISTINCT_NOTE, ""]
            if any("(earlier rule)" in line for line in table):
                lines += [EARLIER_RULE_NOTE, ""]
    regions = region_section(cells)
    lines += regions
    if cells:
        curves = sorted(f for f in os.listdir(os.path.join(workdir, "sweep"))
                        if f.startswith("curves_") and f.endswith(".png"))
        if curves:
            lines += ["### Learning curves", "",
                      "Validation exact match against the training step, every run (colour: "
                      "arm; line style: seed), with the 0.95 line; data: `sweep/curves.csv`.",
                      ""] + [f"![{c[:-4]}](sweep/{c})" for c in curves] + [""]
        if os.path.exists(os.path.join(workdir, "sweep", "digit_accuracy.png")):
            lines += ["![digit accuracy](sweep/digit_accuracy.png)", ""]
        lines += ["Per-cell details (status, digit accuracy, divergences): "
                  "[sweep/report.md](sweep/report.md), `sweep/cells.csv`, `sweep/results.csv`.",
                  ""]

    lines += ["## 3. Quantization: int4 / QLoRA vs fp32 / LoRA", "",
              claims_lib.paragraph(quant_v), ""]
    if qrows:
        schemes = ["fp32"] + [x for x in dict.fromkeys(r["scheme"] for r in qrows
                                                       if r["stage"] == "ptq") if x != "fp32"]
        lines += [quant_markdown(qrows, schemes, qloras, image_prefix="quant/"),
                  "Rows: `quant/quant_results.csv`.", ""]
    lines += ["## 4. Precision probe: the bits the trained models need", ""]
    probe = probe_result(workdir)
    if probe:
        lines += ["The sweep's fp32 models evaluated with activations (and weights) simulated in "
                  "e8mM, everywhere, one region at a time, and everywhere but inside attention "
                  "(`experiments/precision_probe.py`); the plot sets the threshold with every "
                  "operation rounded beside the constructions' frontier (section 1).", "",
                  "![precision probe](probe/probe.png)", "",
                  probe_markdown(probe), "Rows: `probe/probe_rows.jsonl`.", ""]
    else:
        lines += ["Not run (no probe/probe.json).", ""]
    lines += FILES
    path = os.path.join(workdir, "REPORT.md")
    atomic.write_text(path, "\n".join(lines))
    return path
