"""The quantization study rendered: quant_results.csv, quant_report.md, quant_exact_match.png and
quant_lora.png, from the study's rows (one per run x stage x scheme, `experiments.quant_study`)."""

from __future__ import annotations

import collections
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from arith_precision.common import atomic, markdown
from arith_precision.tasks.spec import TASKS, task_title
from experiments.report import plots

COLUMNS = ("run", "task", "base", "k", "n", "layers", "d_model", "stage", "scheme",
           "bits_per_weight", "exact_match", "digit_accuracy", "finetune_steps", "final_loss",
           "num_examples", "wall_time_s")
TITLE = "# Quantization study: int4 / NF4 / MX / NVFP4 and QLoRA vs fp32 / LoRA"


def _bits(x) -> str:
    return "?" if x is None or x == "" else f"{float(x):.3g}"


def _panel(row) -> tuple:
    return (TASKS.index(row["task"]), row["base"], row["k"] or 0)


def _panel_title(key) -> str:
    return task_title(TASKS[key[0]], key[1], key[2])


def _mean_by_n(values: Iterable[tuple[Any, Any]]) -> dict[int, float]:
    """{n: the mean of the values at n} (several seeds or depths) from (n, value) pairs."""
    acc = collections.defaultdict(list)
    for n, value in values:
        acc[int(n)].append(float(value))
    return {n: sum(v) / len(v) for n, v in sorted(acc.items())}


def comparison(rows: Sequence[Mapping], qlora_scheme: str = "int4") -> list[dict]:
    """Per run that was fine-tuned: fp32, the QLoRA scheme before tuning, LoRA, QLoRA."""
    by_run = collections.defaultdict(dict)
    for r in rows:
        by_run[r["run"]][(r["stage"], r["scheme"])] = r
    out = []
    for name, d in by_run.items():
        if ("lora", "fp32") not in d or ("qlora", qlora_scheme) not in d:
            continue
        first = d[("lora", "fp32")]
        out.append(dict(run=name, task=first["task"], base=first["base"], k=first["k"],
                        n=first["n"], steps=first["finetune_steps"],
                        fp32=d.get(("ptq", "fp32"), {}).get("exact_match"),
                        quant=d.get(("ptq", qlora_scheme), {}).get("exact_match"),
                        lora=first["exact_match"],
                        qlora=d[("qlora", qlora_scheme)]["exact_match"]))
    return sorted(out, key=lambda c: (_panel(c), c["n"], c["run"]))


def report_markdown(rows: Sequence[Mapping], schemes: Sequence[str],
                    qlora_schemes: Sequence[str], image_prefix: str = "") -> str:
    """The tables (and plot links, relative with `image_prefix`) of the study as markdown."""
    fmt = markdown.number
    ptq = [r for r in rows if r["stage"] == "ptq"]
    bits = {}
    for r in ptq:
        bits.setdefault(r["scheme"], r["bits_per_weight"])
    lines = ["Post-training weight quantization of fp32-trained models (embeddings and "
             "unembedding stay fp32; bits are per quantized weight, scales included). Entries: "
             "exact match on held-out examples at the run's own n.", "",
             f"![quantization: exact match against n]({image_prefix}quant_exact_match.png)", ""]
    panels = collections.defaultdict(list)
    for r in ptq:
        panels[_panel(r)].append(r)
    for key in sorted(panels):
        members = panels[key]
        present = [s for s in schemes if any(r["scheme"] == s for r in members)]
        by = {(r["run"], r["scheme"]): r for r in members}
        runs = sorted({(r["run"], int(r["n"])) for r in members}, key=lambda x: (x[1], x[0]))
        lines += [f"**{_panel_title(key)}**", ""]
        lines += markdown.table(
            ["run", "n", *(f"{s} ({_bits(bits.get(s))} b)" for s in present)],
            ([run, n, *(fmt(by.get((run, s), {}).get("exact_match")) for s in present)]
             for run, n in runs))
        lines.append("")
    shown_plot = False
    for qlora_scheme in qlora_schemes:
        comp = comparison(rows, qlora_scheme)
        if not comp:
            continue
        lines += ["LoRA on the frozen fp32 base against QLoRA (the same LoRA on the frozen "
                  f"{qlora_scheme} base): exact match before and after the same fine-tune.", ""]
        if not shown_plot:
            lines += [f"![LoRA vs QLoRA]({image_prefix}quant_lora.png)", ""]
            shown_plot = True
        lines += markdown.table(
            ["run", "task", "n", "steps", "fp32", qlora_scheme, "LoRA (fp32 base)",
             f"QLoRA ({qlora_scheme} base)", "LoRA - QLoRA"],
            ([c["run"], c["task"], c["n"], c["steps"], fmt(c["fp32"]), fmt(c["quant"]),
              fmt(c["lora"]), fmt(c["qlora"]), f"{c['lora'] - c['qlora']:+.3f}"]
             for c in comp))
        lines.append("")
    return "\n".join(lines)


def plot(rows: Sequence[Mapping], path: str, schemes: Sequence[str]) -> None:
    """Exact match against n, one line per scheme, one panel per (task, base, k).

    Schemes that change nothing give equal curves: each scheme has its own colour, marker and
    a small sideways shift, block formats are dashed, and fp32 is the thick reference line.
    """
    from arith_precision.quant import scheme as quant_scheme

    plt = plots.pyplot()
    ptq = [r for r in rows if r["stage"] == "ptq"]
    keys = sorted({_panel(r) for r in ptq})
    fig, axes = plots.panel_grid(len(keys), size=(4.8, 3.8))
    palette = plt.get_cmap("tab10" if len(schemes) <= 10 else "tab20")  # a colour per scheme
    for ax, key in zip(axes, keys, strict=False):
        members = [r for r in ptq if _panel(r) == key]
        series = []
        for i, s in enumerate(schemes):
            pts = _mean_by_n((r["n"], r["exact_match"]) for r in members if r["scheme"] == s)
            if not pts:
                continue
            block = s != "fp32" and quant_scheme.parse_scheme(s).kind == "block"
            series.append(plots.Series(
                s, pts, color=palette(i % palette.N),
                marker="s" if s == "fp32" else plots.MARKERS[(i + 1) % len(plots.MARKERS)],
                linestyle="--" if block else "-", linewidth=2.5 if s == "fp32" else 1.3,
                markersize=7 if s == "fp32" else 5, hollow=block))
        plots.metric_against_n(ax, series, title=_panel_title(key), ylabel="exact match",
                               spread=min(0.03, 0.4 / max(1, len(series))), legend=False)
    fig.tight_layout()
    plots.shared_legend(fig, axes)
    fig.suptitle("Post-training weight quantization of fp32-trained models (curves shifted "
                 "slightly sideways so equal ones stay visible)", fontsize=10, y=1.02)
    plots.save(fig, path, dpi=110)


def plot_lora(rows: Sequence[Mapping], path: str, qlora_schemes: Sequence[str]) -> None:
    """fp32 and each quantized base before fine-tuning, LoRA and each QLoRA after, against n."""
    comps = {q: comparison(rows, q) for q in qlora_schemes}
    comps = {q: c for q, c in comps.items() if c}
    first = next(iter(comps.values()))
    keys = sorted({_panel(c) for c in first})
    fig, axes = plots.panel_grid(len(keys), size=(4.8, 3.8))
    colors = ("tab:red", "tab:green", "tab:purple", "tab:orange", "tab:brown")
    # (comparison rows, field, label, marker, line style, colour); "before" lines are dotted
    spec = [(first, "fp32", "fp32 (before)", "s", ":", "tab:blue"),
            (first, "lora", "LoRA on fp32", "o", "-", "tab:blue")]
    for i, (q, comp) in enumerate(comps.items()):
        color = colors[i % len(colors)]
        spec += [(comp, "quant", f"{q} (before)", "v", ":", color),
                 (comp, "qlora", f"QLoRA on {q}", plots.MARKERS[(i + 2) % len(plots.MARKERS)],
                  "-", color)]
    for ax, key in zip(axes, keys, strict=False):
        series = [plots.Series(label, _mean_by_n((c["n"], c[field]) for c in comp
                                                 if _panel(c) == key and c[field] is not None),
                               color=color, marker=marker, linestyle=ls,
                               alpha=0.6 if "before" in label else 1.0)
                  for comp, field, label, marker, ls, color in spec]
        members = [c for c in first if _panel(c) == key]
        plots.metric_against_n(ax, series, ylabel="exact match", legend=False,
                               title=f"{_panel_title(key)}: {members[0]['steps']} fine-tuning "
                                     "steps", spread=min(0.03, 0.4 / len(series)))
    fig.tight_layout()
    plots.shared_legend(fig, axes)
    plots.save(fig, path, dpi=110)


def plot_lora_gap(rows: Sequence[Mapping], path: str, qlora_schemes: Sequence[str]) -> None:
    """LoRA minus each QLoRA (exact match after the same fine-tuning) against n, on an axis
    scaled to the gaps (on a 0-1 axis a gap of 0.01-0.1 is invisible), every run a marker and
    the mean a line, with the zero line."""
    comps = {q: c for q, c in ((q, comparison(rows, q)) for q in qlora_schemes) if c}
    keys = sorted({_panel(c) for comp in comps.values() for c in comp})
    fig, axes = plots.panel_grid(len(keys), size=(4.8, 3.6))
    colors = ("tab:red", "tab:green", "tab:purple", "tab:orange", "tab:brown")
    for ax, key in zip(axes, keys, strict=False):
        series = []
        for i, (q, comp) in enumerate(comps.items()):
            gaps = [(c["n"], c["lora"] - c["qlora"]) for c in comp
                    if _panel(c) == key and c["lora"] is not None and c["qlora"] is not None]
            color = colors[i % len(colors)]
            series.append(plots.Series(f"LoRA - QLoRA on {q}", _mean_by_n(gaps), color=color,
                                       marker=plots.MARKERS[i % len(plots.MARKERS)]))
            for n, gap in gaps:  # every run (seed) on its own
                series.append(plots.Series(None, {n: gap}, color=color, marker="o",
                                           linestyle="none", markersize=4, hollow=True))
        values = [v for s_ in series for v in s_.points.values()]
        span = max((abs(v) for v in values), default=0.05)
        plots.metric_against_n(ax, series, title=_panel_title(key), legend=False,
                               ylabel="exact match: LoRA - QLoRA", spread=0.03,
                               ylim=(-1.2 * span - 0.005, 1.2 * span + 0.005))
        ax.axhline(0.0, color="0.3", lw=0.8)
    fig.tight_layout()
    plots.shared_legend(fig, axes)
    plots.save(fig, path, dpi=110)


def write_outputs(workdir: str, rows: Sequence[Mapping], *, schemes: Sequence[str],
                  qlora_schemes: Sequence[str]) -> dict[str, Any]:
    """quant_results.csv, quant_report.md, quant_exact_match.png and (if any fine-tuning)
    quant_lora.png and quant_lora_gap.png."""
    out = {"csv": os.path.join(workdir, "quant_results.csv"),
           "report": os.path.join(workdir, "quant_report.md"), "plots": []}
    atomic.write_csv(out["csv"], COLUMNS, rows)
    plot(rows, os.path.join(workdir, "quant_exact_match.png"), schemes)
    out["plots"].append(os.path.join(workdir, "quant_exact_match.png"))
    if any(comparison(rows, q) for q in qlora_schemes):
        plot_lora(rows, os.path.join(workdir, "quant_lora.png"), qlora_schemes)
        out["plots"].append(os.path.join(workdir, "quant_lora.png"))
        plot_lora_gap(rows, os.path.join(workdir, "quant_lora_gap.png"), qlora_schemes)
        out["plots"].append(os.path.join(workdir, "quant_lora_gap.png"))
    atomic.write_text(out["report"],
                      f"{TITLE}\n\n" + report_markdown(rows, schemes, qlora_schemes) + "\n")
    return out
