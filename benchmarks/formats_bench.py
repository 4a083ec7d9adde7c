"""Cost of the block formats against plain rounding, as ratios measured in one run.

    python benchmarks/formats_bench.py [--size=4096] [--reps=10]

  1. `quantize_mx(x, "mxfp4_e2m1")` vs `quantize(x, "e4m3fn")` on the same (4096, 4096) float32
     array, both jitted (target <= 3x: issue 19).
  2. the same for "nvfp4" and "mxfp8_e4m3" (reported, no target).
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
from timing import best_time

from arith_precision import formats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--reps", type=int, default=10)
    args = parser.parse_args()
    print(f"device: {jax.devices()[0].device_kind} x{jax.device_count()}")
    x = jax.random.normal(jax.random.key(0), (args.size, args.size), jnp.float32)
    base = best_time(jax.jit(lambda v: formats.quantize(v, "e4m3fn")), x, reps=args.reps)
    print(f"quantize(x, 'e4m3fn') on {x.shape}: {base * 1e3:.1f} ms")
    rows = []
    for fmt, target in (("mxfp4_e2m1", 3.0), ("nvfp4", None), ("mxfp8_e4m3", None)):
        t = best_time(jax.jit(lambda v, f=fmt: formats.quantize_mx(v, f)), x, reps=args.reps)
        rows.append((f"quantize_mx(x, {fmt!r}) / quantize(x, 'e4m3fn')", t / base, target))
    width = max(len(r[0]) for r in rows)
    for name, ratio, target in rows:
        tail = "no target: reported" if target is None else \
            f"target <= {target}x: {'met' if ratio <= target else 'MISSED'}"
        print(f"{name:<{width}}  {ratio:7.2f}x  ({tail})")


if __name__ == "__main__":
    main()
