"""`--launcher=submitit` (`experiments/sweep/launch.py`) with submitit's LocalExecutor: real job
processes, real pickling, real time limits and requeues; Slurm itself is not needed.

One sweep of two cells runs twice, once in the local pool (the reference) and once as submitit
jobs: a long cell whose job hits its time limit mid-training (the limit is set from the
reference's own timeline, so that the signal lands between the first and the last checkpoint
on any machine) and a cell that fails. The tests then check (a) the same cells.csv rows and
params_sha256 as the pool, (b) the requeue really happened and the resumed cell ends
bit-identical, (c) the failing cell is recorded as failed while the other finishes, and that a
re-run submits only what is not done.
"""

import csv
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time

import pytest

from arith_precision.common.cli_errors import UsageError
from experiments import sweep as sweep_lib
from experiments.sweep import launch
from tests import repo

REPO = str(repo.ROOT)
STEPS = 2000  # the long cell: checkpoints every 50 steps
LONG, BROKEN = "add_b2_n3_fp32_L2_s0", "add_b2_n3_fp32_L2_s1"
SIGNAL_DELAY_S = 60  # the local controller's hard kill comes this long after the requeue signal


def _config():
    grid = dict(tasks=("add",), bases=(2,), ns={"default": (3,)}, ks=(3,), ls=(0,),
                precisions=("fp32",), accumulations=("once",), layers=(2,), seeds=(0, 1))
    return sweep_lib.sweep_config("launcher", train_args=f"smoke,steps={STEPS}", grid=grid,
                                  overrides={"train": {"checkpoint_every": 50, "log_every": 50}})


def _break_cell(workdir):
    """BROKEN raises when training opens its checkpoint directory: it is a file."""
    (workdir / BROKEN).mkdir(parents=True)
    (workdir / BROKEN / "checkpoints").write_text("not a directory")


def _timed(run, metrics_path):
    """Run `run()` in a thread; return its result and when (seconds after the start) the cell
    logged its first and its last training line (steps 50 and STEPS)."""
    out, start, first, last = {}, time.time(), None, None
    thread = threading.Thread(target=lambda: out.update(result=run()))
    thread.start()
    while thread.is_alive():
        thread.join(0.1)
        if os.path.exists(metrics_path):
            with open(metrics_path) as f:
                steps = [json.loads(ln)["step"] for ln in f if ln.endswith("\n")]
            if steps and first is None:
                first = time.time() - start
            if steps and steps[-1] == STEPS and last is None:
                last = time.time() - start
    assert "result" in out, "the sweep raised (see the output above)"
    return out["result"], first, last


def _rows(workdir):
    """cells.csv without the timing column, paths inside error messages made relative."""
    with open(workdir / "cells.csv") as f:
        rows = list(csv.DictReader(f))
    return [{k: v.replace(str(workdir), "WORKDIR") for k, v in r.items() if k != "wall_time_s"}
            for r in rows]


def _sha(workdir, name):
    return json.loads((workdir / name / "summary.json").read_text())["params_sha256"]


def _resumed_steps(workdir):
    return [int(s) for s in re.findall(r"resumed from step (\d+)",
                                       (workdir / LONG / "log.txt").read_text())]


def _through_submitit(workdir, signal_s):
    """The sweep as submitit jobs whose requeue signal comes `signal_s` after a job starts."""
    _break_cell(workdir)
    options = launch.Options(cluster="local", gpus_per_job=0, array_parallelism=2,
                             time_limit_min=(signal_s + SIGNAL_DELAY_S + 0.5) / 60,
                             signal_delay_s=SIGNAL_DELAY_S, max_timeouts=3)
    lines = []
    start = time.time()
    result, first, last = _timed(
        lambda: sweep_lib.run_sweep(_config(), str(workdir), submitit=options, replicas="off",
                                    log=lines.append),
        workdir / LONG / "metrics.jsonl")
    return {"jobs": workdir, "options": options, "lines": lines, "result": result,
            "elapsed": time.time() - start, "timeline": (first, last, signal_s)}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("launcher")
    pool = base / "pool"
    _break_cell(pool)
    # The reference: the local pool with two workers, as `--workers=auto` gives them on a host
    # with two GPUs (CUDA_VISIBLE_DEVICES changes nothing on a CPU-only JAX).
    saved = os.environ.get("CUDA_VISIBLE_DEVICES")
    os.environ["CUDA_VISIBLE_DEVICES"] = "0,1"
    try:
        pool_lines = []
        _, first, last = _timed(
            lambda: sweep_lib.run_sweep(_config(), str(pool), workers="auto", replicas="off",
                                        log=pool_lines.append),
            pool / LONG / "metrics.jsonl")
    finally:
        if saved is None:
            del os.environ["CUDA_VISIBLE_DEVICES"]
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = saved
    assert first is not None and last is not None, pool_lines
    # The requeue signal comes between the first checkpoint (step 50) and the last step, as this
    # machine ran the same cell just now. A job starts later than a pool worker (one more
    # interpreter); if the signal missed the training, a second try takes its time from the
    # first try's own timeline (after a requeue at the start, shifted by that window).
    run = _through_submitit(base / "jobs", max(1, round(first + 0.5 * (last - first))))
    resumed = _resumed_steps(run["jobs"])
    if not (resumed and 0 < resumed[0] < STEPS):
        first, last, signal_s = run["timeline"]
        if first is None or last is None:  # every window ended before training: twice as long
            again = 2 * signal_s
        else:
            shift = signal_s if first > signal_s else 0
            again = max(1, round(first - shift + 0.5 * (last - first)))
        retry = _through_submitit(base / "jobs_again", again)
        retry["first_try"] = run
        run = retry
    return {**run, "pool": pool, "pool_lines": pool_lines}


def test_a_the_launcher_gives_the_pools_rows_and_parameters(runs):
    pool, jobs = runs["pool"], runs["jobs"]
    assert any("2 worker(s) (auto: one per visible GPU (0, 1))" in ln for ln in runs["pool_lines"])
    pinned = {json.loads((pool / name / "worker.json").read_text())["cuda_visible_devices"]
              for name in (LONG, BROKEN)}
    assert pinned == {"0", "1"}  # one worker per "GPU", each pinned to its own
    assert runs["result"]["counts"] == {"completed": 1, "error": 1}, runs["lines"]
    assert _rows(jobs) == _rows(pool)
    assert len(_rows(jobs)) == 2
    assert _sha(jobs, LONG) == _sha(pool, LONG)
    # The jobs were submitit's: one job per cell, each cell's job.json names its own.
    marks = [json.loads((jobs / name / "job.json").read_text()) for name in (LONG, BROKEN)]
    assert {m["cluster"] for m in marks} == {"local"} and marks[0]["job_id"] != marks[1]["job_id"]
    for mark in marks:
        assert os.path.exists(os.path.join(mark["folder"], f"{mark['job_id']}_0_log.out"))
    assert any("[sweep] submitit (local processes" in ln and "2 job(s) for 2 cell(s)" in ln
               for ln in runs["lines"])
    if runs["elapsed"] > 35:  # a run that long printed a heartbeat with the jobs' states
        assert any(ln.startswith("[sweep] heartbeat:") and "ETA" in ln and "| jobs: " in ln
                   for ln in runs["lines"]), runs["lines"]


def test_b_a_job_cut_by_its_time_limit_is_requeued_and_resumes_bit_identically(runs):
    jobs, pool = runs["jobs"], runs["pool"]
    log = (jobs / LONG / "log.txt").read_text()
    first, last, signal_s = runs["timeline"]
    timeline = f"steps 50..{STEPS} at {first:.0f}..{last:.0f} s; signal at {signal_s} s"
    resumed = _resumed_steps(jobs)
    assert resumed and 0 < resumed[0] < STEPS, (timeline, log[-3000:])
    # Each resume follows a signal (a signal before the first checkpoint restarts from scratch,
    # with no resume line) and goes back to the newest checkpoint at or before that step.
    signal_at = None
    for event in re.finditer(r"job signalled \(time limit or preemption\): requeued; .* \(at "
                             r"step (\d+)\)|resumed from step (\d+)", log):
        if event[1] is not None:
            signal_at = int(event[1])
        else:
            assert signal_at is not None and 0 < int(event[2]) <= signal_at, (timeline, log)
            signal_at = None
    summary = json.loads((jobs / LONG / "summary.json").read_text())
    assert summary["resumed_from_step"] == resumed[-1] and summary["steps"] == STEPS
    assert summary["status"] == "completed"
    mark = json.loads((jobs / LONG / "job.json").read_text())
    with open(os.path.join(mark["folder"], f"{mark['job_id']}_0_log.err")) as f:
        job_log = f.read()
    assert "Requeued job" in job_log and "Caught signal SIGUSR2" in job_log  # submitit's own
    # Bit-identical to the uninterrupted run of the pool, to the last parameter.
    assert _sha(jobs, LONG) == _sha(pool, LONG)
    assert (jobs / LONG / "metrics.jsonl").read_text().count("\n") == STEPS // 50
    ref = [json.loads(ln) for ln in (pool / LONG / "metrics.jsonl").read_text().splitlines()]
    got = [json.loads(ln) for ln in (jobs / LONG / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["loss"]) for r in got] == [(r["step"], r["loss"]) for r in ref]


def test_c_a_failing_cell_is_recorded_and_the_others_finish(runs):
    jobs = runs["jobs"]
    rows = {r["name"]: r for r in _rows(jobs)}
    assert rows[LONG]["status"] == "completed"
    assert rows[BROKEN]["status"] == "error" and "checkpoints" in rows[BROKEN]["error"]
    error = json.loads((jobs / BROKEN / "error.json").read_text())
    assert "Traceback" in error["traceback"]
    assert any(f"{BROKEN}: error: " in ln for ln in runs["lines"]), runs["lines"]
    # A re-run submits only what is not done: the failed cell, which fails again.
    before = (jobs / LONG / "summary.json").stat().st_mtime_ns
    old_job = json.loads((jobs / BROKEN / "job.json").read_text())["job_id"]
    lines = []
    again = sweep_lib.run_sweep(_config(), str(jobs), submitit=runs["options"],
                                replicas="off", log=lines.append)
    assert again["skipped"] == 1 and again["counts"] == {"error": 1}, lines
    assert (jobs / LONG / "summary.json").stat().st_mtime_ns == before
    assert any("1 job(s) for 1 cell(s)" in ln for ln in lines), lines
    assert json.loads((jobs / BROKEN / "job.json").read_text())["job_id"] != old_job


def test_a_rerun_refuses_while_a_job_of_an_earlier_run_holds_a_cell(tmp_path):
    import submitit

    cell = tmp_path / LONG
    cell.mkdir()
    (cell / "cell.json").write_text("{}")
    executor = submitit.LocalExecutor(tmp_path / "submitit")
    executor.update_parameters(timeout_min=2)
    job = executor.submit(time.sleep, 60)  # an earlier run's job, still running
    try:
        (cell / "job.json").write_text(json.dumps(
            {"cluster": "local", "job_id": job.job_id, "folder": str(tmp_path / "submitit"),
             "host": socket.gethostname(), "submitted": time.time()}))
        held = [{"name": LONG, "dir": str(cell), "config": None}]
        deadline = time.time() + 30  # until the controller has exec'd (its pid runs submitit)
        while not launch.active_jobs(held) and time.time() < deadline:
            time.sleep(0.1)
        with pytest.raises(UsageError, match=rf"--workdir: .*1 cell\(s\) are still held by jobs "
                           rf"of an earlier run .*{LONG}: job {job.job_id} RUNNING.*kill "
                           rf"{job.job_id}"):
            launch.check_no_active_jobs(held, str(tmp_path))
    finally:
        job.cancel()
    # Cancelled, or at the latest when its 60 s sleep ends (a loaded machine may start the
    # controller's signal handling late): either way the job ends within this deadline.
    deadline = time.time() + 120
    while launch.active_jobs(held) and time.time() < deadline:
        time.sleep(0.2)
    assert launch.active_jobs(held) == []  # ended: a re-run may submit the cell again


def test_bad_launcher_settings_are_refused_before_anything_runs(monkeypatch):
    ok = launch.Options(cluster="local")
    assert launch.checked(ok).cluster == "local"
    for changes, flag in [({"cluster": "pbs"}, "--cluster: pbs: must be one of"),
                          ({"gpus_per_job": 65}, "--gpus_per_job: 65: must be <= 64"),
                          ({"cells_per_job": 0}, "--cells_per_job: 0: must be >= 1"),
                          ({"array_parallelism": 0}, "--array_parallelism: 0"),
                          ({"time_limit_min": 0}, "--time_limit_min: 0: must be a number"),
                          ({"time_limit_min": float("nan")}, "--time_limit_min: nan"),
                          ({"signal_delay_s": 600, "time_limit_min": 10},
                           "--signal_delay_s: 600: must be shorter than the time limit"),
                          ({"partition": "gpu"}, "--partition: gpu: applies to Slurm"),
                          ({"cluster": "slurm", "time_limit_min": 1.5, "partition": "gpu"},
                           "--time_limit_min: 1.5: Slurm takes whole minutes"),
                          ({"cluster": "slurm", "partition": "a b"}, "--partition: a b")]:
        options = launch.Options(**{**dict(cluster="local"), **changes})
        with pytest.raises(UsageError, match=re.escape(flag)):
            launch.checked(options, dry_run=True)
    monkeypatch.setitem(sys.modules, "submitit", None)  # as if it were not installed
    with pytest.raises(UsageError, match=re.escape("--launcher: submitit: needs the submitit "
                                                   "package (pip install -e '.[slurm]')")):
        launch.checked(ok)


def test_plan_packs_replica_siblings_into_jobs():
    grid = dict(tasks=("add",), bases=(2,), ns={"default": (3, 4)}, ks=(3,), ls=(0,),
                precisions=("fp32", "bf16"), accumulations=("once",), layers=(2,),
                seeds=(0, 1, 2))
    cells = sweep_lib.expand(sweep_lib.sweep_config("plan", train_args="smoke", grid=grid))
    jobs = [{"name": c.name, "dir": None, "config": c.config} for c in cells]  # 2 x 6 siblings
    assert [len(j) for j in launch.plan_jobs(jobs, 1)] == [1] * 12
    plan = launch.plan_jobs(jobs, 4)
    # 6 siblings per n: a batch of 4 each, and the two batches of 2 left share a job.
    assert [sorted(c["config"].task.n for c in j) for j in plan] == [
        [3, 3, 3, 3], [4, 4, 4, 4], [3, 3, 4, 4]]
    assert [len(j) for j in launch.plan_jobs(jobs, 8)] == [6, 6]
    assert sorted(c["name"] for j in plan for c in j) == sorted(c.name for c in cells)


def test_dry_run_and_estimate_on_the_command_line(tmp_path):
    fig2 = "--config=experiments/configs/paper_fig2.py"
    cases = [[f"{fig2}:smoke", f"--workdir={tmp_path}/w", "--launcher=submitit",
              "--cluster=slurm", "--partition=gpu", "--cells_per_job=2", "--time_limit_min=60",
              "--dry_run"],
             [fig2, "--estimate", "--launcher=submitit", "--gpus=8"]]
    proc = subprocess.run([sys.executable, os.path.join(REPO, "tests", "cli_harness.py"),
                           "experiments.sweep", "experiments.sweep"], input=json.dumps(cases),
                          cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    dry, estimate = json.loads(proc.stdout)
    assert dry["returncode"] == 0, dry["stderr"]
    out = dry["stdout"]
    assert "6 cells, 0 already done" in out and "3 job(s) for 6 cell(s)" in out
    assert "job    0: 2 cell(s): add_b2_n3_fp32_L2_s0 (new), add_b2_n3_bf16_L2_s0 (new)" in out
    for line in ("#SBATCH --array=0-2%3", "#SBATCH --partition=gpu", "#SBATCH --time=60",
                 "#SBATCH --gpus-per-node=1", "#SBATCH --signal=USR2@90"):
        assert line in out.splitlines(), out
    assert not os.path.exists(tmp_path / "w")  # a dry run writes nothing
    assert estimate["returncode"] == 0, estimate["stderr"]
    assert re.search(r"on 8 GPU\(s\) \(submitit: 558 job\(s\) of up to 1 cell\(s\), 8 at once, 1 "
                     r"GPU\(s\) each\) the cells' FLOPs schedule to [\d.]+x the speed of one GPU",
                     estimate["stdout"]), estimate["stdout"]
