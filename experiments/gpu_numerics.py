"""Which constructions and trained models stay exact on which GPU, in which input format
(the table and what it shows: docs/hardware_numerics.md, results/gpu_numerics).

    python -m experiments.gpu_numerics --out=results/gpu_numerics \
        [--constructions=add:10:4;8;16,iter_add:2:4;8;16:3,mul:2:2;4;8] \
        [--formats=bf16,fp16,e4m3fn] [--gpus=v100,a100,h100,b200] [--random=100] \
        [--runs=RUN_DIR,...] [--examples=500]

Every matmul runs as the GPU's tensor cores compute it (`accumulation="tensor_core:<gpu>"`,
`simulate/tensor_core_models.py`: blocks of products aligned and truncated into an fp32 or, for
H100 fp8, a 13-bit accumulator), every other operation rounded to the input format; beside it the
same format with `once` accumulation (an exact fp32 sum of exact products, rounded once), so the
table separates the format's own limit from the accelerator's accumulator. A GPU that has no
tensor-core path for a format (V100 and bf16 or fp8, A100 and fp8, B200 and fp8 here) is left
out of that format's columns.

Constructions are checked exactly (`constructions.verify`: the verifier's set, adversarial carry
chains plus `--random` random inputs, against Python integers); a trained fp32 model (`--runs`)
is evaluated on `--examples` examples of both test protocols and reported beside its fp32 exact
match. Rows go to OUT/gpu_numerics.json as each one finishes (the same command, re-run, reuses
the construction rows it finds there: a stopped run goes on), the table to OUT/gpu_numerics.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Mapping, Sequence

from arith_precision.common import atomic, cli_errors, markdown
from arith_precision.simulate import tensor_core_models as tcm

DEFAULT_CONSTRUCTIONS = "add:10:4;8;16,iter_add:2:4;8;16:3,mul:2:2;4;8"
GPUS = ("v100", "a100", "h100", "b200")
FORMAT_NAMES = {"bf16": "bf16", "fp16": "fp16", "e4m3fn": "e4m3", "e4m3": "e4m3",
                "e5m2": "e5m2"}


def gpus_for(fmt: str, gpus: Sequence[str]) -> list[str]:
    """The GPUs of `gpus` whose tensor cores take `fmt` (a model exists for the pair)."""
    name = FORMAT_NAMES.get(fmt)
    return [g for g in gpus if (g, name) in tcm.MODELS]


def parse_constructions(text: str) -> list[dict]:
    """'add:10:4;8,iter_add:2:4;8:3' -> [{task, base, ns, k}]; a ValueError naming the item
    for a malformed one or one that is not a valid task (`tasks.TaskSpec` decides)."""
    from arith_precision import tasks

    out = []
    for item in (t for t in text.split(",") if t.strip()):
        parts = item.split(":")
        if len(parts) not in (3, 4):
            raise ValueError(f"{item!r}: expected TASK:BASE:N1;N2[:K]")
        try:
            entry = {"task": parts[0], "base": int(parts[1]),
                     "ns": [int(n) for n in parts[2].split(";")],
                     "k": int(parts[3]) if len(parts) == 4 else 2}
            for n in entry["ns"]:
                tasks.TaskSpec(entry["task"], base=entry["base"], n=n,
                               k=entry["k"] if entry["task"] == "iter_add" else 2)
        except (ValueError, TypeError) as e:
            raise ValueError(f"{item!r}: {e}") from None
        out.append(entry)
    if not out:
        raise ValueError("no construction given")
    return out


def row_key(row: Mapping) -> tuple:
    """What identifies a row: a finished row with this key is reused by a re-run."""
    return (row["kind"], row["what"], row["format"], row["accumulation"],
            row.get("num_random"))


def construction_rows(items: Sequence[dict], fmts: Sequence[str], gpus: Sequence[str],
                      num_random: int, log=print, done: Sequence[dict] = (),
                      on_row=lambda rows: None) -> list[dict]:
    """One row per (construction size, format, accumulation): `once` and each GPU's model.
    Rows of `done` with the same key are reused; `on_row(rows so far)` after each row (so a
    stopped run keeps what it finished); each log line gives the ETA of the rest."""
    from arith_precision import tasks
    from constructions import verify

    reuse = {row_key(r): r for r in done}
    plan = []
    for item in items:
        for n in item["ns"]:
            spec = tasks.TaskSpec(item["task"], base=item["base"], n=n,
                                  k=item["k"] if item["task"] == "iter_add" else 2)
            for fmt in fmts:
                for acc in ["once"] + [f"tensor_core:{g}" for g in gpus_for(fmt, gpus)]:
                    plan.append((spec, fmt, acc))
    rows, spent, computed = [], 0.0, 0
    for i, (spec, fmt, acc) in enumerate(plan):
        what = f"{tasks.task_title(spec.task, spec.base, spec.k)}, n = {spec.n}"
        key = row_key({"kind": "construction", "what": what, "format": fmt,
                       "accumulation": acc, "num_random": num_random})
        if key in reuse:
            rows.append(reuse[key])
            continue
        t0 = time.time()
        r = verify.verify(spec, fmt, acc, num_random=num_random)
        rows.append({"kind": "construction", "what": what, "task": spec.task,
                     "base": spec.base, "n": spec.n, "k": spec.num_operands,
                     "format": fmt, "accumulation": acc, "num_random": num_random,
                     "exact_match": r["exact_match"], "checked": r["checked"],
                     "failures": r["failures"], "seconds": time.time() - t0})
        on_row(rows)
        spent, computed = spent + time.time() - t0, computed + 1
        eta = spent / computed * (len(plan) - i - 1)
        log(f"[gpu] {i + 1}/{len(plan)} {what} {fmt} {acc}: {r['failures']} failures of "
                        f"{r['checked']} ({time.time() - t0:.0f}s; ETA at most {eta / 60:.0f} min)")
    return rows


def run_rows(run_dirs: Sequence[str], fmts: Sequence[str], gpus: Sequence[str], examples: int,
             log=print) -> list[dict]:
    from arith_precision import evaluate as evaluate_lib
    from arith_precision.simulate import Policy
    from experiments.trained_runs import load_run

    rows = []
    for d in run_dirs:
        run = load_run(d)
        kwargs = dict(num_examples=examples, batch_size=min(500, examples),
                      data_seed=run.data_seed)
        ref = evaluate_lib.evaluate_protocols(run.params, run.mcfg, run.spec, **kwargs)
        for fmt in fmts:
            for acc in ["once"] + [f"tensor_core:{g}" for g in gpus_for(fmt, gpus)]:
                r = evaluate_lib.evaluate_protocols(
                    run.params, run.mcfg, run.spec,
                    policy=Policy(compute=fmt, accumulation=acc), **kwargs)
                rows.append({"kind": "trained", "what": run.name, "task": run.spec.task,
                             "base": run.spec.base, "n": run.spec.n, "k": run.spec.num_operands,
                             "format": fmt, "accumulation": acc,
                             "exact_match": r["exact_match_iid"],
                             "fp32_exact_match": ref["exact_match_iid"],
                             "checked": r["distinct_iid"]})
                log(f"[gpu] {run.name} {fmt} {acc}: exact match {r['exact_match_iid']:.3f} "
                    f"(fp32 {ref['exact_match_iid']:.3f})")
    return rows


def to_markdown(rows: Sequence[dict], fmts: Sequence[str], gpus: Sequence[str]) -> str:
    lines = []
    for kind, title in (("construction", "Constructions (exact = every checked input)"),
                        ("trained", "Trained fp32 models (iid exact match; fp32 in brackets)")):
        sel = [r for r in rows if r["kind"] == kind]
        if not sel:
            continue
        cols = [(f, a) for f in fmts for a in ["once"] + [f"tensor_core:{g}"
                                                          for g in gpus_for(f, gpus)]]
        header = ["model", "checked"] + [f"{f} {a.replace('tensor_core:', '')}" for f, a in cols]
        body = []
        for what in dict.fromkeys(r["what"] for r in sel):
            cells = {(r["format"], r["accumulation"]): r for r in sel if r["what"] == what}
            first = next(iter(cells.values()))
            row = [what + (f" [{first['fp32_exact_match']:.3f}]" if kind == "trained" else ""),
                   first["checked"]]
            for key in cols:
                r = cells.get(key)
                row.append("-" if r is None else ("exact" if kind == "construction" and
                                                  r["failures"] == 0 else
                                                  f"{r['exact_match']:.3f}"))
            body.append(row)
        lines += [f"**{title}**", ""] + markdown.table(header, body) + [""]
    return "\n".join(lines)


def _main(argv) -> int:
    ap = cli_errors.ArgumentParser(prog="python -m experiments.gpu_numerics", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--constructions", default=DEFAULT_CONSTRUCTIONS)
    ap.add_argument("--formats", default="bf16,fp16,e4m3fn")
    ap.add_argument("--gpus", default=",".join(GPUS))
    ap.add_argument("--random", type=int, default=100)
    ap.add_argument("--runs", default="")
    ap.add_argument("--examples", type=int, default=500)
    args = ap.parse_args(argv)
    try:
        items = parse_constructions(args.constructions)
    except ValueError as e:
        raise cli_errors.UsageError("--constructions", args.constructions, str(e)) from None
    fmts = [f for f in args.formats.split(",") if f]
    bad = [f for f in fmts if f not in FORMAT_NAMES]
    if bad or not fmts:
        raise cli_errors.UsageError("--formats", args.formats,
                                    f"expected some of {', '.join(FORMAT_NAMES)}")
    gpus = [g for g in args.gpus.split(",") if g]
    if not gpus or any(g not in GPUS for g in gpus):
        raise cli_errors.UsageError("--gpus", args.gpus, f"expected some of {', '.join(GPUS)}")
    cli_errors.check_int("--random", args.random, 0)
    cli_errors.check_int("--examples", args.examples, 1)
    runs = [d for d in args.runs.split(",") if d]
    missing = [d for d in runs if not os.path.isdir(d)]
    if missing:
        raise cli_errors.UsageError("--runs", args.runs, f"not a directory: {missing[0]}")
    cli_errors.check_writable_dir("--out", args.out)
    path = os.path.join(args.out, "gpu_numerics.json")
    done = []
    if os.path.exists(path):
        with open(path) as f:
            done = json.load(f)
    rows = construction_rows(items, fmts, gpus, args.random, done=done,
                             on_row=lambda rows: atomic.write_json(path, rows, indent=1))
    rows += run_rows(runs, fmts, gpus, args.examples)
    atomic.write_json(path, rows, indent=1)
    text = to_markdown(rows, fmts, gpus)
    atomic.write_text(os.path.join(args.out, "gpu_numerics.md"), text + "\n")
    print(text)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return cli_errors.run_cli(lambda: _main(argv))


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["construction_rows", "gpus_for", "main", "run_rows", "to_markdown"]
