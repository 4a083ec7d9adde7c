"""A built construction: the task, the model config, the parameter tree and the named residual."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from arith_precision import model as model_lib
from arith_precision import tasks
from constructions.craft.residual import Residual, describe


@dataclasses.dataclass
class Construction:
    spec: tasks.TaskSpec
    config: model_lib.TransformerConfig
    params: dict[str, Any]
    residual: Residual
    notes: str = ""

    @property
    def d_model(self) -> int:
        return self.config.d_model

    def summary(self) -> str:
        c = self.config
        return (f"{self.spec}: {c.num_layers} layers, d_model={c.d_model}, heads={c.num_heads} x "
                f"{c.effective_head_dim}, d_ff={c.d_ff}, max_len={c.max_len}")

    def explain(self, operands, stages=None, names=None) -> str:
        """The named residual stream for one input (full sequence, teacher-forced answer)."""
        example = tasks.make_example(self.spec, list(operands))
        tokens = list(example.input_tokens) + list(example.answer_tokens)[:-1]  # teacher-forced
        tokens_1xL = np.asarray([tokens], np.int32)
        _, residuals = model_lib.Transformer(self.config).apply(
            {"params": self.params}, tokens_1xL, return_residuals=True)
        labels = [_label(self.spec, t) for t in tokens_1xL[0]]
        per_seq = {k: np.asarray(v[0]) for k, v in residuals.items()}
        return describe(self.residual, per_seq, labels, stages=stages, names=names)


def _label(spec: tasks.TaskSpec, token: int) -> str:
    if token < spec.token_base:
        return str(token)
    return tasks.SPECIAL_TOKENS[token - spec.token_base]
