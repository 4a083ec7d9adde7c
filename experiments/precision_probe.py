r"""The bits a *trained* model needs, per region, against n (evaluation only).

    python -m experiments.precision_probe --sweep=DIR/sweep --out=DIR/probe \
        [--runs=RUN_DIR,...] [--accumulations=once,sequential] [--regions=all,each,...] \
        [--num-examples=256] [--batch-size=256] [--tolerance=0.01] [--max-bits=10] \
        [--min-bits=2] [--frontier=FRONTIER_JSON,...] [--json]

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

Outputs in --out: probe_rows.jsonl (one row per evaluation, cached: re-running resumes),
probe.json (thresholds), probe.md (tables), probe.png (threshold against n per task, beside the
constructions' frontier when --frontier gives `constructions.frontier` / reproduce JSONs).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np

NAMED_FORMATS = ("bf16", "fp16", "e4m3", "e5m2")
MODEL_REGIONS = ("embed", "norm", "attention_scores", "attention_mixing", "mlp", "residual",
                 "logits")
REGION_SETS = ("all",) + MODEL_REGIONS + ("all_but_attention",)
ACCUMULATIONS = ("once", "sequential", "pairwise")


def region_policy(region_set: str, fmt: str, accumulation: str):
    """The simulation policy of a region set at a format."""
    from arith_precision.simulate import Policy, RegionPolicy

    if region_set == "all":
        return Policy(compute=fmt, accumulation=accumulation)
    if region_set == "all_but_attention":
        return RegionPolicy.except_attention(fmt).with_accumulation(accumulation)
    if region_set in MODEL_REGIONS:
        return RegionPolicy.only(region_set, fmt).with_accumulation(accumulation)
    raise ValueError(f"unknown region set {region_set!r}; expected one of {REGION_SETS}")


def runtime_policy(accumulation: str, regions: Sequence[str] = MODEL_REGIONS):
    """One policy for every region set and width: slot 0 is the base, slot 1 + i region i."""
    from arith_precision.simulate import Policy, RegionPolicy
    from arith_precision.simulate.runtime_format import RuntimeMantissa

    def at(slot):
        return Policy(compute=RuntimeMantissa(slot=slot), accumulation=accumulation)

    return RegionPolicy(at(0), tuple((r, at(1 + MODEL_REGIONS.index(r))) for r in regions))


def region_bits(region_set: str, m: int) -> list[int]:
    """The slot widths of `runtime_policy` that make it `region_policy(region_set, e8m{m})`."""
    from arith_precision.simulate.runtime_format import MAX_RUNTIME_BITS as FULL

    if region_set == "all":
        return [m] * (1 + len(MODEL_REGIONS))
    if region_set == "all_but_attention":
        return [m] + [FULL if r in ("attention_scores", "attention_mixing") else m
                      for r in MODEL_REGIONS]
    if region_set in MODEL_REGIONS:
        return [FULL] + [m if r == region_set else FULL for r in MODEL_REGIONS]
    raise ValueError(f"unknown region set {region_set!r}; expected one of {REGION_SETS}")


@functools.lru_cache(maxsize=16)
def runtime_decoder(mcfg, steps: int, accumulation: str):
    """A jitted `(params, prompt_BxT, bits_S) -> tokens_BxN`: compiled once for every width."""
    import jax

    from arith_precision import model as model_lib
    from arith_precision.simulate import simulate
    from arith_precision.simulate.runtime_format import mantissa_bits

    regions = [r for r in MODEL_REGIONS if not (r == "norm" and mcfg.norm == "none")]
    policy = runtime_policy(accumulation, regions)

    def decode(params, prompt_BxT, bits_S):
        with mantissa_bits(bits_S):
            return simulate(lambda p, pr: model_lib.greedy_decode(p, mcfg, pr, steps),
                            policy)(params, prompt_BxT)

    return jax.jit(decode)


def threshold(passes: Callable[[int], bool], min_bits: int, max_bits: int) -> dict:
    """Scan M = max_bits, max_bits - 1, ... while `passes(M)`; see the module docstring."""
    checked = {}
    for m in range(max_bits, min_bits - 1, -1):
        checked[m] = bool(passes(m))
        if not checked[m]:
            break
    passing = [m for m, ok in checked.items() if ok]
    bits = min(passing) if passing else None
    return {"threshold_bits": bits, "all_pass_to_min": bits == min_bits,
            "first_failure_bits": next((m for m, ok in checked.items() if not ok), None),
            "checked": {str(m): ok for m, ok in sorted(checked.items())}}


def threshold_label(entry: Mapping, max_bits: int) -> str:
    bits = entry["threshold_bits"]
    if bits is None:
        return f">{max_bits}"
    return f"<={bits}" if entry["all_pass_to_min"] else str(bits)


# ---- probing -----------------------------------------------------------------------------------


def _rows_cache(path: str) -> dict[str, dict]:
    rows = {}
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                if line.strip():
                    row = json.loads(line)
                    rows[row["key"]] = row
    return rows


def probe(run_dirs: Mapping[str, str], out_dir: str, *, accumulations: Sequence[str] = ("once",),
          region_sets: Sequence[str] = REGION_SETS, num_examples: int = 256,
          batch_size: int = 256, tolerance: float = 0.01, min_bits: int = 2, max_bits: int = 10,
          named_formats: Sequence[str] = NAMED_FORMATS,
          progress: Callable[[str], None] = print) -> dict:
    """Probe every run; returns {"settings", "rows", "results"} and caches rows in out_dir."""
    from arith_precision.evaluate import evaluate
    from experiments.quant_study import load_run

    _check_settings(accumulations, region_sets, num_examples, batch_size, tolerance, min_bits,
                    max_bits)
    os.makedirs(out_dir, exist_ok=True)
    rows_path = os.path.join(out_dir, "probe_rows.jsonl")
    cache = _rows_cache(rows_path)
    runs = {name: load_run(d, name=name) for name, d in run_dirs.items()}
    jobs = len(runs) * len(accumulations) * len(region_sets)
    start, done, results = time.time(), 0, []

    def measure(run, accumulation, region_set, fmt):
        """Held-out exact match: fp32, e8mM through the runtime decoder, other formats static."""
        if fmt == "bf16":  # bf16 is e8m7, bit for bit
            fmt = "e8m7"
        key = json.dumps([run.name, accumulation, region_set, fmt, num_examples])
        if key not in cache:
            t0 = time.time()
            policy = decode = None
            if fmt.startswith("e8m") and fmt[3:].isdigit():
                steps = run.spec.answer_tokens
                jitted = runtime_decoder(run.mcfg, steps, accumulation)
                bits_S = np.asarray(region_bits(region_set, int(fmt[3:])), np.int32)
                decode = functools.partial(lambda p, pr, b: jitted(p, pr, b), b=bits_S)
            elif fmt != "fp32":
                policy = region_policy(region_set, fmt, accumulation)
            metrics = evaluate(run.params, run.mcfg, run.spec, num_examples=num_examples,
                               batch_size=batch_size, data_seed=run.data_seed, policy=policy,
                               decode=decode)
            cache[key] = {"key": key, "run": run.name, "accumulation": accumulation,
                          "regions": region_set, "format": fmt, **metrics,
                          "seconds": round(time.time() - t0, 2)}
            with open(rows_path, "a") as f:
                f.write(json.dumps(cache[key]) + "\n")
        return cache[key]["exact_match"]

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
                done += 1
                elapsed = time.time() - start
                progress(f"[probe] {done}/{jobs} {run.name} {accumulation} {region_set}: "
                         f"threshold {threshold_label(entry, max_bits)} (elapsed {elapsed:.0f}s, "
                         f"ETA {elapsed / done * (jobs - done):.0f}s)")
    settings = dict(accumulations=list(accumulations), region_sets=list(region_sets),
                    num_examples=num_examples, tolerance=tolerance, min_bits=min_bits,
                    max_bits=max_bits, named_formats=list(named_formats))
    return {"settings": settings, "results": results}


def _check_settings(accumulations, region_sets, num_examples, batch_size, tolerance, min_bits,
                    max_bits) -> None:
    bad = [a for a in accumulations if a not in ACCUMULATIONS]
    if bad or not accumulations:
        raise ValueError(f"accumulations: {bad or accumulations!r}: expected some of "
                         f"{ACCUMULATIONS}")
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


# ---- rendering ---------------------------------------------------------------------------------


def _task_label(entry: Mapping) -> str:
    label = f"{entry['task']} p={entry['base']}"
    return label + (f" k={entry['k']}" if entry["task"] == "iter_add" else "")


def to_markdown(result: Mapping) -> str:
    s = result["settings"]
    max_bits = s["max_bits"]
    lines = [f"Fewest e8mM mantissa bits at which held-out exact match stays within "
             f"{s['tolerance']} of fp32 ({s['num_examples']} examples; threshold: every width "
             f"from it up to e8m{max_bits} passes, scanned downward, stopping at the first "
             f"failure). Columns: which part of the model is rounded.", ""]
    sets = s["region_sets"]
    for accumulation in s["accumulations"]:
        entries = [e for e in result["results"] if e["accumulation"] == accumulation]
        if not entries:
            continue
        lines += [f"**accumulation `{accumulation}`**", "",
                  "| run | task | n | fp32 | " + " | ".join(sets) + " |",
                  "|---|---|---|---|" + "---|" * len(sets)]
        by_run = {}
        for e in entries:
            by_run.setdefault(e["run"], {})[e["regions"]] = e
        for run, cells in by_run.items():
            first = next(iter(cells.values()))
            lines.append(f"| {run} | {_task_label(first)} | {first['n']} | "
                         f"{first['fp32_exact_match']:.3f} | " + " | ".join(
                             threshold_label(cells[r], max_bits) if r in cells else "-"
                             for r in sets) + " |")
        named = [e for e in entries if e.get("named")]
        if named:
            fmts = s["named_formats"]
            lines += ["", "Exact match with every operation in a named format:", "",
                      "| run | fp32 | " + " | ".join(fmts) + " |", "|---|---|" + "---|" * len(fmts)]
            for e in named:
                lines.append(f"| {e['run']} | {e['fp32_exact_match']:.3f} | " + " | ".join(
                    f"{e['named'][f]:.3f}" for f in fmts) + " |")
        lines.append("")
    return "\n".join(lines)


def _frontier_series(frontiers: Iterable[Mapping]) -> dict[tuple, list[tuple[int, int]]]:
    """{(task, base, k): [(n, bits)]} from constructions.frontier / reproduce frontier JSONs."""
    out = {}
    for f in frontiers:
        f = f.get("result", f)
        spec = f["spec"]
        key = (spec["task"], spec["base"], spec["k"] if spec["task"] == "iter_add" else 2)
        points = [(e["n"], e["float_mantissa_bits"].get("once")) for e in f["entries"]]
        out[key] = [(n, b) for n, b in points if b is not None]
    return out


def plot(result: Mapping, path: str, frontiers: Iterable[Mapping] = ()) -> None:
    """Threshold bits against n per task (all / all_but_attention), beside the constructions'."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    max_bits = result["settings"]["max_bits"]
    entries = [e for e in result["results"] if e["accumulation"] == "once"]
    keys = sorted({(e["task"], e["base"], e["k"] if e["task"] == "iter_add" else 2)
                   for e in entries})
    if not keys:
        return
    series = _frontier_series(frontiers)
    fig, axes = plt.subplots(1, len(keys), figsize=(4.5 * len(keys), 3.8), squeeze=False)
    for ax, key in zip(axes[0], keys, strict=True):
        mine = [e for e in entries
                if (e["task"], e["base"], e["k"] if e["task"] == "iter_add" else 2) == key]
        for region_set, style in (("all", "o-"), ("all_but_attention", "s--")):
            pts = sorted((e["n"], e["threshold_bits"] if e["threshold_bits"] is not None
                          else max_bits + 1) for e in mine if e["regions"] == region_set)
            if pts:
                ax.plot(*zip(*pts, strict=True), style, label=f"trained, {region_set}")
        if key in series:
            ax.plot(*zip(*series[key], strict=True), "k^-", label="construction frontier")
        ax.axhline(max_bits + 1, color="grey", lw=0.8, ls=":")
        ax.text(ax.get_xlim()[0], max_bits + 1.1, f"> e8m{max_bits}", fontsize=8, color="grey")
        ax.set_title(_task_label(mine[0]))
        ax.set_xlabel("n (digits)")
        ax.set_ylabel("mantissa bits needed (e8mM)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_outputs(result: Mapping, out_dir: str, frontiers: Sequence[Mapping] = ()) -> dict:
    paths = {name: os.path.join(out_dir, name) for name in ("probe.json", "probe.md", "probe.png")}
    with open(paths["probe.json"], "w") as f:
        json.dump(result, f, indent=1)
    with open(paths["probe.md"], "w") as f:
        f.write(to_markdown(result))
    plot(result, paths["probe.png"], frontiers)
    return paths


# ---- CLI ---------------------------------------------------------------------------------------


def _split(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m experiments.precision_probe", description=__doc__,
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
    ap.add_argument("--json", action="store_true", help="print probe.json to stdout")
    args = ap.parse_args(argv)
    try:
        regions = []
        for r in _split(args.regions):
            regions += list(MODEL_REGIONS) if r == "each" else [r]
        _check_settings(_split(args.accumulations), regions, args.num_examples, args.batch_size,
                        args.tolerance, args.min_bits, args.max_bits)
        runs = {}
        if args.sweep:
            from experiments.quant_study import sweep_runs

            runs.update(sweep_runs(args.sweep))
        for d in _split(args.runs):
            if not os.path.isdir(d):
                raise ValueError(f"--runs: {d!r}: not a directory")
            runs[os.path.basename(os.path.normpath(d))] = d
        if not runs:
            raise ValueError("--sweep/--runs: no completed fp32 run found")
        frontiers = []
        for p in _split(args.frontier):
            try:
                with open(p) as f:
                    frontiers.append(json.load(f))
            except (OSError, json.JSONDecodeError) as e:
                raise ValueError(f"--frontier: {p!r}: {e}") from None
        result = probe(runs, args.out, accumulations=_split(args.accumulations),
                       region_sets=regions, num_examples=args.num_examples,
                       batch_size=args.batch_size, tolerance=args.tolerance,
                       min_bits=args.min_bits, max_bits=args.max_bits)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    paths = write_outputs(result, args.out, frontiers)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"[probe] wrote {', '.join(paths.values())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
