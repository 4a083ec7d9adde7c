"""One frontier point, old vs new: compile time vs run time of the e8mM mantissa search.

    PYTHONPATH=. python benchmarks/frontier_bench.py [--task=add] [--base=10] [--n=8] [--k=3]
        [--accumulation=once] [--random=200] [--batch-size=512]

old  the static path of the previous `constructions.frontier`: binary search over M = 1..24
     (monotonicity assumed) plus the end check M - 1, one compiled decoder per width tried
     (`run.check` with a static format). Per width: the first check (compile + run) and a second
     one (run only); compile = first - second.
new  `constructions.frontier.mantissa_scan` over every M = 0..24 through the runtime-width
     decoder (`run.check(..., runtime=True)`): one compile per carrier (float32, float64), timed
     as a warm-up call on one batch, then the 25 checks (run only).

Prints the times, the answers of both (old: the binary search's M; new: the threshold and the
narrower widths that pass) and the ratio old / new of the wall time of the search. Measured in
one run, on whatever else the machine is doing (say so when you quote it).
"""

from __future__ import annotations

import argparse
import time

from arith_precision import tasks
from constructions import build, frontier
from constructions.check import inputs, run
from constructions.frontier import search as frontier_search


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def old_search(construction, operands, accumulation, batch_size) -> dict:
    times = {}

    def passes(m):
        fmt = f"e8m{m}"
        run.enable_carrier(fmt)

        def check():
            return run.check(construction, operands, fmt, accumulation, batch_size,
                             stop_at_first_failure=True)["failures"] == 0

        ok, first = _timed(check)
        _, second = _timed(check)
        times[m] = (first, second)
        return ok

    m = frontier_search._search(passes, 1, frontier.MAX_MANTISSA)
    if m is not None and m > 1:
        passes(m - 1)  # the end check the old frontier made
    compile_s = sum(max(0.0, a - b) for a, b in times.values())
    run_s = sum(b for _, b in times.values())
    return {"answer": m, "widths": len(times), "compile_s": compile_s, "run_s": run_s,
            "wall_s": sum(a for a, _ in times.values())}


def new_search(construction, operands, accumulation, batch_size) -> dict:
    run.enable_carrier("e8m24")
    compile_s = 0.0
    for m in (10, 11):  # one warm-up per carrier (float32, float64): compile + one batch
        _, t = _timed(lambda m=m: run.predict(construction, operands[:batch_size], f"e8m{m}",
                                              accumulation, batch_size, runtime=True))
        compile_s += t

    def passes(m):
        return run.check(construction, operands, f"e8m{m}", accumulation, batch_size,
                         stop_at_first_failure=True, runtime=True)["failures"] == 0

    scan, run_s = _timed(lambda: frontier.mantissa_scan(passes))
    return {"answer": scan["threshold"], "narrower": scan["narrower_passing"],
            "widths": len(scan["checked"]), "compile_s": compile_s, "run_s": run_s,
            "wall_s": compile_s + run_s}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="add")
    ap.add_argument("--base", type=int, default=10)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--k", type=int, default=3)
    ap.add_argument("--accumulation", default="once")
    ap.add_argument("--random", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--skip-old", action="store_true", help="time the new search only")
    args = ap.parse_args()
    spec = tasks.TaskSpec(args.task, base=args.base, n=args.n,
                          k=args.k if args.task == "iter_add" else 2)
    construction = build(spec)
    operands, families = inputs.verification_set(spec, num_random=args.random, seed=0)
    print(f"{args.task} p={args.base} n={args.n} [{args.accumulation}]: {len(operands)} inputs "
          f"({families})")
    rows = {"new": new_search(construction, operands, args.accumulation, args.batch_size)}
    if not args.skip_old:
        rows["old"] = old_search(construction, operands, args.accumulation, args.batch_size)
    for name, r in rows.items():
        extra = f", narrower passing {r['narrower']}" if "narrower" in r else ""
        print(f"  {name}: {r['widths']} widths checked, answer M={r['answer']}{extra}; compile "
              f"{r['compile_s']:.1f}s, run {r['run_s']:.1f}s, wall {r['wall_s']:.1f}s")
    if "old" in rows:
        print(f"  ratio old / new (wall): {rows['old']['wall_s'] / rows['new']['wall_s']:.2f}x")


if __name__ == "__main__":
    main()
