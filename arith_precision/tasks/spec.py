"""The task specification: which arithmetic problem, in which base, with which token layout.

A `TaskSpec` fixes everything that decides the *shape* of an example, so that the position of
every digit in a sequence is a function of the position alone (the constructions rely on it):

        BOS  a_1 + a_2 + ... + a_k  =  s_1 ... s_W  EOS           (ADD / IterADD)
        BOS  a   * b              =  s_1 ... s_W  EOS           (MUL)

Each operand is padded to exactly n digits and the answer to its fixed width W (n+1 for ADD,
n + ceil(log_p k) for IterADD, l for MUL), most significant digit first unless
`reverse_answer`. With the tokenizer T_c each token packs c base-p digits, i.e. it is one digit in
base p^c; groups are aligned at the least significant end, so a width-w number takes
ceil(w / c) tokens and only its leading token can hold fewer than c significant digits.

Token ids: the p^c digit tokens come first (id = value of the base-p^c digit, so a digit token's id
*is* its value), followed by the specials PAD, BOS, EOS, '+', '*', '='.
"""

from __future__ import annotations

import dataclasses
import math

TASKS = ("add", "iter_add", "mul")
OPERAND_DISTRIBUTIONS = ("uniform_value", "uniform_length")
SPECIAL_TOKENS = ("PAD", "BOS", "EOS", "+", "*", "=")
MAX_BASE = 36  # digits render as 0-9a-z
_INT32_MAX = 2**31 - 1


def ceil_log(k: int, p: int) -> int:
    """Smallest e >= 0 with p**e >= k, computed exactly on integers."""
    e, power = 0, 1
    while power < k:
        power *= p
        e += 1
    return e


def task_title(task: str, base: int, k: int | None = None) -> str:
    """The name tables and plots give a task: "ADD, base 10", "IterADD (k=3), base 2"."""
    name = {"add": "ADD", "iter_add": f"IterADD (k={k})", "mul": "MUL"}[task]
    return f"{name}, base {base}"


def _check_int(name: str, value, lo: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < lo:
        raise ValueError(f"{name} must be >= {lo}, got {value}")


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """One arithmetic task with a fixed layout.

    Attributes:
        task: "add" (ADD_p(n)), "iter_add" (IterADD_p(n, k)) or "mul" (MUL_p(n, l)).
        base: the base p, 2 <= p <= 36.
        n: digits per operand (operands are padded to exactly n digits).
        k: number of operands for "iter_add" (k >= 2); must be 2 (or left at its default) otherwise.
        l: for "mul", how many least significant digits of the product to answer, 1 <= l <= 2n;
            None means 2n (full multiplication). Must be None for the other tasks.
        chunk: c, digits per token (the paper's tokenizer T_c), c >= 1.
        reverse_answer: emit the answer least significant token first.
        operand_distribution: "uniform_value" (uniform over [0, p^n)) or "uniform_length" (a digit
            length uniform in 1..n, then a uniform number of exactly that length, then padded).
    """

    task: str
    base: int
    n: int
    k: int = 2
    l: int | None = None
    chunk: int = 1
    reverse_answer: bool = False
    operand_distribution: str = "uniform_value"

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"unknown task {self.task!r}; expected one of {TASKS}")
        _check_int("base", self.base, 2)
        if self.base > MAX_BASE:
            raise ValueError(f"base must be <= {MAX_BASE}, got {self.base}")
        _check_int("n", self.n, 1)
        _check_int("k", self.k, 2)
        _check_int("chunk", self.chunk, 1)
        if self.task != "iter_add" and self.k != 2:
            raise ValueError(
                f"k={self.k} is only meaningful for task='iter_add' (task={self.task!r})"
            )
        if self.task == "mul":
            if self.l is not None:
                _check_int("l", self.l, 1)
                if self.l > 2 * self.n:
                    raise ValueError(f"l must be <= 2n = {2 * self.n}, got l={self.l}")
        elif self.l is not None:
            raise ValueError(f"l={self.l} is only meaningful for task='mul' (task={self.task!r})")
        if self.operand_distribution not in OPERAND_DISTRIBUTIONS:
            raise ValueError(
                f"unknown operand_distribution {self.operand_distribution!r}; "
                f"expected one of {OPERAND_DISTRIBUTIONS}"
            )
        if not isinstance(self.reverse_answer, bool):
            raise ValueError(f"reverse_answer must be a bool, got {self.reverse_answer!r}")
        if self.vocab_size > _INT32_MAX:
            raise ValueError(
                f"vocabulary of base**chunk + {len(SPECIAL_TOKENS)} = {self.vocab_size} tokens "
                f"does not fit int32 (base={self.base}, chunk={self.chunk})"
            )

    # ---- sizes ---------------------------------------------------------------------------------
    @property
    def num_operands(self) -> int:
        return self.k if self.task == "iter_add" else 2

    @property
    def answer_digits(self) -> int:
        """Fixed answer width W in base-p digits."""
        if self.task == "add":
            return self.n + 1
        if self.task == "iter_add":
            return self.n + ceil_log(self.k, self.base)
        return 2 * self.n if self.l is None else self.l

    @property
    def answer_modulus(self) -> int:
        """The answer is the true result mod this (p^l for MUL, larger than any sum otherwise)."""
        return self.base**self.answer_digits

    @property
    def operand_tokens(self) -> int:
        return math.ceil(self.n / self.chunk)

    @property
    def answer_tokens(self) -> int:
        return math.ceil(self.answer_digits / self.chunk)

    @property
    def input_length(self) -> int:
        """BOS, the operands with their separators, and '='."""
        return 1 + self.num_operands * self.operand_tokens + (self.num_operands - 1) + 1

    @property
    def sequence_length(self) -> int:
        """Input, answer and EOS."""
        return self.input_length + self.answer_tokens + 1

    # ---- vocabulary ----------------------------------------------------------------------------
    @property
    def token_base(self) -> int:
        """p^c: the number of digit tokens (and the base each token is a digit in)."""
        return self.base**self.chunk

    @property
    def vocab_size(self) -> int:
        return self.token_base + len(SPECIAL_TOKENS)

    def special(self, name: str) -> int:
        """Token id of a special token ("PAD", "BOS", "EOS", "+", "*", "=")."""
        try:
            return self.token_base + SPECIAL_TOKENS.index(name)
        except ValueError:
            raise ValueError(
                f"unknown special token {name!r}; expected one of {SPECIAL_TOKENS}"
            ) from None

    @property
    def pad_id(self) -> int:
        return self.special("PAD")

    @property
    def bos_id(self) -> int:
        return self.special("BOS")

    @property
    def eos_id(self) -> int:
        return self.special("EOS")

    @property
    def separator_id(self) -> int:
        """'*' for MUL, '+' otherwise."""
        return self.special("*" if self.task == "mul" else "+")

    @property
    def equals_id(self) -> int:
        return self.special("=")

    def exact_answer(self, operands) -> int:
        """The exact answer (a Python int) for a list of operands, checked against the spec."""
        operands = [int(a) for a in operands]
        if len(operands) != self.num_operands:
            raise ValueError(
                f"{self.task} with k={self.num_operands} takes {self.num_operands} operands, "
                f"got {len(operands)}: {operands}"
            )
        bound = self.base**self.n
        for a in operands:
            if not 0 <= a < bound:
                raise ValueError(f"operand {a} is not in [0, {self.base}^{self.n}) for n={self.n}")
        if self.task == "mul":
            return (operands[0] * operands[1]) % self.answer_modulus
        return sum(operands)
