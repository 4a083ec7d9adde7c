"""Long-prompt verification: seconds per input with a chunked prefill vs one prefill, one run.

    python benchmarks/prefill_bench.py [--n=8] [--k=1000] [--base=10] [--chunks=64,256,2048]

Times `constructions.check.run.predict` (fp32, `once`, batch 1) of the lookup IterADD construction
on one random input (a sequence of 9013 tokens at the defaults), with the whole prompt in
one prefill and with `prefill_chunk` = C (`decode._prefill`: the chunks see only the cache slots
up to the end of their run, so about half the T x T scores are formed, in blocks of C x T that
stay in the CPU's cache). Checks that every variant decodes the same tokens.

Target: C = 64 at least 3x faster than one prefill at the defaults (the speed that lets
`constructions.verify --prefill-chunk` check k = 1000 on the full input set at n = 8 and 16 on
a 2-core CPU).
"""

from __future__ import annotations

import argparse

import numpy as np
from timing import best_time

from constructions import build
from constructions.check import inputs, run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--k", type=int, default=1000)
    ap.add_argument("--base", type=int, default=10)
    ap.add_argument("--chunks", default="64,256,2048")
    args = ap.parse_args()
    construction = build("iter_add", base=args.base, n=args.n, k=args.k, variant="lookup")
    operands = inputs.random_inputs(construction.spec, 1, seed=0)
    print(f"{construction.summary()} | sequence {construction.spec.sequence_length} tokens")
    want = run.predict(construction, operands, batch_size=1)
    one = best_time(lambda: run.predict(construction, operands, batch_size=1), reps=1)
    print(f"{'prefill':<12} {'s / input':>10} {'speed-up':>9}")
    print(f"{'one':<12} {one:10.3f} {1.0:8.2f}x")
    for chunk in (int(c) for c in args.chunks.split(",")):
        got = run.predict(construction, operands, batch_size=1, prefill_chunk=chunk)
        if not np.array_equal(got, want):
            raise SystemExit(f"prefill_chunk={chunk} decodes other tokens than one prefill")
        t = best_time(lambda c=chunk: run.predict(construction, operands, batch_size=1,
                                                  prefill_chunk=c), reps=1)
        print(f"{'C = ' + str(chunk):<12} {t:10.3f} {one / t:8.2f}x")


if __name__ == "__main__":
    main()
