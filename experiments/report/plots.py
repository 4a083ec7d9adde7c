"""The one "metric against n" plot helper: panels of curves over the number of digits n.

Every plot of `experiments/` whose x axis is n (the sweep's accuracy panels, the quantization
study's, the precision probe's) is a grid of `panel_grid` axes, each filled by
`metric_against_n` from `Series`, and saved with `save` (atomic, so a report never links a
half-written image).

Curves that are equal (a scheme that changes nothing, two arms that both reach 1.0) would hide
each other: `metric_against_n(spread=...)` shifts the curves of a panel sideways by a small
fraction of the spacing of n, and callers give each curve its own marker (`MARKERS`) and line
style, so a covered curve still shows.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from arith_precision.common import atomic

MARKERS = ("o", "s", "^", "v", "D", "P", "X", "<", ">", "h", "*", "p")
LINESTYLES = ("-", "--", "-.", ":")


@dataclasses.dataclass(frozen=True)
class Series:
    """One curve: `points` {n: value}, optional `errors` {n: error bar}; the rest is its style
    (matplotlib's names). `label` None keeps it out of the legend."""

    label: str | None
    points: Mapping[int, float]
    errors: Mapping[int, float] | None = None
    color: Any = None
    marker: str = "o"
    linestyle: str = "-"
    linewidth: float = 1.3
    markersize: float = 6.0
    alpha: float = 1.0
    hollow: bool = False


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend (no display on the machines this runs)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def panel_grid(count: int, *, max_cols: int = 3, size: tuple[float, float] = (4.4, 3.4)):
    """(figure, the first `count` axes in reading order) of a grid at most `max_cols` wide; the
    unused axes of the last row are hidden."""
    plt = pyplot()
    count = max(1, count)
    cols = min(count, max_cols)
    rows = -(-count // cols)
    fig, axes = plt.subplots(rows, cols, squeeze=False, figsize=(size[0] * cols, size[1] * rows))
    flat = [ax for row in axes for ax in row]
    for ax in flat[count:]:
        ax.set_visible(False)
    return fig, flat[:count]


def metric_against_n(ax, series: Sequence[Series], *, title: str, ylabel: str,
                     ylim: tuple[float, float] | None = (-0.05, 1.05), spread: float = 0.0,
                     legend_size: float = 8, legend_loc: str | None = None,
                     legend: bool = True) -> None:
    """Draw `series` against n on `ax`, with n's values as ticks.

    `spread` > 0 shifts curve i of k by (i - (k - 1) / 2) * spread * (the smallest gap between
    the n values, 1 when there is one n): equal curves end side by side instead of on top of
    each other. A single point gets a marker like any other (no line to draw). `legend` False
    leaves the legend to `shared_legend` (one for the figure, beside the panels).
    """
    ns = sorted({n for s in series for n in s.points})
    gap = min((b - a for a, b in zip(ns, ns[1:], strict=False)), default=1)
    for i, s in enumerate(series):
        xs = sorted(s.points)
        if not xs:
            continue
        shift = (i - (len(series) - 1) / 2) * spread * gap
        style = dict(color=s.color, marker=s.marker, linestyle=s.linestyle, lw=s.linewidth,
                     ms=s.markersize, alpha=s.alpha, label=s.label)
        if s.hollow:
            style["mfc"] = "none"
        xv, yv = [x + shift for x in xs], [s.points[x] for x in xs]
        if s.errors is not None:
            ax.errorbar(xv, yv, yerr=[s.errors.get(x, 0.0) for x in xs], capsize=3, **style)
        else:
            ax.plot(xv, yv, **style)
    if ns:
        ax.set_xticks(ns)
        pad = 0.5 * gap
        ax.set_xlim(ns[0] - pad, ns[-1] + pad)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("n (digits)")
    ax.set_ylabel(ylabel)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.grid(alpha=0.3)
    if legend and any(s.label for s in series):
        ax.legend(fontsize=legend_size, loc=legend_loc)


def shared_legend(fig, axes, fontsize: float = 8) -> None:
    """One legend for the figure, right of the panels, with every label of any panel once (a
    legend inside a panel of many curves covers the points it explains)."""
    entries = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            entries.setdefault(label, handle)
    if entries:
        fig.legend(list(entries.values()), list(entries), loc="center left",
                   bbox_to_anchor=(1.0, 0.5), fontsize=fontsize, frameon=False)


def save(fig, path: str, dpi: int = 110) -> None:
    """Write `fig` to `path` atomically and close it."""
    plt = pyplot()
    with atomic.replacing(path) as tmp:
        # "tight" keeps a legend placed beside the panels inside the image
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight")
    plt.close(fig)


@dataclasses.dataclass(frozen=True)
class Curve:
    """One run's validation curve: `points` [(step, value)], drawn in `color` with `linestyle`;
    `label` None keeps it out of the legend."""

    label: str | None
    points: Sequence[tuple[int, float]]
    color: Any = None
    linestyle: str = "-"


def curves_over_steps(ax, curves: Sequence[Curve], *, title: str, ylabel: str,
                      threshold: float | None = None, threshold_label: str = "",
                      ylim: tuple[float, float] = (-0.03, 1.03)) -> None:
    """Validation curves against the training step on `ax`, with a dashed `threshold` line."""
    for c in curves:
        if c.points:
            xs, ys = zip(*c.points, strict=True)
            ax.plot(xs, ys, color=c.color, linestyle=c.linestyle, lw=1.2, label=c.label)
    if threshold is not None:
        ax.axhline(threshold, color="0.3", lw=0.9, ls=(0, (4, 3)), label=threshold_label)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("training step")
    ax.set_ylabel(ylabel)
    ax.set_ylim(*ylim)
    ax.grid(alpha=0.3)


def reference_line(ax, value: float, label: str) -> None:
    """A dotted horizontal line with a legend label (chance levels, thresholds)."""
    ax.axhline(value, color="0.4", lw=0.9, ls=":", label=label)
