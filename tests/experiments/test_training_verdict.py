"""The training verdict: each status is reached exactly when its rule says, from the numbers."""

import pytest

from experiments import training_verdict as tv
from experiments.report import training as training_report


def _cells(task, n, fp32, arm, name="pure_bf16", base=2):
    """Cells for one (task, n): fp32 and `name`, one per seed (values are per-seed lists)."""
    out = []
    for precision, values in (("fp32", fp32), (name, arm)):
        for seed, em in enumerate(values):
            out.append(dict(task=task, base=base, k=3 if task == "iter_add" else 2, l=0,
                            layers=2, n=n, accumulation="once", precision=precision, seed=seed,
                            exact_match=em, exact_match_iid=em, steps_to_converge=None,
                            convergence=None))
    return out


ADD_OK = _cells("add", 8, [0.99, 1.0], [0.98, 0.99])

CASES = [  # (cells, status, the failed conditions with the points each names)
    (ADD_OK + _cells("iter_add", 8, [0.97, 0.99], [0.40, 0.55]), "shown", []),
    # One seed of the arm is only 0.15 below: the collapse must hold on every seed.
    (ADD_OK + _cells("iter_add", 8, [0.97, 0.99], [0.40, 0.84]), "not shown",
     [("no_collapse", ["IterADD (k=3) base 2 n=8"])]),
    # fp32 itself below 0.95 on one seed: the contrast cannot be asked.
    (ADD_OK + _cells("iter_add", 8, [0.94, 0.99], [0.10, 0.10]), "not shown",
     [("fp32_not_learned", ["IterADD (k=3) base 2 n=8"])]),
    # A single seed is not enough (and then the ADD control has one seed too).
    (_cells("add", 8, [1.0], [1.0]) + _cells("iter_add", 8, [0.99], [0.1]), "not shown",
     [("fp32_not_learned", ["IterADD (k=3) base 2 n=8"]),
      ("control_fails", ["ADD base 2 n=8"])]),
    # The ADD control drops too: no contrast.
    (_cells("add", 8, [0.99, 1.0], [0.90, 0.99]) + _cells("mul", 5, [0.99, 0.99], [0.3, 0.3]),
     "not shown", [("control_fails", ["ADD base 2 n=8"])]),
    # No ADD control at all.
    (_cells("mul", 5, [0.99, 0.99], [0.3, 0.3]), "not shown", [("no_control", [])]),
    # Where the paper shows the collapse (IterADD base 2, n >= 10), the arm matches fp32.
    (ADD_OK + _cells("iter_add", 10, [0.99, 0.98], [0.97, 0.99]), "contradicted",
     [("no_collapse", ["IterADD (k=3) base 2 n=10"]),
      ("paper_range_match", ["IterADD (k=3) base 2 n=10"])]),
    # Matching at n = 8 (below the paper's collapse range) is not a contradiction.
    (ADD_OK + _cells("iter_add", 8, [0.99, 0.98], [0.97, 0.99]), "not shown",
     [("no_collapse", ["IterADD (k=3) base 2 n=8"])]),
    (ADD_OK, "not run", [("no_hard_cell", [])]),
]


@pytest.mark.parametrize("cells,status,failed", CASES)
def test_verdict_follows_the_rule(cells, status, failed):
    v = tv.verdict(cells, "pure_bf16", protocol="iid")
    assert v["status"] == status, v["failed"]
    assert [(f["condition"], [p["point"] for p in f["points"]]) for f in v["failed"]] == failed
    assert all(f["condition"] in tv.FAILED_CONDITIONS for f in v["failed"])
    # Every status and condition renders (the templates name the thresholds they are given).
    assert training_report.render(v).startswith("**pure_bf16** [iid protocol] (")
    assert f"**{status}**" in training_report.render(v)


def test_failed_conditions_carry_the_per_seed_numbers():
    v = tv.verdict(_cells("add", 8, [0.99, 1.0], [0.90, 0.99])
                   + _cells("mul", 5, [0.99, 0.99], [0.3, 0.3]), "pure_bf16", protocol="iid")
    assert v["failed"] == [{"condition": "control_fails", "points": [
        {"point": "ADD base 2 n=8", "pairs": [[0, 0.99, 0.90], [1, 1.0, 0.99]]}]}]
    assert v["collapses"] == [{"point": "MUL base 2 n=5", "pairs": [[0, 0.99, 0.3],
                                                                  [1, 0.99, 0.3]]}]
    assert (v["fp32_min"], v["collapse_gap"], v["control_tolerance"], v["min_seeds"]) == (
        0.95, 0.2, 0.05, 2)


def test_shown_quotes_the_deciding_numbers_per_seed():
    v = tv.verdict(ADD_OK + _cells("iter_add", 8, [0.97, 0.99], [0.40, 0.55]), "pure_bf16",
                   protocol="iid")
    assert v["collapses"] == [{"point": "IterADD (k=3) base 2 n=8",
                               "pairs": [[0, 0.97, 0.40], [1, 0.99, 0.55]]}]
    assert training_report.render(v) == (
        "**pure_bf16** [iid protocol] (" + tv.ARM_MEANING["pure_bf16"] + "): **shown**. fp32 vs "
        "pure_bf16, per seed: IterADD (k=3) base 2 n=8: seed 0: 0.970 vs 0.400, seed 1: 0.990 vs "
        "0.550; ADD control: ADD base 2 n=8: seed 0: 0.990 vs 0.980, seed 1: 1.000 vs 0.990. ")


def test_each_arm_is_judged_on_its_own_cells():
    cells = ADD_OK + _cells("iter_add", 8, [0.97, 0.99], [0.40, 0.55])
    cells += _cells("add", 8, [0.99, 1.0], [0.99, 1.0], name="bf16")[2:]
    cells += _cells("iter_add", 8, [0.97, 0.99], [0.96, 0.99], name="bf16")[2:]
    assert tv.verdict(cells, "pure_bf16")["status"] == "shown"
    assert tv.verdict(cells, "bf16")["status"] == "not shown"


def test_points_pair_seeds_and_skip_unfinished_cells():
    cells = _cells("iter_add", 8, [0.9, 0.8], [0.1, None])
    [p] = tv.points(cells)
    assert p["exact_match"] == {"fp32": {0: 0.9, 1: 0.8}, "pure_bf16": {0: 0.1}}
    assert tv._paired(p, "pure_bf16") == [(0, 0.9, 0.1)]


def _protocol_cells(task, n, fp32, arm, name="pure_bf16", base=2, distinct=1000, status=None):
    """Cells with both protocols: values are (iid, unseen) per seed."""
    out = []
    for precision, values in (("fp32", fp32), (name, arm)):
        for seed, (iid, unseen) in enumerate(values):
            out.append(dict(task=task, base=base, k=3 if task == "iter_add" else 2, l=0,
                            layers=2, n=n, accumulation="once", precision=precision, seed=seed,
                            exact_match=unseen, exact_match_iid=iid, exact_match_unseen=unseen,
                            distinct_iid=2000, distinct_unseen=distinct,
                            status=(status or {}).get((precision, seed), "completed"),
                            steps_to_converge=None, convergence=None))
    return out


ADD_BOTH = _protocol_cells("add", 8, [(1.0, 1.0), (0.99, 0.99)], [(0.99, 0.98), (1.0, 1.0)])


def test_each_protocol_gets_its_own_verdict():
    # MUL base 2 n=4: iid (fitting) shows a collapse; only 14 unseen inputs: no unseen verdict
    cells = ADD_BOTH + _protocol_cells("mul", 4, [(0.99, 0.4), (0.98, 0.5)],
                                       [(0.5, 0.4), (0.6, 0.5)], distinct=14)
    iid = tv.verdict(cells, "pure_bf16", protocol="iid")
    unseen = tv.verdict(cells, "pure_bf16", protocol="unseen")
    assert iid["status"] == "shown" and iid["protocol"] == "iid"
    assert unseen["status"] == "not run"
    assert unseen["excluded"] == [{"point": "MUL base 2 n=4", "distinct": 14}]
    assert [f["condition"] for f in unseen["failed"]] == ["no_hard_cell", "too_few_unseen"]
    assert "**not run**" in training_report.render(unseen)
    assert "fewer than 200" in training_report.render(unseen)
    assert "unseen protocol" in tv.RULE.text("unseen") and "200" in tv.RULE.text("unseen")


def test_unseen_threshold_is_at_200_distinct_inputs():
    at = ADD_BOTH + _protocol_cells("iter_add", 8, [(0.99, 0.99), (0.98, 0.98)],
                                    [(0.3, 0.3), (0.4, 0.4)], distinct=200)
    below = ADD_BOTH + _protocol_cells("iter_add", 8, [(0.99, 0.99), (0.98, 0.98)],
                                       [(0.3, 0.3), (0.4, 0.4)], distinct=199)
    assert tv.verdict(at, "pure_bf16", protocol="unseen")["status"] == "shown"
    assert tv.verdict(below, "pure_bf16", protocol="unseen")["status"] == "not run"


def test_a_diverged_run_counts_as_zero():
    # the arm's seed 1 diverged (its last evaluation would have been 0.97): it counts as 0, so
    # the collapse holds on every seed
    cells = ADD_BOTH + _protocol_cells("iter_add", 8, [(0.99, 0.99), (0.98, 0.98)],
                                       [(0.3, 0.3), (0.97, 0.97)],
                                       status={("pure_bf16", 1): "diverged"})
    v = tv.verdict(cells, "pure_bf16", protocol="iid")
    assert v["status"] == "shown"
    assert v["collapses"][0]["pairs"] == [[0, 0.99, 0.3], [1, 0.98, 0.0]]


def test_older_rows_use_exact_match_and_the_exact_held_out_count():
    # rows without per-protocol numbers: unseen reads exact_match; MUL base 2 n = 5 has exactly
    # 59 held-out pairs (counted over the whole input space), so no unseen verdict there
    assert tv.held_out_count("mul", 2, 4, 2) == 14 and tv.held_out_count("mul", 2, 5, 2) == 59
    cells = [{k: v for k, v in c.items() if k != "exact_match_iid"}
             for c in ADD_OK + _cells("mul", 5, [0.99, 0.98], [0.3, 0.3])]
    v = tv.verdict(cells, "pure_bf16", protocol="unseen")
    assert v["excluded"] == [{"point": "MUL base 2 n=5", "distinct": 59}]
    assert tv.verdict(cells, "pure_bf16", protocol="iid")["status"] == "not run"


@pytest.mark.parametrize("arm_scores,status", [
    ([(0.3, 0.3), (0.4, 0.4)], "carries the deficit"),       # G = 0.635 >= 0.5 D
    ([(0.9, 0.9), (0.95, 0.95)], "does not carry the deficit"),  # G = 0.06 < 0.5 D
])
def test_region_verdict(arm_scores, status):
    cells = _protocol_cells("iter_add", 8, [(0.99, 0.99), (0.98, 0.98)],
                            [(0.3, 0.3), (0.4, 0.4)])
    cells += [c for c in _protocol_cells("iter_add", 8, [], arm_scores, name="bf16_mlp_only")]
    v = tv.region_verdict(cells, "bf16_mlp_only", task="iter_add", base=2, n=8)
    assert v["status"] == status and v["seeds"] == [0, 1]
    assert v["D"] == pytest.approx(0.635)
    assert training_report.render_region(v, "bf16 only in the MLPs").startswith(
        f"**bf16_mlp_only** (bf16 only in the MLPs): **{status}**")


def test_region_verdict_without_a_deficit_or_without_runs():
    cells = _protocol_cells("iter_add", 8, [(0.99, 0.99), (0.98, 0.98)],
                            [(0.9, 0.9), (0.97, 0.97)])
    assert tv.region_verdict(cells, "bf16_mlp_only", task="iter_add", base=2,
                             n=8)["status"] == "not run"
    cells += _protocol_cells("iter_add", 8, [], [(0.5, 0.5), (0.5, 0.5)], name="bf16_mlp_only")
    assert tv.region_verdict(cells, "bf16_mlp_only", task="iter_add", base=2,
                             n=8)["status"] == "no deficit to carry"
