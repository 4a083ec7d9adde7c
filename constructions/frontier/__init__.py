"""The precision frontier: the fewest bits for which a construction is still exact, against n.

    from constructions import frontier
    result = frontier.run_frontier({"task": "add", "base": 10, "k": 2, "l": None}, [4, 8, 16],
                                   ["once"], num_random=200, seed=0, batch_size=512, log=print)
    python -m constructions.frontier --task=add --base=10 --n=4,8,16,32,64

    search.py     the measurement (every e8mM width, fixed point, common formats), resumable
    report.py     its tables (markdown), plot, line fits, and merging runs
    __main__.py   the command line
"""

from constructions.frontier.report import (
    COMMON_FORMATS,
    MAX_FIXED_BITS,
    MAX_MANTISSA,
    fit_line,
    fit_text,
    merge,
    plot,
    to_markdown,
)
from constructions.frontier.search import (
    BF16_MANTISSA,
    EXPONENT_BITS,
    MIN_MANTISSA,
    frontier_for,
    integer_bits,
    mantissa_scan,
    run_frontier,
)

__all__ = ["BF16_MANTISSA", "COMMON_FORMATS", "EXPONENT_BITS", "MAX_FIXED_BITS", "MAX_MANTISSA",
           "MIN_MANTISSA", "fit_line", "fit_text", "frontier_for", "integer_bits",
           "mantissa_scan", "merge", "plot", "run_frontier", "to_markdown"]
