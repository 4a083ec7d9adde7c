"""Replica batches in sweeps (`experiments/sweep/groups.py`): cells that differ only in seed and
precision arm train in one program, and every cell's numbers and parameters are those of the
ungrouped sweep."""

import csv
import json
import os

import pytest

from experiments import sweep as sweep_lib
from experiments.sweep import groups as sweep_groups
from experiments.sweep.cells import job

TIMING = {"wall_time_s"}


def _config(**grid):
    base = dict(tasks=("add",), bases=(2,), ns={"default": (3, 4)}, ks=(3,), ls=(0,),
                precisions=("fp32", "bf16"), accumulations=("once",), layers=(2,), seeds=(0, 1))
    base.update(grid)
    return sweep_lib.sweep_config("groups", train_args="smoke,steps=10", grid=base)


def test_cells_group_by_everything_but_seed_and_precision(tmp_path):
    jobs = [job(cell, str(tmp_path)) for cell in sweep_lib.expand(_config())]
    assert len(jobs) == 8
    groups = sweep_groups.group_jobs(jobs, 8)
    assert [len(g["members"]) for g in groups] == [4, 4]  # one per n
    for g in groups:
        assert len({m["config"].task.n for m in g["members"]}) == 1
        assert {(m["config"].seed, m["config"].precision.name) for m in g["members"]} == \
            {(0, "fp32"), (1, "fp32"), (0, "bf16"), (1, "bf16")}
    assert [len(sweep_groups.members(g)) for g in sweep_groups.group_jobs(jobs, 3)] == \
        [3, 1, 3, 1]
    assert sweep_groups.group_jobs(jobs, 1) == jobs
    with pytest.raises(ValueError, match="replicas must be an integer >= 1, got 0"):
        sweep_groups.group_jobs(jobs, 0)


def _cells(workdir):
    with open(os.path.join(workdir, "cells.csv")) as f:
        rows = list(csv.DictReader(f))
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


def _shas(workdir):
    out = {}
    for name in sorted(os.listdir(workdir)):
        path = os.path.join(workdir, name, "summary.json")
        if os.path.isfile(path):
            with open(path) as f:
                out[name] = json.load(f)["params_sha256"]
    return out


# ~60 s (four worker processes); tests/training/test_train_group.py checks grouped runs
# against separate runs by default.
@pytest.mark.slow
def test_a_grouped_sweep_gives_the_ungrouped_numbers(tmp_path):
    config = _config(ns={"default": (3,)}, precisions=("fp32",))  # 2 cells: seeds 0 and 1
    alone, grouped = str(tmp_path / "alone"), str(tmp_path / "grouped")
    # Both in worker processes: their XLA threading (one thread each) is part of the bits.
    alone_lines, lines = [], []
    sweep_lib.run_sweep(config, alone, workers=2, log=alone_lines.append)  # auto: CPU, off
    assert any("replica batches: up to 1 cell(s) per program (auto: cpu backend" in line
               for line in alone_lines)
    result = sweep_lib.run_sweep(config, grouped, workers=2, replicas=2, log=lines.append)
    assert "[sweep] replica batches: up to 2 cell(s) per program (as asked; --replicas=off " \
        "or R to choose)" in lines
    assert result["counts"] == {"completed": 2}
    assert _cells(grouped) == _cells(alone)
    assert _shas(grouped) == _shas(alone) and len(set(_shas(alone).values())) == 2
    first, second = sorted(_shas(grouped))
    with open(os.path.join(grouped, second, "log.txt")) as f:
        assert f"log: {os.path.join(grouped, first, 'log.txt')}" in f.read()
    with pytest.raises(ValueError, match="replicas must be auto, off or an integer >= 1"):
        sweep_lib.run_sweep(config, grouped, replicas=0)


@pytest.mark.parametrize("value,backend,expected", [
    ("auto", "gpu", 8), ("auto", "tpu", 8), ("auto", "cpu", 1), ("off", "gpu", 1),
    ("3", "cpu", 3), (4, "cpu", 4), (1, "gpu", 1)])
def test_replicas_auto_groups_on_accelerators_only(monkeypatch, value, backend, expected):
    # workers > 1: the backend is looked up in a child process (faked here).
    monkeypatch.setattr(sweep_groups, "_probe_backend", lambda: backend)
    assert sweep_groups.resolve_replicas(value, workers=2)[0] == expected


@pytest.mark.parametrize("value", [0, -1, "0", "many", "", True, 2.5])
def test_replicas_refuses_what_is_not_auto_off_or_a_count(value):
    with pytest.raises(ValueError, match="replicas must be auto, off or an integer >= 1"):
        sweep_groups.resolve_replicas(value)


def test_the_backend_probe_runs_in_a_child_process():
    import jax

    assert sweep_groups._probe_backend() == jax.default_backend()
