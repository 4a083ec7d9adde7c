"""The precision frontier: the fewest bits for which a construction is still exact, against n.

    python -m constructions.frontier --task=add --base=10 --n=2,4,8,16,32,64 [--k=K] [--l=L]
        [--chunk=C] [--accumulation=once,sequential] [--random=200] [--out=DIR] [--json]
        [--float-only]

For each n and accumulation mode it checks the verifier on its full input set (exhaustive or
adversarial + `--random` random inputs) in the float format e{E}m{M} (E = 8 exponent bits,
float32's range, large enough for every construction value) for *every* M from 0 to 24, and
reports

  * the threshold: the smallest M from which every wider mantissa up to e8m24 passes (None when
    e8m24 fails), what the plots and fits show; and
  * the narrower widths that pass too: exactness is not monotonic in M (ADD base 2, n = 2,
    `once`: e8m2 is exact on all 16 inputs, e8m3 and e8m4 are not, the threshold is 5).

The widths run through one compiled decoder per (model shape, accumulation, carrier) whose
mantissa width is a runtime value (`constructions.check.run`, `simulate.runtime_format`: float32 for
M <= 10, float64 above), so checking all 25 widths costs two compiles. The fixed-point column
searches the fewest fraction bits F of fixed{I}.{F} (I = the integer bits the construction's
largest value needs at that n, measured) by binary search, which assumes that every F above a
passing one passes (checked at both ends of the answer), on the static path (one compile per
format). It also reports, for each common format (bf16 = e8m7 from the scan; fp16, e4m3, e5m2
static), the largest n of the list at which it still passes (sizes are visited in increasing
order; a format is not re-checked at larger n once it has failed, and the fixed-point search
starts from the previous n's answer). `--float-only` skips the fixed point and fp16 / e4m3 / e5m2.

Outputs (with --out): frontier.json, frontier.md (tables) and frontier.png (bits against log2 n
with a least-squares line per mode; `frontier_report.py`), and checks.json, every verdict as soon
as it is known: the same command run again after a stop checks only what is missing
(`check/log.py`; verdicts are keyed by digests of the weights and inputs, so a changed
construction is checked afresh). Without --out it prints the markdown
tables (or the JSON with --json). `python -m constructions.frontier --merge=DIR1,DIR2,... --out=DIR`
combines several runs into one table file and one plot.

Exit status: 0 done, 1 internal error (with its traceback), 2 bad input: one line
`error: <flag>: <value>: <why>`, before the search starts; that includes an --out directory that
cannot be written and, for every n of the list, a construction whose estimated memory
(`constructions/check/sizes.py`, at --batch-size) is over 16 GiB (ARITH_PRECISION_MAX_MEMORY_GB).
"""

from __future__ import annotations

import math
import time

import numpy as np

from arith_precision import formats, tasks
from arith_precision import model as model_lib
from arith_precision.common import width_scan
from constructions.check import log as check_log
from constructions.frontier.report import (
    COMMON_FORMATS,
    MAX_FIXED_BITS,
    MAX_MANTISSA,
    fit_line,
)

EXPONENT_BITS = 8
# The one statement that bf16 is e8m7: its column is read off the e8mM scan at M = 7.
BF16_MANTISSA = formats.as_format("bf16").mantissa_bits
assert formats.as_format("bf16") == formats.as_format(f"e{EXPONENT_BITS}m{BF16_MANTISSA}")
MIN_MANTISSA = 0  # e8m0: powers of two only; the scan checks every width from here up


_CACHE: dict = {}


def _passes(construction, operands, fmt, accumulation, batch_size, digests,
            log: check_log.CheckLog | None = None) -> bool:
    """Does the verifier pass on `operands`? Cached per (construction, operands, format,
    accumulation) in this process and, with a `log`, on disk (`check_log`: a stopped run
    resumes). `digests`: (check_log.construction_digest, check_log.operands_digest)."""
    from constructions.check import run

    # Keyed by digests of the weights and inputs, never by id(): a later construction may reuse
    # a freed id, and a changed construction must not reuse an old verdict.
    key = check_log.key(*digests, fmt, accumulation)
    if key not in _CACHE:
        ok = log.get(key) if log is not None else None
        if ok is None:
            run.enable_carrier(fmt)
            result = run.check(construction, operands, fmt, accumulation, batch_size,
                               stop_at_first_failure=True,
                               runtime=run.runtime_mantissa(fmt) is not None)
            ok = result["failures"] == 0
        _CACHE[key] = ok
    if log is not None and log.get(key) is None:  # also a verdict this process already had
        log.record(key, _CACHE[key])
    return _CACHE[key]


def mantissa_scan(passes, lo: int = MIN_MANTISSA, hi: int = MAX_MANTISSA,
                  quick: bool = False) -> dict:
    """`width_scan.scan` of `passes(M)` over e8mM widths lo..hi: {"threshold",
    "narrower_passing" (None when `quick`), "checked"} (see `arith_precision.common.width_scan`).
    """
    result = width_scan.scan(passes, lo, hi, quick=quick)
    return {key: result[key] for key in ("threshold", "narrower_passing", "checked")}


def _search(passes, lo: int, hi: int) -> int | None:
    """Smallest b in [lo, hi] with passes(b), assuming monotonicity; None if passes(hi) fails."""
    if not passes(hi):
        return None
    while lo < hi:
        mid = (lo + hi) // 2
        if passes(mid):
            hi = mid
        else:
            lo = mid + 1
    return lo


def _search_from(passes, start: int, lo: int, hi: int) -> int | None:
    """Like `_search`, walking from a guess (the previous n's answer): usually 2 checks."""
    start = min(max(start, lo), hi)
    if passes(start):
        while start > lo and passes(start - 1):
            start -= 1
        return start
    while start < hi:
        start += 1
        if passes(start):
            return start
    return None


def integer_bits(construction, operands) -> int:
    """Integer bits (sign excluded) for the largest |value| of a float64 run: scores, residuals."""
    import jax
    import jax.numpy as jnp

    from constructions.check import run

    run.enable_carrier("e11m24")
    config = construction.config
    cfg64 = model_lib.TransformerConfig(**{**config.__dict__, "dtype": jnp.float64,
                                           "param_dtype": jnp.float64})
    params = jax.tree.map(lambda a: np.asarray(a, np.float64), construction.params)
    spec = construction.spec
    batch = tasks.batch_from_operands(spec, operands[:64])
    tokens = np.concatenate([batch.input_tokens, batch.answer_tokens[:, :-1]], axis=1)
    _, residuals = model_lib.Transformer(cfg64).apply({"params": params}, tokens,
                                                      return_residuals=True)
    largest = max(float(np.max(np.abs(np.asarray(v)))) for v in residuals.values())
    largest = max(largest, max(float(np.max(np.abs(a))) for a in jax.tree.leaves(params)))
    # Attention scores: |q.k| <= |q| |k| per head; bound by the products of the largest entries.
    for layer in range(config.num_layers):
        x = np.asarray(residuals["embed" if layer == 0 else f"layer_{layer - 1}/mlp"])
        attn = params[f"layer_{layer}"]["attn"]
        q = np.einsum("bld,dhk->blhk", x, attn["query"]["kernel"]) + attn["query"]["bias"]
        k = np.einsum("bld,dhk->blhk", x, attn["key"]["kernel"]) + attn["key"]["bias"]
        scores = np.einsum("blhk,bmhk->bhlm", q, k) / math.sqrt(config.effective_head_dim)
        largest = max(largest, float(np.max(np.abs(scores))))
    return max(1, math.ceil(math.log2(largest + 1)) + 1)


class _Ticker:
    """Progress lines with an ETA: after each width checked, at most every `every` seconds."""

    def __init__(self, progress, units: int, every: float = 20.0):
        self.progress, self.units, self.every = progress, units, every
        self.start = self.last = time.time()
        self.done = 0  # finished (n, accumulation) units

    def width(self, what: str, m: int, ok: bool, checked: int, total: int) -> None:
        now = time.time()
        if now - self.last < self.every:
            return
        self.last = now
        elapsed = now - self.start
        fraction = (self.done + checked / total) / self.units
        eta = elapsed / fraction * (1 - fraction) if fraction > 0 else float("nan")
        self.progress(f"  {what}: e8m{m} {'passes' if ok else 'fails'} ({checked}/{total} "
                      f"widths; elapsed {elapsed:.0f}s, ETA ~{eta:.0f}s)")

    def unit_done(self) -> None:
        self.done += 1
        self.last = time.time()


def frontier_for(spec: tasks.TaskSpec, accumulations=("once", "sequential"),
                 num_random: int = 200, seed: int = 0, batch_size: int = 512,
                 progress=print, previous: dict | None = None, variant: str = "log",
                 ticker: _Ticker | None = None, float_only: bool = False,
                 log: check_log.CheckLog | None = None) -> dict:
    """Frontier entries for one spec: float mantissa threshold and the narrower widths that pass
    (every width checked, `mantissa_scan`), fixed fraction bits, common formats.

    `previous` (the entry of the next smaller n) warm-starts the fixed-point search, and a
    common format that already failed there is not checked again (recorded as failing).
    `float_only`: the e8mM scan alone (bf16 read off it); no fixed point (None), no fp16 / e4m3 /
    e5m2, the formats that still compile one decoder each.
    `log`: verdicts already on disk are reused and new ones recorded (`check_log`).
    """
    from constructions import build
    from constructions.check import inputs

    ticker = ticker or _Ticker(progress, len(accumulations))
    construction = build(spec, variant=variant)
    operands, families = inputs.verification_set(spec, num_random=num_random, seed=seed)
    digests = (check_log.construction_digest(construction), check_log.operands_digest(operands))
    entry = {"n": spec.n, "checked": len(operands), "families": families,
             "d_model": construction.d_model, "float_mantissa_bits": {},
             "float_narrower_passing": {}, "float_checked": {}, "fixed": {}, "common": {}}
    int_bits = None if float_only else integer_bits(construction, operands)
    for acc in accumulations:
        start = time.time()
        what = f"{spec.task} p={spec.base} n={spec.n} [{acc}]"
        seen = []

        def float_ok(b, acc=acc, what=what, seen=seen, total=MAX_MANTISSA - MIN_MANTISSA + 1):
            ok = _passes(construction, operands, f"e{EXPONENT_BITS}m{b}", acc, batch_size,
                         digests, log)
            seen.append(b)
            ticker.width(what, b, ok, len(seen), total)
            return ok

        scan = mantissa_scan(float_ok, MIN_MANTISSA, MAX_MANTISSA)
        m = scan["threshold"]
        entry["float_mantissa_bits"][acc] = m
        entry["float_narrower_passing"][acc] = scan["narrower_passing"]
        entry["float_checked"][acc] = {str(b): ok for b, ok in scan["checked"].items()}
        if float_only:
            entry["fixed"][acc] = None
            entry["common"][acc] = {"bf16": scan["checked"][BF16_MANTISSA] and not (
                previous and not previous["common"][acc]["bf16"])}
            ticker.unit_done()
            progress(f"  {what}: float threshold M={m}, narrower passing "
                     f"{scan['narrower_passing'] or 'none'} ({time.time() - start:.0f}s)")
            continue
        max_frac = MAX_FIXED_BITS - int_bits
        def fixed_ok(b, acc=acc):
            return _passes(construction, operands, f"fixed{int_bits}.{b}", acc, batch_size,
                           digests, log)

        prev_f = previous["fixed"][acc]["frac_bits"] if previous else None
        if max_frac < 1:
            f = None
        elif prev_f is not None:
            f = _search_from(fixed_ok, prev_f, 1, max_frac)
        else:
            f = _search(fixed_ok, 1, max_frac)
        entry["fixed"][acc] = {"int_bits": int_bits, "frac_bits": f}
        entry["common"][acc] = {
            fmt: (False if previous and not previous["common"][acc][fmt]
                  else scan["checked"][7] if fmt == "bf16"
                  else _passes(construction, operands, fmt, acc, batch_size, digests, log))
            for fmt in COMMON_FORMATS}
        ticker.unit_done()
        progress(f"  {what}: float threshold M={m}, narrower passing "
                 f"{scan['narrower_passing'] or 'none'}, fixed {int_bits}.{f}, common "
                 f"{entry['common'][acc]} ({time.time() - start:.0f}s)")
    return entry


def run_frontier(spec_kwargs: dict, ns: list[int], accumulations, num_random: int, seed: int,
                 batch_size: int = 512, progress=print, variant: str = "log",
                 float_only: bool = False, checks_dir: str | None = None) -> dict:
    """The frontier at every n of `ns`. `checks_dir`: keep every verdict in
    checks_dir/checks.json and reuse those already there (a stopped run resumes)."""
    ns = sorted(ns)
    log = check_log.CheckLog(checks_dir) if checks_dir else None
    if log is not None and log.loaded:
        progress(f"  resuming: {log.loaded} verdicts in {log.path}")
    entries = []
    ticker = _Ticker(progress, len(ns) * len(accumulations))
    for n in ns:
        spec = tasks.TaskSpec(n=n, **spec_kwargs)
        entries.append(frontier_for(spec, accumulations, num_random, seed, batch_size,
                                    progress, previous=entries[-1] if entries else None,
                                    variant=variant, ticker=ticker, float_only=float_only,
                                    log=log))
    label = f"{spec_kwargs['task']} p={spec_kwargs['base']}"
    if spec_kwargs["task"] == "iter_add":
        label += f" k={spec_kwargs['k']}"
    if spec_kwargs["task"] == "mul" and spec_kwargs.get("l"):
        label += f" l={spec_kwargs['l']}"
    if spec_kwargs.get("chunk", 1) > 1:
        label += f" c={spec_kwargs['chunk']}"
    if variant == "lookup":
        label += " [lookup: width independent of k]"
    elif variant != "log":
        label += f" [{variant} precision]"
    fits = {acc: fit_line(ns, [e["float_mantissa_bits"][acc] for e in entries])
            for acc in accumulations}
    return {"label": label, "spec": spec_kwargs, "variant": variant, "ns": ns,
            "accumulations": list(accumulations), "exponent_bits": EXPONENT_BITS,
            "mantissa_range": [MIN_MANTISSA, MAX_MANTISSA], "float_only": float_only,
            "entries": entries, "fits": fits}
