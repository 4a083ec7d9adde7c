"""A sweep directory rendered: cells.csv, results.csv, exact_match.png, digit_accuracy.png and
report.md, from the rows of `experiments.sweep.results` alone (so it can run over the union of all
shards, while other shards are still running)."""

from __future__ import annotations

import collections
import json
import os
from collections.abc import Mapping, Sequence

from arith_precision.common import atomic, markdown
from arith_precision.tasks.spec import TASKS, task_title
from experiments.report import plots
from experiments.sweep.cells import DONE, read_json
from experiments.sweep.results import CELL_COLUMNS, RESULT_COLUMNS, STATUSES, collect, group


def _line_label(r: Mapping) -> str:
    return r["precision"] + ("" if r["accumulation"] == "once" else f" ({r['accumulation']})")


def _labels(members: Sequence[Mapping]) -> list[str]:
    """Line labels in the order of the sweep's grid (e.g. fp32 before bf16 as configured)."""
    first = {}
    for r in members:
        label = _line_label(r)
        first[label] = min(first.get(label, r["first_index"]), r["first_index"])
    return sorted(first, key=first.get)


def _panel_key(r: Mapping) -> tuple:
    return (r["task"], r["base"], r["k"], r["l"], r["layers"])


def _panel_order(key: tuple) -> tuple:
    return (TASKS.index(key[0]), *key[1:])


def _panel_title(key: tuple) -> str:
    task, base, k, l, layers = key
    if task == "mul":  # the answer length belongs to the task's name
        name = f"MUL ({f'l={l}' if l else 'full product'}), base {base}"
    else:
        name = task_title(task, base, k)
    return f"{name}, {layers} layers"


METRICS = {"exact_match": "exact match (held-out inputs)",
           "exact_match_iid": "exact match (iid protocol)",
           "exact_match_unseen": "exact match (unseen protocol)",
           "digit_accuracy": "digit accuracy (held-out inputs)"}
NEAR_PERFECT = 0.95  # the verdicts' "fp32 learned" threshold, drawn on exact-match plots


def plot(results: Sequence[Mapping], path: str, metric: str = "exact_match",
         rows: Sequence[Mapping] = ()) -> None:
    """Accuracy against n: one panel per (task, base, k, l, layers), one line per precision.

    Panels fill a grid three wide in the order task, base, k, l, layers (a sweep over one depth
    is no longer one narrow column). Each precision keeps its colour and marker in every panel,
    so a group with a single n shows as a marker, and equal groups stay apart (a small sideways
    shift per precision). The line is the mean over completed seeds; every seed's own value is a
    small hollow marker beside it (`rows`, the cells), so one seed below a threshold shows.
    Exact-match panels draw the 0.95 line the verdicts use; digit-accuracy panels the chance
    level 1/p. A group whose every seed diverged is drawn as an 'x' at 0 (no model to evaluate).
    """
    plt = plots.pyplot()
    panels = collections.defaultdict(list)
    for r in results:
        panels[_panel_key(r)].append(r)
    keys = sorted(panels, key=_panel_order)
    all_labels = _labels(results)
    palette = plt.get_cmap("tab10" if len(all_labels) <= 10 else "tab20")
    fig, axes = plots.panel_grid(len(keys), size=(4.4, 3.4))
    for ax, key in zip(axes, keys, strict=True):
        members = panels[key]
        series = []
        for label in _labels(members):
            i = all_labels.index(label)  # the same colour and marker in every panel
            color, marker = palette(i % palette.N), plots.MARKERS[i % len(plots.MARKERS)]
            rs = [r for r in members if _line_label(r) == label]
            ok = [r for r in rs if r.get(f"{metric}_mean") is not None]
            if ok:
                series.append(plots.Series(
                    label, {r["n"]: r[f"{metric}_mean"] for r in ok},
                    color=color, marker=marker))
            cells = [c for c in rows if _panel_key(c) == key and _line_label(c) == label
                     and c.get(metric) not in (None, "")]
            for seed in sorted({c["seed"] for c in cells}):
                series.append(plots.Series(
                    None, {c["n"]: float(c[metric]) for c in cells if c["seed"] == seed},
                    color=color, marker=marker, linestyle="none", markersize=4, hollow=True,
                    alpha=0.8))
            dead = [r["n"] for r in rs if r.get(f"{metric}_mean") is None and r["num_diverged"]]
            if dead:
                series.append(plots.Series(None if ok else f"{label} (diverged)",
                                           dict.fromkeys(dead, 0.0), color=color, marker="x",
                                           linestyle="none", markersize=8))
        chance = 1.0 / key[1] if metric == "digit_accuracy" else None
        plots.metric_against_n(ax, series, title=_panel_title(key),
                               ylabel=METRICS.get(metric, metric.replace("_", " ")),
                               spread=0.04, legend=False,
                               ylim=(min(0.0, (chance or 0) - 0.05), 1.05))
        if metric.startswith("exact_match"):
            plots.reference_line(ax, NEAR_PERFECT, f"{NEAR_PERFECT} (fp32 near-perfect)")
        else:
            plots.reference_line(ax, chance, "chance (1/p)")
    fig.text(0.01, -0.02, "lines: mean over seeds; hollow markers: each seed", fontsize=8)
    fig.tight_layout()
    plots.shared_legend(fig, axes)
    plots.save(fig, path, dpi=110)


def _entry(r: Mapping | None) -> str:
    """A table entry: mean ± std over completed seeds, and the seeds that did not complete."""
    if r is None:
        return ""
    text = markdown.number(r["exact_match_mean"])
    if r["exact_match_mean"] is not None and r["num_completed"] > 1:
        text += f" ± {r['exact_match_std']:.3f}"
    if r["num_completed"] != r["num_seeds"]:
        others = ", ".join(f"{r[f'num_{s}']} {s}" for s in STATUSES[1:] if r[f"num_{s}"])
        text += f" ({r['num_completed']}/{r['num_seeds']}; {others})"
    return text


def report(workdir: str, rows: Sequence[Mapping], results: Sequence[Mapping],
           plot_names: Sequence[str]) -> str:
    """Markdown: status counts, the plots, one table per panel (n x precision), failures."""
    meta_path = os.path.join(workdir, "sweep.json")
    meta = read_json(meta_path) if os.path.exists(meta_path) else {}
    counts = collections.Counter(r["status"] for r in rows)
    lines = [f"# Sweep report: {meta.get('name', os.path.basename(workdir))}", ""]
    if meta.get("description"):
        lines += [meta["description"], ""]
    lines += [f"Cells present: {len(rows)} ("
              + ", ".join(f"{s} {counts.get(s, 0)}" for s in STATUSES) + ")."]
    if meta.get("cells"):
        status = {r["name"]: r["status"] for r in rows}
        done = sum(status.get(name) in DONE for name in meta["cells"])
        lines[-1] += (f" The grid of the last sweep run here ({meta['name']}) has "
                      f"{len(meta['cells'])} cells, {done} of them done.")
    lines += ["",
              "Entries: exact match, mean ± standard deviation over the completed seeds "
              "(completed/seeds when some did not complete: a diverged or failed run has no "
              "evaluation). Plots: error bars are that standard deviation; an x at 0 marks an n "
              "where every seed diverged. Per-cell values: `cells.csv`; groups: `results.csv`.",
              ""]
    lines += [f"![{os.path.splitext(p)[0]}]({p})" for p in plot_names] + [""]
    panels = collections.defaultdict(list)
    for r in results:
        panels[_panel_key(r)].append(r)
    for key in sorted(panels, key=_panel_order):
        members = panels[key]
        labels = _labels(members)
        by = {(r["n"], _line_label(r)): r for r in members}
        ns = sorted({r["n"] for r in members})
        lines += [f"## {_panel_title(key)}", ""]
        lines += markdown.table(["n", *labels],
                                ([n, *(_entry(by.get((n, label))) for label in labels)]
                                 for n in ns))
        lines.append("")
        if any(r.get("convergence") for r in members):
            lines += ["Convergence per seed (early stopping): `converged@S` stopped at step S; "
                      "`rising` did not converge but its validation still rose (more steps may "
                      "get there); `flat` did not converge and stopped improving.", ""]
            lines += markdown.table(["n", *labels], (
                [n, *((by[(n, label)].get("convergence") or "") if (n, label) in by else ""
                      for label in labels)] for n in ns))
            lines.append("")
    bad = [r for r in rows if r["status"] in ("diverged", "error")]
    if bad:
        lines += ["## Diverged and failed cells", ""]
        for r in bad:
            why = (f"non-finite loss at step {r['diverged_at_step']}" if r["status"] == "diverged"
                   else r["error"])
            lines.append(f"- `{r['name']}`: {r['status']}: {why}")
        lines.append("")
    return "\n".join(lines)


CURVE_COLUMNS = ("name", "task", "base", "n", "k", "l", "layers", "precision", "seed", "status",
                 "step", "exact_match_iid", "exact_match_unseen", "digit_accuracy_iid",
                 "digit_accuracy_unseen", "exact_match", "loss")
SEED_STYLES = ("-", "--", ":", "-.")


def curve_rows(workdir: str, rows: Sequence[Mapping]) -> list[dict]:
    """Every validation line of every cell (finished or still running), one row each."""
    out = []
    for r in rows:
        path = os.path.join(workdir, r["name"], "validation.jsonl")
        if not os.path.isfile(path):
            continue
        with open(path) as f:
            for line in f:
                if line.strip():
                    v = json.loads(line)
                    out.append({**{k: r.get(k) for k in CURVE_COLUMNS[:10]},
                                **{k: v.get(k) for k in CURVE_COLUMNS[10:]}})
    return out


def plot_curves(curves: Sequence[Mapping], workdir: str) -> list[str]:
    """One figure per (task, base, k, l, layers, n): the validation curves of every run (colour =
    arm, line style = seed), iid protocol left, unseen right, with the 0.95 line. Returns the
    file names written."""
    plt = plots.pyplot()
    by_point = collections.defaultdict(list)
    for c in curves:
        by_point[(c["task"], c["base"], c["k"], c["l"], c["layers"], c["n"])].append(c)
    arms = list(dict.fromkeys(c["precision"] for c in curves))
    palette = plt.get_cmap("tab10" if len(arms) <= 10 else "tab20")
    names = []
    for key in sorted(by_point, key=lambda k: (TASKS.index(k[0]), *k[1:])):
        task, base, k, l, layers, n = key
        runs = collections.defaultdict(list)
        for c in by_point[key]:
            runs[(c["precision"], c["seed"])].append(c)
        fig, axes = plots.panel_grid(2, max_cols=2, size=(5.2, 3.6))
        for ax, protocol in zip(axes, ("iid", "unseen"), strict=True):
            drawn = []
            for (arm, seed), points in sorted(runs.items(), key=lambda x: (arms.index(x[0][0]),
                                                                           x[0][1])):
                pts = [(p["step"], p[f"exact_match_{protocol}"]) for p in points
                       if p.get(f"exact_match_{protocol}") is not None]
                drawn.append(plots.Curve(f"{arm}, seed {seed}", pts,
                                         color=palette(arms.index(arm) % palette.N),
                                         linestyle=SEED_STYLES[int(seed) % len(SEED_STYLES)]))
            plots.curves_over_steps(ax, drawn, title=f"{_panel_title(key[:5])}, n={n}: "
                                    f"{protocol} protocol", ylabel="validation exact match",
                                    threshold=NEAR_PERFECT, threshold_label=f"{NEAR_PERFECT}")
        fig.tight_layout()
        plots.shared_legend(fig, axes)
        name = f"curves_{task}_b{base}_k{k}_l{l}_L{layers}_n{n}.png"
        plots.save(fig, os.path.join(workdir, name), dpi=100)
        names.append(name)
    return names


def aggregate(workdir: str) -> dict[str, str]:
    """Write cells.csv, results.csv, exact_match.png, digit_accuracy.png and report.md.

    Reads only the cell directories in `workdir`, so it can run on its own, over the union of
    all shards, while other shards are still running (their cells show as pending).
    """
    if not os.path.isdir(workdir):
        raise ValueError(f"sweep directory {workdir!r} does not exist")
    return render_rows(workdir, collect(workdir))


def render_rows(workdir: str, rows: Sequence[Mapping]) -> dict[str, str]:
    """`aggregate`'s outputs from cell rows already collected (or read back from a committed
    cells.csv: a run kept without its cell directories, whose learning curves, if it kept no
    validation files, cannot be drawn)."""
    results = group(rows)
    out = {"cells": os.path.join(workdir, "cells.csv"),
           "results": os.path.join(workdir, "results.csv"),
           "report": os.path.join(workdir, "report.md")}
    atomic.write_csv(out["cells"], CELL_COLUMNS, rows)
    atomic.write_csv(out["results"], RESULT_COLUMNS, results)
    names = []
    if results:
        metrics = ["exact_match", "digit_accuracy"]
        if any(r.get("exact_match_iid") is not None for r in rows):
            metrics[1:1] = ["exact_match_iid", "exact_match_unseen"]
        for metric in metrics:
            name = f"{metric}.png"
            plot(results, os.path.join(workdir, name), metric, rows)
            out[metric + "_plot"] = os.path.join(workdir, name)
            names.append(name)
    curves = curve_rows(workdir, rows)
    if curves:
        out["curves"] = os.path.join(workdir, "curves.csv")
        atomic.write_csv(out["curves"], CURVE_COLUMNS, curves)
        names += plot_curves(curves, workdir)
    atomic.write_text(out["report"], report(workdir, rows, results, names))
    return out
