"""Training precision by region and rounding from the run config: the named region arms, the
`precision.regions` / `precision.rounding` keys, and stochastic rounding of the update alone
(bit-identical on re-run and on resume, different with another seed or without it)."""

import os
import shutil

import pytest

from arith_precision import training as train
from arith_precision.simulate import RegionPolicy
from arith_precision.training import precision as precision_lib

ARGS = "smoke,task=add,base=2,n=3,steps=20,batch=32"


def _config(extra: str = ""):
    cfg = train.get_config(ARGS + ("," + extra if extra else ""))
    cfg.unlock()
    cfg.train.update(checkpoint_every=10, log_every=10, keep_checkpoints=10)
    cfg.eval.update(num_examples=16, batch_size=16)
    return cfg


@pytest.mark.parametrize("arm,whole_step,regions", [
    ("bf16_except_attention", False, ("attention_scores", "attention_mixing")),
    ("bf16_attention_only", False, ("attention",)),
    ("bf16_mlp_only", False, ("mlp",)),
    ("pure_bf16_sr_update", True, ("optimizer_update",)),
])
def test_region_arms_resolve(arm, whole_step, regions):
    p = precision_lib.step_precision(arm)
    assert isinstance(p.policy, RegionPolicy) and p.whole_step is whole_step
    assert p.policy.names == regions


def test_random_bits_reach_every_stochastic_rounding():
    p = precision_lib.step_precision("pure_bf16_sr_update", random_bits=8)
    assert p.policy.policy_for("optimizer_update").random_bits == 8
    assert p.policy.base.random_bits is None  # the base rounds to nearest: no random bits
    cfg = train.get_config(ARGS + ",precision=pure_bf16,rounding=stochastic,random_bits=8")
    assert train.precision_of(cfg).policy.random_bits == 8


def test_evaluation_decodes_without_the_train_step_regions():
    sr = precision_lib.step_precision("pure_bf16_sr_update")
    assert not isinstance(sr.eval_policy, RegionPolicy)  # only optimizer_update: the base
    assert str(sr.eval_policy.compute) == "e8m7" and sr.eval_policy.rounding == "nearest_even"
    mlp = precision_lib.step_precision("bf16_mlp_only")
    assert mlp.eval_policy.names == ("mlp",)
    assert precision_lib.step_precision("fp32").eval_policy is None


def test_storage_arm_keeps_state_in_bf16_and_computes_in_fp32():
    p = precision_lib.step_precision("bf16_storage")
    assert p.whole_step and str(p.policy.compute) == "e8m23" and str(p.policy.param) == "e8m7"


@pytest.mark.parametrize("extra,key,value", [
    ("precision=bf16,regions=optimizer_update=bf16", "precision.regions",
     "optimizer_update=bf16"),
    ("precision=bf16,regions=brain=bf16", "precision.regions", "brain=bf16"),
    ("precision=pure_bf16,rounding=upwards", "precision.rounding", "upwards"),
    ("precision=bf16_mlp_only,regions=mlp=fp16", "precision.regions", "mlp=fp16"),
    ("precision=pure_bf16,random_bits=8", "precision.random_bits", "8"),
    ("precision=pure_bf16,rounding=stochastic,random_bits=99", "precision.random_bits", "99"),
])
def test_bad_precision_keys_are_named(extra, key, value):
    with pytest.raises(ValueError, match=f"{key}: {value}: "):
        train.get_config(ARGS + "," + extra)


@pytest.fixture(scope="module")
def sr_run(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("sr"))
    return workdir, train.train_and_evaluate(_config("precision=pure_bf16_sr_update"), workdir)


def test_stochastic_update_is_bit_identical_on_rerun(sr_run, tmp_path):
    _, first = sr_run
    again = train.train_and_evaluate(_config("precision=pure_bf16_sr_update"), str(tmp_path))
    assert again["params_sha256"] == first["params_sha256"]
    assert "optimizer_update=e8m7@stochastic" in first["precision"]


def test_stochastic_update_is_bit_identical_on_resume(sr_run, tmp_path):
    workdir, first = sr_run
    resumed = str(tmp_path / "resumed")
    shutil.copytree(os.path.join(workdir, "checkpoints"), os.path.join(resumed, "checkpoints"))
    for step in os.listdir(os.path.join(resumed, "checkpoints")):
        if step.isdigit() and int(step) > 10:  # as if killed after the checkpoint of step 10
            shutil.rmtree(os.path.join(resumed, "checkpoints", step))
    summary = train.train_and_evaluate(_config("precision=pure_bf16_sr_update"), resumed)
    assert summary["resumed_from_step"] == 10
    assert summary["params_sha256"] == first["params_sha256"]


def test_stochastic_update_changes_training_and_follows_the_seed(sr_run, tmp_path):
    _, first = sr_run
    nearest = train.train_and_evaluate(_config("precision=pure_bf16"), str(tmp_path / "n"))
    assert nearest["params_sha256"] != first["params_sha256"]  # the rounding mode matters
    # Another seed: other initial parameters and other random bits.
    other = train.train_and_evaluate(_config("precision=pure_bf16_sr_update,seed=1"),
                                     str(tmp_path / "s1"))
    assert other["params_sha256"] != first["params_sha256"]
