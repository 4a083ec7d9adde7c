"""The one width scan: the fewest mantissa bits from which a check passes at every wider width.

    result = scan(passes, lo=0, hi=24)          # passes(M) -> bool, called for M = hi, hi-1, ...

No monotonicity is assumed: a check can pass at a narrow width by luck (a table value that
happens to round exactly) and fail one wider. So the scan walks down from `hi`, and

    threshold         the smallest M such that every width M..hi passes (None when hi fails);
    first_failure     the widest failing width (threshold - 1, or hi when hi fails; None when
                      every width down to lo passes);
    narrower_passing  the widths below the threshold that pass as well (sorted), or None when
                      `quick`: then the walk stops at the first failure and the narrower widths
                      are never checked (the threshold is the same: every width above it was
                      checked, and the one below fails);
    checked           {M: passed} for every width checked, in increasing M.

Used by the constructions' measured frontier (`constructions.frontier`), their certificates
(`constructions.certify`) and the precision probe of trained models.
"""

from __future__ import annotations

from collections.abc import Callable


def scan(passes: Callable[[int], bool], lo: int, hi: int, *, quick: bool = False) -> dict:
    """Check `passes(M)` from M = hi down to lo (see the module docstring)."""
    if lo > hi:
        raise ValueError(f"width scan: lo={lo} > hi={hi}")
    checked: dict[int, bool] = {}
    for m in range(hi, lo - 1, -1):
        checked[m] = bool(passes(m))
        if quick and not checked[m]:
            break
    threshold = first_failure = None
    for m in range(hi, lo - 1, -1):
        if m not in checked or not checked[m]:
            first_failure = m if m in checked else None
            break
        threshold = m
    narrower = None if quick else sorted(
        m for m, ok in checked.items() if ok and (threshold is None or m < threshold))
    return {"threshold": threshold, "first_failure": first_failure,
            "narrower_passing": narrower, "checked": {m: checked[m] for m in sorted(checked)}}
