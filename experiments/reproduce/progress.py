"""The main job's whole-job progress line: every 30 s, the phase, how far it is, and an ETA for the
whole job, including the frontier phase and the time before the first sweep cell finishes.

    [reproduce] progress: phase sweep (2 of 5), 41% of it | elapsed 6m10s | ETA 7m05s for the job

The ETA is the current phase's remaining time plus the expected time of the phases still to run.
A phase that reports its progress as a fraction (the frontier: sizes n done; the sweep: training
steps done, read from the cells' metrics) extrapolates from its own rate once it has one; before
that, and for the phases that report none, the phase's expected time stands in: its wall time in
the last run of the same mode (phases.json) when known, else the mode's estimate (`EXPECTED`).
A phase without a rate that runs past its expected time has an unknown remainder: the line then
says "ETA at least ..." (the phases still to run).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence

from experiments.sweep.cells import DONE, cell_status, current_step, duration

# Expected phase wall times (seconds) of each mode on a busy 2-core CPU, used before a phase has
# measured its own rate and when no earlier run of the mode is recorded: quick from its measured
# runs (frontier ~3 min, sweep ~8, quant ~1.5); medium is sized for <= 2.5 h in all.
EXPECTED = {
    "smoke": {"frontier": 60, "sweep": 90, "quant": 60, "probe": 30, "report": 5},
    "quick": {"frontier": 180, "sweep": 480, "quant": 90, "probe": 90, "report": 5},
    "medium": {"frontier": 180, "sweep": 7200, "quant": 300, "probe": 300, "report": 5},
    "full": {"frontier": 14400, "sweep": 86400, "quant": 7200, "probe": 3600, "report": 10},
}


def expected_times(mode: str, previous: Mapping[str, Mapping]) -> dict[str, float]:
    """Per phase, its wall time in an earlier run of `mode` (phases.json) or the estimate."""
    out = dict(EXPECTED.get(mode, EXPECTED["full"]))
    for phase, record in previous.items():
        if record.get("mode") == mode and not record.get("reused"):
            out[phase] = float(record["seconds"])
    return out


class SweepFraction:
    """The fraction of this run's training steps done so far, from the cells' metrics on disk
    (cells done before this run are not this run's work)."""

    def __init__(self, jobs: Sequence[tuple[str, int]]):
        """`jobs`: (cell directory, planned steps) of every cell of the sweep."""
        self.jobs = list(jobs)
        self.start = {d: self._steps(d, planned) for d, planned in self.jobs}

    @staticmethod
    def _steps(cell_dir: str, planned: int) -> int:
        # A finished cell counts in full: early stopping can end it before its last step.
        return planned if cell_status(cell_dir) in DONE else current_step(cell_dir)

    def __call__(self) -> float | None:
        todo = sum(planned - self.start[d] for d, planned in self.jobs)
        if todo <= 0:
            return None
        done = sum(self._steps(d, planned) - self.start[d] for d, planned in self.jobs)
        return min(1.0, done / todo)


def sweep_fraction(configs, sweep_dir: str) -> SweepFraction:
    """`SweepFraction` over the cells of a sweep config (or a list of them: a staged sweep) in
    `sweep_dir`; each cell counts its step cap."""
    from experiments.sweep.grid import expand

    configs = configs if isinstance(configs, list | tuple) else [configs]
    cells = {cell.name: int(cell.config.train.steps) for c in configs for cell in expand(c)}
    return SweepFraction([(os.path.join(sweep_dir, name), steps)
                          for name, steps in cells.items()])


class JobProgress:
    """Prints the whole-job progress line every `every` seconds from a background thread, and
    once when each phase starts."""

    def __init__(self, phases: Sequence[str], expected: Mapping[str, float],
                 log: Callable[[str], None], every: float = 30.0):
        self.phases, self.expected, self.log, self.every = list(phases), expected, log, every
        self.start = time.time()
        self.current: str | None = None
        self.phase_start = self.start
        self.fraction: Callable[[], float | None] = lambda: None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()

    @contextlib.contextmanager
    def phase(self, name: str, fraction: Callable[[], float | None] | None = None
              ) -> Iterator[None]:
        """Mark `name` as the running phase; `fraction()` says how far it is (None: unknown)."""
        self.current, self.phase_start = name, time.time()
        self.fraction = fraction or (lambda: None)
        self.log(self.line())
        try:
            yield
        finally:
            self.current, self.fraction = None, lambda: None

    def eta(self) -> float:
        """Seconds left for the job: this phase's remainder plus the phases after it."""
        return self._eta()[0]

    def _eta(self) -> tuple[float, bool]:
        """(seconds left, whether that is only a lower bound: the phase has no rate and has run
        past its expected time, so its remainder is unknown and counted as 0)."""
        if self.current is None:
            return 0.0, False
        elapsed = time.time() - self.phase_start
        f = self._fraction()
        if f is not None and f >= 0.02 and elapsed > 5:  # enough progress to extrapolate
            left, lower_bound = elapsed * (1 - f) / f, False
        else:
            expected = self.expected.get(self.current, 0.0)
            left, lower_bound = max(0.0, expected - elapsed), elapsed > expected
        later = self.phases[self.phases.index(self.current) + 1:]
        return left + sum(self.expected.get(p, 0.0) for p in later), lower_bound

    def _fraction(self) -> float | None:
        try:
            return self.fraction()
        except Exception:  # noqa: BLE001 -- a progress line must never stop the job
            return None

    def line(self) -> str:
        if self.current is None:
            return (f"[reproduce] progress: between phases | elapsed "
                    f"{duration(time.time() - self.start)}")
        f = self._fraction()
        how_far = "" if f is None else f", {100 * f:.0f}% of it"
        seconds, lower_bound = self._eta()
        return (f"[reproduce] progress: phase {self.current} "
                f"({self.phases.index(self.current) + 1} of {len(self.phases)}){how_far} | "
                f"elapsed {duration(time.time() - self.start)} | ETA "
                f"{'at least ' if lower_bound else ''}{duration(seconds)} for the job")

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            if self.current is not None:
                self.log(self.line())
