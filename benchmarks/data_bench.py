"""Examples/s of the vectorised batch generator vs the Python-int path, measured in one run.

    python benchmarks/data_bench.py [--n=32] [--batch=4096]

Both paths produce the same thing: operands from the task's distribution, exact answers, input and
answer tokens. Target: vectorised >= 20x the Python-int path for every task at n = 32.
"""

from __future__ import annotations

import argparse
import time

from arith_precision import tasks


def _rate(fn, num_examples: int, min_seconds: float = 1.0) -> float:
    fn()  # warm-up
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < min_seconds:
        fn()
        count += num_examples
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=32)
    parser.add_argument("--batch", type=int, default=4096)
    args = parser.parse_args()
    specs = [tasks.TaskSpec("add", base=10, n=args.n),
             tasks.TaskSpec("iter_add", base=10, n=args.n, k=5),
             tasks.TaskSpec("mul", base=10, n=args.n)]
    print(f"{'task':<10} {'vectorised ex/s':>16} {'python-int ex/s':>16} {'ratio':>8}")
    worst = float("inf")
    for spec in specs:
        step = iter(range(10**9))
        vec = _rate(lambda spec=spec, step=step: tasks.sample_batch(
            spec, data_seed=0, step=next(step), batch_size=args.batch), args.batch)
        py = _rate(lambda spec=spec: tasks.sample_examples_python(spec, 0, 500), 500)
        worst = min(worst, vec / py)
        print(f"{spec.task:<10} {vec:16.0f} {py:16.0f} {vec / py:7.1f}x")
    print(f"worst ratio {worst:.1f}x (target >= 20x): {'met' if worst >= 20 else 'MISSED'}")


if __name__ == "__main__":
    main()
