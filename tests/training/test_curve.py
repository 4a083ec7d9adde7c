"""The curve reading (`training/curve.py`) on hand-made curves: converged@S, plateau, rising,
diverged, and how a verdict counts a diverged run."""

import pytest

from arith_precision.training import curve


def _rows(*values, every=100, key="exact_match"):
    return [{"step": every * (i + 1), key: v} for i, v in enumerate(values)]


@pytest.mark.parametrize("values,expected", [
    # two in a row at >= 0.95: converged at the step of the second
    ((0.1, 0.5, 0.96, 0.97, 0.99), "converged@400"),
    ((0.96, 0.5, 0.96, 0.95), "converged@400"),        # the first streak is broken
    # quarters of (0, 800]: last (600, 800] best 0.31; before (400, 600] best 0.30: plateau
    ((0.1, 0.2, 0.25, 0.3, 0.29, 0.3, 0.31, 0.3), "plateau"),
    # the last quarter gained 0.1 over the one before: rising
    ((0.1, 0.2, 0.25, 0.3, 0.29, 0.3, 0.35, 0.4), "rising"),
    # a jump (the delayed transition of a slow arm): rising, not plateau
    ((0.0, 0.01, 0.02, 0.02, 0.03, 0.02, 0.02, 0.6), "rising"),
    ((0.5,), "rising"),                                  # one validation: no quarters to compare
    ((), "rising"),
    ((0.96, 0.2, 0.96, 0.2), "plateau"),                # never two in a row; last quarter 0.2
])
def test_reading_of_hand_made_curves(values, expected):
    assert curve.reading(_rows(*values)) == expected


def test_plateau_boundary_is_inclusive_at_the_stated_gain():
    # last quarter best 0.32 = 0.30 + 0.02: within 0.02, a plateau; 0.33 is not
    base = (0.1, 0.2, 0.25, 0.3, 0.29, 0.3)
    assert curve.reading(_rows(*base, 0.32, 0.3)) == "plateau"
    assert curve.reading(_rows(*base, 0.33, 0.3)) == "rising"


def test_diverged_wins_and_counts_as_zero():
    assert curve.reading(_rows(0.96, 0.97), status="diverged") == "diverged"
    assert curve.counted_score(0.7, "diverged") == 0.0
    assert curve.counted_score(0.7, "plateau") == 0.7
    assert curve.counted_score(None, "rising") is None


def test_reads_the_protocol_asked_for():
    rows = [{"step": 100 * (i + 1), "exact_match_iid": iid, "exact_match_unseen": unseen}
            for i, (iid, unseen) in enumerate([(0.97, 0.5), (0.98, 0.6), (0.99, 0.6)])]
    assert curve.reading(rows, protocol="iid") == "converged@200"
    assert curve.reading(rows, protocol="unseen").startswith(("plateau", "rising"))
    # a protocol with no scores (nothing held out): nothing to read
    assert curve.reading([{"step": 100, "exact_match_unseen": None}],
                         protocol="unseen") == "rising"


def test_rule_text_states_every_reading():
    text = curve.RULE.text()
    assert all(word in text for word in ("diverged", "converged@S", "plateau", "rising"))
    assert "0.95" in text and "0.02" in text
