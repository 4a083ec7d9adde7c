"""The precision probe: the runtime-width program equals the static formats, the threshold rule,
and the CLI's errors (the probe end to end runs in test_reproduce's smoke fixture)."""

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from arith_precision import decode, formats
from arith_precision.evaluate import runtime_decoder
from arith_precision.simulate import RegionPolicy, region_sets, runtime_format, simulate
from arith_precision.simulate.runtime_format import (
    RuntimeMantissa,
    mantissa_bits,
    round_runtime,
    with_mantissa_bits,
)
from experiments import precision_probe as probe
from tests import repo, tiny_model


def _values():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(4000).astype(np.float32) * np.exp2(
        rng.integers(-140, 127, 4000)).astype(np.float32)  # normal, subnormal, near overflow
    special = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, -np.nan, 3.4028235e38, -3.4e38,
                        1e-45, -1e-45, 1.1754942e-38, 1.1754944e-38, 1.5, 1.25, 1.75, 2.5],
                       np.float32)
    return np.concatenate([x, special])


@pytest.mark.parametrize("m", range(0, 11))
def test_runtime_rounding_is_quantize_bit_for_bit(m):
    x = _values()
    f = jax.jit(lambda v, b: with_mantissa_bits(b, round_runtime, v, RuntimeMantissa(slot=1)))
    got = np.asarray(f(x, jnp.array([23, m], jnp.int32)))
    want = np.asarray(formats.quantize(jnp.asarray(x), f"e8m{m}"))
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))


def test_runtime_width_23_is_the_identity_and_errors():
    x = _values()
    got = np.asarray(with_mantissa_bits(jnp.array([23]), round_runtime, jnp.asarray(x),
                                        RuntimeMantissa()))
    np.testing.assert_array_equal(got.view(np.uint32), x.view(np.uint32))
    with pytest.raises(ValueError, match="outside"):
        round_runtime(jnp.asarray(x), RuntimeMantissa())
    with pytest.raises(ValueError, match="only 1 slot"):
        with_mantissa_bits(jnp.array([3]), round_runtime, jnp.asarray(x), RuntimeMantissa(slot=2))
    with pytest.raises(ValueError, match="slot"):
        RuntimeMantissa(slot=-1)


@pytest.mark.parametrize("region_set", [
    "all",  # the other region sets compile the same program with other masks: slow checks
    *(pytest.param(r, marks=pytest.mark.slow)
      for r in ("mlp", "attention_scores", "all_but_attention"))])
def test_one_program_for_every_width_equals_the_static_policies(region_set):
    """Logits of the tiny model: the runtime-width region policy vs the static one, bitwise."""
    params, tokens = tiny_model.params(), tiny_model.tokens()
    apply = tiny_model.dense_apply
    runtime = jax.jit(lambda p, t, b: with_mantissa_bits(
        b, simulate(apply, region_sets.runtime_policy("once")), p, t))
    for m in (3,) if region_set != "all" else (3, 7):
        bits = np.asarray(region_sets.region_bits(region_set, m), np.int32)
        static_policy = region_sets.region_policy(region_set, f"e8m{m}", "once")
        if region_set in region_sets.MODEL_REGIONS:
            # The unrounded float32 rest can differ in its last bit between two compiled programs
            # (XLA fuses them differently); rounding the rest to e8m10 in both compares the slots.
            bits = np.where(bits == 23, 10, bits).astype(np.int32)
            static_policy = RegionPolicy.of("e8m10", {region_set: f"e8m{m}"})
        got = np.asarray(runtime(params, tokens, bits))
        static = simulate(apply, static_policy)
        want = np.asarray(jax.jit(static)(params, tokens))  # both jitted: same XLA fusions
        np.testing.assert_array_equal(got, want)


# ~30 s; tests/constructions/test_frontier.py checks the runtime-width decoder against the
# static format by default.
@pytest.mark.slow
def test_runtime_decoder_matches_static_decoder_inside_the_decode_loop():
    params = tiny_model.params()
    spec = tiny_model.SPEC
    from arith_precision import tasks

    prompt = tasks.sample_batch(spec, data_seed=0, step=0, batch_size=8).input_tokens
    dec = runtime_decoder(tiny_model.CFG, spec.answer_tokens, "once")
    for region_set, m in (("all", 2), ("residual", 1)):
        got = np.asarray(dec(params, prompt, np.asarray(region_sets.region_bits(region_set, m))))
        policy = region_sets.region_policy(region_set, f"e8m{m}", "once")
        want = np.asarray(jax.jit(simulate(
            lambda p, pr: decode.greedy_decode(p, tiny_model.CFG, pr, spec.answer_tokens),
            policy))(params, prompt))
        np.testing.assert_array_equal(got, want)
    with mantissa_bits(jnp.array([5])):  # the widths hold inside the block only
        assert runtime_format.current_bits().tolist() == [5]
        with mantissa_bits(jnp.array([7])):
            assert runtime_format.current_bits().tolist() == [7]
        assert runtime_format.current_bits().tolist() == [5]
    assert runtime_format.current_bits() is None


@pytest.mark.parametrize("passing,want", [
    ({10, 9, 8, 7, 6, 5}, (5, False, 4)),
    ({10, 9, 8, 7, 6, 5, 4, 3, 2}, (2, True, None)),
    (set(), (None, False, 10)),
    ({10, 9, 6, 5, 4}, (9, False, 8)),  # not monotonic: 6..4 pass again, not looked for
])
def test_threshold_scans_down_and_stops_at_the_first_failure(passing, want):
    seen = []

    def passes(m):
        seen.append(m)
        return m in passing

    got = probe.threshold(passes, 2, 10)
    assert (got["threshold_bits"], got["all_pass_to_min"], got["first_failure_bits"]) == want
    assert seen == list(range(10, (want[2] or 2) - 1, -1))


@pytest.mark.parametrize("args,needle", [
    (["--runs=/nonexistent"], "/nonexistent"),
    (["--runs=.", "--regions=all,bogus"], "bogus"),
    (["--runs=.", "--max-bits=11"], "2/11"),
    (["--constructions=add:2:3", "--num-examples=0"], "--num-examples: 0"),
    (["--runs=.", "--accumulations=twice"], "twice"),
    (["--constructions=add:10"], "add:10"),
    (["--constructions=add:1:8"], "base"),
    ([], "no completed fp32 run"),
])
def test_cli_bad_input_is_one_line_exit_2(tmp_path, args, needle):
    proc = subprocess.run([sys.executable, "-m", "experiments.precision_probe",
                           f"--out={tmp_path}", *args], capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0]


def test_construction_probe_all_regions_is_the_committed_frontier(tmp_path):
    """ADD base 10, n = 8: region set "all" reproduces results/frontier (7 bits at `once`)."""
    import json
    import os

    with open(os.path.join(repo.ROOT, "results", "frontier",
                           "frontier.json")) as f:
        committed = next(r for r in json.load(f) if r["label"] == "add p=10")
    want = next(e for e in committed["entries"] if e["n"] == 8)["float_mantissa_bits"]["once"]
    result = probe.probe({}, str(tmp_path), region_sets=("all", "logits"), min_bits=1,
                         constructions=[{"task": "add", "base": 10, "n": 8}],
                         progress=lambda _: None)
    by_set = {e["regions"]: e for e in result["constructions"]}
    assert by_set["all"]["threshold_bits"] == want
    assert by_set["all"]["checked"][str(want - 1)] is False
    # Rounding one region alone never needs more bits than rounding all of them, here.
    assert by_set["logits"]["threshold_bits"] <= want
    # Re-running reuses every cached row (no evaluation: the same result).
    again = probe.probe({}, str(tmp_path), region_sets=("all", "logits"), min_bits=1,
                        constructions=[{"task": "add", "base": 10, "n": 8}],
                        progress=lambda _: None)
    assert again["constructions"] == result["constructions"]
