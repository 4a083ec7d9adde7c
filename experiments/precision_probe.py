r"""The bits a *trained* model needs, per region, against n (evaluation only).

    python -m experiments.precision_probe --sweep=DIR/sweep --out=DIR/probe \
        [--runs=RUN_DIR,...] [--accumulations=once,sequential] [--regions=all,each,...] \
        [--num-examples=256] [--batch-size=256] [--tolerance=0.01] [--max-bits=10] \
        [--min-bits=2] [--frontier=FRONTIER_JSON,...] [--constructions=add:10:8,...] [--json]

For each fp32-trained run (a sweep's completed fp32 cells, or run directories), held-out exact
match is measured at fp32 (the reference) and then with activations simulated in e8mM, per
accumulation mode and per *region set*:

    all                every operation rounded (parameters too: they enter at the format)
    <region>           only that region rounded, the rest of the model at fp32 (`simulate.regions`:
                       embed, norm, attention_scores, attention_mixing, mlp, residual, logits)
    all_but_attention  everything rounded except inside attention (scores, softmax, mixing)

A width *passes* when exact match is at least the fp32 reference minus `tolerance` (0.01). The
**threshold** is the smallest M from which every wider mantissa up to `max_bits` passes: widths are
checked from `max_bits` downward and the scan stops at the first failure, so a narrower width that
would pass again is not looked for (exactness need not be monotonic in M). ">max" means even
e8m{max_bits} fails; "<=min" means every width down to `min_bits` passes. With region set "all"
the named formats bf16, fp16, e4m3 and e5m2 are evaluated too.

`--constructions=TASK:BASE:N[:K],...` probes hand-built models (`constructions/`) the same way,
on the verifier's input set, a width passing when every answer is exact: which region of a
construction sets its frontier (region set "all" is the frontier itself).

Outputs in --out: probe_rows.jsonl (one row per evaluation, cached: re-running resumes),
probe.json (thresholds), probe.md (tables), probe.png (threshold against n per task, beside the
constructions' frontier when --frontier gives `constructions.frontier` / reproduce JSONs).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from arith_precision.common import width_scan
from arith_precision.simulate.policy import ACCUMULATION_FORMS, is_accumulation
from arith_precision.simulate.region_sets import MODEL_REGIONS, REGION_SETS
from experiments.report.probe import threshold_label, write_outputs
from experiments.row_cache import RowCache
from experiments.trained_runs import load_run, sweep_runs

NAMED_FORMATS = ("bf16", "fp16", "e4m3", "e5m2")


def threshold(passes: Callable[[int], bool], min_bits: int, max_bits: int) -> dict:
    """Scan M = max_bits, max_bits - 1, ... while `passes(M)` (`width_scan.scan`, quick); see
    the module docstring."""
    result = width_scan.scan(passes, min_bits, max_bits, quick=True)
    bits = result["threshold"]
    return {"threshold_bits": bits, "all_pass_to_min": bits == min_bits,
            "first_failure_bits": result["first_failure"],
            "checked": {str(m): ok for m, ok in result["checked"].items()}}


def _decode_at(mcfg, steps: int, accumulation: str, region_set: str, fmt: str):
    """(decode, policy) for `evaluate`: e8mM through the runtime decoder, other formats static."""
    from arith_precision.evaluate import runtime_decoder
    from arith_precision.simulate.region_sets import region_bits, region_policy

    if fmt.startswith("e8m") and fmt[3:].isdigit() and int(fmt[3:]) <= 10:
        jitted = runtime_decoder(mcfg, steps, accumulation)
        bits_S = np.asarray(region_bits(region_set, int(fmt[3:])), np.int32)
        return (lambda p, pr: jitted(p, pr, bits_S)), None
    return None, region_policy(region_set, fmt, accumulation)


class _Progress:
    def __init__(self, jobs: int, log: Callable[[str], None]):
        self.jobs, self.done, self.start, self.log = jobs, 0, time.time(), log

    def step(self, what: str, entry: Mapping, max_bits: int) -> None:
        self.done += 1
        elapsed = time.time() - self.start
        self.log(f"[probe] {self.done}/{self.jobs} {what}: threshold "
                 f"{threshold_label(entry, max_bits)} (elapsed {elapsed:.0f}s, ETA "
                 f"{elapsed / self.done * (self.jobs - self.done):.0f}s)")


def probe(run_dirs: Mapping[str, str], out_dir: str, *, accumulations: Sequence[str] = ("once",),
          region_sets: Sequence[str] = REGION_SETS, num_examples: int = 256,
          batch_size: int = 256, tolerance: float = 0.01, min_bits: int = 2, max_bits: int = 10,
          named_formats: Sequence[str] = NAMED_FORMATS, constructions: Sequence[dict] = (),
          progress: Callable[[str], None] = print) -> dict:
    """Probe every run (a directory or a loaded `trained_runs.BaseRun`) and construction;
    returns {"settings", "results", "constructions"}; rows cached in out_dir."""
    from arith_precision.evaluate import evaluate

    check_settings(accumulations, region_sets, num_examples, batch_size, tolerance, min_bits,
                   max_bits)
    os.makedirs(out_dir, exist_ok=True)
    rows_path = os.path.join(out_dir, "probe_rows.jsonl")
    cache = RowCache(rows_path, lambda row: row["key"])
    runs = {name: d if not isinstance(d, str) else load_run(d, name=name)
            for name, d in run_dirs.items()}
    bar = _Progress((len(runs) + len(constructions)) * len(accumulations) * len(region_sets),
                    progress)
    results = []

    def cached(key, compute):
        key = json.dumps(key)
        if key not in cache:
            t0 = time.time()
            cache.add({"key": key, **compute(), "seconds": round(time.time() - t0, 2)})
        return cache[key]["exact_match"]

    def measure(run, accumulation, region_set, fmt):
        fmt = "e8m7" if fmt == "bf16" else fmt  # bf16 is e8m7, bit for bit

        def compute():
            decode, policy = (None, None) if fmt == "fp32" else _decode_at(
                run.mcfg, run.spec.answer_tokens, accumulation, region_set, fmt)
            return {"run": run.name, "accumulation": accumulation, "regions": region_set,
                    "format": fmt, **evaluate(
                        run.params, run.mcfg, run.spec, num_examples=num_examples,
                        batch_size=batch_size, data_seed=run.data_seed, policy=policy,
                        decode=decode)}

        return cached([run.name, accumulation, region_set, fmt, num_examples], compute)

    for run in runs.values():
        reference = measure(run, "once", "all", "fp32")
        for accumulation in accumulations:
            for region_set in region_sets:
                def passes(m, run=run, acc=accumulation, rs=region_set, ref=reference):
                    return measure(run, acc, rs, f"e8m{m}") >= ref - tolerance

                entry = {"run": run.name, "task": run.spec.task, "base": run.spec.base,
                         "k": run.spec.k, "n": run.spec.n, "layers": run.mcfg.num_layers,
                         "d_model": run.mcfg.d_model, "accumulation": accumulation,
                         "regions": region_set, "fp32_exact_match": reference,
                         **threshold(passes, min_bits, max_bits)}
                if region_set == "all":
                    entry["named"] = {f: measure(run, accumulation, "all", f)
                                      for f in named_formats}
                results.append(entry)
                bar.step(f"{run.name} {accumulation} {region_set}", entry, max_bits)
    construction_results = [
        entry for c in constructions for entry in _probe_construction(
            c, accumulations, region_sets, min_bits, max_bits, cached, bar)]
    settings = dict(accumulations=list(accumulations), region_sets=list(region_sets),
                    num_examples=num_examples, tolerance=tolerance, min_bits=min_bits,
                    max_bits=max_bits, named_formats=list(named_formats),
                    constructions=list(constructions))
    return {"settings": settings, "results": results, "constructions": construction_results}


def _probe_construction(c: dict, accumulations, region_sets, min_bits, max_bits, cached, bar):
    """Region thresholds of one construction; a width passes when every verifier input is exact."""
    import dataclasses

    import jax.numpy as jnp

    from arith_precision import tasks
    from arith_precision.evaluate import runtime_decoder
    from arith_precision.simulate.region_sets import region_bits
    from constructions import build
    from constructions.check import inputs

    spec = tasks.TaskSpec(c["task"], base=c["base"], n=c["n"], k=c.get("k", 2))
    construction = build(spec)
    operands, families = inputs.verification_set(spec, num_random=c.get("random", 30), seed=0)
    batch = tasks.batch_from_operands(spec, operands)
    config = dataclasses.replace(construction.config, dtype=jnp.float32,
                                 param_dtype=jnp.float32)
    params = construction.params
    name = f"{spec.task} p={spec.base}" + (f" k={spec.k}" if spec.task == "iter_add" else "") + \
        f" n={spec.n}"
    out = []
    for accumulation in accumulations:
        decode = runtime_decoder(config, spec.answer_tokens, accumulation)
        for region_set in region_sets:
            if region_set == "norm" and config.norm == "none":
                continue

            def passes(m, acc=accumulation, rs=region_set, decode=decode):
                def compute():
                    got = np.asarray(decode(params, batch.input_tokens,
                                            np.asarray(region_bits(rs, m), np.int32)))
                    exact = np.all(got == batch.answer_tokens, axis=1)
                    return {"construction": name, "accumulation": acc, "regions": rs,
                            "format": f"e8m{m}", "exact_match": float(exact.mean()),
                            "num_examples": len(operands)}

                return cached([name, acc, rs, f"e8m{m}", families], compute) == 1.0

            entry = {"construction": name, "task": spec.task, "base": spec.base, "k": spec.k,
                     "n": spec.n, "d_model": config.d_model, "accumulation": accumulation,
                     "regions": region_set, "checked_inputs": families,
                     **threshold(passes, min_bits, max_bits)}
            out.append(entry)
            bar.step(f"{name} {accumulation} {region_set}", entry, max_bits)
    return out


def check_settings(accumulations, region_sets, num_examples, batch_size, tolerance, min_bits,
                   max_bits) -> None:
    bad = [a for a in accumulations if not is_accumulation(a)]
    if bad or not accumulations:
        raise ValueError(f"accumulations: {bad or accumulations!r}: expected some of "
                         f"{ACCUMULATION_FORMS}")
    bad = [r for r in region_sets if r not in REGION_SETS]
    if bad or not region_sets:
        raise ValueError(f"regions: {bad or region_sets!r}: expected some of {REGION_SETS}")
    for name, value in (("num_examples", num_examples), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}: {value!r}: must be an integer >= 1")
    if not 0 <= tolerance < 1:
        raise ValueError(f"tolerance: {tolerance!r}: must be in [0, 1)")
    if not 1 <= min_bits <= max_bits <= 10:
        raise ValueError(f"bits: min {min_bits}, max {max_bits}: need 1 <= min <= max <= 10 "
                         f"(float32 carries e8mM exactly up to M = 10)")


def parse_construction(text: str) -> dict:
    """'TASK:BASE:N[:K]' -> {"task", "base", "n", "k"}."""
    parts = text.split(":")
    try:
        if len(parts) not in (3, 4):
            raise ValueError
        out = {"task": parts[0], "base": int(parts[1]), "n": int(parts[2])}
        if len(parts) == 4:
            out["k"] = int(parts[3])
    except ValueError:
        raise ValueError("expected TASK:BASE:N[:K], e.g. add:10:8 or iter_add:2:8:3") from None
    from arith_precision import tasks

    try:
        tasks.TaskSpec(out["task"], base=out["base"], n=out["n"], k=out.get("k", 2))
    except ValueError as e:
        raise ValueError(str(e)) from None
    return out


# ---- CLI ---------------------------------------------------------------------------------------


def _split(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def main(argv: Sequence[str] | None = None) -> int:
    """Exit status 0 done, 2 bad input (one line `error: <flag>: <value>: <why>`, checked before
    any evaluation), 1 an internal error (with its traceback)."""
    from arith_precision.common import cli_errors

    ap = cli_errors.ArgumentParser(prog="python -m experiments.precision_probe",
                                   description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sweep", help="a sweep directory: probe its completed fp32 cells")
    ap.add_argument("--runs", default="", help="comma-separated fp32 training run directories")
    ap.add_argument("--out", required=True, help="output directory (re-use it to resume)")
    ap.add_argument("--accumulations", default="once")
    ap.add_argument("--regions", default=",".join(REGION_SETS),
                    help="comma-separated region sets ('each' = every model region alone)")
    ap.add_argument("--num-examples", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--tolerance", type=float, default=0.01)
    ap.add_argument("--min-bits", type=int, default=2)
    ap.add_argument("--max-bits", type=int, default=10)
    ap.add_argument("--frontier", default="", help="construction frontier JSONs to plot beside")
    ap.add_argument("--constructions", default="",
                    help="hand-built models to probe: TASK:BASE:N[:K],... (e.g. add:10:8)")
    ap.add_argument("--json", action="store_true", help="print probe.json to stdout")
    args = ap.parse_args(argv)

    def flag(key, value, check):
        try:
            return check()
        except ValueError as e:
            raise cli_errors.UsageError(key, value, str(e).split(": ", 2)[-1]) from None

    try:
        regions = []
        for r in _split(args.regions):
            regions += list(MODEL_REGIONS) if r == "each" else [r]
        for key, value, accs, regs, bits in (
                ("--accumulations", args.accumulations, _split(args.accumulations), ["all"],
                 (2, 10)),
                ("--regions", args.regions, ["once"], regions, (2, 10)),
                ("--min-bits/--max-bits", f"{args.min_bits}/{args.max_bits}", ["once"], ["all"],
                 (args.min_bits, args.max_bits))):
            flag(key, value, lambda a=accs, r=regs, b=bits: check_settings(a, r, 1, 1, 0.0, *b))
        for key, value in (("--num-examples", args.num_examples),
                           ("--batch-size", args.batch_size)):
            cli_errors.check_int(key, value, lo=1)
        if not 0 <= args.tolerance < 1:
            raise cli_errors.UsageError("--tolerance", args.tolerance, "must be in [0, 1)")
        runs = {}
        if args.sweep:
            runs.update(flag("--sweep", args.sweep, lambda: sweep_runs(args.sweep)))
        for d in _split(args.runs):
            runs[os.path.basename(os.path.normpath(d))] = d
        runs = {name: flag("--sweep/--runs", d, lambda d=d, name=name: load_run(d, name=name))
                for name, d in runs.items()}
        constructions = [flag("--constructions", c, lambda c=c: parse_construction(c))
                         for c in _split(args.constructions)]
        if not runs and not constructions:
            raise cli_errors.UsageError("--sweep/--runs/--constructions", "(none)",
                                        "no completed fp32 run or construction to probe")
        frontiers = []
        for p in _split(args.frontier):
            try:
                with open(p) as f:
                    frontiers.append(json.load(f))
            except (OSError, json.JSONDecodeError) as e:
                raise cli_errors.UsageError("--frontier", p, str(e)) from None
        cli_errors.check_writable_dir("--out", args.out)
    except cli_errors.UsageError as e:
        cli_errors.usage_exit(e)
    result = probe(runs, args.out, accumulations=_split(args.accumulations), region_sets=regions,
                   num_examples=args.num_examples, batch_size=args.batch_size,
                   tolerance=args.tolerance, min_bits=args.min_bits, max_bits=args.max_bits,
                   constructions=constructions)
    paths = write_outputs(result, args.out, frontiers)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"[probe] wrote {', '.join(paths.values())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
