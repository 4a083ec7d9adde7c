"""Cost of the block formats, few-bit stochastic rounding and the tensor-core models, as ratios
measured in one run.

    python benchmarks/formats_bench.py [--size=4096] [--reps=10] [--matmul=512] [--mm-reps=3]

  1. `quantize_mx(x, "mxfp4_e2m1")` vs `quantize(x, "e4m3fn")` on the same (4096, 4096) float32
     array, both jitted (target <= 3x: issue 19).
  2. the same for "nvfp4" and "mxfp8_e4m3" (reported, no target).
  3. stochastic `quantize(x, fmt, "stochastic", key, random_bits=8)` vs round-to-nearest
     `quantize(x, fmt)` on that array, for e4m3fn (target <= 2x) and bf16 (reported: its nearest
     rounding is XLA's own bf16 conversion); the exact stochastic rule (random_bits=None)
     reported too.
  4. a (512, 512) x (512, 512) matmul simulated under `tensor_core:h100` vs under `sequential`,
     for e4m3fn inputs (target <= 1x) and bf16 inputs (reported: sequential's per-addition
     rounding is again XLA's bf16 conversion, a few instructions).
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
from timing import best_time

from arith_precision import formats
from arith_precision.simulate import Policy, simulate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--matmul", type=int, default=512)
    parser.add_argument("--mm-reps", type=int, default=3)
    args = parser.parse_args()
    print(f"device: {jax.devices()[0].device_kind} x{jax.device_count()}")
    x = jax.random.normal(jax.random.key(0), (args.size, args.size), jnp.float32)
    base = best_time(jax.jit(lambda v: formats.quantize(v, "e4m3fn")), x, reps=args.reps)
    print(f"quantize(x, 'e4m3fn') on {x.shape}: {base * 1e3:.1f} ms")
    rows = []
    for fmt, target in (("mxfp4_e2m1", 3.0), ("nvfp4", None), ("mxfp8_e4m3", None)):
        t = best_time(jax.jit(lambda v, f=fmt: formats.quantize_mx(v, f)), x, reps=args.reps)
        rows.append((f"quantize_mx(x, {fmt!r}) / quantize(x, 'e4m3fn')", t / base, target))

    key = jax.random.key(1)
    for fmt, target in (("e4m3fn", 2.0), ("bf16", None)):
        near = best_time(jax.jit(lambda v, f=fmt: formats.quantize(v, f)), x, reps=args.reps)
        for bits, tgt in ((8, target), (None, None)):
            t = best_time(jax.jit(lambda v, k, f=fmt, r=bits: formats.quantize(
                v, f, "stochastic", key=k, random_bits=r)), x, key, reps=args.reps)
            rows.append((f"stochastic random_bits={bits} / nearest, {fmt}", t / near, tgt))

    n = args.matmul
    for fmt, target in (("e4m3fn", 1.0), ("bf16", None)):
        a = formats.quantize(jax.random.normal(jax.random.key(2), (n, n)), fmt)
        b = formats.quantize(jax.random.normal(jax.random.key(3), (n, n)), fmt)
        times = {}
        for acc in ("sequential", "tensor_core:h100"):
            f = jax.jit(simulate(jnp.matmul, Policy(fmt, accumulation=acc)))
            times[acc] = best_time(f, a, b, reps=args.mm_reps)
        print(f"{fmt} matmul {n}^3: sequential {times['sequential'] * 1e3:.0f} ms")
        rows.append((f"matmul {n}^3 tensor_core:h100 / sequential, {fmt}",
                     times["tensor_core:h100"] / times["sequential"], target))
    width = max(len(r[0]) for r in rows)
    for name, ratio, target in rows:
        tail = "no target: reported" if target is None else \
            f"target <= {target}x: {'met' if ratio <= target else 'MISSED'}"
        print(f"{name:<{width}}  {ratio:7.2f}x  ({tail})")


if __name__ == "__main__":
    main()
