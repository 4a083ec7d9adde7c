"""Finished checks on disk (frontier --out, verify --checks): a stopped run resumes there.

A full-width scan of a large construction is hours of CPU (MUL base 2, n = 8: 65 536 exhaustive
inputs x 25 widths, minutes per width). `constructions.frontier --out=DIR` records every verdict
"does the verifier pass in format F under accumulation A" in DIR/checks.json as soon as it is
known; the same command run again reads the file and checks only what is missing.
`constructions.verify --checks=DIR` records one verdict per batch of inputs the same way (a
full-set check of a long construction is hours to days).

A verdict is keyed by a SHA-256 over everything that decides it: the task spec, the model
config, every parameter array (bytes, dtype, shape, path), the operand list, the format and the
accumulation. A changed construction (new weights at the same shape, which is how the base-2 MUL
frontier once went stale) or a different input set therefore never reuses an old verdict; such
entries stay in the file, unused. The file is rewritten whole through `atomic.write_json` after
each verdict (a few hundred entries at most), so a run killed mid-write leaves the previous file.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os

import jax
import numpy as np

from arith_precision import formats
from arith_precision.common import atomic, cli_errors

FILENAME = "checks.json"


def construction_digest(construction) -> str:
    """SHA-256 of the spec, the config and every parameter (path, dtype, shape, bytes)."""
    h = hashlib.sha256()
    h.update(repr(construction.spec).encode())
    h.update(repr(construction.config).encode())
    for path, leaf in jax.tree_util.tree_leaves_with_path(construction.params):
        array = np.ascontiguousarray(np.asarray(leaf))
        h.update(f"{jax.tree_util.keystr(path)}|{array.dtype}|{array.shape}".encode())
        h.update(array.tobytes())
    return h.hexdigest()


def operands_digest(operands) -> str:
    """SHA-256 of the operand list (exact Python integers, in order)."""
    return hashlib.sha256(repr([[int(x) for x in row] for row in operands]).encode()).hexdigest()


def key(construction_sha: str, operands_sha: str, fmt, accumulation: str,
        prefill_chunk: int | None = None) -> str:
    """The verdict's key; a chunked prefill (`decode.greedy_decode`) is part of it, since its
    float32 sums may be ordered otherwise."""
    parts = [construction_sha, operands_sha, str(formats.as_format(fmt)), accumulation]
    return "|".join(parts + ([f"prefill_chunk={prefill_chunk}"] if prefill_chunk else []))


class CheckLog:
    """Verdicts by `key`, loaded from and saved to DIR/checks.json (None: in memory only)."""

    def __init__(self, directory: str | None):
        self.path = os.path.join(directory, FILENAME) if directory else None
        self.verdicts: dict[str, bool] = self._read()
        self.loaded = len(self.verdicts)

    def _read(self) -> dict[str, bool]:
        if not (self.path and os.path.exists(self.path)):
            return {}
        with open(self.path) as f:
            return {k: bool(v) for k, v in json.load(f)["verdicts"].items()}

    def get(self, k: str) -> bool | None:
        return self.verdicts.get(k)

    def record(self, k: str, ok: bool) -> None:
        """Add a verdict and rewrite the file with it, keeping what another run sharing the
        directory wrote meanwhile (verdicts are deterministic: the union never conflicts). The
        read-merge-write holds an exclusive lock on DIR/checks.json.lock, so processes sharing
        the directory (`verify --shard`) never drop each other's verdicts."""
        self.verdicts[k] = bool(ok)
        if self.path:
            with open(self.path + ".lock", "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
                self.verdicts = {**self._read(), **self.verdicts}
                atomic.write_json(self.path, {"about": __doc__.splitlines()[0],
                                              "verdicts": self.verdicts}, indent=0)


def check_cli_dir(flag: str, directory: str) -> None:
    """For a CLI: `directory` must be writable and its checks.json (if any) readable, else a
    UsageError naming `flag` (before any work)."""
    cli_errors.check_writable_dir(flag, directory)
    try:
        CheckLog(directory)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise cli_errors.UsageError(flag, directory, f"its {FILENAME} cannot be read "
                                    f"({type(e).__name__}: {e}); move it away to start afresh"
                                    ) from None
