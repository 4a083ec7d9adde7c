"""Decoder-only causal Transformer (flax.linen), with a KV cache (greedy decoding: decode.py).

One model serves both trained runs and hand-built constructions, so the parameter tree is plain,
stable and documented here. Shape suffixes: B batch, L (query) length, M key length, T prompt
length, N generated tokens, V vocab_size, D d_model, H num_heads, K head_dim (``Dh`` below),
F d_ff, S max_len.

Parameter tree (``init_params(config, rng)``; ``param_shapes(config)`` returns exactly these
shapes as tuples, ``check_params(params, config)`` validates a hand-built tree)::

    params = {
      "embed": (V, D),                                      # token embedding E
      "pos_embedding": (max_len, D),                        # only pos="learned" | "table"
      "layer_0": {
        "ln_attn": {"scale": (D,), "bias": (D,)},           # only norm="pre_ln"
        "attn": {
          "query": {"kernel": (D, H, Dh), "bias": (H, Dh)},
          "key":   {"kernel": (D, H, Dh), "bias": (H, Dh)},
          "value": {"kernel": (D, H, Dh), "bias": (H, Dh)},
          "out":   {"kernel": (H, Dh, D), "bias": (D,)},
        },
        "ln_mlp": {"scale": (D,), "bias": (D,)},            # only norm="pre_ln"
        "mlp": {
          "fc1": {"kernel": (D, F), "bias": (F,)},
          "fc2": {"kernel": (F, D), "bias": (D,)},
        },
      },
      ...                                                   # "layer_1" ... "layer_{num_layers-1}"
      "ln_final": {"scale": (D,), "bias": (D,)},            # only norm="pre_ln"
      "unembed": {"kernel": (D, V), "bias": (V,)},          # only tied_embedding=False
    }

With ``use_bias=False`` every ``"bias"`` leaf above is absent (layer norms keep ``"scale"``).
All leaves are ``param_dtype`` (float32); they are cast to the compute ``dtype`` at use.
A numpy tree with these keys and shapes can be passed straight to ``Transformer.apply``.

The forward pass (per layer l, pre-LN; with ``norm="none"`` every LN is the identity)::

    x_0[i]   = E[tok_i] + P[start + i]                      # P: learned / table / sinusoid / 0
    a_l      = x_{l-1} + Attn_l(LN_attn_l(x_{l-1}))         # residual after attention
    x_l      = a_l + MLP_l(LN_mlp_l(a_l))                   # residual after MLP
    logits   = LN_final(x_{num_layers}) @ U + c             # U = E^T and c = 0 when tied

``return_residuals=True`` additionally returns ``{"embed": x_0, "layer_l/attn": a_l,
"layer_l/mlp": x_l}`` (each B x L x D, in insertion order) so constructions can read named
subspaces of the residual stream; ``logits_from_residual`` maps the last one to the logits.

Named regions: the attention scores + softmax (``CausalAttention.attention_scores``), the value
mixing (``CausalAttention.attention_mixing``) and the residual additions (``Block.residual_add``)
are methods of their own, so that method interception (``arith_precision.simulate.regions``) can
give each part of the model its own precision without the model naming any format.

The code uses only ordinary jax ops (no precision machinery, no Python-side conversion of traced
values), so it runs unchanged under the dtype-simulation wrapper, where every floating primitive
output is rounded. ``dtype=jnp.bfloat16`` gives native bf16 compute; logits are float32 (float64
when the compute dtype is float64, e.g. simulation on a float64 carrier).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

Array = jax.Array
Params = dict[str, Any]
Cache = dict[str, dict[str, Array]]

ACTIVATIONS = ("gelu", "relu")
NORMS = ("pre_ln", "none")
POSITIONS = ("learned", "sinusoidal", "none", "table")


def is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
    """Hyper-parameters of `Transformer` (frozen and hashable: usable as a jit static arg).

    Attributes:
      vocab_size: number of token ids V.
      max_len: number of positions S; tokens live at positions [0, max_len).
      num_layers: number of (attention + MLP) blocks.
      d_model: residual stream width D.
      num_heads: attention heads H.
      head_dim: per-head width Dh; None means d_model // num_heads (then D % H must be 0).
      d_ff: MLP hidden width F.
      activation: "gelu" (exact, erf-based: jax.nn.gelu(approximate=False)) or "relu".
      norm: "pre_ln" (LayerNorm before each sub-layer and before the unembedding) or "none".
      pos: "learned" (random-init param), "table" (zero-init param meant to be set by hand,
        used under stop_gradient), "sinusoidal" (fixed, not a param) or "none".
      tied_embedding: logits = x @ embed.T (no unembedding bias) instead of an `unembed` Dense.
      use_bias: biases in every Dense layer and LayerNorm.
      dtype: compute dtype (params are cast to it at use); logits are returned in float32
        (float64 for a float64 compute dtype).
      param_dtype: storage dtype of the parameters.
      norm_eps: epsilon of the LayerNorms.
    """

    vocab_size: int
    max_len: int
    num_layers: int
    d_model: int
    num_heads: int
    d_ff: int
    head_dim: int | None = None
    activation: str = "gelu"
    norm: str = "pre_ln"
    pos: str = "learned"
    tied_embedding: bool = False
    use_bias: bool = True
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    norm_eps: float = 1e-6

    def __post_init__(self):
        for name in ("vocab_size", "max_len", "num_layers", "d_model", "num_heads", "d_ff"):
            value = getattr(self, name)
            if not is_int(value) or value < 1:
                raise ValueError(f"TransformerConfig.{name} must be a positive int, got {value!r}")
        if self.head_dim is None:
            if self.d_model % self.num_heads:
                raise ValueError(
                    f"TransformerConfig.d_model={self.d_model} is not divisible by "
                    f"num_heads={self.num_heads}; pass head_dim explicitly or change them"
                )
        elif not is_int(self.head_dim) or self.head_dim < 1:
            raise ValueError(
                f"TransformerConfig.head_dim must be a positive int or None, got {self.head_dim!r}"
            )
        for name, allowed in (("activation", ACTIVATIONS), ("norm", NORMS), ("pos", POSITIONS)):
            value = getattr(self, name)
            if value not in allowed:
                raise ValueError(
                    f"TransformerConfig.{name}={value!r} is unknown; expected one of {allowed}"
                )
        for name in ("tied_embedding", "use_bias"):
            value = getattr(self, name)
            if not isinstance(value, bool | np.bool_):
                raise ValueError(f"TransformerConfig.{name} must be a bool, got {value!r}")
        for name in ("dtype", "param_dtype"):
            value = getattr(self, name)
            try:
                dt = jnp.dtype(value)
            except TypeError as e:
                raise ValueError(f"TransformerConfig.{name}={value!r} is not a dtype") from e
            if not jnp.issubdtype(dt, jnp.floating):
                raise ValueError(
                    f"TransformerConfig.{name}={value!r} must be a floating dtype, got {dt}"
                )
            object.__setattr__(self, name, dt)
        if not isinstance(self.norm_eps, numbers.Real) or not self.norm_eps > 0:
            raise ValueError(f"TransformerConfig.norm_eps must be > 0, got {self.norm_eps!r}")

    @property
    def effective_head_dim(self) -> int:
        """Dh: `head_dim`, or d_model // num_heads when it is None."""
        return self.head_dim if self.head_dim is not None else self.d_model // self.num_heads


# ----------------------------------------------------------------------------------------------
# Layers.


def sinusoidal_positions(positions_L: Array, d_model: int) -> Array:
    """Fixed sinusoidal table rows: P[j, 2i] = sin(j w_i), P[j, 2i+1] = cos(j w_i).

    w_i = 10000^(-2i / D). Works for traced positions (e.g. the decoding step); returns L x D
    float32.
    """
    half = (d_model + 1) // 2
    inv_freq_I = np.power(10000.0, -2.0 * np.arange(half) / d_model).astype(np.float32)
    angle_LxI = positions_L.astype(jnp.float32)[:, None] * inv_freq_I[None, :]
    pe_LxIx2 = jnp.stack([jnp.sin(angle_LxI), jnp.cos(angle_LxI)], axis=-1)
    return pe_LxIx2.reshape(positions_L.shape[0], 2 * half)[:, :d_model]


class LayerNorm(nn.Module):
    """y = (x - mean(x)) / sqrt(var(x) + eps) * scale + bias over the last axis.

    Two-pass variance var = mean((x - mean)^2). Statistics are computed in at least float32
    (as flax does for bf16), and the output is cast to `dtype`.
    """

    eps: float
    use_bias: bool
    dtype: Any
    param_dtype: Any

    @nn.compact
    def __call__(self, x_BxLxD: Array) -> Array:
        d = x_BxLxD.shape[-1]
        scale_D = self.param("scale", nn.initializers.ones, (d,), self.param_dtype)
        stat_dtype = jnp.promote_types(self.dtype, jnp.float32)
        x_BxLxD = x_BxLxD.astype(stat_dtype)
        mean_BxLx1 = jnp.mean(x_BxLxD, axis=-1, keepdims=True)
        xc_BxLxD = x_BxLxD - mean_BxLx1
        var_BxLx1 = jnp.mean(xc_BxLxD * xc_BxLxD, axis=-1, keepdims=True)
        y_BxLxD = xc_BxLxD * jax.lax.rsqrt(var_BxLx1 + self.eps)
        y_BxLxD = y_BxLxD * scale_D.astype(stat_dtype)
        if self.use_bias:
            bias_D = self.param("bias", nn.initializers.zeros, (d,), self.param_dtype)
            y_BxLxD = y_BxLxD + bias_D.astype(stat_dtype)
        return y_BxLxD.astype(self.dtype)


class CausalAttention(nn.Module):
    """Multi-head causal self-attention with an optional functional KV cache.

    q_h = x Wq_h + bq_h, k_h = x Wk_h + bk_h, v_h = x Wv_h + bv_h (each L x Dh);
    A_h = softmax((q_h k_h^T) / sqrt(Dh) + mask) where query i (position start+i) sees key j iff
    pos(j) <= start + i; out = sum_h (A_h v_h) Wo_h + bo. Masked scores are replaced (jnp.where)
    by the finite value finfo(dtype).min, so exp gives exactly 0 and no -inf is ever formed by
    the model itself. The value product is a dense matmul: a masked (later) key contributes
    exactly 0 * v, so a NaN/inf value at a later position (e.g. an overflow under simulation)
    still turns earlier outputs into NaN, as on real hardware with a dense masked matmul.

    With a cache {"k", "v"} of shape B x S x H x Dh, the new keys/values are written at positions
    [start, start + L) and the queries attend over all S slots under the same mask (slots not yet
    written sit at positions > start + L - 1, hence are masked). S is max_len for init_cache's
    cache; a prefix of it (S < max_len slots, positions [0, S)) skips the scores of later slots
    (`decode._prefill`).
    """

    config: TransformerConfig

    @nn.compact
    def __call__(
        self, x_BxLxD: Array, *, cache: Mapping[str, Array] | None, start: Any
    ) -> tuple[Array, dict[str, Array] | None]:
        cfg = self.config
        h, dh = cfg.num_heads, cfg.effective_head_dim
        proj = dict(
            features=(h, dh), use_bias=cfg.use_bias, dtype=cfg.dtype, param_dtype=cfg.param_dtype
        )
        q_BxLxHxK = nn.DenseGeneral(**proj, name="query")(x_BxLxD)
        k_BxLxHxK = nn.DenseGeneral(**proj, name="key")(x_BxLxD)
        v_BxLxHxK = nn.DenseGeneral(**proj, name="value")(x_BxLxD)

        length = x_BxLxD.shape[1]
        start = jnp.asarray(start, jnp.int32)
        q_pos_L = start + jnp.arange(length, dtype=jnp.int32)
        if cache is None:
            new_cache = None
            k_BxMxHxK, v_BxMxHxK = k_BxLxHxK, v_BxLxHxK
            k_pos_M = q_pos_L
        else:
            zero = jnp.zeros((), jnp.int32)
            index = (zero, start, zero, zero)
            k_BxMxHxK = jax.lax.dynamic_update_slice(
                cache["k"], k_BxLxHxK.astype(cache["k"].dtype), index
            )
            v_BxMxHxK = jax.lax.dynamic_update_slice(
                cache["v"], v_BxLxHxK.astype(cache["v"].dtype), index
            )
            new_cache = {"k": k_BxMxHxK, "v": v_BxMxHxK}
            k_pos_M = jnp.arange(k_BxMxHxK.shape[1], dtype=jnp.int32)
            k_BxMxHxK = k_BxMxHxK.astype(cfg.dtype)
            v_BxMxHxK = v_BxMxHxK.astype(cfg.dtype)

        visible_LxM = k_pos_M[None, :] <= q_pos_L[:, None]
        probs_BxHxLxM = self.attention_scores(q_BxLxHxK, k_BxMxHxK, visible_LxM)
        ctx_BxLxHxK = self.attention_mixing(probs_BxHxLxM, v_BxMxHxK)
        out_BxLxD = nn.DenseGeneral(
            features=cfg.d_model,
            axis=(-2, -1),
            use_bias=cfg.use_bias,
            dtype=cfg.dtype,
            param_dtype=cfg.param_dtype,
            name="out",
        )(ctx_BxLxHxK)
        return out_BxLxD, new_cache

    def attention_scores(self, q_BxLxHxK: Array, k_BxMxHxK: Array, visible_LxM: Array) -> Array:
        """A = softmax(q k^T / sqrt(Dh) + mask), B x H x L x M (its own method: a named region)."""
        scores_BxHxLxM = jnp.einsum("blhk,bmhk->bhlm", q_BxLxHxK, k_BxMxHxK)
        scores_BxHxLxM = scores_BxHxLxM * (1.0 / math.sqrt(q_BxLxHxK.shape[-1]))
        mask_value = jnp.finfo(scores_BxHxLxM.dtype).min
        scores_BxHxLxM = jnp.where(visible_LxM[None, None], scores_BxHxLxM, mask_value)
        return jax.nn.softmax(scores_BxHxLxM, axis=-1)

    def attention_mixing(self, probs_BxHxLxM: Array, v_BxMxHxK: Array) -> Array:
        """ctx_h = A_h v_h, B x L x H x Dh (its own method: a named region)."""
        return jnp.einsum("bhlm,bmhk->blhk", probs_BxHxLxM, v_BxMxHxK)


class Mlp(nn.Module):
    """MLP(x) = act(x W1 + b1) W2 + b2, W1: D x F ("fc1"), W2: F x D ("fc2")."""

    config: TransformerConfig

    @nn.compact
    def __call__(self, x_BxLxD: Array) -> Array:
        cfg = self.config
        dense = dict(use_bias=cfg.use_bias, dtype=cfg.dtype, param_dtype=cfg.param_dtype)
        h_BxLxF = nn.Dense(cfg.d_ff, **dense, name="fc1")(x_BxLxD)
        if cfg.activation == "gelu":
            h_BxLxF = jax.nn.gelu(h_BxLxF, approximate=False)
        else:
            h_BxLxF = jax.nn.relu(h_BxLxF)
        return nn.Dense(cfg.d_model, **dense, name="fc2")(h_BxLxF)


class Block(nn.Module):
    """One layer: a = x + Attn(LN_attn(x)); y = a + MLP(LN_mlp(a)). Returns (a, y, cache)."""

    config: TransformerConfig

    def _norm(self, name: str, x_BxLxD: Array) -> Array:
        cfg = self.config
        if cfg.norm == "none":
            return x_BxLxD
        return LayerNorm(cfg.norm_eps, cfg.use_bias, cfg.dtype, cfg.param_dtype, name=name)(x_BxLxD)

    @nn.compact
    def __call__(
        self, x_BxLxD: Array, *, cache: Mapping[str, Array] | None, start: Any
    ) -> tuple[Array, Array, dict[str, Array] | None]:
        attn_BxLxD, new_cache = CausalAttention(self.config, name="attn")(
            self._norm("ln_attn", x_BxLxD), cache=cache, start=start
        )
        a_BxLxD = self.residual_add(x_BxLxD, attn_BxLxD)
        y_BxLxD = self.residual_add(a_BxLxD, Mlp(self.config, name="mlp")(
            self._norm("ln_mlp", a_BxLxD)))
        return a_BxLxD, y_BxLxD, new_cache

    def residual_add(self, x_BxLxD: Array, update_BxLxD: Array) -> Array:
        """x + update: the residual stream's addition (its own method: a named region)."""
        return x_BxLxD + update_BxLxD


def _check_span(start: Any, length: int, max_len: int, what: str = "max_len") -> None:
    """Statically reject positions outside [0, max_len) (a traced `start` cannot be checked);
    `what` names the limit (max_len, or the slots of a shorter cache)."""
    if length > max_len:
        raise ValueError(f"sequence length {length} exceeds {what}={max_len}")
    if is_int(start) and not 0 <= start <= max_len - length:
        raise ValueError(
            f"start={start} with length {length} covers positions [{start}, {start + length}), "
            f"outside [0, {what}={max_len})"
        )


class Transformer(nn.Module):
    """Decoder-only causal Transformer; see the module docstring for the math and param tree.

    `__call__(tokens_BxL, *, cache=None, start=0, return_residuals=False)` returns
      logits_BxLxV                              (no cache, no residuals)
      (logits_BxLxV, new_cache)                 (cache given)
      (logits_BxLxV, residuals)                 (return_residuals=True)
      (logits_BxLxV, new_cache, residuals)      (both)
    Token i sits at position start + i. Logits are float32. Out-of-range token ids give NaN
    embeddings (jnp.take's "fill" mode), never a silently clamped id.
    """

    config: TransformerConfig

    def setup(self):
        cfg = self.config
        embed_init = nn.initializers.variance_scaling(1.0, "fan_in", "normal", out_axis=0)
        self.embed = self.param("embed", embed_init, (cfg.vocab_size, cfg.d_model), cfg.param_dtype)
        if cfg.pos in ("learned", "table"):
            pos_init = embed_init if cfg.pos == "learned" else nn.initializers.zeros
            self.pos_embedding = self.param(
                "pos_embedding", pos_init, (cfg.max_len, cfg.d_model), cfg.param_dtype
            )
        for i in range(cfg.num_layers):
            setattr(self, f"layer_{i}", Block(cfg))
        if cfg.norm == "pre_ln":
            self.ln_final = LayerNorm(cfg.norm_eps, cfg.use_bias, cfg.dtype, cfg.param_dtype)
        if not cfg.tied_embedding:
            self.unembed = nn.Dense(
                cfg.vocab_size, use_bias=cfg.use_bias, dtype=cfg.dtype, param_dtype=cfg.param_dtype
            )

    def embed_tokens(self, tokens_BxL: Array, start: Any = 0) -> Array:
        """x_0 = E[tok] + P[start + arange(L)], B x L x D in the compute dtype."""
        cfg = self.config
        length = tokens_BxL.shape[1]
        x_BxLxD = jnp.take(self.embed, tokens_BxL, axis=0).astype(cfg.dtype)
        start = jnp.asarray(start, jnp.int32)
        if cfg.pos in ("learned", "table"):
            table_SxD = self.pos_embedding
            if cfg.pos == "table":
                table_SxD = jax.lax.stop_gradient(table_SxD)
            zero = jnp.zeros((), jnp.int32)
            pos_LxD = jax.lax.dynamic_slice(table_SxD, (start, zero), (length, cfg.d_model))
            x_BxLxD = x_BxLxD + pos_LxD.astype(cfg.dtype)[None]
        elif cfg.pos == "sinusoidal":
            positions_L = start + jnp.arange(length, dtype=jnp.int32)
            pos_LxD = sinusoidal_positions(positions_L, cfg.d_model)
            x_BxLxD = x_BxLxD + pos_LxD.astype(cfg.dtype)[None]
        return x_BxLxD

    def head(self, x_BxLxD: Array) -> Array:
        """logits = LN_final(x) @ U + c (U = E^T, c = 0 when tied), float32 B x L x V."""
        cfg = self.config
        if cfg.norm == "pre_ln":
            x_BxLxD = self.ln_final(x_BxLxD)
        x_BxLxD = x_BxLxD.astype(cfg.dtype)
        if cfg.tied_embedding:
            logits_BxLxV = jnp.einsum("bld,vd->blv", x_BxLxD, self.embed.astype(cfg.dtype))
        else:
            logits_BxLxV = self.unembed(x_BxLxD)
        return logits_BxLxV.astype(jnp.promote_types(cfg.dtype, jnp.float32))

    def __call__(
        self,
        tokens_BxL: Array,
        *,
        cache: Cache | None = None,
        start: Any = 0,
        return_residuals: bool = False,
    ):
        cfg = self.config
        if tokens_BxL.ndim != 2:
            raise ValueError(f"tokens must be B x L, got shape {tokens_BxL.shape}")
        batch, length = tokens_BxL.shape
        _check_span(start, length, cfg.max_len)
        if cache is not None:
            _check_span(start, length, _check_cache(cache, cfg, batch), "cache slots")

        x_BxLxD = self.embed_tokens(tokens_BxL, start)
        residuals = {"embed": x_BxLxD}
        new_cache = {} if cache is not None else None
        for i in range(cfg.num_layers):
            name = f"layer_{i}"
            layer_cache = None if cache is None else cache[name]
            a_BxLxD, x_BxLxD, kv = getattr(self, name)(x_BxLxD, cache=layer_cache, start=start)
            residuals[f"{name}/attn"] = a_BxLxD
            residuals[f"{name}/mlp"] = x_BxLxD
            if new_cache is not None:
                new_cache[name] = kv
        logits_BxLxV = self.head(x_BxLxD)

        out = (logits_BxLxV,)
        if cache is not None:
            out += (new_cache,)
        if return_residuals:
            out += (residuals,)
        return out[0] if len(out) == 1 else out


# ----------------------------------------------------------------------------------------------
# Parameters.


def init_params(config: TransformerConfig, rng: Array) -> Params:
    """Randomly initialised params (a plain nested dict, see the module docstring)."""
    tokens_1x1 = jnp.zeros((1, 1), jnp.int32)
    return jax.jit(Transformer(config).init)(rng, tokens_1x1)["params"]


def param_shapes(config: TransformerConfig) -> dict[str, Any]:
    """The documented parameter tree with shape tuples as leaves (no computation, eval_shape).

    Compare a tree with ``jax.tree.map(np.shape, params) == param_shapes(config)``; to build one,
    map over it with ``is_leaf=lambda s: isinstance(s, tuple)``.
    """
    abstract = jax.eval_shape(lambda key: init_params(config, key), jax.random.key(0))
    return jax.tree.map(lambda s: tuple(s.shape), abstract)


def check_params(params: Mapping[str, Any], config: TransformerConfig) -> None:
    """Raise ValueError listing every missing, unexpected or wrongly shaped leaf (by path)."""
    problems: list[str] = []

    def walk(got: Any, want: Any, path: str) -> None:
        if isinstance(want, Mapping):
            if not isinstance(got, Mapping):
                problems.append(f"{path or '<root>'}: expected a dict, got {type(got).__name__}")
                return
            for key in want:
                if key not in got:
                    problems.append(f"{path}{key}: missing")
                else:
                    walk(got[key], want[key], f"{path}{key}/")
            for key in got:
                if key not in want:
                    problems.append(f"{path}{key}: unexpected")
        else:
            shape = tuple(np.shape(got))
            if shape != want:
                problems.append(f"{path.rstrip('/')}: shape {shape}, expected {want}")

    walk(params, param_shapes(config), "")
    if problems:
        raise ValueError("params do not match the config:\n  " + "\n  ".join(problems))


def logits_from_residual(params: Params, config: TransformerConfig, x_BxLxD: Array) -> Array:
    """Final norm + unembedding of a residual stream (e.g. ``residuals["layer_1/mlp"]``)."""
    return Transformer(config).apply({"params": params}, x_BxLxD, method=Transformer.head)


# ----------------------------------------------------------------------------------------------
# KV cache (greedy decoding with it: arith_precision/decode.py).


def init_cache(config: TransformerConfig, batch_size: int, dtype: Any = None) -> Cache:
    """Zero KV cache {"layer_i": {"k": B x S x H x Dh, "v": B x S x H x Dh}} (dtype: config's)."""
    if not is_int(batch_size) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    dtype = config.dtype if dtype is None else dtype
    shape = (batch_size, config.max_len, config.num_heads, config.effective_head_dim)
    return {
        f"layer_{i}": {"k": jnp.zeros(shape, dtype), "v": jnp.zeros(shape, dtype)}
        for i in range(config.num_layers)
    }


def _check_cache(cache: Any, config: TransformerConfig, batch: int) -> int:
    """Check a cache's layout; return its number of slots S (1 <= S <= max_len, the same in every
    layer: init_cache gives S = max_len; a prefix cache[..., :S, :, :] covers positions [0, S))."""
    slots = None
    for i in range(config.num_layers):
        layer = cache.get(f"layer_{i}") if isinstance(cache, Mapping) else None
        if not isinstance(layer, Mapping) or "k" not in layer or "v" not in layer:
            raise ValueError(f"cache has no layer_{i} {{'k', 'v'}} entry (use init_cache)")
        for name in ("k", "v"):
            got = tuple(layer[name].shape)
            slots = got[1] if slots is None and len(got) == 4 else slots
            want = (batch, slots, config.num_heads, config.effective_head_dim)
            if got != want or not 1 <= slots <= config.max_len:
                raise ValueError(
                    f"cache layer_{i}/{name} has shape {got}, expected {want[:1]} + (S,) + "
                    f"{want[2:]} with S the same in every layer and 1 <= S <= "
                    f"max_len={config.max_len}"
                )
    return slots
