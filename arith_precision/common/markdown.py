"""The one markdown-table helper (reports of `experiments/` and `constructions/` alike), and how
numbers appear in table entries."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any


def table(header: Sequence[Any], rows: Iterable[Sequence[Any]]) -> list[str]:
    """A markdown table as lines: the header, the `|---|` separator, one line per row.

    Entries are written with `str` (format numbers before: `number`); a row shorter than the
    header is not padded, so every caller passes whole rows.
    """
    return [_line(header), "|" + "---|" * len(header)] + [_line(row) for row in rows]


def _line(cells: Sequence[Any]) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def number(x: Any, digits: int = 3) -> str:
    """A table entry for a measured value: `digits` decimals, "-" for a missing one (None or "",
    as a CSV row has it)."""
    return "-" if x is None or x == "" else f"{float(x):.{digits}f}"
