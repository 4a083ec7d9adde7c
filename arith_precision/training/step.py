"""What one training run is made of: config -> task, model, precision, optimizer, the step.

`make_train_step` returns the (unjitted) step `(state, tokens_BxT) -> (state, metrics)` of one
run; `loop.py` compiles one or several of them into one program and runs the loop,
`train.py` is the one-run entry point.
"""

from __future__ import annotations

import hashlib
import platform
from collections.abc import Mapping
from importlib import metadata
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from arith_precision import model as model_lib
from arith_precision import tasks
from arith_precision.simulate import native_dtype, regions, simulate
from arith_precision.training.precision import StepPrecision, step_precision

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
                          tensor_core_dot=p.get("tensor_core_dot", "auto"),
                          regions=p.get("regions", ""),
                          rounding=p.get("rounding", "nearest_even"), seed=config.seed,
                          random_bits=p.get("random_bits") or None)


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


def state_initializer(config, mcfg: model_lib.TransformerConfig,
                      tx: optax.GradientTransformation):
    """`() -> {"params", "opt_state", "step"}`: the training state a checkpoint holds."""

    def init_state():
        params = model_lib.init_params(mcfg, jax.random.key(config.seed))
        return {"params": params, "opt_state": tx.init(params), "step": jnp.int32(0)}

    return init_state
