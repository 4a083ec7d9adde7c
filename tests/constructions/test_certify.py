"""constructions.certify: rounding bit for bit, soundness against every measured frontier point
(committed results/certify/certify.json, recomputed in the slow suite) and the exhaustive
verifier, the CLI contract."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from constructions.certify.rounding import Fmt, fl
from tests import repo

ROOT = str(repo.ROOT)
CERTIFY_JSON = os.path.join(ROOT, "results", "certify", "certify.json")


@pytest.mark.parametrize("fmt", ["e8m0", "e8m3", "e8m10", "e4m3", "e8m23"])
def test_fl_matches_quantize_bit_for_bit(fmt):
    from arith_precision import formats

    rng = np.random.default_rng(0)
    x = np.concatenate([rng.standard_normal(2000) * 10.0 ** rng.integers(-8, 8, 2000),
                        [0.0, 1.0, 2.5, -3.5, 1e38, 3.3e38, 1e-40, 6e4, 7e4]])
    e, m = int(fmt[1:fmt.index("m")]), int(fmt[fmt.index("m") + 1:])
    import jax

    before = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    try:
        want = np.asarray(formats.quantize(jax.numpy.asarray(x, jax.numpy.float64), fmt))
    finally:
        jax.config.update("jax_enable_x64", before)
    np.testing.assert_array_equal(fl(x, Fmt(e, m)), want)


def _committed_rows():
    with open(CERTIFY_JSON) as fh:
        return json.load(fh)


def test_certificate_never_at_or_below_a_measured_failure():
    """Every certified width (the threshold and up, and the narrower certified ones) passes
    wherever the frontier measured it; a certificate at a measured failure is a bug."""
    rows = _committed_rows()
    from constructions.certify.points import measured_points

    measured = {(r["dir"], r["n"], r["accumulation"]): r for r in measured_points()}
    for row in rows:  # the committed rows match the committed frontier runs
        key = (row["dir"], row["n"], row["accumulation"])
        assert key in measured, f"results/certify is stale: {key} is no frontier point"
        assert row["measured_failing"] == measured[key]["measured_failing"], key
    # every committed frontier point is certified (none left out of the comparison)
    missing = set(measured) - {(r["dir"], r["n"], r["accumulation"]) for r in rows}
    assert not missing, f"frontier points without a certificate: {sorted(missing)}"
    certified_somewhere = 0
    for row in rows:
        if row["certified"] is None or row["stale"]:  # stale: another network was measured
            continue
        certified_somewhere += 1
        widths = set(range(row["certified"], 25)) | set(row["certified_narrower"] or [])
        bad = widths & set(row["measured_failing"])
        assert not bad, (row, bad)
        if row["measured_threshold"] is not None:
            assert row["certified"] >= row["measured_threshold"], row
    assert certified_somewhere > 0


def test_no_committed_frontier_run_measured_an_earlier_construction():
    """A row leaves the comparison only when its frontier run measured another network (the
    recorded d_model is not the current build's); no committed run may be such a run."""
    from constructions.certify import points as certify_points

    rows = _committed_rows()
    stale = [(r["dir"], r["n"]) for r in rows if r["stale"]]
    assert not stale, f"frontier runs of an earlier construction: re-measure them: {stale}"
    row = dict(rows[0], measured_d_model=rows[0]["measured_d_model"] + 1)  # the rule itself
    finished = certify_points._finish(row, row)
    assert finished["stale"] and finished["gap"] is None


@pytest.mark.slow  # recomputes every certificate, 25 widths each (~25 min on 2 loaded cores)
def test_committed_certificates_are_current():
    from arith_precision import tasks
    from constructions import build
    from constructions.certify import certify

    for row in _committed_rows():
        spec = tasks.TaskSpec(row["task"], base=row["base"], n=row["n"], k=row["k"], l=row["l"])
        c = build(spec, variant=row["variant"])
        got = certify(c, row["accumulation"], exponent_search=False)
        assert got["certified_mantissa_bits"] == row["certified"], row
        assert got["certified_narrower"] == row["certified_narrower"], row
        assert row["stale"] == (c.config.d_model != row["measured_d_model"]), row


@pytest.mark.slow  # ~3-10 minutes each on a loaded 2-core machine: 25 analyses, 2 compiles
@pytest.mark.parametrize("task, base, n, variant, accumulation", [
    ("add", 2, 2, "log", "once"), ("add", 2, 2, "log", "sequential"),
    ("add", 2, 2, "constant", "once"), ("mul", 2, 2, "log", "once"),
])
def test_certified_widths_pass_the_exhaustive_verifier(task, base, n, variant, accumulation):
    """Every certified width (threshold and up, and the narrower certified ones) is exact on
    every input (exhaustive), and the certificate exists."""
    from arith_precision import tasks
    from constructions import build
    from constructions.certify import certify
    from constructions.check import inputs, run

    spec = tasks.TaskSpec(task, base=base, n=n, k=3 if task == "iter_add" else 2)
    c = build(spec, variant=variant)
    result = certify(c, accumulation, exponent_search=False)
    m = result["certified_mantissa_bits"]
    assert m is not None
    ops = inputs.exhaustive(c.spec)
    for width in sorted(set(range(m, 25)) | set(result["certified_narrower"])):
        run.enable_carrier(f"e8m{width}")
        check = run.check(c, ops, f"e8m{width}", accumulation, runtime=True)
        assert check["failures"] == 0, (width, check["first_failure"])


@pytest.mark.parametrize("argv, flag", [
    (["--task=add", "--base=1", "--n=4"], "--base"),
    pytest.param(["--task=add", "--base=10", "--n=4", "--k=3"], "--k", marks=pytest.mark.slow),
    pytest.param(["--task=add", "--base=10", "--n=4", "--accumulation=pairwise"],
                 "--accumulation", marks=pytest.mark.slow),
    pytest.param(["--task=mul", "--base=10", "--n=4", "--variant=constant"], "--variant",
                 marks=pytest.mark.slow),
    pytest.param(["--task=add", "--base=10", "--n=4", "--exponent-bits=9"], "--exponent-bits",
                 marks=pytest.mark.slow),
])
def test_cli_bad_flags_one_line_exit_2(argv, flag):
    proc = subprocess.run([sys.executable, "-m", "constructions.certify", *argv], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {flag}"), proc.stderr


def _fake_frontier_run(root, name, task, n, d_model, threshold):
    os.makedirs(os.path.join(root, name))
    run = {"spec": {"task": task, "base": 2, "k": 2, "l": None}, "variant": "log",
           "entries": [{"n": n, "d_model": d_model, "float_mantissa_bits": {"once": threshold},
                        "float_checked": {"once": {str(m): m >= threshold for m in range(25)}}}]}
    with open(os.path.join(root, name, "frontier.json"), "w") as fh:
        json.dump(run, fh)


def test_certify_points_resume_keeps_every_known_certificate(tmp_path):
    """A resumed run writes the certificates it already had as well as the new ones, including
    those that come after the last new one in its order (a resume once dropped 19 such rows)."""
    from arith_precision import tasks
    from constructions import build
    from constructions.certify import points as certify_points

    root = str(tmp_path / "frontier")
    add_d = build(tasks.TaskSpec("add", base=2, n=2)).config.d_model
    mul_d = build(tasks.TaskSpec("mul", base=2, n=2)).config.d_model
    _fake_frontier_run(root, "add_b2", "add", 2, add_d, 5)
    _fake_frontier_run(root, "mul_b2", "mul", 2, mul_d, 2)
    out = str(tmp_path / "certify.json")
    known_mul = {"dir": "mul_b2", "task": "mul", "base": 2, "k": 2, "l": None, "n": 2,
                 "variant": "log", "accumulation": "once", "certified": 9,  # marker value
                 "certified_narrower": [], "exponent_bits": 8, "failure_below": None}
    with open(out, "w") as fh:
        json.dump([known_mul], fh)
    assert certify_points.main([f"--out={out}", f"--frontier-root={root}"]) == 0
    with open(out) as fh:
        rows = {r["dir"]: r for r in json.load(fh)}
    assert set(rows) == {"add_b2", "mul_b2"}
    assert rows["mul_b2"]["certified"] == 9 and rows["mul_b2"]["gap"] == 7  # kept, not redone
    assert rows["add_b2"]["certified"] is not None and not rows["add_b2"]["stale"]
    with open(os.path.splitext(out)[0] + ".md") as fh:
        assert "| mul_b2 | 2 | once | 2 | 0..1 | 9 | +7 |" in fh.read()


def test_readout_pieces_cover_the_whole_range_once():
    """The readout claim is checked piece by piece: the pieces must cover [lo, hi] exactly
    (consecutive, first and last edges equal to lo and hi) for one coordinate; several
    coordinates or an unbounded range keep the one interval."""
    from constructions.certify.layers import READOUT_PIECES, _readout_pieces

    lo, hi = np.array([6.61]), np.array([7.39])
    pieces = _readout_pieces(lo, hi)
    assert len(pieces) == READOUT_PIECES
    assert pieces[0][0][0] == lo[0] and pieces[-1][1][0] == hi[0]
    for (_, a_hi), (b_lo, _) in zip(pieces[:-1], pieces[1:], strict=True):
        assert a_hi[0] == b_lo[0]  # no gap between pieces
    assert all(p_lo[0] < p_hi[0] for p_lo, p_hi in pieces)
    for lo2, hi2 in [(np.array([1.0, 2.0]), np.array([1.5, 2.5])),
                     (np.array([3.0]), np.array([3.0])), (np.array([0.0]), np.array([np.inf]))]:
        (only,) = _readout_pieces(lo2, hi2)
        assert only[0] is lo2 and only[1] is hi2
