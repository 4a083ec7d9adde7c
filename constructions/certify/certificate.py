"""Precision certificates: a float format under which a construction is guaranteed exact.

    python -m constructions.certify --task=add --base=10 --n=8 [--k=K] [--l=L] [--variant=log]
        [--accumulation=once|sequential] [--exponent-bits=8] [--json] [--explain]

From the weights and the task layout alone (no input is run; engine.py states the
numerical model and the argument), for every mantissa width M = 0..24 of e{E}mM it either proves
that every valid input is answered exactly (each step's error is below the margin that step
needs, down to the readout's argmax) or names the first step whose bound fails. It reports

  * `certified_mantissa_bits`: the smallest M from which every width up to 24 is certified (the
    threshold, comparable to the measured frontier's), None when e{E}m24 is not;
  * `certified_narrower`: narrower widths that are certified as well (the bounds are not
    monotone in M: exact roundings of table values are computed, not bounded);
  * `exponent_bits`: the smallest E for which the certified M still passes (values, scores and
    the underflow error of every rounding are checked against that exponent range).

A certificate is a sufficient condition: the construction may be exact with fewer bits (the
measured frontier, constructions.frontier), never inexact with the certified ones (tested
against every committed frontier point, tests/constructions/test_certify.py). --explain prints, per
layer, the
claims the certificate makes at the certified width and the failing claim one width below.

Exit status: 0 certified (1 when no width up to 24 is), 2 bad input (one line).
"""

from __future__ import annotations

from arith_precision import tasks
from arith_precision.common import width_scan
from constructions.certify import layers
from constructions.certify import match as certify_match
from constructions.certify import mlp as certify_mlp
from constructions.certify.engine import Analysis, Failed
from constructions.certify.rounding import Fmt

MAX_MANTISSA = 24
ACCUMULATIONS = ("once", "sequential")


def dynamic_heads(construction) -> dict:
    """Margin lemmas for heads whose scores depend on the input, per construction."""
    if construction.spec.task in ("add", "iter_add") and construction.config.num_layers == 5:
        return {(4, 0): certify_match.quadratic_copy}  # column_add: the carry's quadratic match
    return {}


def ideal_ranges(construction) -> dict[str, tuple[float, float]]:
    """Ranges of residual coordinates in the ideal model, from each construction's theorem
    (its module docstring): interval arithmetic alone loses them (r = S - B q, npm = 1 - [..])."""
    spec, cfg = construction.spec, construction.config
    if spec.task in ("add", "iter_add") and cfg.num_layers == 5:
        p, k = spec.token_base, spec.num_operands
        base = p ** (1 if k <= p else tasks.ceil_log(k, p))
        holders = spec.operand_tokens + 2  # column holders, '=' and the sentinel
        return {"r": (0, base - 1), "r_next": (0, base - 1), "npm": (0, 1), "g": (0, 1),
                "N": (0, holders), "y": (-1, 2 * holders - 1), "N2": (0, holders ** 2),
                "N_q": (0, holders), "c": (0, 1), "u_q": (0, 2 * base - 1),
                "answer": (0, p - 1)}
    if spec.task == "mul":  # mul.py: digits, threshold bits, generate/propagate bits, T < 2B
        p = spec.token_base
        names = construction.residual.names
        group = 1
        while p ** group < spec.operand_tokens * (p - 1):
            group += 1
        ranges = {"answer": (0, p - 1), "T": (0, 2 * p ** group - 1)}
        for name in names:
            if name[0] in "ab" and name[1:].isdigit():
                ranges[name] = (0, p - 1)
            elif name[0] == "t" and "_" in name or name[:2] == "pr" or (
                    name[0] == "g" and name[1:].isdigit()):
                ranges[name] = (0, 1)
        return {k: v for k, v in ranges.items() if k in names}
    if spec.task == "add" and cfg.num_layers == 3:  # add_constant: carries and flags are bits
        n, p = spec.operand_tokens, spec.token_base
        bits = {f"{v}{x}": (0, 1) for x in range(n) for v in ("g", "z")}
        bits.update({f"c{i}": (0, 1) for i in range(1, n + 1)})
        bits.update({f"ans{d}": (0, 1) for d in range(p)})
        return {k: v for k, v in bits.items() if k in construction.residual.names}
    return {}


def analyse(construction, mantissa_bits: int, accumulation: str = "once",
            exponent_bits: int = 8) -> Analysis:
    """Run the certificate at one format; `an.ok` says whether every claim holds."""
    an = Analysis(construction, Fmt(exponent_bits, mantissa_bits), accumulation,
                  dynamic_heads(construction))
    an.ranges = {construction.residual.index(k): v
                 for k, v in ideal_ranges(construction).items()}
    an.ok, an.failure = True, None
    try:
        x = layers.embed(an)
        for layer in range(construction.config.num_layers):
            x = layers.clip(an, layers.attention(an, layer, x))
            x = layers.clip(an, certify_mlp.mlp(an, layer, x))
        layers.readout(an, x)
    except Failed as e:
        an.ok, an.failure = False, str(e)
    return an


def certify(construction, accumulation: str = "once", exponent_bits: int = 8,
            quick: bool = False, exponent_search: bool = True) -> dict:
    """`quick`: analyse from M = 24 down to the first width that fails (the threshold is the
    same; narrower widths are not analysed: `certified_narrower` is None)."""
    results = {}

    def passes(m: int) -> bool:
        results[m] = analyse(construction, m, accumulation, exponent_bits)
        return results[m].ok

    widths = width_scan.scan(passes, 0, MAX_MANTISSA, quick=quick)
    threshold, narrower = widths["threshold"], widths["narrower_passing"]
    exp_bits = None if threshold is None else exponent_bits
    if threshold is not None and exponent_search:
        for e in range(exponent_bits - 1, 1, -1):
            if not analyse(construction, threshold, accumulation, e).ok:
                break
            exp_bits = e
    best = results[threshold] if threshold is not None else None
    below = results[threshold - 1] if threshold not in (None, 0) else results[MAX_MANTISSA]
    return {
        "spec": str(construction.spec), "accumulation": accumulation,
        "certified_mantissa_bits": threshold, "certified_narrower": narrower,
        "exponent_bits": exp_bits,
        "format": None if threshold is None else f"e{exp_bits}m{threshold}",
        "checked": {m: results[m].ok for m in sorted(results)},
        "max_magnitude": None if best is None else best.max_mag,
        "claims": [] if best is None else [vars(c) for c in best.claims],
        "failure_below": None if below.ok else below.failure,
    }


def explain(result: dict) -> str:
    lines = [f"certificate for {result['spec']} ({result['accumulation']} accumulation)"]
    if result["certified_mantissa_bits"] is None:
        lines.append(f"not certified up to e8m{MAX_MANTISSA}: {result['failure_below']}")
        return "\n".join(lines)
    lines.append(f"certified format {result['format']}: every width from "
                 f"M = {result['certified_mantissa_bits']} to {MAX_MANTISSA} is certified"
                 + (f"; narrower certified widths: {result['certified_narrower']}"
                    if result["certified_narrower"] else ""))
    lines.append(f"largest value bounded: {result['max_magnitude']:.4g}")
    lines.append("argument at the certified width. Ideal = exact arithmetic with the intended "
                 "attention weights (1 on the matched keys, the exact softmax of a SUM head); "
                 "that the ideal model answers correctly, and the ideal ranges used "
                 "(ideal_ranges: e.g. r in [0, B - 1], carries are bits), are the "
                 "construction's theorem, not checked here. Assumed of the simulation: equal "
                 "inputs give equal outputs (keys read from equal table rows score equally), "
                 "exp within 8 carrier ulps. Errors are worst-case bounds over every input:")
    for c in result["claims"]:
        lines.append(f"  {c['where']}: {c['what']}: {c['detail']}")
    if result["failure_below"]:
        lines.append(f"one width narrower the argument fails at: {result['failure_below']}")
    lines.append("looseness (why the certificate sits above the measured frontier): ideal "
                 "intervals lose correlations between coordinates; every bound is a worst case "
                 "over positions and inputs, and the errors of different keys and queries are "
                 "charged independently (the quadratic match charges the errors of N and N2 at "
                 "two keys at once); a rounding is known to be exact only when every ideal value "
                 "it can see is representable with a margin (engine.py)")
    return "\n".join(lines)
