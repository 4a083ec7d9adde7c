"""The carry chain of the addition constructions: which carry enters each answer column, exactly.

With most-significant-first output the carry into column i depends on every lower column, and an
attention score bilinear in small features cannot say "only columns j < i". The exact route (the
constructions' docstrings give the full argument): a column *generates* when u >= B and
*propagates* when u = B - 1 (u is the column's base-B digit sum with the quotient of the column
below, never more than 2B - 1). The carry into column i is the generate bit g of the nearest lower
column that does not propagate. Number the non-propagating holders N = 1, 2, ... from the top
(a causal SUM head over the marks npm); the wanted holder is the unique one with N = N_i + 1,
where N_i is the count at column i's own holder, found by a quadratic-match COPY head whose score
-(N - N_i - 1)^2 needs N^2 at the keys (a second SUM head over y = npm (2N - 1)).

Four layers from `first` (the layer where the column value u is known at every holder):

    first      mlp   g = [u >= B], npm -= [u == B - 1]   ('=' and the sentinel hold npm = 1)
    first + 1  attn  N = number of non-propagating holders at positions <= t
               mlp   y = npm (2N - 1)
    first + 2  attn  N2 = sum of y = N^2;  fetch u and N of the holder of column i to Q(i)
    first + 3  attn  c = g of the holder with N = N_q + 1: the carry into column i

Numerical needs (log precision): N <= T, N^2 <= T^2 and the match margin 1 must survive the
SUM heads' 1/(C - t) averaging and the quadratic score, i.e. O(log T) mantissa bits
(`constructions.certify` bounds them per construction).
"""

from __future__ import annotations

from constructions.craft import blocks
from constructions.craft.builder import ParamBuilder
from constructions.craft.residual import Residual

LAYERS = 4  # layers the chain occupies, from `first`


def declare_tables(r: Residual, *, prev: str, fetch: str, holder: str) -> None:
    """The positional-table coordinates the chain reads: the `prev` pointer (the column value
    of the next lower column), the `fetch` pointer (from Q(i) to the holder of column i), the
    holder and '=' flags and the SUM heads' sink score; `prev`, `fetch`, `holder` say where each
    points or is 1 in the calling construction's layout."""
    for axis in ("cos", "sin"):
        r.add(f"prev_{axis}", "table", prev)
    for axis in ("cos", "sin"):
        r.add(f"fetch_{axis}", "table", fetch)
    r.add("holder", "table", holder)
    r.add("eq", "table", "1 on '='")
    r.add("sink", "table", "log(C - t): score of the BOS sink for SUM heads")


def declare(r: Residual, first: int, *, u_meaning: str) -> None:
    """The chain's residual coordinates, in the order the constructions lay them out."""
    r.add("g", f"layer_{first}/mlp", "generate bit of the held column: [u >= B]")
    r.add("npm", f"table+layer_{first}/mlp",
          "1 on non-propagating holders ('=' and the sentinel too)")
    r.add("N", f"layer_{first + 1}/attn", "number of non-propagating holders at positions <= t")
    r.add("y", f"layer_{first + 1}/mlp", "npm (2N - 1): summed, gives N^2")
    r.add("N2", f"layer_{first + 2}/attn", "N^2 at holders")
    r.add("u_q", f"layer_{first + 2}/attn", f"{u_meaning}, copied to the query Q(i)")
    r.add("N_q", f"layer_{first + 2}/attn", "N of the holder of column i, copied to Q(i)")
    r.add("c", f"layer_{first + 3}/attn", "the carry bit into column i")


def write(b: ParamBuilder, first: int, u: dict[str, float], *, base: int, total: float,
          big: float, fetch_key: str, fetch_period) -> None:
    """Write the chain's four layers (see the module docstring).

    `u`: the column value as a combination of residual coordinates (0 off the holders); `base`:
    the column base B; `total` and `big`: the SUM heads' sink constant and the gates' bound of the
    calling construction; `fetch_key`, `fetch_period`: the positional angle that the query's
    `fetch` pointer matches (the holder of column i).
    """
    # u = 0 off the holders, so g = 0 and [u == B-1] = 0 there. At '=' column 0 never generates
    # or propagates: shift u by -B (for g) and +B (for the propagate test) there.
    blocks.step(b, first, {**u, "eq": -float(base)}, base, {"g": 1.0})
    blocks.equals(b, first, {**u, "eq": float(base)}, base - 1, {"npm": -1.0})
    blocks.sum_head(b, first + 1, "sink", "bos", total, [({"npm": 1.0}, "N")])
    blocks.gated_identity(b, first + 1, {"N": 2.0}, "npm", big, {"y": 1.0}, bias=-1.0)
    blocks.sum_head(b, first + 2, "sink", "bos", total, [({"y": 1.0}, "N2")])
    blocks.match_head(b, first + 2, "fetch", fetch_key, fetch_period,
                      [(u, "u_q"), ({"N": 1.0}, "N_q")])
    blocks.quadratic_match_head(b, first + 3, {"N_q": 1.0}, 1.0, "N", "N2", "npm",
                                [({"g": 1.0}, "c")])
