r"""The paper's Figure 2 grid: exact match against n, float32 vs bfloat16 training.

    python -m experiments.sweep --config=experiments/configs/paper_fig2.py --workdir=DIR \
        --workers=4                                    # the full grid, on a GPU
    python -m experiments.sweep --config=experiments/configs/paper_fig2.py:quick --workdir=DIR
    python -m experiments.sweep --config=experiments/configs/paper_fig2.py:smoke --workdir=DIR

Grid (Feng et al. 2024, Section 6): ADD, 3-number IterADD (k=3) and MUL (full product, l=2n);
bases 2 and 10; 3 and 5 layers; three arms: `fp32`; `pure_bf16` (weights, activations,
gradients and optimizer state in bf16: the paper varies the *weight* precision, "float32 vs
bfloat16", so this is its most likely arm); `bf16` (mixed precision: bf16 compute for loss and
gradient with fp32 master weights and optimizer, the forgiving reading) -- see
arith_precision/training/precision.py; batch 512, at most 100k steps (the paper's) with early
stopping (validation every 1000 steps, stop at exact match >= 0.99 twice in a row on 1000 held-out
examples), seeds 0,1,2. The n grids bracket where the paper sees the collapse:
    ADD      4, 8, 16, 24, 32 (both bases; the paper: above ~94% to 32 digits in both precisions)
    IterADD  base 2: 4..14 step 2 (bf16 collapses around 7-10 digits); base 10: 2..6, 8
    MUL      base 2: 4..12 step 2 (bf16 collapses around 9); base 10: 2..5 (around 3-4)
Expect fp32 near-perfect everywhere, bf16 falling for IterADD and MUL past those n, ADD flat.
`precisions=fp32;pure_bf16` (for example) runs a subset of the arms.

ARGS (comma-separated; lists use ';'):
    quick          1 seed, 3 layers, 20k steps: the same n grids at a fifth of the budget
    smoke          plumbing only: tiny models, 20 steps, n=3, base 2, 2 layers, 1 seed, fp32 and
                   bf16, early stopping on 32 examples (6 cells)
    tasks=add;mul  bases=2  ns=4;8  layers=3  precisions=fp32;bf16;pure_bf16  seeds=S (0..S-1)
    steps=S  batch=B  native=1 (real bf16 arrays: much faster on a GPU, hardware accumulation)
Unknown keys or values are errors.

Runtime: GPU hours come from a measurement, never a guess:
    python -m experiments.sweep --config=experiments/configs/paper_fig2.py --estimate \
        [--from=gpu_check.json]
prints cells, analytic FLOPs and device-hours per precision arm (with and without early
stopping) from `benchmarks/gpu_check.py`'s JSON; without a GPU run they say "not measured".
Counted (no measurement needed): the full grid is 558 cells (186 per seed, three arms), at most
5.6e7 steps and 5.5e18 matmul FLOPs at this config's d_model 128
(`experiments/sweep/cost.py`; early stopping ends most cells sooner). Measured on a
shared 2-core CPU (d=128, 3 layers, batch 512, IterADD n=10): fp32, simulated bf16 and
pure_bf16 all ran at 0.3-0.5 steps/s. On a GPU, simulated bf16 contracts on bf16 tensor cores
(`tensor_core_dot`, auto there); `native=1` uses real bf16 arrays; `--workers` and `--shard=i/N`
spread cells.
`quick`: 93 cells at a fifth of the steps (`--estimate` prices it).
`smoke`: 6 cells, about a minute on a 2-core CPU (measured: 50 s).
"""

from __future__ import annotations

from experiments import sweep as sweep_lib


def full_grid() -> dict:
    return dict(
        tasks=("add", "iter_add", "mul"),
        bases=(2, 10),
        ns=dict(add=(4, 8, 16, 24, 32),
                iter_add_b2=(4, 6, 8, 10, 12, 14), iter_add_b10=(2, 3, 4, 5, 6, 8),
                mul_b2=(4, 6, 8, 10, 12), mul_b10=(2, 3, 4, 5)),
        ks=(3,),
        ls=(0,),  # full product
        precisions=("fp32", "pure_bf16", "bf16"),
        accumulations=("once",),
        layers=(3, 5),
        seeds=(0, 1, 2),
    )


def get_config(arg: str | None = None):
    args = sweep_lib.parse_args(arg, switches=("quick", "smoke"), keys=sweep_lib.GRID_ARGS)
    if "quick" in args and "smoke" in args:
        raise ValueError("choose one of 'quick' and 'smoke'")
    grid = full_grid()
    train_args, overrides = "batch=512,steps=100000,early_stop=1000", {}
    if "quick" in args:
        grid.update(layers=(3,), seeds=(0,))
        overrides = {"train": {"steps": 20000}, "optim": {"warmup_steps": 500}}
    if "smoke" in args:
        grid.update(bases=(2,), ns=dict(default=(3,)), layers=(2,), seeds=(0,),
                    precisions=("fp32", "bf16"))
        train_args = "smoke,early_stop=10"
        overrides = {"early_stop": {"num_examples": 32, "batch_size": 32}}
    c = sweep_lib.sweep_config(
        "paper_fig2" + ("_quick" if "quick" in args else "_smoke" if "smoke" in args else ""),
        description="Feng et al. (2024) Figure 2: exact match against n, fp32 vs pure_bf16 vs "
                    "mixed bf16, "
                    "ADD / IterADD (k=3) / MUL in bases 2 and 10.",
        train_args=train_args, grid=grid, overrides=overrides)
    sweep_lib.apply_grid_args(c, args)
    sweep_lib.check_sweep_config(c)
    return c
