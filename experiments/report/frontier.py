"""The frontier phase rendered: frontier.md (tables) and frontier.png (the plot of
`constructions.frontier.report`, which the constructions' own CLI draws too)."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

from arith_precision.common import atomic, markdown
from constructions.frontier import BF16_MANTISSA


def frontier_markdown(results: Sequence[dict]) -> str:
    """One table per task: full results as `constructions.frontier.to_markdown` writes them, lean
    ones (`experiments.reproduce.frontier.lean_frontier`) as mantissa bits against n."""
    from constructions import frontier

    lines = []
    for r in results:
        if not r.get("lean"):
            lines.append(frontier.to_markdown(r))
            continue
        (acc,) = r["accumulations"]
        lines += [f"**{r['label']}, accumulation `{acc}`**", ""]
        lines += markdown.table(
            ["n", "log2 n", "mantissa bits (e8mM)", f"bf16 (e8m{BF16_MANTISSA}) exact",
             "inputs checked", "d_model"],
            ([e["n"], f"{math.log2(e['n']):.2f}",
              m if (m := e["float_mantissa_bits"][acc]) is not None
              else f"> {frontier.MAX_MANTISSA}",
              "yes" if e["bf16_exact"] else "no",
              f"{e['checked']} ({', '.join(f'{k} {v}' for k, v in e['families'].items())})",
              e["d_model"]] for e in r["entries"]))
        fit = r["fits"].get(acc)
        if fit:
            lines.append(f"\nFitted: mantissa bits ~ {frontier.fit_text(fit)}")
        lines.append("")
    return "\n".join(lines)


def write_outputs(results: Sequence[dict], out_dir: str) -> dict[str, str]:
    """frontier.png and frontier.md in `out_dir`; returns their paths."""
    from constructions import frontier

    paths = {"plot": os.path.join(out_dir, "frontier.png"),
             "markdown": os.path.join(out_dir, "frontier.md")}
    frontier.plot(results, paths["plot"])
    atomic.write_text(paths["markdown"], frontier_markdown(results) + "\n")
    return paths
