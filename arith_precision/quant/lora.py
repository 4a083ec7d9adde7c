"""LoRA and QLoRA fine-tuning of the unchanged Transformer, with LoRA as a quax implicit array.

    result = finetune(params, cfg, spec, steps=200, rank=8, alpha=16, lr=1e-3, batch_size=64,
                      data_seed=0, seed=0)                               # LoRA on the fp32 base
    q_result = finetune(quantized.quantize_params(params, "nf4_g64"), cfg, spec, ...)   # QLoRA
    result.evaluate(num_examples=512, batch_size=256, data_seed=0)       # exact match, digits

The math (Hu et al., 2021; QLoRA: Dettmers et al., 2023). An adapted kernel W, seen as an
(in, out) matrix, is replaced by

    W_eff = W + (alpha / r) * A @ B,     A: (in, r),  B: (r, out)

with W frozen (a float32 array, or a `quantized.QuantizedArray` for QLoRA, where W is the
dequantized int4 / NF4 weight and its codes and scales never change) and only A, B trained.
B starts at zero, so W_eff = W + 0 = W exactly at initialisation (only a -0.0 entry turns into
+0.0, which changes no nonzero result). A starts uniform in [-1/sqrt(in), 1/sqrt(in)] (peft's
kaiming-uniform default for lora_A).

Matrix views (`quantized.matrix_layout`): Dense kernels (fc1, fc2, unembed) are (in, out)
already. The attention kernels are 3-D; the low-rank product is taken on their 2-D reshape and
reshaped back (row-major, so it matches the kernel's own layout):

    query/key/value (D, H, Dh):  in = D,      out = H*Dh;  delta = (A @ B).reshape(D, H, Dh)
    out             (H, Dh, D):  in = H*Dh,   out = D;     delta = (A @ B).reshape(H, Dh, D)

so one adapter spans all heads (as peft does for a fused qkv projection).

`LoraArray` holds (W, A, B) and materialises to W_eff under `quax.quaxify`, so the model code is
unchanged; the frozen W enters behind `lax.stop_gradient`. Numerics: A @ B is a float32 matmul
at HIGHEST precision (no TF32 on GPU), scaled by alpha/r and added to W in float32; the layer
then multiplies by W_eff (not x @ W + s (x @ A) @ B: equal in exact arithmetic, and the merged
form is what a deployment that folds the adapter computes).

Training (`finetune`): AdamW (optax) on the adapter tree only, next-token cross-entropy on the
answer tokens (`training.step.loss_fn` with `tasks.target_mask(spec)`), batches
`tasks.sample_batch(spec, data_seed=data_seed, step=i, split="train")`, one jitted step. The
base tree is a jit argument; its leaves are never updated.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable, Mapping
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import quax

from arith_precision import model as model_lib
from arith_precision import tasks
from arith_precision.quant import quantized
from arith_precision.training.step import loss_fn

DEFAULT_TARGETS = ("query", "key", "value", "out", "fc1", "fc2")

Adapters = dict[str, dict[str, jax.Array]]  # kernel path -> {"a": (in, r), "b": (r, out)}


class LoraArray(quax.ArrayValue):
    """W_eff = stop_gradient(W) + scale * (A @ B).reshape(W.shape), materialised at use.

    Attributes:
        base: the frozen W: a float array or a `quantized.QuantizedArray`.
        a: (in, r) with in = prod(W.shape[:split]).
        b: (r, out) with out = prod(W.shape[split:]).
        scale: alpha / r (static).
        split: how many leading axes of W form the rows of its matrix view (static).
    """

    base: Any
    a: jax.Array
    b: jax.Array
    scale: float = eqx.field(static=True)
    split: int = eqx.field(static=True)

    def aval(self):
        return jax.core.ShapedArray(tuple(self.base.shape), self.base.dtype)

    def materialise(self):
        base = self.base
        w = type(base).materialise(base) if quantized.is_implicit(base) else base
        w = jax.lax.stop_gradient(w)
        delta_IxO = jnp.matmul(self.a, self.b, precision=jax.lax.Precision.HIGHEST)
        return w + (delta_IxO * self.scale).reshape(w.shape).astype(w.dtype)


# ---- adapters -----------------------------------------------------------------------------------


def _kernel_leaves(params) -> dict[str, Any]:
    flat = jax.tree_util.tree_flatten_with_path(dict(params), is_leaf=quantized.is_implicit)[0]
    out = {}
    for path, leaf in flat:
        p = quantized.path_str(path)
        if quantized.is_kernel_path(p, tuple(leaf.shape)):
            out[p] = leaf
    return out


def init_adapters(base_params: Mapping[str, Any], *, rank: int,
                  targets: Iterable[str] = DEFAULT_TARGETS, seed: int = 0) -> Adapters:
    """Adapters {kernel path: {"a": (in, r), "b": zeros (r, out)}} for the targeted kernels.

    `targets` are patterns matched as `quantized.quantize_params`' `skip` is (a path component
    such as "query" or "fc1", a full path, or an fnmatch pattern), over the kernels only
    (attention, MLP, unembedding, embeddings). A of the i-th targeted path (sorted) is drawn
    from fold_in(key(seed), i).

    Raises:
        ValueError: rank < 1, or targets that match no kernel.
    """
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ValueError(f"rank must be an integer >= 1, got {rank!r}")
    if isinstance(targets, str):
        targets = (targets,)
    targets = tuple(targets)
    kernels = _kernel_leaves(base_params)
    chosen = sorted(p for p in kernels if quantized.matches(p, targets))
    if not chosen:
        raise ValueError(f"LoRA targets {targets!r} match no kernel; kernels are "
                         f"{sorted(kernels)}")
    key = jax.random.key(seed)
    adapters = {}
    for i, path in enumerate(chosen):
        shape = tuple(kernels[path].shape)
        split, _ = quantized.matrix_layout(path, shape)
        n_in, n_out = int(np.prod(shape[:split])), int(np.prod(shape[split:]))
        bound = 1.0 / np.sqrt(n_in)
        a_IxR = jax.random.uniform(jax.random.fold_in(key, i), (n_in, rank), jnp.float32,
                                   -bound, bound)
        adapters[path] = {"a": a_IxR, "b": jnp.zeros((rank, n_out), jnp.float32)}
    return adapters


def _set_path(tree: dict, path: str, value) -> None:
    *parents, name = path.split("/")
    for p in parents:
        tree = tree[p]
    tree[name] = value


def _copy_dicts(tree):
    if isinstance(tree, Mapping):
        return {k: _copy_dicts(v) for k, v in tree.items()}
    return tree


def lora_params(base_params: Mapping[str, Any], adapters: Adapters, alpha: float) -> dict:
    """The base tree with each adapted kernel replaced by a `LoraArray` (scale alpha / r).

    Raises:
        ValueError: an adapter path that is not a kernel of the base, or factor shapes that do
            not fit it.
    """
    kernels = _kernel_leaves(base_params)
    tree = _copy_dicts(base_params)
    for path, ab in adapters.items():
        if path not in kernels:
            raise ValueError(f"adapter {path!r} is not a kernel of the base params")
        base = kernels[path]
        shape = tuple(base.shape)
        split, _ = quantized.matrix_layout(path, shape)
        n_in, n_out = int(np.prod(shape[:split])), int(np.prod(shape[split:]))
        a, b = ab["a"], ab["b"]
        rank = a.shape[-1]
        if a.shape != (n_in, rank) or b.shape != (rank, n_out):
            raise ValueError(f"adapter {path!r}: a {a.shape} and b {b.shape} do not fit a kernel "
                             f"of shape {shape} (expected ({n_in}, r) and (r, {n_out}))")
        _set_path(tree, path, LoraArray(base, a, b, float(alpha) / rank, split))
    return tree


def merge_lora(base_params: Mapping[str, Any], adapters: Adapters, alpha: float) -> dict:
    """A plain float tree: W_eff for adapted kernels, every other implicit leaf dequantized.

    Usable with `evaluate.evaluate`, checkpoints, or as the base of another run.
    """
    return quantized.dequantize_params(lora_params(base_params, adapters, alpha))


def num_trainable(adapters: Adapters) -> int:
    """Number of trainable scalars (entries of all A and B)."""
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(adapters))


def lora_loss(adapters: Adapters, base_params, tokens_BxT, *, alpha: float,
              config: model_lib.TransformerConfig, mask_T: np.ndarray):
    """`training.step.loss_fn` of the LoRA model: (mean answer-token cross-entropy,
    {"token_accuracy"})."""
    params = lora_params(base_params, adapters, alpha)

    def loss(p, tokens):
        return loss_fn(p, tokens, config=config, mask_T=mask_T)

    return quax.quaxify(loss)(params, tokens_BxT)


def evaluate_lora(base_params, adapters: Adapters, alpha: float,
                  config: model_lib.TransformerConfig, spec: tasks.TaskSpec, *,
                  num_examples: int, batch_size: int, data_seed: int) -> dict[str, float]:
    """Exact match and digit accuracy of base + adapters (unmerged, quantized base kept)."""
    return quantized.evaluate_quantized(lora_params(base_params, adapters, alpha), config, spec,
                                        num_examples=num_examples, batch_size=batch_size,
                                        data_seed=data_seed)


# ---- fine-tuning --------------------------------------------------------------------------------


@dataclasses.dataclass
class FinetuneResult:
    """What `finetune` returns.

    Attributes:
        base_params: the frozen base tree, unchanged (the same objects that were passed in).
        adapters: the trained {path: {"a", "b"}} tree.
        alpha: the LoRA alpha (scale alpha / r).
        config, spec: the model config and the task trained on.
        losses, token_accuracy: per step, (steps,) float arrays.
        steps_per_sec: training throughput after the first (compiling) step.
    """

    base_params: Any
    adapters: Adapters
    alpha: float
    config: model_lib.TransformerConfig
    spec: tasks.TaskSpec
    losses: np.ndarray
    token_accuracy: np.ndarray
    steps_per_sec: float

    @property
    def params(self) -> dict:
        """The implicit tree (LoraArrays over the base) for `quantized.apply_quantized`."""
        return lora_params(self.base_params, self.adapters, self.alpha)

    def merged(self) -> dict:
        """Plain float params with the adapters folded in (`merge_lora`)."""
        return merge_lora(self.base_params, self.adapters, self.alpha)

    def evaluate(self, spec: tasks.TaskSpec | None = None, *, num_examples: int,
                 batch_size: int, data_seed: int) -> dict[str, float]:
        """`evaluate_lora` on `spec` (default: the task trained on)."""
        return evaluate_lora(self.base_params, self.adapters, self.alpha, self.config,
                             spec or self.spec, num_examples=num_examples,
                             batch_size=batch_size, data_seed=data_seed)


def make_step(config: model_lib.TransformerConfig, spec: tasks.TaskSpec,
              tx: optax.GradientTransformation, alpha: float):
    """Jitted `step(adapters, opt_state, base, tokens_BxT) -> (adapters, opt_state, metrics)`.

    Gradients are taken with respect to `adapters` only; `base` is an ordinary argument.
    """
    mask_T = tasks.target_mask(spec)
    grad_fn = jax.value_and_grad(
        lambda ad, base, tok: lora_loss(ad, base, tok, alpha=alpha, config=config,
                                        mask_T=mask_T), has_aux=True)

    @jax.jit
    def step(adapters, opt_state, base, tokens_BxT):
        (loss, aux), grads = grad_fn(adapters, base, tokens_BxT)
        updates, opt_state = tx.update(grads, opt_state, adapters)
        adapters = optax.apply_updates(adapters, updates)
        return adapters, opt_state, {"loss": loss, "grad_norm": optax.tree.norm(grads), **aux}

    return step


def finetune(base_params: Mapping[str, Any], cfg: model_lib.TransformerConfig,
             spec: tasks.TaskSpec, *, steps: int, rank: int, alpha: float, lr: float,
             batch_size: int, data_seed: int, seed: int,
             targets: Iterable[str] = DEFAULT_TARGETS, weight_decay: float = 0.0,
             grad_clip: float | None = 1.0, log_every: int = 0) -> FinetuneResult:
    """Train LoRA factors on `spec` over a frozen base (fp32 params: LoRA; quantized: QLoRA).

    AdamW with constant learning rate `lr` (b1 0.9, b2 0.999, decoupled `weight_decay` on A and
    B), global-norm clipping at `grad_clip` (None: off). Step i trains on
    `sample_batch(spec, data_seed=data_seed, step=i, batch_size=batch_size)`; A is initialised
    from `seed`. `log_every > 0` prints loss, steps/s and ETA every that many steps.

    Raises:
        ValueError: steps or batch_size < 1, lr <= 0, a spec longer than the model's max_len,
            and everything `init_adapters` rejects.
    """
    for name, value, lo in (("steps", steps, 1), ("batch_size", batch_size, 1),
                            ("log_every", log_every, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < lo:
            raise ValueError(f"{name} must be an integer >= {lo}, got {value!r}")
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr!r}")
    if spec.sequence_length > cfg.max_len:
        raise ValueError(f"{spec} needs {spec.sequence_length} positions; the model has "
                         f"max_len={cfg.max_len}")
    adapters = init_adapters(base_params, rank=rank, targets=targets, seed=seed)
    adamw = optax.adamw(lr, b1=0.9, b2=0.999, weight_decay=weight_decay)
    tx = adamw if grad_clip is None else optax.chain(optax.clip_by_global_norm(grad_clip), adamw)
    opt_state = tx.init(adapters)
    step_fn = make_step(cfg, spec, tx, alpha)
    losses, accuracies = [], []
    first_done = time.time()
    for i in range(steps):
        tokens_BxT = tasks.sample_batch(spec, data_seed=data_seed, step=i, batch_size=batch_size,
                                        split="train").tokens
        adapters, opt_state, metrics = step_fn(adapters, opt_state, base_params, tokens_BxT)
        losses.append(metrics["loss"])
        accuracies.append(metrics["token_accuracy"])
        if i == 0:
            jax.block_until_ready(metrics["loss"])
            first_done = time.time()
        if log_every and (i + 1) % log_every == 0:
            rate = i / max(time.time() - first_done, 1e-9) if i else 0.0
            eta = (steps - i - 1) / rate if rate else float("nan")
            print(f"lora step {i + 1}/{steps} loss {float(metrics['loss']):.4f} "
                  f"token_acc {float(metrics['token_accuracy']):.3f} {rate:.1f} steps/s "
                  f"eta {eta:.0f}s", flush=True)
    losses_np = np.asarray(jax.device_get(losses), np.float64)
    elapsed = time.time() - first_done
    return FinetuneResult(base_params, adapters, float(alpha), cfg, spec, losses_np,
                          np.asarray(jax.device_get(accuracies), np.float64),
                          (steps - 1) / elapsed if steps > 1 and elapsed > 0 else float("nan"))
