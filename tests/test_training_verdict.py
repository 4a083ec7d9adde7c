"""The training verdict: each status is reached exactly when its rule says, from the numbers."""

import pytest

from experiments import training_verdict as tv


def _cells(task, n, fp32, arm, name="pure_bf16", base=2):
    """Cells for one (task, n): fp32 and `name`, one per seed (values are per-seed lists)."""
    out = []
    for precision, values in (("fp32", fp32), (name, arm)):
        for seed, em in enumerate(values):
            out.append(dict(task=task, base=base, k=3 if task == "iter_add" else 2, l=0,
                            layers=2, n=n, accumulation="once", precision=precision, seed=seed,
                            exact_match=em, steps_to_converge=None, convergence=None))
    return out


ADD_OK = _cells("add", 8, [0.99, 1.0], [0.98, 0.99])

CASES = [  # (cells, status, a phrase the reasons or numbers must contain)
    (ADD_OK + _cells("iter_add", 8, [0.97, 0.99], [0.40, 0.55]), "shown", None),
    # One seed of the arm is only 0.15 below: the collapse must hold on every seed.
    (ADD_OK + _cells("iter_add", 8, [0.97, 0.99], [0.40, 0.84]), "not shown",
     "not 0.2 below it on every seed"),
    # fp32 itself below 0.95 on one seed: the contrast cannot be asked.
    (ADD_OK + _cells("iter_add", 8, [0.94, 0.99], [0.10, 0.10]), "not shown",
     "fp32 does not reach 0.95"),
    # A single seed is not enough.
    (_cells("add", 8, [1.0], [1.0]) + _cells("iter_add", 8, [0.99], [0.1]), "not shown",
     "fp32 does not reach 0.95 on every one of >= 2 seeds"),
    # The ADD control drops too: no contrast.
    (_cells("add", 8, [0.99, 1.0], [0.90, 0.99]) + _cells("mul", 5, [0.99, 0.99], [0.3, 0.3]),
     "not shown", "the ADD control does not hold"),
    # No ADD control at all.
    (_cells("mul", 5, [0.99, 0.99], [0.3, 0.3]), "not shown", "no ADD control cell"),
    # Where the paper shows the collapse (IterADD base 2, n >= 10), the arm matches fp32.
    (ADD_OK + _cells("iter_add", 10, [0.99, 0.98], [0.97, 0.99]), "contradicted",
     "at lengths where the paper shows the collapse"),
    # Matching at n = 8 (below the paper's collapse range) is not a contradiction.
    (ADD_OK + _cells("iter_add", 8, [0.99, 0.98], [0.97, 0.99]), "not shown", None),
    (ADD_OK, "not run", "no IterADD / MUL cell"),
]


@pytest.mark.parametrize("cells,status,phrase", CASES)
def test_verdict_follows_the_rule(cells, status, phrase):
    v = tv.verdict(cells, "pure_bf16")
    assert v["status"] == status, v["reasons"]
    text = tv.render(v)
    assert f"**{status}**" in text
    if phrase:
        assert phrase in text


def test_shown_quotes_the_deciding_numbers_per_seed():
    v = tv.verdict(ADD_OK + _cells("iter_add", 8, [0.97, 0.99], [0.40, 0.55]), "pure_bf16")
    assert v["collapses"] == [{"point": "IterADD (k=3) base 2 n=8",
                               "pairs": [[0, 0.97, 0.40], [1, 0.99, 0.55]]}]
    assert "seed 1: 0.990 vs 0.550" in tv.render(v)


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
