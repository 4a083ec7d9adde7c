"""Beyond the paper: which number formats (and summation orders) break IterADD and MUL.

    python -m experiments.sweep --config=experiments/configs/formats.py --workdir=DIR --workers=4
    python -m experiments.sweep --config=experiments/configs/formats.py:quick --workdir=DIR
    python -m experiments.sweep --config=experiments/configs/formats.py:smoke --workdir=DIR

Grid: 3-number IterADD and MUL (full product) in base 2, where bf16 already collapses in the
paper, 3 layers, seeds 0 and 1, batch 512, 30k steps, and the precisions
    fp32                reference
    bf16, fp16          8 / 11 significand bits, compute format of loss and gradient
    e5m2, e4m3          fp8 formats (IEEE-like eEmM: subnormals, inf/NaN reserved)
    fixed6.5            signed fixed point, 6 integer and 5 fraction bits (range +-64, step
                        1/32), saturating. Fixed point on the float32 carrier is limited to
                        I + F <= 11 bits (arith_precision/formats/carrier.py); `fixed8.8` needs
                        a float64 carrier (jax_enable_x64), which training does not enable,
                        and fails at run time
    pure_bf16           everything in bf16: parameters, gradients, optimizer moments, update
    bf16@sequential     bf16 with every sum rounded after each addition, left to right (the
    fp16@sequential     theory's model), against the hardware-like `once` (one rounding after a
                        wide accumulation) of the plain entries
(names as in arith_precision/training/precision.py `step_precision`; formats in
arith_precision.formats).
What to expect, a hypothesis rather than a measured result: fp32 near-perfect; the 8-bit formats
and fixed6.5 failing already at small n (or not training at all); fp16 between bf16 and fp32;
pure_bf16 worse than bf16; sequential accumulation worse than once, increasingly with n.

ARGS (comma-separated; lists use ';'):
    quick   1 seed, IterADD 4;8;12 and MUL 4;8, 10k steps
    smoke   plumbing only: tiny models, 20 steps, n=3, 1 seed (18 cells)
    tasks=iter_add;mul  bases=2  ns=4;8  layers=3  precisions=bf16;e4m3;bf16@sequential
    accumulations=once;sequential (crossed with precisions given without '@')  seeds=S
    steps=S  batch=B
Unknown keys or values are errors.

Runtime (ESTIMATES, not measured on a GPU): 162 cells, 36 of them sequential. On one H100 a
30k-step cell is guessed at ~3 min (fp32) to ~5-10 min (simulated formats): ~13 GPU-hours for
the 126 `once` cells. `sequential` replaces every matmul by a scan over its contraction
dimension (128-512 steps at d_model=128): on a 2-core CPU at d=128, batch 512, it had not
finished 10 steps after 4 minutes where `once` took ~30 s, so budget >= 10x, ~1-2 GPU-hours a
cell, ~2-3 GPU-days for the 36. Use `--workers=4` and `--shard=i/N`, or leave the sequential
entries out (precisions=...). `quick`: 45 cells (10 sequential) at 10k steps, ~half a GPU-day
serially. `smoke`: 18 cells, measured 7 minutes with --workers=2 on a shared 2-core CPU
(20-80 s a cell, mostly compilation; the sequential cells were no slower at this tiny size).
"""

from __future__ import annotations

from experiments import sweep as sweep_lib

PRECISIONS = ("fp32", "bf16", "fp16", "e5m2", "e4m3", "fixed6.5", "pure_bf16",
              "bf16@sequential", "fp16@sequential")


def get_config(arg: str | None = None):
    keys = [k for k in sweep_lib.GRID_ARGS if k != "native"]  # formats are simulated
    args = sweep_lib.parse_args(arg, switches=("quick", "smoke"), keys=keys)
    if "quick" in args and "smoke" in args:
        raise ValueError("choose one of 'quick' and 'smoke'")
    grid = dict(
        tasks=("iter_add", "mul"),
        bases=(2,),
        ns=dict(iter_add=(4, 6, 8, 10, 12), mul=(4, 6, 8, 10)),
        ks=(3,),
        ls=(0,),
        precisions=PRECISIONS,
        accumulations=("once",),
        layers=(3,),
        seeds=(0, 1),
    )
    train_args, overrides = "batch=512,steps=30000", {}
    if "quick" in args:
        grid.update(ns=dict(iter_add=(4, 8, 12), mul=(4, 8)), seeds=(0,))
        overrides = {"train": {"steps": 10000}, "optim": {"warmup_steps": 300}}
    if "smoke" in args:
        grid.update(ns=dict(default=(3,)), layers=(2,), seeds=(0,))
        train_args = "smoke"
    c = sweep_lib.sweep_config(
        "formats" + ("_quick" if "quick" in args else "_smoke" if "smoke" in args else ""),
        description="Number formats and accumulation order on IterADD (k=3) and MUL, base 2.",
        train_args=train_args, grid=grid, overrides=overrides)
    sweep_lib.apply_grid_args(c, args)
    sweep_lib.check_sweep_config(c)
    return c
