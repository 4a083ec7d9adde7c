"""Training: `train_and_evaluate(config, workdir)`.

One run trains a `Transformer` on one task with AdamW (linear warmup, cosine decay, gradient
clipping), loss on the answer tokens only, at the precision the config names (`precision.py`).
The step is `jax.jit`-compiled with named shardings: the batch is split over every device on a
1-D "data" mesh, parameters and optimizer state are replicated, and XLA inserts the gradient
all-reduce. `config.distributed=True` calls `jax.distributed.initialize()` first (multi-host);
every host then builds the same global batch and keeps its own shards.

Exact resume: a batch is a pure function of (data_seed, step), the optimizer state is
checkpointed with the parameters, and CPU execution is deterministic, so a run killed at any
moment and restarted from its latest orbax checkpoint ends with bit-identical parameters
(`summary.json` records `params_sha256` to check it).

A newest checkpoint that fails to restore is moved aside (never deleted) and the run resumes from
the previous one (`checkpoints.py`); the final parameters are still bit-identical.

Early stopping (`config.early_stop.every > 0`, `early_stop.py`): validation exact match every
`every` steps; the run stops once it reaches the threshold at `patience` consecutive validations
and records `steps_to_converge`. Resume stays bit-identical with it on.

Outputs in `workdir`: `metrics.jsonl` (one line per log step), `validation.jsonl` (early
stopping's validations), `checkpoints/` (orbax), `summary.json` (final evaluation, timing,
versions, resolved config, `params_sha256`, status, `steps_to_converge`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import platform
import time
from collections.abc import Mapping
from importlib import metadata
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from absl import logging
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from arith_precision import atomic, tasks, train_checks
from arith_precision import checkpoints as checkpoints_lib
from arith_precision import early_stop as early_stop_lib
from arith_precision import evaluate as evaluate_lib
from arith_precision import model as model_lib
from arith_precision.cli_errors import UsageError
from arith_precision.precision import StepPrecision, step_precision
from arith_precision.simulate import native_dtype, regions, simulate

# ---- config -> objects -------------------------------------------------------------------------


def task_spec(task_cfg: Mapping[str, Any], n: int | None = None) -> tasks.TaskSpec:
    """The TaskSpec of a config's `task` block (optionally at another n)."""
    n = task_cfg["n"] if n is None else n
    l = task_cfg.get("l") or None  # 0 / None: full product
    return tasks.TaskSpec(task=task_cfg["task"], base=task_cfg["base"], n=n,
                          k=task_cfg.get("k", 2) if task_cfg["task"] == "iter_add" else 2,
                          l=l if task_cfg["task"] == "mul" else None,
                          chunk=task_cfg.get("chunk", 1),
                          reverse_answer=task_cfg.get("reverse_answer", False),
                          operand_distribution=task_cfg.get("operand_distribution",
                                                            "uniform_value"))


def eval_specs(config) -> list[tasks.TaskSpec]:
    ns = list(config.eval.get("ns") or ()) or [config.task.n]
    specs = []
    for n in ns:
        spec = task_spec(config.task, n)
        if spec.task == "mul" and spec.l is not None and spec.l > 2 * n:
            raise ValueError(f"eval n={n} is too small for l={spec.l}")
        specs.append(spec)
    return specs


def model_config(config) -> model_lib.TransformerConfig:
    specs = [task_spec(config.task)] + eval_specs(config)
    m = config.model
    policy = precision_of(config).policy
    # Native mode: the model itself computes in the real low-precision dtype (params stay fp32).
    dtype = native_dtype(policy.compute) if policy is not None and policy.native else jnp.float32
    return model_lib.TransformerConfig(
        vocab_size=specs[0].vocab_size, max_len=max(s.sequence_length for s in specs),
        num_layers=m.num_layers, d_model=m.d_model, num_heads=m.num_heads, d_ff=m.d_ff,
        activation=m.activation, norm=m.norm, pos=m.pos, tied_embedding=m.tied_embedding,
        dtype=dtype)


def precision_of(config) -> StepPrecision:
    p = config.precision
    return step_precision(p.name, accumulation=p.accumulation, native=p.native,
                          param=p.get("param", ""), accum=p.get("accum", ""),
                          grad=p.get("grad", ""),
                          tensor_core_dot=p.get("tensor_core_dot", "auto"))


def optimizer(config) -> tuple[optax.GradientTransformation, optax.Schedule]:
    o, steps = config.optim, config.train.steps
    warmup = min(o.warmup_steps, steps)
    schedule = optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=o.learning_rate, warmup_steps=warmup,
        decay_steps=max(steps, warmup + 1), end_value=o.learning_rate * o.final_lr_fraction)
    tx = optax.chain(
        optax.clip_by_global_norm(o.grad_clip),
        optax.adamw(schedule, b1=o.b1, b2=o.b2, weight_decay=o.weight_decay))
    return tx, schedule


# ---- the step ----------------------------------------------------------------------------------


def loss_fn(params, tokens_BxT, *, config: model_lib.TransformerConfig, mask_T: np.ndarray):
    """Mean next-token cross-entropy over the answer positions, and token accuracy there."""
    inputs_BxL, targets_BxL = tokens_BxT[:, :-1], tokens_BxT[:, 1:]
    logits_BxLxV = model_lib.Transformer(config).apply({"params": params}, inputs_BxL)
    mask_BxL = jnp.broadcast_to(jnp.asarray(mask_T, jnp.float32), targets_BxL.shape)
    losses_BxL = optax.softmax_cross_entropy_with_integer_labels(logits_BxLxV, targets_BxL)
    count = jnp.sum(mask_BxL)
    loss = jnp.sum(losses_BxL * mask_BxL) / count
    correct_BxL = (jnp.argmax(logits_BxLxV, axis=-1) == targets_BxL).astype(jnp.float32)
    return loss, {"token_accuracy": jnp.sum(correct_BxL * mask_BxL) / count}


def make_train_step(config: model_lib.TransformerConfig, spec: tasks.TaskSpec,
                    tx: optax.GradientTransformation, precision: StepPrecision):
    """`step(state, tokens_BxT) -> (state, metrics)` (not jitted), at the given precision."""
    mask_T = tasks.target_mask(spec)

    def marked_loss(p, t):  # the regions "gradients" and "optimizer_update" (no-ops by default)
        loss, aux = loss_fn(p, t, config=config, mask_T=mask_T)
        return regions.backward_region("gradients", loss), aux

    def grad_fn(p, t):
        value, grads = jax.value_and_grad(marked_loss, has_aux=True)(p, t)
        return value, regions.end_backward_region("gradients", grads)

    simulated = precision.policy is not None and not precision.policy.native
    if simulated and not precision.whole_step:
        grad_fn = simulate(grad_fn, precision.policy, param_argnums=(0,))

    def update(grads, opt_state, params):
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    def step(state, tokens_BxT):
        (loss, aux), grads = grad_fn(state["params"], tokens_BxT)
        params, opt_state = regions.region("optimizer_update", update)(
            grads, state["opt_state"], state["params"])
        metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads), **aux}
        return {"params": params, "opt_state": opt_state, "step": state["step"] + 1}, metrics

    if precision.whole_step:  # native pure_bf16: params, moments and update as real bf16 arrays
        step = simulate(step, precision.policy, param_argnums=(0,))
    return step


# ---- bookkeeping -------------------------------------------------------------------------------


def params_sha256(params) -> str:
    """SHA-256 of the parameters' bytes in tree order (dict keys sorted), with their paths."""
    digest = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        digest.update(jax.tree_util.keystr(path).encode())
        digest.update(np.ascontiguousarray(np.asarray(leaf)).tobytes())
    return digest.hexdigest()


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "quax", "numpy",
                "ml_dtypes", "arith-precision"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "unknown"
    return out


def _progress(message: str, *args) -> None:
    """Progress goes to stdout (absl's INFO log is flooded by orbax's checkpoint chatter)."""
    print(message % args, flush=True)


def _format_seconds(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else \
        f"{seconds // 60}m{seconds % 60:02d}s"


def _rewrite_metrics(path: str, keep_up_to: int) -> None:
    """After a resume, drop lines logged past the restored checkpoint (they will be redone)."""
    if not os.path.exists(path):
        return
    with open(path) as f:
        lines = [ln for ln in f if ln.strip() and json.loads(ln)["step"] <= keep_up_to]
    with open(path, "w") as f:
        f.writelines(lines)


def _write_json(path: str, obj) -> None:
    atomic.write_json(path, obj, indent=2, sort_keys=True, default=str)


# ---- the run -----------------------------------------------------------------------------------


def _state_initializer(config, mcfg: model_lib.TransformerConfig,
                       tx: optax.GradientTransformation):
    """`() -> {"params", "opt_state", "step"}`: the training state a checkpoint holds."""

    def init_state():
        params = model_lib.init_params(mcfg, jax.random.key(config.seed))
        return {"params": params, "opt_state": tx.init(params), "step": jnp.int32(0)}

    return init_state


class RestoredRun(NamedTuple):
    """A finished run's final parameters with what describes them."""

    params: Any
    config: Any  # ml_collections.ConfigDict, as the run resolved it
    summary: dict[str, Any]
    step: int  # the checkpoint's step (the last trained step; earlier with early stopping)


def restore_params(run_dir: str) -> RestoredRun:
    """The final parameters of a finished `train_and_evaluate` run (host arrays).

    Raises ValueError naming the directory when it holds no summary.json or checkpoints/, the
    run did not complete, or the restored parameters' SHA-256 differs from the summary's.
    """
    import ml_collections

    summary_path = os.path.join(run_dir, "summary.json")
    ckpt_dir = os.path.abspath(os.path.join(run_dir, "checkpoints"))
    if not os.path.isfile(summary_path) or not os.path.isdir(ckpt_dir):
        raise ValueError(f"{run_dir!r} is not a finished training run (expected summary.json and "
                         f"checkpoints/ from train_and_evaluate)")
    with open(summary_path) as f:
        summary = json.load(f)
    if summary.get("status") != "completed":
        raise ValueError(f"run {run_dir!r} has status {summary.get('status')!r}, not 'completed'")
    config = ml_collections.ConfigDict(summary["config"])
    mcfg = model_config(config)
    tx, _ = optimizer(config)
    mesh = jax.make_mesh((jax.device_count(),), ("data",),
                         axis_types=(jax.sharding.AxisType.Auto,))
    replicated = NamedSharding(mesh, P())
    target = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=replicated),
                          jax.eval_shape(_state_initializer(config, mcfg, tx)))
    with ocp.CheckpointManager(ckpt_dir) as manager:
        step = manager.latest_step()
        if step is None:
            raise ValueError(f"run {run_dir!r} has no checkpoint in {ckpt_dir}")
        state = manager.restore(step, args=ocp.args.StandardRestore(target))
    params = jax.device_get(state["params"])
    if summary.get("params_sha256") and params_sha256(params) != summary["params_sha256"]:
        raise ValueError(f"run {run_dir!r}: the checkpoint at step {step} does not hold the "
                         f"parameters summary.json describes (params_sha256 differs)")
    return RestoredRun(params, config, summary, int(step))


def train_and_evaluate(config, workdir: str) -> dict[str, Any]:
    """Train, checkpoint, evaluate; resume from `workdir` if it holds a checkpoint.

    Returns the summary dict (also written to `workdir/summary.json`). Bad config values raise
    `cli_errors.UsageError` (a ValueError naming the key) before any work.
    """
    train_checks.validate(config)
    if config.get("distributed", False):
        jax.distributed.initialize()
    jax.config.update("jax_default_matmul_precision", "highest")  # fp32 means fp32, not TF32
    start_time = time.time()
    os.makedirs(workdir, exist_ok=True)
    spec = task_spec(config.task)
    mcfg = model_config(config)
    precision = precision_of(config)
    especs = eval_specs(config)
    tx, schedule = optimizer(config)
    train_cfg = config.train
    num_devices = jax.device_count()
    if train_cfg.batch_size % num_devices:
        raise UsageError("train.batch_size", train_cfg.batch_size,
                         f"is not divisible by the {num_devices} devices")

    # Auto axes: XLA's partitioner places the collectives (no sharding-in-types annotations).
    mesh = jax.make_mesh((num_devices,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    replicated = NamedSharding(mesh, P())
    data_sharding = NamedSharding(mesh, P("data"))

    init_state = _state_initializer(config, mcfg, tx)
    abstract = jax.eval_shape(init_state)
    state_sharding = jax.tree.map(lambda _: replicated, abstract)
    step_fn = jax.jit(make_train_step(mcfg, spec, tx, precision),
                      in_shardings=(state_sharding, data_sharding),
                      out_shardings=(state_sharding, replicated))

    checkpoint_dir = os.path.abspath(os.path.join(workdir, "checkpoints"))

    def open_manager():
        return ocp.CheckpointManager(checkpoint_dir, options=checkpoints_lib.manager_options(
            max_to_keep=train_cfg.keep_checkpoints,
            save_interval_steps=train_cfg.checkpoint_every))

    def restore(manager, step):
        target = jax.tree.map(
            lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract,
            state_sharding)
        return manager.restore(step, args=ocp.args.StandardRestore(target))

    metrics_path = os.path.join(workdir, "metrics.jsonl")
    manager, latest, state = checkpoints_lib.restore_newest_good(checkpoint_dir, open_manager,
                                                                 restore)
    stopper = early_stop_lib.from_config(config)
    if latest is not None:
        _rewrite_metrics(metrics_path, latest)
        history = early_stop_lib.read_history(workdir, up_to=latest)
        _progress("resumed from step %d", latest)
    else:
        state = jax.jit(init_state, out_shardings=state_sharding)()
        with open(metrics_path, "w"):
            pass
        history = []
    if stopper is not None:
        early_stop_lib.rewrite_history(workdir, history)
    first_step = int(state["step"])
    total = train_cfg.steps

    def validate(step: int) -> bool:
        """Early stopping's validation at `step`; True when the rule fires there."""
        result = evaluate_lib.evaluate(
            state["params"], mcfg, spec, num_examples=stopper.num_examples,
            batch_size=stopper.batch_size, data_seed=config.data_seed, policy=eval_policy,
            split="valid")
        row = {"step": step, "exact_match": result["exact_match"],
               "digit_accuracy": result["digit_accuracy"]}
        history.append(row)
        early_stop_lib.append(workdir, row)
        _progress("validation at step %d: exact match %.4f (stop at >= %.2f, %d in a row)", step,
                  row["exact_match"], stopper.threshold, stopper.patience)
        return stopper.converged(history)

    eval_policy = None if precision.policy is None or precision.policy.native \
        else precision.policy
    converged_at = None
    if stopper is not None and first_step and first_step % stopper.every == 0 and \
            not any(h["step"] == first_step for h in history):
        validate(first_step)  # killed after the checkpoint, before its validation was written
    if stopper is not None and history and history[-1]["step"] == first_step and \
            stopper.converged(history):
        converged_at = first_step  # it had converged: stop where it stopped, as before the kill
    _progress("task %s | model %s | precision %s | %d device(s) | steps %d..%d", spec,
                 mcfg, precision.description, num_devices, first_step, total)

    def global_batch(step: int):
        tokens = tasks.sample_batch(spec, data_seed=config.data_seed, step=step,
                                    batch_size=train_cfg.batch_size).tokens
        return jax.make_array_from_callback(tokens.shape, data_sharding, lambda idx: tokens[idx])

    status, diverged_at = "completed", None
    pending = []  # (step, metrics) not yet fetched from the device
    window_start, window_steps = time.time(), 0
    with open(metrics_path, "a") as metrics_file:
        step = first_step
        while step < total and converged_at is None:
            state, metrics = step_fn(state, global_batch(step))
            step += 1
            window_steps += 1
            pending.append((step, metrics))
            manager.save(step, args=ocp.args.StandardSave(state))  # every checkpoint_every steps
            if stopper is not None and step % stopper.every == 0 and validate(step):
                converged_at = step
            if step % train_cfg.log_every and step != total and converged_at is None:
                continue
            fetched = jax.device_get(pending)
            pending = []
            bad = [s for s, m in fetched if not math.isfinite(float(m["loss"]))]
            if bad:
                status, diverged_at = "diverged", bad[0]
                logging.warning("non-finite loss at step %d: stopping", diverged_at)
                break
            elapsed = time.time() - window_start
            rate = window_steps / max(elapsed, 1e-9)
            s, m = fetched[-1]
            record = {"step": s, "loss": float(m["loss"]),
                      "token_accuracy": float(m["token_accuracy"]),
                      "grad_norm": float(m["grad_norm"]), "lr": float(schedule(s - 1)),
                      "steps_per_sec": rate}
            metrics_file.write(json.dumps(record) + "\n")
            metrics_file.flush()
            _progress("step %d/%d loss %.4f tok_acc %.4f | %.1f steps/s | ETA %s", s, total,
                         record["loss"], record["token_accuracy"], rate,
                         _format_seconds((total - s) / max(rate, 1e-9)))
            window_start, window_steps = time.time(), 0
    manager.wait_until_finished()
    final_step = int(state["step"])
    if status == "completed" and manager.latest_step() != final_step:
        manager.save(final_step, args=ocp.args.StandardSave(state), force=True)
        manager.wait_until_finished()
    manager.close()
    checkpoints_lib.purge_deleted(checkpoint_dir)

    params = state["params"]
    results = {}
    if status == "completed":
        for espec in especs:
            results[str(espec.n)] = evaluate_lib.evaluate(
                params, mcfg, espec, num_examples=config.eval.num_examples,
                batch_size=config.eval.batch_size, data_seed=config.data_seed,
                policy=eval_policy)
            _progress("eval n=%d: exact match %.4f, digit accuracy %.4f", espec.n,
                         results[str(espec.n)]["exact_match"],
                         results[str(espec.n)]["digit_accuracy"])
    summary = {
        "status": status,
        "diverged_at_step": diverged_at,
        "steps": final_step if status == "completed" else diverged_at,
        "steps_to_converge": converged_at,
        "early_stop": None if stopper is None else dataclasses.asdict(stopper),
        "validation": history,
        "exact_match": {n: r["exact_match"] for n, r in results.items()},
        "digit_accuracy": {n: r["digit_accuracy"] for n, r in results.items()},
        "eval": results,
        "wall_time_s": time.time() - start_time,
        "resumed_from_step": latest,
        "precision": precision.description,
        "versions": versions(),
        "device_kind": jax.devices()[0].device_kind,
        "device_count": num_devices,
        "num_params": int(sum(np.size(x) for x in jax.tree.leaves(params))),
        "config": config.to_dict() if hasattr(config, "to_dict") else dict(config),
        "params_sha256": params_sha256(params),
    }
    if jax.process_index() == 0:
        _write_json(os.path.join(workdir, "summary.json"), summary)
    return summary
