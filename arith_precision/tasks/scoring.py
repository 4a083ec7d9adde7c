"""Decoding predicted answer tokens back to integers, and scoring them.

Predictions are token arrays in *emission order* (as the model generates them), so a
`reverse_answer` spec is un-reversed here. Any non-digit token (a special token, or an id outside
the vocabulary) makes that example wrong; for per-digit accuracy every digit of such a token counts
as wrong.
"""

from __future__ import annotations

import numpy as np

from arith_precision.tasks.spec import TaskSpec


def _check_shape(spec: TaskSpec, tokens) -> np.ndarray:
    tokens = np.asarray(tokens)
    if tokens.ndim != 2 or tokens.shape[1] != spec.answer_tokens:
        raise ValueError(
            f"answer tokens must have shape (B, {spec.answer_tokens}), got {tokens.shape}"
        )
    return tokens.astype(np.int64)


def answer_tokens_to_digits(spec: TaskSpec, tokens) -> np.ndarray:
    """(B, T_ans) tokens in emission order -> (B, W) base-p digits MSB first; -1 where invalid."""
    tokens = _check_shape(spec, tokens)
    if spec.reverse_answer:
        tokens = tokens[:, ::-1]
    valid = (tokens >= 0) & (tokens < spec.token_base)  # (B, T)
    c = spec.chunk
    powers = spec.base ** np.arange(c - 1, -1, -1, dtype=np.int64)  # (c,)
    digits = (np.where(valid, tokens, 0)[..., None] // powers) % spec.base  # (B, T, c)
    digits = np.where(valid[..., None], digits, -1).reshape(tokens.shape[0], -1)  # (B, T*c)
    # A token's value must fit the digits it stands for: the leading token may hold fewer than c.
    extra = digits.shape[1] - spec.answer_digits
    overflow = (digits[:, :extra] > 0).any(axis=1) if extra else np.zeros(len(digits), bool)
    digits = digits[:, extra:]
    digits[overflow, : c - extra] = -1
    return digits


def decode_answers(spec: TaskSpec, tokens) -> list[int | None]:
    """(B, T_ans) answer tokens (emission order) -> Python ints; None for an invalid answer."""
    digits = answer_tokens_to_digits(spec, tokens)
    out = []
    for row in digits.tolist():
        if min(row) < 0:
            out.append(None)
            continue
        v = 0
        for d in row:
            v = v * spec.base + d
        out.append(v)
    return out


def decode_answer(spec: TaskSpec, tokens) -> int | None:
    """One answer's tokens (emission order) -> Python int, or None if any token is not a digit."""
    return decode_answers(spec, np.asarray(tokens)[None])[0]


def exact_match(spec: TaskSpec, predicted, target) -> np.ndarray:
    """(B,) bool: the whole predicted answer equals the target."""
    p, t = answer_tokens_to_digits(spec, predicted), answer_tokens_to_digits(spec, target)
    return ((p == t) & (p >= 0)).all(axis=1)


def digit_accuracy(spec: TaskSpec, predicted, target) -> np.ndarray:
    """(B,) float: fraction of the W answer digits predicted correctly."""
    p, t = answer_tokens_to_digits(spec, predicted), answer_tokens_to_digits(spec, target)
    return ((p == t) & (p >= 0)).mean(axis=1)


def score(spec: TaskSpec, predicted, target) -> dict[str, float]:
    """Mean exact-match and per-digit accuracy over a batch."""
    return {
        "exact_match": float(exact_match(spec, predicted, target).mean()),
        "digit_accuracy": float(digit_accuracy(spec, predicted, target).mean()),
    }
