"""`experiments/sweep/cost.py`: FLOPs counted by hand, hours from a measurement, labels."""

import json
import re

import pytest

from arith_precision.common.cli_errors import UsageError
from experiments import sweep as sweep_lib
from experiments.configs import paper_fig2
from experiments.sweep import cost as cost_estimate


def test_step_flops_by_hand():
    # d=2, f=4, N=1, V=3, L=5, B=7: per token 1 * (2 * (16 + 16) + 4 * 5 * 2) + 2 * 2 * 3 = 116
    assert cost_estimate.step_flops(2, 4, 1, 3, 5, 7) == 3 * 7 * 5 * 116


def _cells(arg="smoke"):
    return sweep_lib.expand(paper_fig2.get_config(arg))


def _measurement(platform, rate_fp32=2.0, rate_bf16=4.0):
    rows = [{"arm": a, "layers": 2, "replicas": r, "steps_per_sec": s / r,
             "flops_per_step": 1e9} for a, s in (("fp32", rate_fp32), ("bf16_tc", rate_bf16))
            for r in (1, 8)]
    return {"schema": 1, "platform": platform, "device_kind": "test", "steps_per_sec": rows}


def test_hours_are_flops_over_the_measured_rate():
    cells = _cells()
    result = cost_estimate.estimate(cells, _measurement("gpu"))
    want = sum(cost_estimate.cell_step_flops(c.config) * c.config.train.steps
               / ((2.0 if c.coords["precision"] == "fp32" else 4.0) * 1e9) for c in cells) / 3600
    assert result["total"]["cells"] == 6
    assert result["hours"][1] == pytest.approx(want)
    assert result["hours"][8] == pytest.approx(want)  # same aggregate rate in the fake
    assert result["hours_es"][1] is None  # no converged runs given


def test_labels_and_goal_verdicts():
    cells = _cells()
    for measurement, where, goal in (
            (None, "device time: not measured", "not measured"),
            (_measurement("cpu"), "CPU measurement", "not measured"),
            (_measurement("gpu"), "GPU measurement", "met")):
        text = cost_estimate.render("paper_fig2", cost_estimate.estimate(cells, measurement),
                                    measurement, None)
        assert where in text
        assert f"H100-class GPU: {goal}" in text
    text = cost_estimate.render("paper_fig2_quick", cost_estimate.estimate(cells, None), None,
                                None)
    assert "H100-class GPU: applies to the full paper_fig2 grid, not paper_fig2_quick" in text


def test_unmeasured_arm_leaves_the_total_unmeasured():
    cells = _cells("smoke,precisions=fp32;pure_bf16")
    result = cost_estimate.estimate(cells, _measurement("gpu"))
    assert result["hours"][1] is None and result["missing"][1] == ["pure_bf16"]


def test_early_stopping_fractions(tmp_path):
    for name, steps in (("a", 5), ("b", 15)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "summary.json").write_text(json.dumps({
            "status": "completed", "steps": steps,
            "config": {"task": {"task": "add", "base": 2}, "precision": {"name": "fp32"},
                       "train": {"steps": 20}}}))
    fractions = cost_estimate.converged_fractions(str(tmp_path))
    assert fractions == {("add", 2, "fp32"): (0.5, 2)}
    result = cost_estimate.estimate(_cells(), _measurement("gpu"), fractions)
    assert result["hours_es"][1] < result["hours"][1]


def test_bad_measurement_file_names_the_flag(tmp_path):
    bad = tmp_path / "x.json"
    bad.write_text("{}")
    with pytest.raises(UsageError, match="--from"):
        cost_estimate.run(paper_fig2.get_config("smoke"), str(bad))
    with pytest.raises(UsageError, match="--converged_from"):
        cost_estimate.run(paper_fig2.get_config("smoke"), None, str(tmp_path / "missing"))


def test_makespan_is_a_longest_first_list_schedule():
    assert cost_estimate.makespan([3, 3, 2, 2, 2], 2) == 7  # the best is 6: within 4/3
    assert cost_estimate.makespan([5, 1, 1], 4) == 5  # never below the longest task
    assert cost_estimate.makespan([1] * 10, 3) == 4
    assert cost_estimate.makespan([], 2) == 0


def test_wall_clock_follows_the_launchers_layout():
    cells = [{"name": c.name, "dir": None, "config": c.config, "t": 1.0} for c in _cells()]
    Layout = cost_estimate.Layout
    # The local pool: every cell in one job over W workers.
    assert cost_estimate.wall_clock(cells, Layout(gpus_per_job=1)) == 6
    assert cost_estimate.wall_clock(cells, Layout(gpus_per_job=4)) == 2
    # submitit: one cell per job, two jobs at once; or two sibling cells per job (the fp32 and
    # bf16 arms of one task), trained one after another, or in one program with R = 2 (whose
    # measured rate is for both together, so a batch takes its cells' times added).
    assert cost_estimate.wall_clock(cells, Layout(1, jobs_at_once=2, cells_per_job=1)) == 3
    assert cost_estimate.wall_clock(cells, Layout(1, jobs_at_once=3, cells_per_job=2)) == 2
    assert cost_estimate.wall_clock(cells, Layout(2, jobs_at_once=3, cells_per_job=2)) == 1
    assert cost_estimate.wall_clock(cells, Layout(2, jobs_at_once=3, cells_per_job=2), 2) == 2
    assert Layout(2, jobs_at_once=3).gpus == 6 and Layout(0, jobs_at_once=5).gpus == 5


def test_estimate_prints_the_wall_clock_on_n_gpus_next_to_one():
    layout = cost_estimate.Layout(gpus_per_job=1, jobs_at_once=3, cells_per_job=1,
                                  how="three jobs at once")
    result = cost_estimate.estimate(_cells(), _measurement("gpu"))
    one = result["hours"][1]
    many = cost_estimate.wall_clock([dict(c, t=c["hours"][1]) for c in result["per_cell"]],
                                    layout)
    assert one / 3 <= many < one  # three GPUs: at best a third of one GPU's time
    lines = cost_estimate.render_wall_clock(result, layout)
    assert lines[0].startswith(f"wall clock (one run at a time): one GPU {one:.1f} h without "
                               f"early stopping, not measured with; 3 GPU(s) (three jobs at "
                               f"once): {many:.1f} h without")
    assert lines[1] == ("wall clock (8 replicas per program): needs --cells_per_job >= 8 (a job "
                        "batches only its own cells)")
    unmeasured = cost_estimate.render_wall_clock(cost_estimate.estimate(_cells(), None), layout)
    assert len(unmeasured) == 1 and "not measured (give --from=gpu_check.json)" in unmeasured[0]
    assert re.search(r"schedule to (2\.\d|3\.0)x the speed of one GPU", unmeasured[0])
    text = cost_estimate.run(paper_fig2.get_config("smoke"), None, None, layout)
    assert text.splitlines()[-1] == unmeasured[0]
