"""Restore the newest checkpoint that restores; move damaged ones aside, never delete them.

A run resumes from its newest orbax checkpoint. That checkpoint can be damaged: a file deleted or
truncated by hand or by a full disk, a directory emptied, or a step directory half-deleted when a
kill interrupted orbax's garbage collection of old steps (orbax still lists it as a step). Then
`restore_newest_good`:

1. moves every *incomplete* step directory aside before orbax lists the steps: one that lacks a
   readable `_CHECKPOINT_METADATA` or `default/_METADATA`, or holds no data file under
   `default/` (a half-deleted or emptied step);
2. tries the newest remaining step; if restoring it raises, moves it aside and tries the one
   before, and so on.

Garbage collection of old steps cannot leave a half-deleted step in the listing: `manager_options`
makes orbax *rename* an old step into `<checkpoints>/.deleted/` (one atomic rename) and
`purge_deleted` empties that directory afterwards (a kill there leaves files only under
`.deleted/`, whose name orbax never lists as a step).

"Aside" is `<checkpoints>.damaged/<step>` (a rename in the same parent directory; a name taken by
an earlier move gets a `.1`, `.2`, ... suffix). Every move prints a warning naming both paths.
Training then continues from the step that restored, and since batches are a function of
(data_seed, step), it ends with the same parameters as a run that was never damaged. When
checkpoints existed but none restores, it raises `UsageError` naming the directory (the CLIs
print that one line and exit 2); the damaged steps stay in `<checkpoints>.damaged/`.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Callable

from arith_precision.common.cli_errors import UsageError

ITEM = "default"  # orbax's item directory for a single-item CheckpointManager
_METADATA_FILES = ("_CHECKPOINT_METADATA", os.path.join(ITEM, "_METADATA"))
_ITEM_INDEX_FILES = ("_METADATA", "_sharding", "commit_success.txt", "manifest.ocdbt")


DELETED_SUBDIR = ".deleted"  # where orbax renames the steps it garbage-collects


def manager_options(**kwargs):
    """orbax CheckpointManagerOptions whose garbage collection is an atomic rename (see above)."""
    import orbax.checkpoint as ocp

    return ocp.CheckpointManagerOptions(todelete_subdir=DELETED_SUBDIR, **kwargs)


def purge_deleted(directory: str) -> None:
    """Delete the steps orbax garbage-collected into `<directory>/.deleted/` (call it when no
    save is in flight: at the start and the end of a run)."""
    shutil.rmtree(os.path.join(directory, DELETED_SUBDIR), ignore_errors=True)


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


def step_dirs(directory: str) -> dict[int, str]:
    """{step: path} of the step directories (integer names) under `directory`."""
    if not os.path.isdir(directory):
        return {}
    return {int(name): os.path.join(directory, name) for name in os.listdir(directory)
            if name.isdigit() and os.path.isdir(os.path.join(directory, name))}


def incomplete_reason(step_dir: str) -> str | None:
    """Why `step_dir` cannot be a complete checkpoint (None when it looks complete)."""
    for name in _METADATA_FILES:
        path = os.path.join(step_dir, name)
        if not os.path.isfile(path):
            return f"{name} is missing"
        try:
            with open(path) as f:
                json.load(f)
        except (OSError, ValueError) as e:
            return f"{name} is unreadable ({e})"
    item = os.path.join(step_dir, ITEM)
    for root, _, files in os.walk(item):
        if any(not (root == item and f in _ITEM_INDEX_FILES) for f in files):
            return None
    return f"{ITEM}/ holds no data files"


def move_aside(directory: str, step: int) -> str:
    """Rename step `step` of `directory` to `<directory>.damaged/<step>[.i]`; returns the path."""
    aside_root = os.path.normpath(directory) + ".damaged"
    os.makedirs(aside_root, exist_ok=True)
    target = os.path.join(aside_root, str(step))
    i = 0
    while os.path.exists(target):
        i += 1
        target = os.path.join(aside_root, f"{step}.{i}")
    os.rename(os.path.join(directory, str(step)), target)
    return target


def quarantine_incomplete(directory: str, warn: Callable[[str], None] = _warn) -> list[str]:
    """Move aside every incomplete step directory; returns the new paths."""
    moved = []
    for step, path in sorted(step_dirs(directory).items()):
        reason = incomplete_reason(path)
        if reason is not None:
            target = move_aside(directory, step)
            warn(f"checkpoint {path} is incomplete ({reason}); moved it to {target}")
            moved.append(target)
    return moved


def restore_newest_good(directory: str, make_manager: Callable[[], object],
                        restore: Callable[[object, int], object],
                        warn: Callable[[str], None] = _warn):
    """(manager, step, state) from the newest step that restores; (manager, None, None) if none.

    `make_manager()` opens an orbax CheckpointManager on `directory`; `restore(manager, step)`
    restores one step. Raises UsageError when steps existed but none restored, or when
    `directory` exists and is not a directory (checked before orbax starts: its asynchronous
    save threads would otherwise wait forever for a commit that cannot happen and keep the
    process from exiting).
    """
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise UsageError("--workdir", directory, "the checkpoint directory exists and is not a "
                         "directory")
    purge_deleted(directory)
    moved = quarantine_incomplete(directory, warn)
    while True:
        manager = make_manager()
        step = manager.latest_step()
        if step is None:
            if moved:
                raise UsageError("--workdir", directory,
                                 f"no checkpoint restores ({len(moved)} damaged, moved to "
                                 f"{os.path.normpath(directory)}.damaged/)")
            return manager, None, None
        try:
            return manager, step, restore(manager, step)
        except Exception as e:  # noqa: BLE001 -- any failure to restore: fall back, keep files
            manager.close()
            path = os.path.join(directory, str(step))
            target = move_aside(directory, step)
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            first = first.split(" See full TensorStore details")[0][:200]
            warn(f"checkpoint {path} does not restore ({type(e).__name__}: {first}); moved it "
                 f"to {target}, falling back to the previous one")
            moved.append(target)
