"""The precision probe rendered: probe.json, probe.md (tables) and probe.png, from the result of
`experiments.precision_probe.probe`."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence

from arith_precision.common import atomic, markdown
from experiments.report import plots


def threshold_label(entry: Mapping, max_bits: int) -> str:
    bits = entry["threshold_bits"]
    if bits is None:
        return f">{max_bits}"
    return f"<={bits}" if entry["all_pass_to_min"] else str(bits)


def _task_label(entry: Mapping) -> str:
    label = f"{entry['task']} p={entry['base']}"
    return label + (f" k={entry['k']}" if entry["task"] == "iter_add" else "")


def _run_row(run: str, cells: Mapping[str, Mapping], sets: Sequence[str], max_bits: int) -> list:
    """A table row of one trained run: its task, n, fp32 exact match, threshold per region set."""
    first = next(iter(cells.values()))
    return [run, _task_label(first), first["n"], f"{first['fp32_exact_match']:.3f}",
            *(threshold_label(cells[r], max_bits) if r in cells else "-" for r in sets)]


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
        by_run = {}
        for e in entries:
            by_run.setdefault(e["run"], {})[e["regions"]] = e
        lines += [f"**accumulation `{accumulation}`**", ""]
        lines += markdown.table(["run", "task", "n", "fp32", *sets],
                                (_run_row(run, cells, sets, max_bits)
                                 for run, cells in by_run.items()))
        named = [e for e in entries if e.get("named")]
        if named:
            fmts = s["named_formats"]
            lines += ["", "Exact match with every operation in a named format:", ""]
            lines += markdown.table(["run", "fp32", *fmts],
                                    ([e["run"], f"{e['fp32_exact_match']:.3f}",
                                      *(f"{e['named'][f]:.3f}" for f in fmts)] for e in named))
        lines.append("")
    constructions = result.get("constructions") or []
    if constructions:
        by_key = {}
        for e in constructions:
            by_key.setdefault((e["construction"], e["accumulation"]), {})[e["regions"]] = e
        lines += ["**Constructions** (a width passes when every verifier input is exact; "
                  "`all` is the construction's frontier):", ""]
        lines += markdown.table(
            ["construction", "accumulation", "inputs", *sets],
            ([name, accumulation, ", ".join(f"{v} {k}" for k, v in next(
                iter(cells.values()))["checked_inputs"].items()),
              *(threshold_label(cells[r], max_bits) if r in cells else "-" for r in sets)]
             for (name, accumulation), cells in by_key.items()))
        lines.append("")
    return "\n".join(lines)


def _key(e: Mapping) -> tuple:
    return e["task"], e["base"], e["k"] if e["task"] == "iter_add" else 2


def _frontier_series(frontiers: Iterable[Mapping],
                     constructions: Iterable[Mapping]) -> dict[tuple, dict[int, int]]:
    """{(task, base, k): {n: bits}} from frontier JSONs and the probe's own constructions."""
    out = {}
    for f in frontiers:
        f = f.get("result", f)
        key = _key(f["spec"])
        for e in f["entries"]:
            if e["float_mantissa_bits"].get("once") is not None:
                out.setdefault(key, {})[e["n"]] = e["float_mantissa_bits"]["once"]
    for e in constructions:
        if e["regions"] == "all" and e["accumulation"] == "once" and e["threshold_bits"]:
            out.setdefault(_key(e), {})[e["n"]] = e["threshold_bits"]
    return out


def plot(result: Mapping, path: str, frontiers: Iterable[Mapping] = ()) -> None:
    """Threshold bits against n per task (all / all_but_attention), beside the constructions'.

    A threshold at the lowest width probed ("<=min") is drawn as a downward triangle; one above
    the widest (">max") on the dotted line above it.
    """
    s = result["settings"]
    max_bits, min_bits = s["max_bits"], s["min_bits"]
    entries = [e for e in result["results"] if e["accumulation"] == "once"]
    keys = sorted({_key(e) for e in entries})
    if not keys:
        return
    series = _frontier_series(frontiers, result.get("constructions") or [])
    fig, axes = plots.panel_grid(len(keys), size=(5, 4.2))
    for ax, key in zip(axes, keys, strict=True):
        mine = [e for e in entries if _key(e) == key]
        ns = set()
        for region_set, color, size, ls in (("all", "C0", 7, "-"),
                                            ("all_but_attention", "C1", 12, "--")):
            pts = sorted((e["n"], max_bits + 1 if e["threshold_bits"] is None
                          else e["threshold_bits"], e["all_pass_to_min"])
                         for e in mine if e["regions"] == region_set)
            if not pts:
                continue
            ns.update(n for n, _, _ in pts)
            ax.plot([n for n, _, _ in pts], [b for _, b, _ in pts], ls, color=color, lw=1.2,
                    label=f"trained, {region_set}")
            for n, b, at_min in pts:
                ax.plot(n, b, "v" if at_min else "o", ms=size, color=color,
                        mfc=color if region_set == "all" else "none", mew=1.5)
        if key in series:
            pts = sorted(series[key].items())
            ns.update(n for n, _ in pts)
            ax.plot(*zip(*pts, strict=True), "k^-", ms=6, label="construction frontier")
        ax.axhline(max_bits + 1, color="grey", lw=0.8, ls=":")
        ax.set_ylim(min_bits - 1, max_bits + 2)
        ax.set_xticks(sorted(ns))
        ax.set_xlim(min(ns) - 1, max(ns) + 1)
        ax.text(min(ns) - 0.9, max_bits + 1.15, f"> e8m{max_bits}", fontsize=9, color="grey")
        fp32 = ", ".join(f"n={e['n']}: {e['fp32_exact_match']:.2f}" for e in sorted(
            (e for e in mine if e["regions"] == "all"), key=lambda e: e["n"]))
        ax.set_title(f"{_task_label(mine[0])}\n(fp32 exact match {fp32})", fontsize=10)
        ax.set_xlabel("n (digits)")
        ax.set_ylabel("mantissa bits needed (e8mM)")
        ax.legend(fontsize=8, loc="lower right")
    fig.text(0.01, 0.01, f"v: every width down to e8m{min_bits} passes", fontsize=8,
             color="grey")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    plots.save(fig, path, dpi=120)


def write_outputs(result: Mapping, out_dir: str, frontiers: Sequence[Mapping] = ()) -> dict:
    """probe.json (the result), probe.md and probe.png in `out_dir`; returns {name: path}."""
    paths = {name: os.path.join(out_dir, name) for name in ("probe.json", "probe.md", "probe.png")}
    atomic.write_json(paths["probe.json"], result, indent=1)
    atomic.write_text(paths["probe.md"], to_markdown(result))
    plot(result, paths["probe.png"], frontiers)
    return paths


