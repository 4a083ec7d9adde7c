"""The one timing rule of the benchmarks: compile first, then the best of 3 blocks of `reps`
calls (robust to a noisy machine). Scripts here import it as `from timing import best_time`."""

from __future__ import annotations

import time

import jax


def best_time(fn, *args, reps: int) -> float:
    """Seconds per call of `fn(*args)`, after one compiling call."""
    jax.block_until_ready(fn(*args))  # compile
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(reps):
            out = fn(*args)
        jax.block_until_ready(out)
        best = min(best, (time.perf_counter() - start) / reps)
    return best
