"""The GPUs this machine shows a sweep, and how workers are pinned to them (`--workers=auto`).

Which GPUs are visible is read without starting a JAX backend in the sweep's own process (a
backend there would take GPU memory before the workers that train start, and would see every
GPU). The rule, in order:

  1. `CUDA_VISIBLE_DEVICES` is set: its comma-separated entries, in order, up to the first one
     that cannot name a device (CUDA ignores everything from there on). An entry names a device
     when it is a non-negative integer or a `GPU-...` / `MIG-...` UUID, so "" and "-1" mean no
     GPU.
  2. It is unset: `nvidia-smi -L`, one entry per `GPU i:` line ("0", "1", ...), or, for a GPU
     split into MIG instances, one per `MIG ...` line (its `MIG-...` UUID). No `nvidia-smi`, or
     one that fails: no GPU.

Only NVIDIA GPUs are counted; on a TPU or ROCm host `auto` is one worker.

Pinning: with W > 1 workers and G >= 2 visible GPUs, worker slot i runs its cells with
`CUDA_VISIBLE_DEVICES` = GPU i mod G, set in the worker process before its JAX backend starts
(`pool.run_parallel`), so each cell trains on one GPU. `--workers=auto` is W = G then (one
worker per GPU). With one GPU or none, auto is W = 1 (cells one after another in the sweep's
own process: the default), and workers are not pinned.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable, Mapping, Sequence

_DEVICE_ENTRY = re.compile(r"\d+|GPU-[0-9A-Za-z-]+|MIG-[0-9A-Za-z/-]+")
_GPU_LINE = re.compile(r"^GPU (\d+):")
_MIG_LINE = re.compile(r"^\s+MIG .*\(UUID: (MIG-[^)\s]+)\)")


def parse_cuda_visible_devices(text: str) -> list[str]:
    """The devices a `CUDA_VISIBLE_DEVICES` value names, up to its first invalid entry."""
    out = []
    for entry in text.split(","):
        entry = entry.strip()
        if not _DEVICE_ENTRY.fullmatch(entry):
            break
        out.append(entry)
    return out


def parse_nvidia_smi(text: str) -> list[str]:
    """The devices `nvidia-smi -L` lists: GPU indices, or the MIG UUIDs of a GPU split into MIG
    instances (a process can use one MIG instance, so each is a device of its own)."""
    gpus: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        if m := _GPU_LINE.match(line):
            gpus.append((m.group(1), []))
        elif (m := _MIG_LINE.match(line)) and gpus:
            gpus[-1][1].append(m.group(1))
    return [device for gpu, migs in gpus for device in (migs or [gpu])]


def _nvidia_smi() -> str:
    try:
        proc = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=60,
                              check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return proc.stdout if proc.returncode == 0 else ""


def visible_gpus(environ: Mapping[str, str] | None = None,
                 nvidia_smi: Callable[[], str] = _nvidia_smi) -> list[str]:
    """The GPUs this process may use, by the module docstring's rule (no JAX backend started)."""
    environ = os.environ if environ is None else environ
    if "CUDA_VISIBLE_DEVICES" in environ:
        return parse_cuda_visible_devices(environ["CUDA_VISIBLE_DEVICES"])
    return parse_nvidia_smi(nvidia_smi())


def parse_workers(value: int | str) -> int | str:
    """`--workers`: an integer >= 1 (or its string), or "auto"; ValueError otherwise."""
    if value == "auto":
        return value
    if isinstance(value, str):
        try:
            value = int(value)
        except ValueError:
            raise ValueError(f"workers must be auto or an integer >= 1, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"workers must be auto or an integer >= 1, got {value!r}")
    return value


def resolve_workers(value: int | str, gpus: Sequence[str]) -> tuple[int, str]:
    """(W, why): "auto" is one worker per visible GPU when there are two or more, else 1."""
    value = parse_workers(value)
    if value != "auto":
        pinned = f", pinned to GPUs {', '.join(gpus)} in turn" if value > 1 and \
            len(gpus) >= 2 else ""
        return value, f"as asked{pinned}"
    if len(gpus) >= 2:
        return len(gpus), f"auto: one per visible GPU ({', '.join(gpus)})"
    seen = f"1 GPU visible ({gpus[0]})" if gpus else "no GPU visible"
    return 1, f"auto: {seen}, cells run one after another in this process"


def slot_envs(workers: int, gpus: Sequence[str]) -> list[dict[str, str]]:
    """Per worker slot, what its processes add to their environment: CUDA_VISIBLE_DEVICES = GPU
    i mod G with W > 1 workers and G >= 2 GPUs, nothing otherwise (every worker sees what this
    process sees)."""
    if workers > 1 and len(gpus) >= 2:
        return [{"CUDA_VISIBLE_DEVICES": gpus[i % len(gpus)]} for i in range(workers)]
    return [{} for _ in range(workers)]
