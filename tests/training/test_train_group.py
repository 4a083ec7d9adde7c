"""R runs in one program (`arith_precision/training/loop.py`): every replica writes exactly what a
run of its own writes (parameters bit-identical, same summary and metrics apart from timing),
also when the replicas differ in seed, precision and length, and when they resume at different
steps."""

import json
import os
import shutil

import pytest

from arith_precision import training as train
from arith_precision.training import config as train_config
from arith_precision.training import loop as train_group

# Two replicas that share nothing but the program: seed, data seed, precision and length differ
# (the group shrinks to B alone after step 12).
ARGS = {"a": "smoke,task=add,base=3,n=3,steps=12,seed=0,data_seed=0",
        "b": "smoke,task=add,base=3,n=3,steps=20,seed=1,data_seed=1,precision=bf16"}
TIMING = {"wall_time_s"}


def _configs():
    return [train_config.get_config(ARGS[name]) for name in ("a", "b")]


def _metrics(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    return [{k: v for k, v in r.items() if k != "steps_per_sec"} for r in rows]


def _same_run(summary, alone, workdir, alone_dir):
    assert summary["params_sha256"] == alone["params_sha256"]
    assert {k: v for k, v in summary.items() if k not in TIMING | {"resumed_from_step"}} == \
        {k: v for k, v in alone.items() if k not in TIMING | {"resumed_from_step"}}
    assert _metrics(workdir) == _metrics(alone_dir)


@pytest.fixture(scope="module")
def separate(tmp_path_factory):
    """Each config trained on its own by train_and_evaluate: (workdirs, summaries)."""
    root = tmp_path_factory.mktemp("separate")
    dirs = [str(root / name) for name in ("a", "b")]
    return dirs, [train.train_and_evaluate(c, d) for c, d in zip(_configs(), dirs, strict=True)]


def test_replicas_write_what_separate_runs_write(separate, tmp_path, capsys):
    alone_dirs, alone = separate
    assert alone[0]["params_sha256"] != alone[1]["params_sha256"]
    dirs = [str(tmp_path / name) for name in ("a", "b")]
    summaries = train_group.train_group(_configs(), dirs)
    assert [s["steps"] for s in summaries] == [12, 20]
    for summary, single, d, a in zip(summaries, alone, dirs, alone_dirs, strict=True):
        _same_run(summary, single, d, a)
        with open(os.path.join(d, "summary.json")) as f:
            assert json.load(f)["params_sha256"] == summary["params_sha256"]
    out = capsys.readouterr().out
    assert "[a] step 12/12" in out and "[b] step 20/20" in out  # progress names its replica

    # Resume at different steps: a finished (its summary lost), b killed after step 10.
    os.remove(os.path.join(dirs[0], "summary.json"))
    os.remove(os.path.join(dirs[1], "summary.json"))
    shutil.rmtree(os.path.join(dirs[1], "checkpoints", "20"))
    resumed = train_group.train_group(_configs(), dirs)
    assert [s["resumed_from_step"] for s in resumed] == [12, 10]
    for summary, single, d, a in zip(resumed, alone, dirs, alone_dirs, strict=True):
        _same_run(summary, single, d, a)


def test_bad_groups_are_refused(tmp_path):
    with pytest.raises(ValueError, match="one workdir per config, got 2 config"):
        train_group.train_group(_configs(), [str(tmp_path / "a")])
    with pytest.raises(ValueError, match="its own workdir"):
        train_group.train_group(_configs(), [str(tmp_path / "a"), str(tmp_path / "a")])
    assert not (tmp_path / "a").exists()  # refused before any work
