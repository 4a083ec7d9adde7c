"""Cost of the simulation layer, as ratios measured in one run.

    python benchmarks/simulation_bench.py [--batch=32] [--seq=64] [--reps=20]

  1. `quantize(x, "e8m7")` vs the native bf16 round trip `x.astype(bf16).astype(f32)` on the same
     array (target <= 1.5x).
  2. forward + backward of a 4-layer, d=128 Transformer under simulated bf16 (`once`) vs native
     fp32 (target <= 1.2x).
  3. the same under `sequential` vs `once` accumulation (target <= 10x).
  4. the same under `chunked:128` (fp32 chunk accumulator: tensor cores that promote every 128
     terms) vs `once` (no target: reported), and `once` with a narrow e8m13 accumulator vs
     plain `once`.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
from timing import best_time

from arith_precision import formats
from arith_precision import model as model_lib
from arith_precision.simulate import Policy, simulate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=64)
    parser.add_argument("--reps", type=int, default=10)
    args = parser.parse_args()
    print(f"device: {jax.devices()[0].device_kind} x{jax.device_count()}")
    rows = []

    x = jax.random.normal(jax.random.key(0), (4096, 1024), jnp.float32) * 100
    ours = jax.jit(lambda v: formats.quantize(v, "e8m7"))
    native = jax.jit(lambda v: v.astype(jnp.bfloat16).astype(jnp.float32))
    np.testing.assert_array_equal(np.asarray(ours(x)), np.asarray(native(x)))  # same numbers
    rows.append(("quantize e8m7 / native bf16 round trip",
                 best_time(ours, x, reps=args.reps) / best_time(native, x, reps=args.reps), 1.5))

    cfg = model_lib.TransformerConfig(vocab_size=32, max_len=args.seq, num_layers=4, d_model=128,
                                      num_heads=4, d_ff=512)
    params = model_lib.init_params(cfg, jax.random.key(1))
    tokens = jax.random.randint(jax.random.key(2), (args.batch, args.seq), 0, 32)

    def loss(p, t):
        logits = model_lib.Transformer(cfg).apply({"params": p}, t)
        return jnp.mean(jax.nn.logsumexp(logits, -1) - jnp.take_along_axis(
            logits, t[..., None], -1)[..., 0])

    grad = jax.value_and_grad(loss)
    t_fp32 = best_time(jax.jit(grad), params, tokens, reps=args.reps)
    t_once = best_time(jax.jit(simulate(grad, "bf16", "once")), params, tokens, reps=args.reps)
    t_seq = best_time(jax.jit(simulate(grad, "bf16", "sequential")), params, tokens,
                  reps=max(1, args.reps // 5))
    rows.append(("fwd+bwd 4x128 simulated bf16 (once) / native fp32", t_once / t_fp32, 1.2))
    rows.append(("fwd+bwd sequential / once accumulation", t_seq / t_once, 10.0))
    chunked = Policy(compute="bf16", accum="fp32", accumulation="chunked:128")
    t_chunk = best_time(jax.jit(simulate(grad, chunked)), params, tokens, reps=args.reps)
    rows.append(("fwd+bwd chunked:128 (fp32 accum) / once accumulation", t_chunk / t_once, None))
    narrow = Policy(compute="bf16", accum="e8m13", accumulation="once")
    t_narrow = best_time(jax.jit(simulate(grad, narrow)), params, tokens, reps=args.reps)
    rows.append(("fwd+bwd once with accum=e8m13 / once", t_narrow / t_once, None))

    width = max(len(r[0]) for r in rows)
    for name, ratio, target in rows:
        if target is None:
            print(f"{name:<{width}}  {ratio:7.2f}x  (no target: reported)")
            continue
        verdict = "met" if ratio <= target else "MISSED"
        print(f"{name:<{width}}  {ratio:7.2f}x  (target <= {target}x: {verdict})")


if __name__ == "__main__":
    main()
