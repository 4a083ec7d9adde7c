"""Learning-rate decay on a plateau (`optim.plateau_factor`): when it falls, that it is off by
default, and that a resumed run falls at the same steps with bit-identical parameters."""

import json
import os

import jax.numpy as jnp
import numpy as np
import pytest

from arith_precision import training as train
from arith_precision.common.cli_errors import UsageError
from arith_precision.training import checks
from arith_precision.training import config as train_config
from tests import killed_run


def _config(steps=120, factor=0.5, window=5, patience=1, lr=3e-3):
    cfg = train_config.get_config(f"smoke,task=add,base=2,n=3,steps={steps},batch=32,lr={lr}")
    cfg.unlock()
    cfg.optim.update(plateau_factor=factor, plateau_window=window, plateau_patience=patience,
                     warmup_steps=0, final_lr_fraction=1.0)
    cfg.train.update(checkpoint_every=20, log_every=5, keep_checkpoints=50)
    return cfg


def _scales(tx, losses):
    """The learning-rate scale after each update fed these training losses."""
    state, out = tx.init(()), []
    for loss in losses:
        _, state = tx.update((), state, value=jnp.float32(loss))
        out.append(float(state.scale))
    return out


def test_the_rate_falls_after_patience_windows_without_a_one_percent_gain():
    tx = train.plateau_controller(_config(factor=0.5, window=2, patience=2))
    # Windows of 2 steps: means 1.0 (best), 0.995 (< 1% better: no gain), 0.995 (second window
    # without a gain: the rate halves), then a cooldown of 2 windows, then 2 more flat windows.
    scales = _scales(tx, [1.0, 1.0, 0.995, 0.995, 0.995, 0.995] + [0.995] * 8)
    assert scales[:6] == [1.0] * 5 + [0.5]
    assert min(scales) == 0.25 and scales.index(0.25) > 6
    # A steady fall of > 1% a window never lowers it.
    assert set(_scales(tx, [0.9 ** i for i in range(20)])) == {1.0}


def test_off_by_default_and_bad_values_named():
    cfg = train_config.get_config("smoke")
    assert not train.plateau_decay(cfg)
    assert train.plateau_controller(cfg) is None
    for key, value in (("plateau_factor", 1.0), ("plateau_factor", -0.1),
                       ("plateau_window", 0), ("plateau_patience", 0)):
        bad = _config()
        bad.optim[key] = value
        with pytest.raises(UsageError, match=f"optim.{key}"):
            checks.validate(bad)


def _metrics(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.fixture(scope="module")
def plateau_run(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("plateau"))
    return workdir, train.train_and_evaluate(_config(), workdir)


def test_a_run_logs_the_fallen_rate(plateau_run):
    workdir, summary = plateau_run
    lrs = [m["lr"] for m in _metrics(workdir)]
    assert summary["status"] == "completed" and lrs[0] == pytest.approx(3e-3)
    falls = np.unique(np.round(np.array(lrs) / 3e-3, 6))
    assert len(falls) >= 2 and set(falls) <= {0.5 ** i for i in range(10)}, falls
    assert lrs == sorted(lrs, reverse=True)


def test_resume_is_bit_identical_with_the_decay(plateau_run, tmp_path):
    workdir, summary = plateau_run
    copy = killed_run.killed_copy(workdir, str(tmp_path / "killed"), after_step=60)
    resumed = train.train_and_evaluate(_config(), copy)
    assert resumed["resumed_from_step"] == 60
    assert resumed["params_sha256"] == summary["params_sha256"]
    straight = {m["step"]: m["lr"] for m in _metrics(workdir)}
    again = {m["step"]: m["lr"] for m in _metrics(copy)}
    assert again == straight
