"""Early stopping: the rule, where a run stops (not before, not after), and exact resume."""

import json
import os
import shutil

import pytest

from arith_precision import training as train
from arith_precision.training import config as train_config
from arith_precision.training import early_stop
from tests import killed_run


def _rows(*values, every=10):
    return [{"step": every * (i + 1), "exact_match": v} for i, v in enumerate(values)]


@pytest.mark.parametrize("values,patience,expected", [
    ((0.99, 0.99), 2, True),
    ((0.5, 0.99, 0.99), 2, True),
    ((0.99, 0.98), 2, False),   # the last one is below
    ((0.99,), 2, False),        # not enough validations yet
    ((0.99, 0.5, 0.99), 2, False),  # not consecutive
    ((0.5, 0.995), 1, True),
])
def test_rule(values, patience, expected):
    rule = early_stop.EarlyStop(every=10, threshold=0.99, patience=patience)
    assert rule.converged(_rows(*values)) is expected


def test_rule_waits_for_min_steps_and_ignores_missing_scores():
    rule = early_stop.EarlyStop(every=10, threshold=0.9, patience=2, min_steps=40)
    assert not rule.converged(_rows(0.95, 0.99))            # steps 10, 20 < 40
    assert rule.converged(_rows(0.1, 0.2, 0.95, 0.99))      # streak ends at 40
    assert not rule.converged(_rows(0.95, None))            # no score (nothing held out)
    with pytest.raises(ValueError, match="early_stop.protocol 'test'"):
        early_stop.EarlyStop(every=10, protocol="test")


def _config(steps=400, threshold=0.9, keep=2):
    cfg = train_config.get_config(f"smoke,task=add,base=2,n=3,steps={steps},batch=64,lr=3e-3,"
                                  "early_stop=20")
    cfg.unlock()
    cfg.early_stop.update(num_examples=64, batch_size=64, threshold=threshold)
    cfg.train.update(checkpoint_every=20, log_every=20, keep_checkpoints=keep)
    return cfg


@pytest.fixture(scope="module")
def converged_run(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("converged"))
    return workdir, train.train_and_evaluate(_config(keep=50), workdir)


def test_stops_at_the_first_streak_and_not_before(converged_run):
    workdir, summary = converged_run
    history = summary["validation"]
    assert history == early_stop.read_history(workdir)
    assert [h["step"] for h in history] == list(range(20, summary["steps"] + 1, 20))
    ems = [h["exact_match"] for h in history]
    # It stopped when the rule held, and no earlier pair of validations met it.
    assert ems[-1] >= 0.9 and ems[-2] >= 0.9
    assert not any(a >= 0.9 and b >= 0.9 for a, b in zip(ems[:-2], ems[1:-1], strict=True))
    assert summary["steps_to_converge"] == summary["steps"] == history[-1]["step"] < 400
    assert summary["early_stop"]["every"] == 20 and summary["status"] == "completed"
    assert os.path.isdir(os.path.join(workdir, "checkpoints", str(summary["steps"])))


def test_resume_from_a_mid_run_checkpoint_is_bit_identical(converged_run, tmp_path):
    workdir, summary = converged_run
    # What a kill right after the checkpoint of step 100 leaves: later checkpoints never
    # written, no summary, validation and metric lines past 100 (written before the kill is
    # simulated as lost too: the resumed run must rewrite them identically).
    copy = killed_run.killed_copy(workdir, str(tmp_path / "killed"), after_step=100)
    early_stop.rewrite_history(copy, early_stop.read_history(copy, up_to=80))  # 100's lost
    resumed = train.train_and_evaluate(_config(keep=50), copy)
    assert resumed["resumed_from_step"] == 100
    assert resumed["params_sha256"] == summary["params_sha256"]
    assert resumed["steps_to_converge"] == summary["steps_to_converge"]
    assert resumed["validation"] == summary["validation"]


def test_a_converged_run_resumed_stops_where_it_stopped(converged_run, tmp_path):
    workdir, summary = converged_run
    copy = str(tmp_path / "again")
    shutil.copytree(workdir, copy)
    os.remove(os.path.join(copy, "summary.json"))  # killed after the last checkpoint
    again = train.train_and_evaluate(_config(keep=50), copy)
    assert again["steps"] == summary["steps"] and again["resumed_from_step"] == summary["steps"]
    assert again["params_sha256"] == summary["params_sha256"]


def test_a_run_that_never_converges_trains_every_step(tmp_path):
    summary = train.train_and_evaluate(_config(steps=60, threshold=1.0), str(tmp_path))
    assert summary["steps"] == 60 and summary["steps_to_converge"] is None
    assert [h["step"] for h in summary["validation"]] == [20, 40, 60]
    with open(tmp_path / "summary.json") as f:
        assert json.load(f)["steps_to_converge"] is None


@pytest.mark.parametrize("key,value,match", [
    ("every", -1, "early_stop.every"),
    ("threshold", 0.0, "early_stop.threshold"),
    ("threshold", 1.5, "early_stop.threshold"),
    ("patience", 0, "early_stop.patience"),
    ("num_examples", 0, "early_stop.num_examples"),
])
def test_bad_rule_is_named(key, value, match):
    cfg = train_config.get_config("smoke")
    cfg.unlock()
    cfg.early_stop[key] = value
    with pytest.raises(ValueError, match=match):
        train_config.validate(cfg)


def test_restore_params_returns_the_final_parameters_of_an_early_stopped_run(converged_run,
                                                                             tmp_path):
    workdir, summary = converged_run
    restored = train.restore_params(workdir)
    assert restored.step == summary["steps_to_converge"]
    assert train.params_sha256(restored.params) == summary["params_sha256"]
    assert restored.config.early_stop.every == 20
    assert restored.summary["params_sha256"] == summary["params_sha256"]
    with pytest.raises(ValueError, match="is not a finished training run"):
        train.restore_params(str(tmp_path))
