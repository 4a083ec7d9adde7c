"""A JSON-lines cache of computed rows: one row a line, appended as each is computed, so an
interrupted study resumes where it stopped (the quantization study, the precision probe)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from typing import Any


class RowCache:
    """Rows of `path` by `key(row)`; `add` appends a new row to the file and the cache."""

    def __init__(self, path: str, key: Callable[[Mapping[str, Any]], str]):
        self.path, self.key, self.rows = path, key, {}
        if os.path.exists(path):
            with open(path) as f:
                for line in f:
                    if line.strip():
                        row = json.loads(line)
                        self.rows[key(row)] = row

    def __contains__(self, key: str) -> bool:
        return key in self.rows

    def __getitem__(self, key: str) -> dict:
        return self.rows[key]

    def add(self, row: dict) -> dict:
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
        self.rows[self.key(row)] = row
        return row
