"""Rendering of `constructions.frontier` results: markdown tables, the plot, merging runs.

A result (`frontier.run_frontier`) holds one entry per n; per accumulation mode an entry has
`float_mantissa_bits` (the threshold: the smallest M from which every wider mantissa up to the
widest searched passes) and, from this version on, `float_narrower_passing` (the widths below
the threshold that pass too: exactness is not monotonic in M) and `float_checked` (every width
checked). Results written before that (binary search, monotonicity assumed) lack the two keys;
they render as "not checked".
"""

from __future__ import annotations

import json
import math
import os

import numpy as np

from arith_precision.common import atomic, cli_errors, markdown
from arith_precision.common.cli_errors import UsageError

MAX_MANTISSA = 24  # e8m24 is the widest a float64 carrier simulates exactly
MAX_FIXED_BITS = 25  # I + F on a float64 carrier
COMMON_FORMATS = ("bf16", "fp16", "e4m3", "e5m2")


def fit_line(ns, bits) -> tuple[float, float] | None:
    """Least-squares bits = a log2(n) + b over the entries that have a value."""
    pts = [(math.log2(n), b) for n, b in zip(ns, bits, strict=True) if b is not None]
    if len(pts) < 2:
        return None
    x, y = np.array(pts).T
    a, b = np.polyfit(x, y, 1)
    return float(a), float(b)


def fit_text(fit: tuple[float, float], digits: int = 2, intercept_digits: int | None = None) -> str:
    """"a log2 n + b" (or "- |b|") with a and b rounded; a rounded zero prints as 0, not -0."""
    a, b = (round(v, d) + 0.0 for v, d in zip(fit, (digits, intercept_digits or digits),
                                                strict=True))
    return (f"{a:.{digits}f} log2 n {'-' if b < 0 else '+'} "
            f"{abs(b):.{intercept_digits or digits}f}")


def narrower_passing(entry: dict, acc: str) -> list[int] | None:
    """Widths below the threshold that pass, or None where they were not checked."""
    return entry.get("float_narrower_passing", {}).get(acc)


def _label(result: dict) -> str:
    """The result's label; runs before the full scan say "[binary search]"."""
    return result["label"] + ("" if "mantissa_range" in result else " [binary search]")


def _narrower_text(entry: dict, acc: str, lowest: int | None) -> str:
    narrower = narrower_passing(entry, acc)
    if narrower is None:
        return "not checked"
    if narrower:
        return ", ".join(map(str, narrower))
    m = entry["float_mantissa_bits"][acc]
    if m is None:
        return "none"
    return "none" if lowest is None or m > lowest else "(threshold is the narrowest searched)"


def to_markdown(result: dict) -> str:
    lowest = result.get("mantissa_range", [None])[0]
    lines = []
    for acc in result["accumulations"]:
        lines.append(f"**{_label(result)}, accumulation `{acc}`**\n")
        rows = []
        for e in result["entries"]:
            fx = e["fixed"][acc]
            fixed = ("not searched (--float-only)" if fx is None
                     else f"fixed{fx['int_bits']}.{fx['frac_bits']}" if fx["frac_bits"] is not None
                     else f"none with I={fx['int_bits']}, I+F <= {MAX_FIXED_BITS}")
            m = e["float_mantissa_bits"][acc]
            rows.append([e["n"], f"{math.log2(e['n']):.2f}",
                         m if m is not None else f"> {MAX_MANTISSA}",
                         _narrower_text(e, acc, lowest), fixed, e["checked"]])
        lines += markdown.table(["n", "log2 n", "threshold: float mantissa bits M (e8mM)",
                                 "narrower M that also pass", "fixed point (I.F)", "checked"],
                                rows)
        if lowest is not None:
            lines.append(f"\nThreshold: the smallest M from which every width up to "
                         f"e8m{result['mantissa_range'][1]} passes; every width from e8m{lowest} "
                         f"up was checked, and the narrower ones that pass are listed.")
        fit = result["fits"].get(acc)
        if fit:
            lines.append(f"\nFitted (threshold): mantissa bits ~ {fit_text(fit)}\n")
        rows = []
        for fmt in COMMON_FORMATS:
            if any(fmt not in e["common"][acc] for e in result["entries"]):
                rows.append([fmt, "not checked (--float-only)"])
                continue
            ok = [e["n"] for e in result["entries"] if e["common"][acc][fmt]]
            fails = [e["n"] for e in result["entries"] if not e["common"][acc][fmt]]
            if not ok:
                text = f"fails at every n tested (from n={min(fails)})"
            else:
                text = str(max(ok)) + (f" (fails from n={min(n for n in fails if n > max(ok))})"
                                       if any(n > max(ok) for n in fails) else " (passes all)")
            rows.append([fmt, text])
        lines.append("")
        lines += markdown.table(["format", "largest n of the list that passes"], rows)
        lines.append("")
    return "\n".join(lines)


def plot(results: list[dict], path: str) -> None:
    """Threshold bits against log2 n (lines, with a least-squares fit), and the narrower widths
    that also pass (hollow markers of the same colour, below their threshold)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    many = len(results) > 2
    fig, ax = plt.subplots(figsize=(11, 5.2) if many else (6.5, 4.2))
    narrower_labelled = False
    for result in results:
        ns = [e["n"] for e in result["entries"]]
        for acc, style in zip(result["accumulations"], ("o-", "s--", "^:"), strict=False):
            bits = [e["float_mantissa_bits"][acc] for e in result["entries"]]
            pts = [(math.log2(n), b) for n, b in zip(ns, bits, strict=True) if b is not None]
            if not pts:
                continue
            x, y = zip(*pts, strict=True)
            line = ax.plot(x, y, style, label=f"{_label(result)} ({acc})")[0]
            below = [(math.log2(e["n"]), m) for e in result["entries"]
                     for m in (narrower_passing(e, acc) or [])]
            if below:
                bx, by = zip(*below, strict=True)
                ax.plot(bx, by, style[0], mfc="none", ms=9, mew=1.3, color=line.get_color(),
                        label=None if narrower_labelled else
                        "narrower width that also passes (hollow)")
                narrower_labelled = True
            fit = result["fits"].get(acc)
            if fit:
                xs = np.linspace(min(x), max(x), 20)
                ax.plot(xs, fit[0] * xs + fit[1], color=line.get_color(), alpha=0.35, lw=3,
                        label=f"fit {fit_text(fit, 2, 1)}")
    _reference_lines(ax)
    ax.set_xlabel("log2 n")
    ax.set_ylabel("mantissa bits M of e8mM")
    ax.set_title("Precision frontier: threshold (every wider M exact); hollow: narrower M that "
                 "pass", fontsize=10)
    fig.text(0.01, 0.01, "Dashed grey: formats with fewer exponent bits than e8mM; reaching their "
             "mantissa width is necessary, not sufficient (their narrower range fails earlier: "
             "see the table's common formats).", fontsize=7, color="dimgray",
             wrap=True)  # two lines in the small figure, not clipped at its right edge
    if many:  # beside the axes, where it cannot hide a curve
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    else:
        ax.legend(fontsize=7)
    fig.tight_layout(rect=(0, 0.04 if many else 0.07, 1, 1))
    with atomic.replacing(path) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)


# (name, mantissa bits, exponent bits) of the formats drawn for reference. bf16 is e8m7, a point
# of the e8mM axis itself; the others have fewer exponent bits, so sitting at their mantissa width
# does not make them equivalent to e8mM (fp16, e5m10, fails ADD where e8m10 passes): they are
# drawn dashed, each on its own line.
REFERENCE_FORMATS = (("bf16", 7, 8), ("fp16", 10, 5), ("e4m3", 3, 4), ("e5m2", 2, 5))


def _reference_lines(ax) -> None:
    """The reference formats as labelled horizontal lines, the y range widened to show them."""
    lo, hi = ax.get_ylim()
    ax.set_ylim(min(lo, 1.0), max(hi, max(m for _, m, _ in REFERENCE_FORMATS) + 1.5))
    for name, m, e in REFERENCE_FORMATS:
        same_axis = e == 8
        ax.axhline(m, color="gray", lw=1.6 if same_axis else 1.1, ls="-" if same_axis else "--",
                   alpha=0.7, zorder=0)
        text = f"{name} = e8m{m}" if same_axis else f"{name}: {m} mantissa, {e} exponent bits"
        ax.text(0.995, m + 0.12, text, transform=ax.get_yaxis_transform(), ha="right",
                va="bottom", fontsize=9, color="dimgray",
                bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.7, "pad": 1})


def merge(directories: list[str], out: str) -> str:
    """Combine several `--out` directories into one frontier.md and one frontier.png in `out`."""
    results = []
    for d in directories:
        path = os.path.join(d, "frontier.json")
        try:
            with open(path) as f:
                loaded = json.load(f)
        except OSError as e:
            raise UsageError("--merge", d, f"cannot read {path} ({e.strerror or e})") from None
        except ValueError as e:
            raise UsageError("--merge", d, f"{path} is not valid JSON ({e})") from None
        if not isinstance(loaded, dict) or "entries" not in loaded:
            raise UsageError("--merge", d, f"{path} is not one frontier run's output")
        results.append(loaded)
    cli_errors.check_writable_dir("--out", out)
    markdown = "\n".join(to_markdown(r) for r in results)
    atomic.write_text(os.path.join(out, "frontier.md"), markdown + "\n")
    atomic.write_json(os.path.join(out, "frontier.json"), results, indent=1)
    plot(results, os.path.join(out, "frontier.png"))
    return markdown
