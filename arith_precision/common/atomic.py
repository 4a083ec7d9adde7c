"""Atomic file writes: a reader sees the old file or the whole new one, never a half-written one.

Every writer of a result, summary, cache or plot in the library, `constructions/` and
`experiments/` goes through `replacing`: the data goes to a temporary file next to the target
(same directory, so `os.replace` is a rename on one file system) and replaces the target only
once complete. The temporary name carries the process id, because several sweep shards may write
the same file at once; it keeps the target's extension so that writers that infer the format from
the name (matplotlib's `savefig`) still do.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any


@contextlib.contextmanager
def replacing(path: str) -> Iterator[str]:
    """Yield a temporary path to write; on success it replaces `path`, on error it is removed."""
    root, ext = os.path.splitext(path)
    tmp = f"{root}.{os.getpid()}.tmp{ext}"
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_text(path: str, text: str) -> None:
    """Replace the file at `path` with `text`."""
    with replacing(path) as tmp, open(tmp, "w") as f:
        f.write(text)


def write_json(path: str, obj: Any, **dump_kwargs) -> None:
    """Replace the file at `path` with `obj` as JSON (`dump_kwargs` go to `json.dump`)."""
    with replacing(path) as tmp, open(tmp, "w") as f:
        json.dump(obj, f, **dump_kwargs)


def write_lines(path: str, lines: Iterable[str]) -> None:
    """Replace the file at `path` with `lines` (each already ending in a newline)."""
    with replacing(path) as tmp, open(tmp, "w") as f:
        f.writelines(lines)


def write_csv(path: str, columns: Sequence[str], rows: Iterable[Mapping]) -> None:
    """Replace the file at `path` with a CSV of `columns`; None (or a missing key) is empty."""
    with replacing(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if row.get(k) is None else row[k] for k in columns})
