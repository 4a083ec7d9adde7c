"""Training: loss drops, exact kill-and-resume, multi-device agreement, precision, bad configs."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from arith_precision import model as model_lib
from arith_precision import training as train
from arith_precision.simulate import simulate
from arith_precision.training import config as train_config
from tests import repo

REPO = str(repo.ROOT)


def _run_main(workdir, args, extra=(), env=None, wait=True):
    cmd = [sys.executable, "-m", "experiments.main",
           f"--config=experiments/configs/train.py:{args}", f"--workdir={workdir}", *extra]
    full_env = dict(os.environ, **(env or {}))
    if not wait:
        return subprocess.Popen(cmd, cwd=REPO, env=full_env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT)
    return subprocess.run(cmd, cwd=REPO, env=full_env, capture_output=True, text=True,
                          check=False, timeout=600)


def _summary(workdir):
    with open(os.path.join(workdir, "summary.json")) as f:
        return json.load(f)


def _metrics(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


def test_smoke_run_learns_and_writes_outputs(tmp_path):
    cfg = train_config.get_config("smoke,task=add,base=2,n=3,steps=120,batch=64,lr=3e-3")
    summary = train.train_and_evaluate(cfg, str(tmp_path))
    metrics = _metrics(tmp_path)
    assert [m["step"] for m in metrics] == list(range(5, 121, 5))
    assert set(metrics[0]) == {"step", "loss", "token_accuracy", "lr", "grad_norm",
                               "steps_per_sec"}
    assert metrics[-1]["loss"] < 0.7 * metrics[0]["loss"]
    assert summary["status"] == "completed" and summary["steps"] == 120
    assert set(summary["exact_match"]) == {"3"} and 0.0 <= summary["exact_match"]["3"] <= 1.0
    for key in ("wall_time_s", "versions", "device_kind", "config", "params_sha256"):
        assert key in summary
    assert summary["versions"]["jax"] == jax.__version__
    assert _summary(tmp_path)["params_sha256"] == summary["params_sha256"]


# ~50 s (three subprocess runs); the early-stopping and plateau-decay tests kill and resume
# in-process runs by default.
@pytest.mark.slow
def test_kill_and_resume_is_bit_identical(tmp_path):
    args = "smoke,task=add,base=3,n=3,steps=150,batch=32"
    extra = ["--config.train.checkpoint_every=10", "--config.train.log_every=10"]
    straight = _run_main(tmp_path / "straight", args, extra)
    assert straight.returncode == 0, straight.stdout + straight.stderr
    # Kill -9 in the middle of training, after at least one checkpoint.
    proc = _run_main(tmp_path / "killed", args, extra, wait=False)
    deadline = time.time() + 300
    metrics_path = tmp_path / "killed" / "metrics.jsonl"
    while time.time() < deadline:
        if metrics_path.exists() and len(metrics_path.read_text().splitlines()) >= 7:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "killed" / "summary.json").exists()
    resumed = _run_main(tmp_path / "killed", args, extra)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    a, b = _summary(tmp_path / "straight"), _summary(tmp_path / "killed")
    assert b["resumed_from_step"] is not None and 0 < b["resumed_from_step"] < 150
    assert a["params_sha256"] == b["params_sha256"]
    assert [m["loss"] for m in _metrics(tmp_path / "straight")] == \
        [m["loss"] for m in _metrics(tmp_path / "killed")]


# ~35 s (two subprocess runs); multi-device training is not the default anywhere here.
@pytest.mark.slow
def test_four_devices_match_one(tmp_path):
    args = "smoke,task=add,base=10,n=3,steps=30,batch=32"
    one = _run_main(tmp_path / "one", args)
    four = _run_main(tmp_path / "four", args,
                     env={"XLA_FLAGS": "--xla_force_host_platform_device_count=4"})
    assert one.returncode == 0 and four.returncode == 0, four.stdout + four.stderr
    assert _summary(tmp_path / "four")["device_count"] == 4
    # Stated tolerance: the 4-way all-reduce sums gradients in another order, so float32 results
    # agree to rounding level, amplified a little over 30 Adam steps.
    l1 = np.array([m["loss"] for m in _metrics(tmp_path / "one")])
    l4 = np.array([m["loss"] for m in _metrics(tmp_path / "four")])
    np.testing.assert_allclose(l1, l4, rtol=1e-4)


def _small_model(norm="pre_ln"):
    cfg = model_lib.TransformerConfig(vocab_size=16, max_len=12, num_layers=2, d_model=32,
                                      num_heads=2, d_ff=64, norm=norm)
    params = model_lib.init_params(cfg, jax.random.key(0))
    tokens = jax.random.randint(jax.random.key(1), (4, 12), 0, 16)
    return cfg, params, tokens


def test_precision_changes_numerics():
    cfg, params, tokens = _small_model()

    def apply(p, t):
        return model_lib.Transformer(cfg).apply({"params": p}, t)

    fp32 = apply(params, tokens)
    bf16 = jax.jit(simulate(apply, "bf16"))(params, tokens)
    assert not np.array_equal(np.asarray(fp32), np.asarray(bf16))
    assert float(jnp.max(jnp.abs(fp32 - bf16))) < 0.5  # same model, just rounded
    e4m3 = jax.jit(simulate(apply, "e4m3"))(params, tokens)
    assert not np.array_equal(np.asarray(e4m3), np.asarray(bf16))


def test_simulated_bf16_equals_native_bf16_model():
    # Reference: the same model computing in real bfloat16 (dtype=bf16), op by op so that no
    # fusion keeps excess precision; its matmuls accumulate in float32 and round once, like
    # 'once'. Without LayerNorm, because the native LayerNorm keeps its statistics in float32
    # (as flax does) while the simulation rounds them to bf16 too.
    cfg, params, tokens = _small_model(norm="none")
    bf16 = jax.jit(simulate(
        lambda p, t: model_lib.Transformer(cfg).apply({"params": p}, t), "bf16"))(params, tokens)
    native_cfg = dataclasses.replace(cfg, dtype=jnp.bfloat16)
    params_bf16 = jax.tree.map(lambda x: x.astype(jnp.bfloat16), params)
    with jax.disable_jit():
        native = model_lib.Transformer(native_cfg).apply({"params": params_bf16}, tokens)
    np.testing.assert_array_equal(np.asarray(native), np.asarray(bf16))


@pytest.mark.parametrize("name, whole", [("fp32", False), ("bf16", False), ("pure_bf16", True),
                                         ("fp16", False), ("e5m2", False)])
def test_precision_presets_resolve(name, whole):
    sp = train.step_precision(name)
    assert sp.whole_step == whole
    assert (sp.policy is None) == (name == "fp32")


def test_pure_bf16_keeps_parameters_in_bf16(tmp_path):
    cfg = train_config.get_config("smoke,precision=pure_bf16,steps=5")
    summary = train.train_and_evaluate(cfg, str(tmp_path))
    assert summary["status"] == "completed"
    import orbax.checkpoint as ocp
    with ocp.CheckpointManager(str(tmp_path / "checkpoints")) as mgr:
        state = mgr.restore(mgr.latest_step())
    for leaf in jax.tree.leaves(state["params"]):
        leaf = np.asarray(leaf, np.float32)
        np.testing.assert_array_equal(leaf, leaf.astype(jnp.bfloat16).astype(np.float32))


def test_divergence_is_recorded(tmp_path):
    cfg = train_config.get_config("smoke,steps=40,lr=1e30")
    summary = train.train_and_evaluate(cfg, str(tmp_path))
    assert summary["status"] == "diverged"
    assert isinstance(summary["diverged_at_step"], int) and summary["diverged_at_step"] >= 1
    assert _summary(tmp_path)["status"] == "diverged"


@pytest.mark.parametrize("arg, match", [
    ("taks=add", "unknown config key"),
    ("task=sub", "unknown task 'sub'"),
    ("base=1", "base must be >= 2"),
    ("n=zero", "n: zero: not a number"),
    ("precision=bf17", "bf17"),
    ("accumulation=kahan", "kahan"),
    ("task=mul,n=3,l=7", "l must be <= 2n"),
    ("reverse=maybe", "maybe"),
    ("heads=5", "5"),
    ("oops", "neither key=value nor a switch"),
    ("smoke=1", "is a switch"),
    ("n=3,n=4", "n: 4: given twice"),
])
def test_bad_configs_fail_clearly(arg, match):
    with pytest.raises(ValueError, match=match):
        train_config.get_config(arg)


def test_cli_rejects_bad_override(tmp_path):
    r = _run_main(tmp_path, "smoke", ["--config.train.steps=0"])
    assert r.returncode == 2 and r.stderr == "error: train.steps: 0: must be >= 1\n"
    r = _run_main(tmp_path, "smoke", ["--config.train.stepz=3"])
    assert r.returncode == 2 and r.stderr == \
        "error: --config.train.stepz: 3: no such key in the config (did you mean 'steps'?)\n"
