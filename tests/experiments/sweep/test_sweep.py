"""Sweeps: outputs, resume after SIGKILL, diverged and crashing cells, shards, config errors.

Every training run here uses the `smoke` settings (2 layers, d=32, 20 steps, 32 eval examples):
the tests check the sweep machinery, not what the models learn.
"""

import csv
import glob
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from experiments import sweep as sweep_lib
from experiments.configs import formats, paper_fig2
from experiments.sweep import cells as sweep_cells
from tests import repo

REPO = str(repo.ROOT)


def _cli(workdir, config_arg, *extra, wait=True, stdout=None):
    cmd = [sys.executable, "-m", "experiments.sweep",
           f"--config=experiments/configs/paper_fig2.py:{config_arg}", f"--workdir={workdir}",
           *extra]
    if not wait:
        return subprocess.Popen(cmd, cwd=REPO, stdout=stdout, stderr=subprocess.STDOUT)
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=False,
                          timeout=600)


def _csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def _summary_mtimes(workdir):
    return {os.path.basename(os.path.dirname(p)): os.stat(p).st_mtime_ns
            for p in glob.glob(os.path.join(workdir, "*", "summary.json"))}


def _tiny_grid(**changes):
    grid = dict(tasks=("add",), bases=(2,), ns={"default": (3, 4)}, ks=(3,), ls=(0,),
                precisions=("fp32",), accumulations=("once",), layers=(2,), seeds=(0,))
    grid.update(changes)
    return grid


def test_tiny_sweep_in_parallel_writes_tables_report_and_plots(tmp_path):
    config = paper_fig2.get_config("smoke,tasks=add,ns=3;4")  # 2 n x 2 precisions = 4 cells
    lines = []
    result = sweep_lib.run_sweep(config, str(tmp_path), workers=2, log=lines.append)
    assert result["cells"] == 4 and result["skipped"] == 0
    assert result["counts"] == {"completed": 4}
    assert any("ETA" in line and "4/4 cells" in line for line in lines), lines

    cells = _csv(tmp_path / "cells.csv")
    assert sorted(r["name"] for r in cells) == [
        "add_b2_n3_bf16_L2_s0", "add_b2_n3_fp32_L2_s0", "add_b2_n4_bf16_L2_s0",
        "add_b2_n4_fp32_L2_s0"]
    assert all(r["status"] == "completed" and 0 <= float(r["exact_match"]) <= 1 for r in cells)
    # Early stopping (validation at steps 10 and 20 of the smoke runs): each cell either
    # converged at one of those steps or says how its validation curve went.
    for r in cells:
        summary = json.loads((tmp_path / r["name"] / "summary.json").read_text())
        assert [h["step"] for h in summary["validation"]] in ([10], [10, 20])
        converged = summary["steps_to_converge"]
        assert r["convergence"] == ("converged" if converged else r["convergence"])
        assert r["convergence"] in ("converged", "rising", "flat")
        assert r["steps_to_converge"] == ("" if converged is None else str(converged))
    results = _csv(tmp_path / "results.csv")
    assert len(results) == 4
    for key in ("task", "base", "n", "k", "l", "precision", "accumulation", "layers",
                "num_seeds", "exact_match_mean", "exact_match_std", "exact_match_min",
                "exact_match_max", "digit_accuracy_mean", "num_completed", "num_diverged",
                "num_error"):
        assert key in results[0]
    assert {r["precision"] for r in results} == {"fp32", "bf16"}
    report = (tmp_path / "report.md").read_text()
    assert "| n | fp32 | bf16 |" in report and "ADD, base 2, 2 layers" in report
    assert "Convergence per seed (early stopping)" in report
    assert "![exact_match](exact_match.png)" in report
    for name in ("exact_match.png", "digit_accuracy.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Each cell ran in its own spawned process, with its output in its own log.
    pids = {json.loads((tmp_path / r["name"] / "worker.json").read_text())["pid"]
            for r in cells}
    assert len(pids) == 4 and os.getpid() not in pids
    assert "eval n=" in (tmp_path / "add_b2_n3_fp32_L2_s0" / "log.txt").read_text()

    # Re-running does nothing but re-aggregate; aggregate also works on its own.
    before = _summary_mtimes(tmp_path)
    os.remove(tmp_path / "results.csv")
    again = sweep_lib.run_sweep(config, str(tmp_path), workers=2, log=lines.append)
    assert again["skipped"] == 4 and again["counts"] == {}
    assert _summary_mtimes(tmp_path) == before and (tmp_path / "results.csv").exists()
    os.remove(tmp_path / "report.md")
    sweep_lib.aggregate(str(tmp_path))
    assert (tmp_path / "report.md").exists()

    # The same directory with another config is refused, naming the difference.
    with pytest.raises(ValueError, match="train.steps: 20 -> 30"):
        sweep_lib.run_sweep(paper_fig2.get_config("smoke,tasks=add,ns=3;4,steps=30"),
                            str(tmp_path), log=lines.append)


def test_killed_sweep_resumes_without_redoing_finished_cells(tmp_path):
    args = "smoke,tasks=add,precisions=fp32,ns=3;4;5"  # 3 cells, run one after the other
    with open(tmp_path / "first.log", "w") as out:
        proc = _cli(tmp_path / "w", args, wait=False, stdout=out)
        deadline = time.time() + 300
        while time.time() < deadline and not _summary_mtimes(tmp_path / "w"):
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finished = _summary_mtimes(tmp_path / "w")
    assert 1 <= len(finished) < 3, (tmp_path / "first.log").read_text()

    resumed = _cli(tmp_path / "w", args)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"{len(finished)} already done" in resumed.stdout
    after = _summary_mtimes(tmp_path / "w")
    assert len(after) == 3
    assert {name: after[name] for name in finished} == finished  # not redone
    assert [r["status"] for r in _csv(tmp_path / "w" / "cells.csv")] == ["completed"] * 3


def test_diverged_and_crashing_cells_are_recorded_and_the_sweep_goes_on(tmp_path):
    config = sweep_lib.sweep_config(
        "robustness", train_args="smoke", grid=_tiny_grid(ns={"default": (3, 4, 5)}),
        rules=[{"when": {"n": 4}, "set": {"optim": {"learning_rate": 1e30}}}])  # diverges
    # The n = 5 cell crashes at run time: its checkpoint directory is a file. (Bad config values
    # such as eval.batch_size=0 no longer get that far: the sweep rejects them up front.)
    (tmp_path / "add_b2_n5_fp32_L2_s0").mkdir()
    (tmp_path / "add_b2_n5_fp32_L2_s0" / "checkpoints").write_text("not a directory")
    bad_cell = sweep_lib.sweep_config(
        "bad", train_args="smoke", grid=_tiny_grid(ns={"default": (5,)}),
        rules=[{"when": {"n": 5}, "set": {"eval": {"batch_size": 0}}}])
    with pytest.raises(ValueError, match="cell add_b2_n5_fp32_L2_s0: eval.batch_size: 0"):
        sweep_lib.run_sweep(bad_cell, str(tmp_path / "bad"))
    assert not (tmp_path / "bad" / "add_b2_n5_fp32_L2_s0").exists()  # nothing ran
    lines = []
    result = sweep_lib.run_sweep(config, str(tmp_path), log=lines.append)
    assert result["counts"] == {"completed": 1, "diverged": 1, "error": 1}
    rows = {r["n"]: r for r in _csv(tmp_path / "cells.csv")}
    assert rows["3"]["status"] == "completed"
    assert rows["4"]["status"] == "diverged" and int(rows["4"]["diverged_at_step"]) >= 1
    assert rows["5"]["status"] == "error" and "checkpoints" in rows["5"]["error"]
    error = json.loads((tmp_path / "add_b2_n5_fp32_L2_s0" / "error.json").read_text())
    assert error["status"] == "error" and "Traceback" in error["traceback"]
    results = {r["n"]: r for r in _csv(tmp_path / "results.csv")}
    assert (results["4"]["num_diverged"], results["4"]["exact_match_mean"]) == ("1", "")
    assert results["5"]["num_error"] == "1"
    report = (tmp_path / "report.md").read_text()
    assert "`add_b2_n4_fp32_L2_s0`: diverged" in report
    assert "`add_b2_n5_fp32_L2_s0`: error: " in report

    # Re-running skips the completed and diverged cells and retries the failed one.
    again = sweep_lib.run_sweep(config, str(tmp_path), log=lines.append)
    assert again["skipped"] == 2 and again["counts"] == {"error": 1}


def test_shards_partition_the_grid_and_bad_shards_fail_clearly(tmp_path):
    cells = sweep_lib.expand(paper_fig2.get_config("smoke"))
    assert [c.index for c in cells] == list(range(6))
    shards = [sweep_lib.select_shard(cells, (i, 4)) for i in range(4)]
    assert [[c.index for c in s] for s in shards] == [[0, 4], [1, 5], [2], [3]]
    assert sweep_lib.parse_shard("1/3") == (1, 3) and sweep_lib.parse_shard(None) is None
    for bad in ("3/3", "-1/2", "0/0", "a/b", "1", "1/2/3"):
        with pytest.raises(ValueError, match="bad shard"):
            sweep_lib.parse_shard(bad)

    listed = _cli(tmp_path, "smoke", "--shard=1/2", "--dry_run")
    assert listed.returncode == 0, listed.stderr
    names = [line.split()[1] for line in listed.stdout.splitlines() if line[:5].strip().isdigit()]
    assert names == [c.name for c in cells if c.index % 2 == 1]
    bad = _cli(tmp_path, "smoke", "--shard=2/2")
    assert bad.returncode != 0 and "bad shard '2/2'" in bad.stderr
    assert not os.listdir(tmp_path)  # nothing ran


def test_config_errors_are_clear(tmp_path):
    for arg, message in [("bogus=1", "bogus: 1: unknown sweep config key"),
                         ("tasks=add;sub", r"\['sub'\]"),
                         ("seeds=0", "seeds"),
                         ("smoke=1", "is a switch"),
                         ("smoke,quick", "one of"),
                         ("fast", "neither key=value nor a switch"),
                         ("native=2", "native")]:
        with pytest.raises(ValueError, match=message):
            paper_fig2.get_config(arg)
    with pytest.raises(ValueError, match="native: 1: unknown sweep config key"):
        formats.get_config("native=1")
    with pytest.raises(ValueError, match="cell add_b2_n3_e9m99_L2_s0: .*e9m99"):
        sweep_lib.expand(paper_fig2.get_config("smoke,tasks=add,precisions=e9m99"))
    with pytest.raises(ValueError, match="bad grid.precisions entry 'bf16@fast'"):
        paper_fig2.get_config("precisions=bf16@fast")

    def build(**kwargs):
        kwargs.setdefault("grid", _tiny_grid())
        return sweep_lib.expand(sweep_lib.sweep_config("t", train_args="smoke", **kwargs))

    with pytest.raises(ValueError, match="unknown training config key 'train.stepz'"):
        build(overrides={"train": {"stepz": 5}})
    with pytest.raises(ValueError, match="task.n is a grid coordinate"):
        build(overrides={"task": {"n": 5}})
    with pytest.raises(ValueError, match=r"rules\[0\].when: unknown coordinate"):
        build(rules=[{"when": {"size": 3}, "set": {}}])
    with pytest.raises(ValueError, match="grid.ns has no entry for task 'mul' in base 2"):
        build(grid=_tiny_grid(tasks=("add", "mul"), ns={"add": (3,)}))
    with pytest.raises(ValueError, match="grid.ns key 'multiply'"):
        build(grid=_tiny_grid(ns={"multiply": (3,)}))
    with pytest.raises(ValueError, match=r"unknown grid key\(s\) \['seed'\]"):
        grid = _tiny_grid()
        grid["seed"] = grid.pop("seeds")
        build(grid=grid)
    with pytest.raises(ValueError, match="cell mul_b2_n3_l7_fp32_L2_s0: .*l"):
        build(grid=_tiny_grid(tasks=("mul",), ls=(7,)))

    proc = _cli(tmp_path, "smoke,bogus=1")
    assert proc.returncode != 0 and "bogus" in proc.stderr


def test_real_configs_expand_to_valid_readable_cells():
    fig2 = sweep_lib.expand(paper_fig2.get_config())
    names = [c.name for c in fig2]
    assert len(names) == len(set(names)) == 558  # 186 cells x 3 arms
    assert {c.config.precision.name for c in fig2} == {"fp32", "pure_bf16", "bf16"}
    assert {c.config.early_stop.every for c in fig2} == {1000}
    assert {"add_b10_n32_fp32_L5_s2", "iter_add_b2_n8_k3_bf16_L3_s0",
            "mul_b10_n4_bf16_L3_s1"} <= set(names)
    cell = fig2[names.index("iter_add_b2_n8_k3_bf16_L3_s0")]
    assert (cell.config.task.k, cell.config.train.batch_size, cell.config.train.steps) == \
        (3, 512, 100000)
    quick = sweep_lib.expand(paper_fig2.get_config("quick,tasks=mul,seeds=2"))
    assert len(quick) == 2 * 9 * 3 and all(c.config.train.steps == 20000 for c in quick)
    fmts = [c.name for c in sweep_lib.expand(formats.get_config())]
    assert {"iter_add_b2_n8_k3_fixed6.5_L3_s0", "mul_b2_n6_bf16-sequential_L3_s1",
            "mul_b2_n6_pure_bf16_L3_s1", "iter_add_b2_n4_k3_e4m3_L3_s0"} <= set(fmts)
    crossed = sweep_lib.expand(formats.get_config(
        "smoke,tasks=mul,precisions=bf16,accumulations=once;sequential"))
    assert [(c.coords["precision"], c.coords["accumulation"]) for c in crossed] == \
        [("bf16", "once"), ("bf16", "sequential")]


def test_heartbeat_reports_running_cells_and_a_step_based_eta(tmp_path):
    cells = sweep_lib.expand(paper_fig2.get_config("smoke,tasks=add,ns=3;4,precisions=fp32"))
    jobs = [sweep_cells.job(cell, str(tmp_path)) for cell in cells]  # 2 cells of 20 steps
    for job in jobs:
        os.makedirs(job["dir"])
    lines = []
    with sweep_cells.Heartbeat(jobs, lines.append, every=0.05) as beat:
        assert "ETA unknown" in beat.line() and "running: starting" in beat.line()
        # The first cell starts and logs step 10 of 20; the second has not started.
        (tmp_path / jobs[0]["name"] / "worker.json").write_text(
            json.dumps({"pid": 1, "start": time.time()}))
        (tmp_path / jobs[0]["name"] / "metrics.jsonl").write_text(
            json.dumps({"step": 5}) + "\n" + json.dumps({"step": 10}) + "\n")
        time.sleep(0.3)
        line = beat.line()
    assert f"running: {jobs[0]['name']} 10/20 |" in line and "0/2 cells" in line
    rate = float(re.search(r"at ([\d.]+) steps/s", line).group(1))
    eta = re.search(r"ETA at most (\d+)m(\d+)s", line)
    assert rate > 0 and eta  # 30 steps remain at `rate` steps/s
    assert abs(int(eta.group(1)) * 60 + int(eta.group(2)) - 30 / rate) <= 1
    assert len(lines) >= 2 and all(ln.startswith("[sweep] heartbeat:") for ln in lines)
    n = len(lines)
    time.sleep(0.2)
    assert len(lines) == n  # stopped with the block
