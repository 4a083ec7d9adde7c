"""The main job's whole-job progress line: printed every interval from the start of a phase (no
waiting for a sweep cell to finish), with an ETA from the expected phase times until the phase
has a rate of its own, then from that rate."""

import json
import os
import re
import time

import pytest

from experiments.reproduce import progress as job_progress


def test_lines_come_every_interval_with_the_expected_eta_before_any_progress():
    lines = []
    tracker = job_progress.JobProgress(["frontier", "sweep"], {"frontier": 100, "sweep": 50},
                                       lines.append, every=0.05)
    with tracker, tracker.phase("frontier", lambda: 0.0):
        # one line when the phase starts, then one per interval (a loaded machine may wake the
        # thread late: wait up to 30 s for two more lines)
        deadline = time.time() + 30
        while len(lines) < 3 and time.time() < deadline:
            time.sleep(0.05)
    assert len(lines) >= 3
    head, eta = re.fullmatch(r"(.*) \| ETA 2m(\d\d)s for the job", lines[0]).groups()
    assert head.startswith("[reproduce] progress: phase frontier (1 of 2), 0% of it | elapsed ")
    assert 25 <= int(eta) <= 30  # 100 s of frontier + 50 s of sweep, less the time elapsed
    count = len(lines)
    time.sleep(0.2)
    assert len(lines) == count  # the thread stops with the job


def test_eta_extrapolates_the_phase_rate_once_it_has_one():
    tracker = job_progress.JobProgress(["frontier", "sweep", "report"],
                                       {"frontier": 100, "sweep": 50, "report": 5},
                                       lambda line: None)
    with tracker.phase("frontier", lambda: 0.5):
        tracker.phase_start = time.time() - 20  # half done after 20 s: 20 s more
        assert abs(tracker.eta() - (20 + 50 + 5)) < 1
    with tracker.phase("sweep"):  # no fraction: the expected time stands in
        tracker.phase_start = time.time() - 30
        assert abs(tracker.eta() - (20 + 5)) < 1
        tracker.phase_start = time.time() - 80  # over the expected time: not negative,
        assert abs(tracker.eta() - 5) < 1  # and said to be a lower bound
        assert tracker.line().endswith("| ETA at least 0m05s for the job")


def test_expected_times_prefer_an_earlier_measured_run_of_the_same_mode():
    previous = {"frontier": {"seconds": 42.0, "mode": "quick"},
                "sweep": {"seconds": 7.0, "mode": "smoke"},
                "quant": {"seconds": 3.0, "mode": "quick", "reused": True}}
    expected = job_progress.expected_times("quick", previous)
    assert expected["frontier"] == 42.0
    assert expected["sweep"] == job_progress.EXPECTED["quick"]["sweep"]  # another mode's
    assert expected["quant"] == job_progress.EXPECTED["quick"]["quant"]  # reused: not measured


def test_sweep_fraction_counts_this_runs_training_steps(tmp_path):
    cells = [str(tmp_path / name) for name in ("a", "b", "c")]
    for d in cells:
        os.makedirs(d)

    def log_step(d, step):
        with open(os.path.join(d, "metrics.jsonl"), "a") as f:
            f.write(json.dumps({"step": step}) + "\n")

    log_step(cells[0], 50)  # half of cell a was trained before this run
    with open(os.path.join(cells[2], "summary.json"), "w") as f:
        json.dump({"status": "completed"}, f)  # cell c was done before this run
    fraction = job_progress.SweepFraction([(cells[0], 100), (cells[1], 100), (cells[2], 100)])
    assert fraction() == 0.0  # 150 steps to go
    log_step(cells[0], 80)
    log_step(cells[1], 45)
    assert fraction() == (30 + 45) / 150
    with open(os.path.join(cells[1], "summary.json"), "w") as f:
        json.dump({"status": "completed"}, f)  # early stopping ended b at step 45
    assert fraction() == (30 + 100) / 150


def _progress(total, workers, skipped=0):
    from experiments.sweep.cells import Progress
    lines = []
    return Progress(total, skipped, lines.append, workers), lines


def test_sweep_eta_divides_worker_time_by_the_workers_busy():
    # Two workers: the first cell took 60 s while another ran beside it, so 11 cells left take
    # 60 * 11 / 2 s, not 60 * 11 (the first ETA was twice the truth).
    p, lines = _progress(12, workers=2)
    p.update({"name": "c0", "status": "completed", "wall_time_s": 60.0})
    assert p.eta() == pytest.approx(330.0)
    assert "ETA 5m30s" in lines[-1]
    one, _ = _progress(12, workers=1)
    one.update({"name": "c0", "status": "completed", "wall_time_s": 60.0})
    assert one.eta() == pytest.approx(660.0)
    # The last cell left runs on one worker whatever W is.
    p, _ = _progress(2, workers=2)
    p.update({"name": "c0", "status": "completed", "wall_time_s": 60.0})
    assert p.eta() == pytest.approx(60.0)


def test_sweep_eta_charges_a_replica_batch_per_cell():
    # Three cells trained in one 90 s program cost 30 s of worker time each; 9 cells left in
    # batches of 3 keep both workers busy: 30 * 9 / 2.
    p, _ = _progress(12, workers=2)
    for i in range(3):
        p.update({"name": f"c{i}", "status": "completed", "wall_time_s": 90.0,
                  "cells_in_program": 3})
    assert p.eta() == pytest.approx(135.0)
    # A record with no time (a cell found done after a worker died) does not count as 0 s.
    p.update({"name": "c3", "status": "completed", "wall_time_s": 0.0})
    assert p.eta() == pytest.approx(30.0 * 8 / 2)
