"""The one script to run when a GPU is available: measured step rates for the cost estimate.

    python benchmarks/gpu_check.py --out=gpu_check.json            # <= 8 minutes on one GPU
    python benchmarks/gpu_check.py --cpu-smoke --out=cpu.json      # tiny sizes, any machine

Measures, at the paper's size (d_model 256, d_ff 1024, batch 512, IterADD base 2 k = 3 n = 10:
a 47-token sequence; 3 and 5 layers), the steps/s of a jitted train step (one pre-built batch,
`best_time`) for the arms
    fp32          real float32, matmuls at precision "highest"
    bf16_carrier  simulated bf16, contractions on float32 carriers (tensor_core_dot=off)
    bf16_tc       simulated bf16, bf16 x bf16 -> fp32 contractions (tensor_core_dot=on)
    native_bf16   real bf16 arrays
    pure_bf16     simulated, everything bf16 (tensor_core_dot=on)
with R = 1 and R = 8 replicas in one program (`arith_precision/training/replicas.py`, vmap:
batched, the fast mode), 3 layers only for R = 8; then the fraction of bf16-rounded outputs of one
512x256 @ 256x1024 contraction on which the tensor-core and carrier paths differ (0 on XLA:CPU
without YNNPACK fusions; on tensor cores the float32 sums are formed in another order); then a
4-cell mini-grid end to end (`paper_fig2:smoke` with tasks add and iter_add: fp32 and bf16) in a
temporary directory. A measurement that would start past `--budget-s` is recorded as skipped.

Writes one JSON (schema 1, read by `python -m experiments.sweep ... --estimate --from=FILE`):
platform, device_kind, versions, sizes, `steps_per_sec` rows {arm, layers, replicas,
steps_per_sec, flops_per_step (analytic, one replica), compile_s}, `tensor_core_mismatch`,
`mini_grid`, wall_s. Progress lines with an ETA go to stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from timing import best_time  # noqa: E402

from arith_precision import model as model_lib  # noqa: E402
from arith_precision import tasks  # noqa: E402
from arith_precision import training as train  # noqa: E402
from arith_precision.training import config as train_config  # noqa: E402
from arith_precision.training import replicas  # noqa: E402
from experiments.sweep import cost as cost_estimate  # noqa: E402

ARMS = {  # arm -> (precision name, native, tensor_core_dot)
    "fp32": ("fp32", False, "auto"),
    "bf16_carrier": ("bf16", False, "off"),
    "bf16_tc": ("bf16", False, "on"),
    "native_bf16": ("bf16", True, "auto"),
    "pure_bf16": ("pure_bf16", False, "on"),
}
PAPER = dict(d_model=256, d_ff=1024, heads=4, batch=512, layers=(3, 5), replicas=(1, 8),
             reps=10, task="task=iter_add,base=2,n=10,k=3")
SMOKE = dict(d_model=32, d_ff=64, heads=2, batch=16, layers=(2,), replicas=(1, 2),
             reps=2, task="task=iter_add,base=2,n=4,k=3")


def _config(sizes, arm: str, layers: int):
    name, native, tc = ARMS[arm]
    cfg = train_config.get_config(
        f"{sizes['task']},precision={name},native={int(native)},layers={layers},"
        f"d_model={sizes['d_model']},heads={sizes['heads']},batch={sizes['batch']}")
    cfg.unlock()
    cfg.model.d_ff = sizes["d_ff"]
    cfg.precision.tensor_core_dot = tc
    cfg.lock()
    return cfg


def measure(sizes, arm: str, layers: int, num: int) -> dict:
    """Steps/s of `num` replicas in one program (num = 1: the plain jitted step)."""
    cfg = _config(sizes, arm, layers)
    spec = train.task_spec(cfg.task)
    mcfg = train.model_config(cfg)
    tx, _ = train.optimizer(cfg)
    step = train.make_train_step(mcfg, spec, tx, train.precision_of(cfg))
    tokens = tasks.sample_batch(spec, data_seed=0, step=0, batch_size=cfg.train.batch_size).tokens
    params = model_lib.init_params(mcfg, jax.random.key(0))
    state = {"params": params, "opt_state": tx.init(params), "step": jnp.int32(0)}
    if num > 1:
        step = replicas.vmapped(step)
        state = replicas.stack([state] * num)
        tokens = np.stack([tokens] * num)
    fn = jax.jit(step)
    tokens = jax.device_put(tokens)
    start = time.perf_counter()
    jax.block_until_ready(fn(state, tokens))
    compile_s = time.perf_counter() - start
    seconds = best_time(fn, state, tokens, reps=sizes["reps"])
    return {"arm": arm, "layers": layers, "replicas": num, "steps_per_sec": 1.0 / seconds,
            "examples_per_sec": num * cfg.train.batch_size / seconds,
            "flops_per_step": cost_estimate.cell_step_flops(cfg), "compile_s": compile_s,
            "sequence_length": spec.sequence_length}


def tensor_core_mismatch(m: int, k: int, n: int) -> dict:
    from arith_precision.simulate import Policy, simulate

    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((m, k)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((k, n)), jnp.float32)
    outs = [np.asarray(jax.jit(simulate(lambda a, b: a @ b, Policy("bf16", tensor_core_dot=t)))(
        x, w)).view(np.uint32) for t in ("on", "off")]
    return {"shape": [m, k, n], "format": "bf16", "differing": int(np.sum(outs[0] != outs[1])),
            "outputs": int(outs[0].size), "fraction": float(np.mean(outs[0] != outs[1]))}


def mini_grid(smoke: bool) -> dict:
    from experiments import sweep as sweep_lib
    from experiments.configs import paper_fig2

    c = paper_fig2.get_config("smoke,tasks=add;iter_add")
    start = time.time()
    with tempfile.TemporaryDirectory() as workdir:
        result = sweep_lib.run_sweep(c, workdir)
        statuses = {cell: sweep_lib.cell_status(os.path.join(workdir, cell))
                    for cell in sorted(os.listdir(workdir))
                    if os.path.isdir(os.path.join(workdir, cell))}
    return {"config": "paper_fig2:smoke,tasks=add;iter_add", "cells": result["cells"],
            "wall_s": time.time() - start, "statuses": statuses}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="gpu_check.json", help="the JSON written")
    parser.add_argument("--cpu-smoke", action="store_true",
                        help="tiny sizes (d_model 32, batch 16, 2 layers, R = 1, 2): checks "
                             "the script on any machine; its numbers price nothing")
    parser.add_argument("--budget-s", type=float, default=420.0,
                        help="start no measurement after this many seconds (default 420)")
    args = parser.parse_args()
    if args.budget_s <= 0:
        print(f"error: --budget-s: {args.budget_s}: must be > 0", file=sys.stderr)
        sys.exit(2)
    out_dir = os.path.dirname(os.path.abspath(args.out))
    if not os.access(out_dir, os.W_OK):
        print(f"error: --out: {args.out}: directory is not writable", file=sys.stderr)
        sys.exit(2)
    jax.config.update("jax_default_matmul_precision", "highest")  # as train_and_evaluate does
    sizes = SMOKE if args.cpu_smoke else PAPER
    start = time.time()
    # Most useful first (the budget may cut the tail): the first depth at R = 1 and at R > 1,
    # then the other depths.
    first, rest = sizes["layers"][0], sizes["layers"][1:]
    plan = [(arm, first, r) for r in sizes["replicas"] for arm in ARMS]
    plan += [(arm, layers, 1) for layers in rest for arm in ARMS]
    rows, skipped = [], []
    for i, (arm, layers, num) in enumerate(plan):
        elapsed = time.time() - start
        if elapsed > args.budget_s:
            skipped.append({"arm": arm, "layers": layers, "replicas": num})
            continue
        row = measure(sizes, arm, layers, num)
        rows.append(row)
        done = time.time() - start
        eta = min(done / (i + 1) * (len(plan) - i - 1), max(args.budget_s - done, 0.0))
        print(f"[{i + 1}/{len(plan)}] {arm:12s} layers {layers} R={num}: "
              f"{row['steps_per_sec']:8.2f} steps/s ({row['examples_per_sec']:9.0f} examples/s,"
              f" compile {row['compile_s']:.1f} s) | {done:.0f} s elapsed, measurements ETA "
              f"{eta:.0f} s", flush=True)
    shape = (64, 64, 64) if args.cpu_smoke else (512, 256, 1024)
    mismatch = tensor_core_mismatch(*shape)
    print(f"tensor-core vs carrier bf16 outputs differing: {mismatch['differing']} of "
          f"{mismatch['outputs']}", flush=True)
    grid = None
    if time.time() - start <= args.budget_s:
        grid = mini_grid(args.cpu_smoke)
        print(f"mini-grid: {grid['cells']} cells in {grid['wall_s']:.0f} s: {grid['statuses']}",
              flush=True)
    backend = jax.default_backend()
    report = {
        "schema": cost_estimate.SCHEMA,
        "platform": "gpu" if backend in ("gpu", "cuda", "rocm") else backend,
        "device_kind": jax.devices()[0].device_kind, "device_count": jax.device_count(),
        "cpu_smoke": args.cpu_smoke, "versions": train.versions(),
        "sizes": {k: v for k, v in sizes.items() if k != "reps"},
        "steps_per_sec": rows, "skipped": skipped, "tensor_core_mismatch": mismatch,
        "mini_grid": grid, "wall_s": time.time() - start,
    }
    with open(args.out, "w") as f:
        json.dump(report, f, indent=2, sort_keys=True)
    print(f"wrote {args.out} ({report['wall_s']:.0f} s)")


if __name__ == "__main__":
    main()
