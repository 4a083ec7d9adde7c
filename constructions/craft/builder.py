"""Writes hand-set weights into the plain parameter tree of `arith_precision.model.Transformer`.

A `ParamBuilder` starts from an all-zero tree for a `TransformerConfig` (norm="none",
activation="relu", pos="table", untied unembedding, with biases) and lets blocks address the
residual stream by coordinate name (`Residual`) instead of by index. Attention heads and MLP
hidden units are handed out in order, so independent blocks never overwrite each other.

All weights are kept as float64 NumPy arrays while building; `params()` returns them cast to the
config's `param_dtype`. No construction ever runs its own forward pass: the model code does.
"""

from __future__ import annotations

import math

import numpy as np

from arith_precision import model as model_lib
from constructions.craft.residual import Residual


class ParamBuilder:
    def __init__(self, config: model_lib.TransformerConfig, residual: Residual):
        if config.norm != "none" or config.activation != "relu" or config.pos != "table":
            raise ValueError("constructions need norm='none', activation='relu', pos='table'")
        if config.tied_embedding or not config.use_bias:
            raise ValueError("constructions need an untied unembedding and biases")
        if config.d_model != residual.size:
            raise ValueError(f"d_model={config.d_model} != {residual.size} named coordinates")
        self.config = config
        self.residual = residual
        shapes = model_lib.param_shapes(config)
        import jax

        self.tree = jax.tree.map(lambda s: np.zeros(s, np.float64), shapes,
                                 is_leaf=lambda s: isinstance(s, tuple))
        self._next_head = [0] * config.num_layers
        self._next_unit = [0] * config.num_layers
        self.dh = config.effective_head_dim
        # Scores are divided by sqrt(Dh) in the model; queries are pre-multiplied to undo it.
        self.query_scale = math.sqrt(self.dh)

    # ---- embeddings ---------------------------------------------------------------------------

    def idx(self, name: str) -> int:
        return self.residual.index(name)

    def embed(self, token_id: int, name: str, value: float) -> None:
        self.tree["embed"][token_id, self.idx(name)] += value

    def table(self, position: int, name: str, value: float) -> None:
        self.tree["pos_embedding"][position, self.idx(name)] += value

    def unembed(self, name: str, token_id: int, weight: float) -> None:
        self.tree["unembed"]["kernel"][self.idx(name), token_id] += weight

    def unembed_bias(self, token_id: int, value: float) -> None:
        self.tree["unembed"]["bias"][token_id] += value

    # ---- attention ----------------------------------------------------------------------------

    def new_head(self, layer: int) -> Head:
        h = self._next_head[layer]
        if h >= self.config.num_heads:
            raise ValueError(f"layer {layer} has no free attention head (num_heads="
                             f"{self.config.num_heads})")
        self._next_head[layer] = h + 1
        return Head(self, layer, h)

    # ---- MLP ----------------------------------------------------------------------------------

    def relu_unit(self, layer: int, inputs: dict[str, float], bias: float,
                  outputs: dict[str, float]) -> int:
        """One hidden unit: h = relu(sum_i w_i x_i + bias); x_out += w_out h for each output."""
        u = self._next_unit[layer]
        if u >= self.config.d_ff:
            raise ValueError(f"layer {layer} MLP is full (d_ff={self.config.d_ff})")
        self._next_unit[layer] = u + 1
        mlp = self.tree[f"layer_{layer}"]["mlp"]
        for name, w in inputs.items():
            mlp["fc1"]["kernel"][self.idx(name), u] += w
        mlp["fc1"]["bias"][u] += bias
        for name, w in outputs.items():
            mlp["fc2"]["kernel"][u, self.idx(name)] += w
        return u

    def units_used(self) -> list[int]:
        return list(self._next_unit)

    def heads_used(self) -> list[int]:
        return list(self._next_head)

    def params(self):
        import jax

        dtype = self.config.param_dtype
        return jax.tree.map(lambda a: np.asarray(a, dtype), self.tree)


class Head:
    """One attention head: query/key slots (pairs multiplied in the score) and value slots."""

    def __init__(self, builder: ParamBuilder, layer: int, head: int):
        self.b = builder
        self.layer = layer
        self.head = head
        self._qk = 0
        self._v = 0
        self.attn = builder.tree[f"layer_{layer}"]["attn"]

    def _slot(self, kind: str) -> int:
        if self._qk + self._v >= self.b.dh:
            raise ValueError(f"head {self.head} of layer {self.layer} is full (head_dim="
                             f"{self.b.dh})")
        if kind == "qk":
            slot, self._qk = self._qk, self._qk + 1
        else:
            slot, self._v = self.b.dh - 1 - self._v, self._v + 1  # values fill from the top
        return slot

    def score_term(self, query: dict[str, float], query_bias: float, key: dict[str, float],
                   key_bias: float = 0.0) -> None:
        """Adds (sum_i a_i x_i[q] + a_0) * (sum_j b_j x_j[k] + b_0) to the score of (q, k)."""
        s = self._slot("qk")
        scale = self.b.query_scale
        for name, w in query.items():
            self.attn["query"]["kernel"][self.b.idx(name), self.head, s] += w * scale
        self.attn["query"]["bias"][self.head, s] += query_bias * scale
        for name, w in key.items():
            self.attn["key"]["kernel"][self.b.idx(name), self.head, s] += w
        self.attn["key"]["bias"][self.head, s] += key_bias

    def value(self, source: dict[str, float], dest: str, dest_weight: float = 1.0) -> None:
        """The head's output adds dest_weight * (attention-weighted sum_i w_i x_i) to `dest`."""
        s = self._slot("v")
        for name, w in source.items():
            self.attn["value"]["kernel"][self.b.idx(name), self.head, s] += w
        self.attn["out"]["kernel"][self.head, s, self.b.idx(dest)] += dest_weight
