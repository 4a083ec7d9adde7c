"""The Python-integer path: one example at a time, exact by construction.

This is the reference every faster path is checked against (the vectorised NumPy generator, the
constructions, the decoders). It is deliberately simple: Python ints, `divmod`, string joins.
"""

from __future__ import annotations

import dataclasses
import random

from arith_precision.tasks.spec import TaskSpec

DIGIT_CHARS = "0123456789abcdefghijklmnopqrstuvwxyz"


def to_digits(value: int, base: int, width: int) -> list[int]:
    """Base-`base` digits of `value`, most significant first, padded to exactly `width`."""
    if value < 0:
        raise ValueError(f"value must be non-negative, got {value}")
    digits = []
    for _ in range(width):
        value, d = divmod(value, base)
        digits.append(d)
    if value:
        raise ValueError(f"value does not fit in {width} base-{base} digits")
    return digits[::-1]


def to_tokens(value: int, spec: TaskSpec, width: int) -> list[int]:
    """Tokens of a `width`-digit number under T_c: base-p^c digits, most significant first."""
    num_tokens = -(-width // spec.chunk)
    if value >= spec.base**width:
        raise ValueError(f"value {value} does not fit in {width} base-{spec.base} digits")
    return to_digits(value, spec.token_base, num_tokens)


def from_tokens(tokens, spec: TaskSpec) -> int:
    """Inverse of `to_tokens` (most significant token first)."""
    value = 0
    for t in tokens:
        t = int(t)
        if not 0 <= t < spec.token_base:
            raise ValueError(
                f"token {t} is not a digit token (digit ids are 0..{spec.token_base - 1})"
            )
        value = value * spec.token_base + t
    return value


@dataclasses.dataclass(frozen=True)
class Example:
    """One example. `answer` is the exact answer (mod p^l for MUL)."""

    operands: tuple[int, ...]
    answer: int
    input_tokens: tuple[int, ...]
    answer_tokens: tuple[int, ...]
    text: str

    def as_json(self) -> dict:
        return {
            "operands": list(self.operands),
            "answer": self.answer,
            "input_tokens": list(self.input_tokens),
            "answer_tokens": list(self.answer_tokens),
            "text": self.text,
        }


def input_tokens(spec: TaskSpec, operands) -> list[int]:
    tokens = [spec.bos_id]
    for i, a in enumerate(operands):
        if i:
            tokens.append(spec.separator_id)
        tokens.extend(to_tokens(a, spec, spec.n))
    tokens.append(spec.equals_id)
    return tokens


def answer_tokens(spec: TaskSpec, answer: int) -> list[int]:
    tokens = to_tokens(answer, spec, spec.answer_digits)
    return tokens[::-1] if spec.reverse_answer else tokens


def _render(value: int, spec: TaskSpec, width: int, reverse: bool = False) -> str:
    digits = "".join(DIGIT_CHARS[d] for d in to_digits(value, spec.base, width))
    if spec.chunk == 1:
        return digits[::-1] if reverse else digits
    # Right-aligned groups of c digits, one per token; the leading group may be shorter.
    groups = []
    end = len(digits)
    while end > 0:
        groups.append(digits[max(0, end - spec.chunk) : end])
        end -= spec.chunk
    groups = groups if reverse else groups[::-1]
    return "|".join(groups)


def render_text(spec: TaskSpec, operands, answer: int) -> str:
    """Human-readable form: '0123+0456=00579' (tokens separated by '|' when c > 1).

    With `reverse_answer` the answer is shown in emission order (least significant first) and
    marked with a trailing 'R'.
    """
    sep = "*" if spec.task == "mul" else "+"
    lhs = sep.join(_render(a, spec, spec.n) for a in operands)
    rhs = _render(answer, spec, spec.answer_digits, reverse=spec.reverse_answer)
    return f"{lhs}={rhs}" + (" R" if spec.reverse_answer else "")


def make_example(spec: TaskSpec, operands) -> Example:
    operands = tuple(int(a) for a in operands)
    answer = spec.exact_answer(operands)
    return Example(
        operands=operands,
        answer=answer,
        input_tokens=tuple(input_tokens(spec, operands)),
        answer_tokens=tuple(answer_tokens(spec, answer)),
        text=render_text(spec, operands, answer),
    )


def sample_operand_python(spec: TaskSpec, rng: random.Random) -> int:
    """One operand from the spec's distribution, with Python's `random`."""
    if spec.operand_distribution == "uniform_value":
        return rng.randrange(spec.base**spec.n)
    length = rng.randint(1, spec.n)
    if length == 1:
        return rng.randrange(spec.base)
    return rng.randrange(spec.base ** (length - 1), spec.base**length)


def sample_examples_python(spec: TaskSpec, seed: int, num: int) -> list[Example]:
    """`num` examples, one at a time with Python ints (the slow reference path)."""
    rng = random.Random(seed)
    return [
        make_example(spec, [sample_operand_python(spec, rng) for _ in range(spec.num_operands)])
        for _ in range(num)
    ]
