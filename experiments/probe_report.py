"""Rendering of the precision probe's results: markdown tables and the plot."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence


def threshold_label(entry: Mapping, max_bits: int) -> str:
    bits = entry["threshold_bits"]
    if bits is None:
        return f">{max_bits}"
    return f"<={bits}" if entry["all_pass_to_min"] else str(bits)

def _task_label(entry: Mapping) -> str:
    label = f"{entry['task']} p={entry['base']}"
    return label + (f" k={entry['k']}" if entry["task"] == "iter_add" else "")


def to_markdown(result: Mapping) -> str:
    s = result["settings"]
    max_bits = s["max_bits"]
    lines = [f"Fewest e8mM mantissa bits at which held-out exact match stays within "
             f"{s['tolerance']} of fp32 ({s['num_examples']} examples; threshold: every width "
             f"from it up to e8m{max_bits} passes, scanned downward, stopping at the first "
             f"failure). Columns: which part of the model is rounded.", ""]
    sets = s["region_sets"]
    for accumulation in s["accumulations"]:
        entries = [e for e in result["results"] if e["accumulation"] == accumulation]
        if not entries:
            continue
        lines += [f"**accumulation `{accumulation}`**", "",
                  "| run | task | n | fp32 | " + " | ".join(sets) + " |",
                  "|---|---|---|---|" + "---|" * len(sets)]
        by_run = {}
        for e in entries:
            by_run.setdefault(e["run"], {})[e["regions"]] = e
        for run, cells in by_run.items():
            first = next(iter(cells.values()))
            lines.append(f"| {run} | {_task_label(first)} | {first['n']} | "
                         f"{first['fp32_exact_match']:.3f} | " + " | ".join(
                             threshold_label(cells[r], max_bits) if r in cells else "-"
                             for r in sets) + " |")
        named = [e for e in entries if e.get("named")]
        if named:
            fmts = s["named_formats"]
            lines += ["", "Exact match with every operation in a named format:", "",
                      "| run | fp32 | " + " | ".join(fmts) + " |", "|---|---|" + "---|" * len(fmts)]
            for e in named:
                lines.append(f"| {e['run']} | {e['fp32_exact_match']:.3f} | " + " | ".join(
                    f"{e['named'][f]:.3f}" for f in fmts) + " |")
        lines.append("")
    constructions = result.get("constructions") or []
    if constructions:
        lines += ["**Constructions** (a width passes when every verifier input is exact; "
                  "`all` is the construction's frontier):", "",
                  "| construction | accumulation | inputs | " + " | ".join(sets) + " |",
                  "|---|---|---|" + "---|" * len(sets)]
        by_key = {}
        for e in constructions:
            by_key.setdefault((e["construction"], e["accumulation"]), {})[e["regions"]] = e
        for (name, accumulation), cells in by_key.items():
            first = next(iter(cells.values()))
            inputs = ", ".join(f"{v} {k}" for k, v in first["checked_inputs"].items())
            lines.append(f"| {name} | {accumulation} | {inputs} | " + " | ".join(
                threshold_label(cells[r], max_bits) if r in cells else "-" for r in sets) + " |")
        lines.append("")
    return "\n".join(lines)


def _frontier_series(frontiers: Iterable[Mapping]) -> dict[tuple, list[tuple[int, int]]]:
    """{(task, base, k): [(n, bits)]} from constructions.frontier / reproduce frontier JSONs."""
    out = {}
    for f in frontiers:
        f = f.get("result", f)
        spec = f["spec"]
        key = (spec["task"], spec["base"], spec["k"] if spec["task"] == "iter_add" else 2)
        points = [(e["n"], e["float_mantissa_bits"].get("once")) for e in f["entries"]]
        out[key] = [(n, b) for n, b in points if b is not None]
    return out


def plot(result: Mapping, path: str, frontiers: Iterable[Mapping] = ()) -> None:
    """Threshold bits against n per task (all / all_but_attention), beside the constructions'."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    max_bits = result["settings"]["max_bits"]
    entries = [e for e in result["results"] if e["accumulation"] == "once"]
    keys = sorted({(e["task"], e["base"], e["k"] if e["task"] == "iter_add" else 2)
                   for e in entries})
    if not keys:
        return
    series = _frontier_series(frontiers)
    fig, axes = plt.subplots(1, len(keys), figsize=(4.5 * len(keys), 3.8), squeeze=False)
    for ax, key in zip(axes[0], keys, strict=True):
        mine = [e for e in entries
                if (e["task"], e["base"], e["k"] if e["task"] == "iter_add" else 2) == key]
        for region_set, style in (("all", "o-"), ("all_but_attention", "s--")):
            pts = sorted((e["n"], e["threshold_bits"] if e["threshold_bits"] is not None
                          else max_bits + 1) for e in mine if e["regions"] == region_set)
            if pts:
                ax.plot(*zip(*pts, strict=True), style, label=f"trained, {region_set}")
        if key in series:
            ax.plot(*zip(*series[key], strict=True), "k^-", label="construction frontier")
        ax.axhline(max_bits + 1, color="grey", lw=0.8, ls=":")
        ax.text(ax.get_xlim()[0], max_bits + 1.1, f"> e8m{max_bits}", fontsize=8, color="grey")
        ax.set_title(_task_label(mine[0]))
        ax.set_xlabel("n (digits)")
        ax.set_ylabel("mantissa bits needed (e8mM)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_outputs(result: Mapping, out_dir: str, frontiers: Sequence[Mapping] = ()) -> dict:
    paths = {name: os.path.join(out_dir, name) for name in ("probe.json", "probe.md", "probe.png")}
    with open(paths["probe.json"], "w") as f:
        json.dump(result, f, indent=1)
    with open(paths["probe.md"], "w") as f:
        f.write(to_markdown(result))
    plot(result, paths["probe.png"], frontiers)
    return paths


