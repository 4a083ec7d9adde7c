"""Verifier throughput: verified examples/s for the ADD construction, `once` vs `sequential`.

    python benchmarks/verify_bench.py [--n=64] [--base=10] [--num=512] [--format=fp32]

Times `constructions.check.run.check` (autoregressive decoding through the simulation layer plus the
comparison with Python integers) on `--num` random inputs, after one warm-up batch that compiles,
and prints examples/s under each accumulation and the ratio once / sequential.
"""

from __future__ import annotations

import argparse
import time

import jax

from arith_precision import tasks
from constructions import build
from constructions.check import inputs, run


def _rate(construction, operands, fmt, accumulation, batch_size) -> float:
    run.check(construction, operands[:batch_size], fmt, accumulation, batch_size)  # compile
    start = time.perf_counter()
    result = run.check(construction, operands, fmt, accumulation, batch_size)
    elapsed = time.perf_counter() - start
    if result["failures"]:
        print(f"  note: {result['failures']} of {result['checked']} inputs fail at {fmt} "
              f"({accumulation})")
    return result["checked"] / elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--base", type=int, default=10)
    ap.add_argument("--num", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--format", default="fp32")
    args = ap.parse_args()
    spec = tasks.TaskSpec("add", base=args.base, n=args.n)
    construction = build(spec)
    operands = inputs.random_inputs(spec, args.num, seed=0)
    run.enable_carrier(args.format)
    print(f"device: {jax.devices()[0].device_kind} | {construction.summary()} | format "
          f"{args.format} | {args.num} inputs")
    once = _rate(construction, operands, args.format, "once", args.batch_size)
    seq = _rate(construction, operands, args.format, "sequential", args.batch_size)
    print(f"once        {once:9.1f} verified examples/s")
    print(f"sequential  {seq:9.1f} verified examples/s")
    print(f"once / sequential: {once / seq:.2f}x")


if __name__ == "__main__":
    main()
