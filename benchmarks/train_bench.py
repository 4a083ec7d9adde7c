"""Overhead of the training pipeline, as a ratio measured in one run.

    python benchmarks/train_bench.py [--config=task=add,base=10,n=8] [--steps=200]

Runs `train_and_evaluate` for `--steps` steps (data generation, sharded device put, jitted step,
orbax checkpoints every `--checkpoint-every` steps, metrics and progress lines: everything a real
run does except the final evaluation, which is shrunk to one tiny batch) and reads its steps/s from
`metrics.jsonl`, skipping the first logging window (it contains compilation). It then times a bare
jitted train step of the same model, optimizer, precision and batch shape, fed one pre-built batch
in a tight loop. Prints both rates, the ratio pipeline / bare (target >= 0.9x) and the pipeline's
answer+prompt tokens per second.

    python benchmarks/train_bench.py --replicas=1,4,8 [--config=...] [--reps=2]

instead times R runs in one program (`arith_precision/training/replicas.py`) against R separate runs
(one jitted step each, run one after another: examples/s of one run) for each R, in both
replica modes (unrolled: bit-identical to separate runs; vmap: batched, not bit-identical), and
prints examples/s and the speed-up over separate runs. The default config is
`task=add,base=10,n=8` of experiments/configs/train.py (d_model 128, 3 layers, batch 256, as in
paper_fig2:quick apart from its batch); add `,batch=512` for paper_fig2's batch.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import jax
import numpy as np

from arith_precision import model as model_lib
from arith_precision import tasks
from arith_precision import training as train
from arith_precision.training import config as train_config
from arith_precision.training import replicas


def _pipeline_steps_per_sec(config, workdir: str) -> float:
    train.train_and_evaluate(config, workdir)
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    if len(records) < 2:
        raise SystemExit("need at least two logging windows: raise --steps or lower --log-every")
    rates = [r["steps_per_sec"] for r in records[1:]]  # window 1 includes compilation
    return len(rates) / sum(1.0 / r for r in rates)  # steps / total time over those windows


def _bare_steps_per_sec(config, steps: int) -> float:
    jax.config.update("jax_default_matmul_precision", "highest")  # as train_and_evaluate does
    spec = train.task_spec(config.task)
    mcfg = train.model_config(config)
    tx, _ = train.optimizer(config)
    step_fn = jax.jit(train.make_train_step(mcfg, spec, tx, train.precision_of(config)))
    params = model_lib.init_params(mcfg, jax.random.key(config.seed))
    state = {"params": params, "opt_state": tx.init(params), "step": np.int32(0)}
    tokens = jax.device_put(tasks.sample_batch(spec, data_seed=0, step=0,
                                               batch_size=config.train.batch_size).tokens)
    state, metrics = step_fn(state, tokens)  # compile
    jax.block_until_ready(metrics)
    start = time.perf_counter()
    for _ in range(steps):
        state, metrics = step_fn(state, tokens)
    jax.block_until_ready((state, metrics))
    return steps / (time.perf_counter() - start)


def _replica_examples_per_sec(config, num: int, mode: str | None, reps: int) -> float:
    """examples/s of `num` replicas in one program (mode None: one plain jitted step)."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from timing import best_time

    jax.config.update("jax_default_matmul_precision", "highest")
    spec = train.task_spec(config.task)
    mcfg = train.model_config(config)
    tx, _ = train.optimizer(config)
    step = train.make_train_step(mcfg, spec, tx, train.precision_of(config))
    batch = config.train.batch_size
    states = []
    for r in range(num):
        params = model_lib.init_params(mcfg, jax.random.key(r))
        states.append({"params": params, "opt_state": tx.init(params), "step": np.int32(0)})
    tokens = [tasks.sample_batch(spec, data_seed=r, step=0, batch_size=batch).tokens
              for r in range(num)]
    if mode is None:
        return batch / best_time(jax.jit(step), states[0], jax.device_put(tokens[0]), reps=reps)
    if mode == "vmap":
        fn = jax.jit(replicas.vmapped(step))
        seconds = best_time(fn, replicas.stack(states), jax.device_put(np.stack(tokens)), reps=reps)
    else:  # unrolled: R copies of the step over tuples, as training runs them
        fn = jax.jit(replicas.unrolled([step] * num))
        seconds = best_time(fn, tuple(states), tuple(jax.device_put(t) for t in tokens), reps=reps)
    return num * batch / seconds


def replica_bench(config, counts: list[int], reps: int) -> None:
    spec = train.task_spec(config.task)
    print(f"device: {jax.devices()[0].device_kind} x{jax.device_count()} | {spec} | "
          f"d_model {config.model.d_model}, {config.model.num_layers} layers, batch "
          f"{config.train.batch_size} | precision {train.precision_of(config).description}")
    separate = _replica_examples_per_sec(config, 1, None, reps)
    print(f"separate runs (one jitted step each, one after another): {separate:9.1f} examples/s")
    for num in counts:
        for mode in replicas.MODES:
            rate = _replica_examples_per_sec(config, num, mode, reps)
            print(f"R={num:2d} {mode:8s} one program: {rate:9.1f} examples/s = "
                  f"{rate / separate:.2f}x {num} separate runs", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="task=add,base=10,n=8",
                        help="ARGS of experiments/configs/train.py")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--log-every", type=int, default=25)
    parser.add_argument("--checkpoint-every", type=int, default=100)
    parser.add_argument("--replicas", default="",
                        help="R1,R2,...: time R runs in one program instead (see above)")
    parser.add_argument("--reps", type=int, default=2, help="steps per timed block (--replicas)")
    args = parser.parse_args()
    if args.replicas:
        try:
            counts = [int(x) for x in args.replicas.split(",")]
        except ValueError:
            counts = []
        if not counts or min(counts) < 1 or args.reps < 1:
            parser.error(f"--replicas={args.replicas} must be positive integers R1,R2,... "
                         f"and --reps={args.reps} >= 1")
        replica_bench(train_config.get_config(args.config), counts, args.reps)
        return
    if args.steps < 2 * args.log_every:
        parser.error(f"--steps={args.steps} must be at least 2 x --log-every={args.log_every}")

    config = train_config.get_config(args.config)
    config.unlock()
    config.train.update(steps=args.steps, log_every=args.log_every,
                        checkpoint_every=args.checkpoint_every)
    config.eval.update(num_examples=8, batch_size=8)
    config.lock()
    spec = train.task_spec(config.task)
    print(f"device: {jax.devices()[0].device_kind} x{jax.device_count()} | {spec} | "
          f"batch {config.train.batch_size} x {spec.sequence_length} tokens | "
          f"precision {train.precision_of(config).description}")

    # The bare step is timed before and after the pipeline and the faster rate kept, so that
    # load from other processes cannot flatter the ratio.
    bare = _bare_steps_per_sec(config, steps=args.steps // 2)
    with tempfile.TemporaryDirectory() as workdir:
        pipeline = _pipeline_steps_per_sec(config, workdir)
    bare = max(bare, _bare_steps_per_sec(config, steps=args.steps // 2))
    tokens_per_step = config.train.batch_size * spec.sequence_length
    ratio = pipeline / bare
    print(f"pipeline   {pipeline:8.2f} steps/s  {pipeline * tokens_per_step:10.0f} tokens/s")
    print(f"bare step  {bare:8.2f} steps/s  {bare * tokens_per_step:10.0f} tokens/s")
    verdict = "met" if ratio >= 0.9 else "MISSED"
    print(f"pipeline / bare jitted step: {ratio:.3f}x  (target >= 0.9x: {verdict})")


if __name__ == "__main__":
    main()
