"""Vectorised NumPy batches: a batch is a pure function of (spec, data_seed, split, step).

All arithmetic is done digit-wise on NumPy arrays (operands can have hundreds of digits, far beyond
int64), vectorised over the batch, with a Python loop over digit columns only. The result is
checked against the Python-int path (`reference.py`) in the tests.

Train / evaluation separation is by construction, not by luck: every example (its operand digits)
is hashed to a fixed pseudo-random 64-bit value; an example with hash % HOLDOUT_MODULUS == 0 is
*held out*. The train stream rejects held-out examples and the evaluation stream accepts only
them, so the two can never share an example, even when the example space is tiny. The split
depends on the example alone (a fixed hash, `SPLIT_SEED`), not on `data_seed`: every seed of a
study holds out the same inputs. The train stream for step s draws from
`default_rng([data_seed, 0, s])`, the evaluation stream for batch i from
`default_rng([data_seed, 1, i])`: restarting at any step reproduces the same batches.

Two test protocols (`SPLITS`):

    unseen   "eval" (final evaluation) and "valid" (early stopping's validations, another stream):
             held-out inputs only, never trained on
    iid      "iid" and "iid_valid": drawn from the task's own distribution with no rejection, so
             they overlap the training inputs wherever the space is small (the paper's protocol:
             its 50k test samples come from the distribution it trained on)
"""

from __future__ import annotations

import dataclasses

import numpy as np

from arith_precision.tasks.spec import TaskSpec

HOLDOUT_MODULUS = 16  # 1/16 of the example space is reserved for evaluation.
SPLITS = ("train", "eval", "valid", "iid", "iid_valid")
HELD_OUT_SPLITS = ("eval", "valid")  # held-out inputs only (the unseen protocol)
IID_SPLITS = ("iid", "iid_valid")  # the task distribution, overlap with training allowed
_STREAM_ID = {"train": 0, "eval": 1, "valid": 2, "iid": 3, "iid_valid": 4}
SPLIT_SEED = 0x5EED_A11  # the held-out hash's weights: fixed, independent of data_seed
_MAX_REJECTION_ROUNDS = 1000


class NoHeldOutInputs(ValueError):
    """The example space is too small to draw a held-out batch (the unseen protocol is empty)."""


@dataclasses.dataclass(frozen=True)
class Batch:
    """A batch of examples, all with the same layout.

    Attributes:
      operand_digits: (B, k, n) int8, base-p digits of each operand, most significant first.
      answer_digits: (B, W) int8, base-p digits of the answer, most significant first (always MSB
        first, whatever `reverse_answer` says: it is the value, not the emission order).
      input_tokens: (B, T_in) int32: BOS, operands, separators, '='.
      answer_tokens: (B, T_ans) int32, in emission order.
      tokens: (B, T_in + T_ans + 1) int32, the full sequence ending with EOS.
    """

    operand_digits: np.ndarray
    answer_digits: np.ndarray
    input_tokens: np.ndarray
    answer_tokens: np.ndarray
    tokens: np.ndarray

    def __len__(self) -> int:
        return self.tokens.shape[0]


def target_mask(spec: TaskSpec) -> np.ndarray:
    """(T-1,) bool: which next-token targets `tokens[:, 1:]` are answer tokens (the loss mask)."""
    mask = np.zeros(spec.sequence_length - 1, dtype=bool)
    mask[spec.input_length - 1 : spec.input_length - 1 + spec.answer_tokens] = True
    return mask


# ---- digits <-> tokens ------------------------------------------------------------------------
def digits_to_tokens(digits: np.ndarray, spec: TaskSpec) -> np.ndarray:
    """(..., w) base-p digits (MSB first) -> (..., ceil(w/c)) base-p^c tokens (MSB first).

    With c = 1 the digits already are the tokens and are returned as they are (no copy).
    """
    c = spec.chunk
    if c == 1:
        return digits
    w = digits.shape[-1]
    num_tokens = -(-w // c)
    pad = num_tokens * c - w  # groups are aligned at the least significant end
    d = np.pad(digits.astype(np.int64), [(0, 0)] * (digits.ndim - 1) + [(pad, 0)])
    d = d.reshape(*digits.shape[:-1], num_tokens, c)
    weights = spec.base ** np.arange(c - 1, -1, -1, dtype=np.int64)  # p^(c-1) ... 1
    return (d * weights).sum(-1).astype(np.int32)


def ints_to_digits(values, base: int, width: int) -> np.ndarray:
    """Python ints (any size) -> (len, width) int8 digits, MSB first. Errors if one does not fit."""
    out = np.zeros((len(values), width), dtype=np.int8)
    for i, v in enumerate(values):
        v = int(v)
        if v < 0 or v >= base**width:
            raise ValueError(f"value {v} does not fit in {width} base-{base} digits")
        for j in range(width - 1, -1, -1):
            v, out[i, j] = divmod(v, base)
    return out


def digits_to_ints(digits: np.ndarray, base: int) -> list[int]:
    """(B, w) digits, MSB first -> list of Python ints."""
    values = []
    for row in np.asarray(digits).tolist():
        v = 0
        for d in row:
            v = v * base + d
        values.append(v)
    return values


# ---- exact limb arithmetic -------------------------------------------------------------------
# Operands can have hundreds of digits, far beyond int64. We pack g base-p digits into one
# base-p^g "limb" (an int64), do schoolbook arithmetic on limbs vectorised over the batch, and
# unpack.
# g is the largest width for which every column sum (and carry) stays below 2^62, so nothing
# overflows; the result is exact, and the tests check it against Python ints.
_LIMIT = 2**62


def _limb_width(spec: TaskSpec) -> int:
    g = 1
    while g < spec.n:
        limb = spec.base ** (g + 1)
        terms = -(-spec.n // (g + 1))  # limbs per operand
        worst = terms * (limb - 1) ** 2
        if worst + limb >= _LIMIT:
            break
        g += 1
    return g


def _to_limbs(digits: np.ndarray, base: int, g: int) -> np.ndarray:
    """(..., w) digits MSB first -> (..., ceil(w/g)) int64 limbs, least significant first."""
    w = digits.shape[-1]
    num = -(-w // g)
    d = np.pad(digits, [(0, 0)] * (digits.ndim - 1) + [(num * g - w, 0)])
    d = d.reshape(*digits.shape[:-1], num, g).astype(np.int64)
    limbs = (d * base ** np.arange(g - 1, -1, -1, dtype=np.int64)).sum(-1)  # MSB-first limbs
    return limbs[..., ::-1]


def _add_digits(spec: TaskSpec, operand_digits: np.ndarray) -> np.ndarray:
    columns = operand_digits[:, :, ::-1].sum(axis=1, dtype=np.int64)  # (B, n), LSB first
    batch = columns.shape[0]
    out = np.empty((batch, spec.answer_digits), dtype=np.int8)
    carry = np.zeros(batch, dtype=np.int64)
    for j in range(spec.answer_digits):  # at most k (p-1) + carry < k p: no overflow
        total = carry + columns[:, j] if j < spec.n else carry
        carry, digit = np.divmod(total, spec.base)
        out[:, spec.answer_digits - 1 - j] = digit
    return out


def answer_digits(spec: TaskSpec, operand_digits: np.ndarray) -> np.ndarray:
    """Exact answers (B, W) digits MSB first for operand digits (B, k, n) MSB first.

    Sums add digit columns with a carry loop; products multiply base-p^g limbs (see above).
    """
    if spec.task != "mul":  # sums: column sums of digits are small, no packing needed
        return _add_digits(spec, operand_digits)
    g = _limb_width(spec)
    limb = spec.base**g
    x = _to_limbs(operand_digits, spec.base, g)  # (B, k, L) least significant limb first
    batch, _, num = x.shape
    out_limbs = -(-spec.answer_digits // g)
    a, b = x[:, 0], x[:, 1]  # (B, L) each
    columns = np.zeros((batch, max(2 * num, out_limbs)), dtype=np.int64)  # (B, 2L)
    for i in range(num):  # column i+j collects a_i * b_j
        columns[:, i : i + num] += a[:, i : i + 1] * b
    # Carry propagation in base p^g; keep out_limbs limbs (mod p^(g*out_limbs)).
    result = np.empty((batch, out_limbs), dtype=np.int64)
    carry = np.zeros(batch, dtype=np.int64)
    for j in range(out_limbs):
        carry, result[:, j] = np.divmod(columns[:, j] + carry, limb)
    # Unpack limbs into digits, most significant first, and keep the W least significant.
    powers = spec.base ** np.arange(g - 1, -1, -1, dtype=np.int64)  # (g,)
    digits = (result[:, ::-1, None] // powers) % spec.base  # (B, out_limbs, g)
    return digits.reshape(batch, -1)[:, -spec.answer_digits :].astype(np.int8)


# ---- sampling --------------------------------------------------------------------------------
def _sample_operand_digits(spec: TaskSpec, rng: np.random.Generator, num: int) -> np.ndarray:
    shape = (num, spec.num_operands, spec.n)
    digits = rng.integers(0, spec.base, size=shape, dtype=np.int8)
    if spec.operand_distribution == "uniform_length":
        length = rng.integers(1, spec.n + 1, size=shape[:2])  # (B, k) digit lengths
        position = np.arange(spec.n)  # MSB-first index; the number starts at n - length
        start = (spec.n - length)[..., None]
        digits = np.where(position < start, 0, digits).astype(np.int8)
        leading = rng.integers(1, spec.base, size=shape[:2], dtype=np.int8)  # nonzero lead digit
        is_lead = (position == start) & (length[..., None] > 1)
        digits = np.where(is_lead, leading[..., None], digits).astype(np.int8)
    return digits


def _hash_weights(length: int) -> np.ndarray:
    return np.random.default_rng(SPLIT_SEED).integers(
        1, 2**63, size=length, dtype=np.uint64
    ) | np.uint64(1)


def is_held_out(operand_digits: np.ndarray) -> np.ndarray:
    """(B,) bool: whether each example belongs to the evaluation split."""
    flat = np.asarray(operand_digits, dtype=np.int8).reshape(operand_digits.shape[0], -1)
    pad = -flat.shape[1] % 8
    if pad:
        flat = np.pad(flat, [(0, 0), (0, pad)])
    # Eight digits per 64-bit word (a view, no copy): a bijective packing of the example.
    words = np.ascontiguousarray(flat).view(np.uint64)  # (B, ceil(k*n/8))
    with np.errstate(over="ignore"):
        h = (words * _hash_weights(words.shape[1])).sum(axis=1, dtype=np.uint64)
        h += np.uint64(0x9E3779B97F4A7C15)  # so that the all-zero example is not always held out
        # splitmix64 finaliser: every input bit affects the low bits used below.
        h ^= h >> np.uint64(30)
        h *= np.uint64(0xBF58476D1CE4E5B9)
        h ^= h >> np.uint64(27)
        h *= np.uint64(0x94D049BB133111EB)
        h ^= h >> np.uint64(31)
    return (h % np.uint64(HOLDOUT_MODULUS)) == 0


def distinct_inputs(operand_digits: np.ndarray) -> int:
    """The number of distinct inputs among (B, k, n) operand digits (rows compared exactly)."""
    digits = np.asarray(operand_digits, dtype=np.int8)
    if len(digits) == 0:
        return 0
    return int(len(np.unique(digits.reshape(len(digits), -1), axis=0)))


def batch_from_operand_digits(spec: TaskSpec, operand_digits: np.ndarray) -> Batch:
    """Build a `Batch` (tokens and exact answers) from operand digits (B, k, n)."""
    operand_digits = np.asarray(operand_digits, dtype=np.int8)
    expected = (spec.num_operands, spec.n)
    if operand_digits.ndim != 3 or operand_digits.shape[1:] != expected:
        raise ValueError(
            f"operand_digits must have shape (B, {expected[0]}, {expected[1]}), "
            f"got {operand_digits.shape}"
        )
    batch = operand_digits.shape[0]
    ans = answer_digits(spec, operand_digits)  # (B, W)
    # Write every piece straight into one (B, T) array; inputs and answers are views of it.
    tokens = np.empty((batch, spec.sequence_length), dtype=np.int32)  # (B, T)
    width = spec.operand_tokens
    tokens[:, 0] = spec.bos_id
    for i in range(spec.num_operands):
        start = 1 + i * (width + 1)
        tokens[:, start : start + width] = digits_to_tokens(operand_digits[:, i], spec)
        tokens[:, start + width] = spec.separator_id
    tokens[:, spec.input_length - 1] = spec.equals_id  # overwrites the last separator
    answers = digits_to_tokens(ans, spec)  # (B, T_ans), MSB first
    tokens[:, spec.input_length : -1] = answers[:, ::-1] if spec.reverse_answer else answers
    tokens[:, -1] = spec.eos_id
    return Batch(operand_digits, ans, tokens[:, : spec.input_length],
                 tokens[:, spec.input_length : -1], tokens)


def batch_from_operands(spec: TaskSpec, operands) -> Batch:
    """Build a `Batch` from a list of operand lists of Python ints."""
    operands = [list(map(int, ops)) for ops in operands]
    for ops in operands:
        spec.exact_answer(ops)  # validates count and range
    flat = [a for ops in operands for a in ops]
    digits = ints_to_digits(flat, spec.base, spec.n).reshape(
        len(operands), spec.num_operands, spec.n
    )
    return batch_from_operand_digits(spec, digits)


def sample_batch(
    spec: TaskSpec, *, data_seed: int, step: int, batch_size: int, split: str = "train"
) -> Batch:
    """The batch for (data_seed, split, step): deterministic; train is disjoint from the held-out
    inputs that eval and valid both draw from (on separate random streams); iid and iid_valid
    draw from the task distribution itself (held-out or not)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    for name, value, lo in (
        ("batch_size", batch_size, 1),
        ("step", step, 0),
        ("data_seed", data_seed, 0),
    ):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < lo:
            raise ValueError(f"{name} must be an integer >= {lo}, got {value!r}")
    rng = np.random.default_rng([int(data_seed), _STREAM_ID[split], int(step)])
    if split in IID_SPLITS:
        return batch_from_operand_digits(spec, _sample_operand_digits(spec, rng, batch_size))
    want_held_out = split != "train"
    # Draw enough candidates for one round on average, then top up.
    if want_held_out:
        per_round = batch_size * min(HOLDOUT_MODULUS, 64) + 8
    else:  # expect to drop 1/HOLDOUT_MODULUS; oversample so one round nearly always suffices
        per_round = batch_size + 2 * (batch_size // HOLDOUT_MODULUS) + 64
    kept, have = [], 0
    for _ in range(_MAX_REJECTION_ROUNDS):
        cand = _sample_operand_digits(spec, rng, per_round)
        cand = cand[is_held_out(cand) == want_held_out]
        kept.append(cand)
        have += cand.shape[0]
        if have >= batch_size:
            return batch_from_operand_digits(spec, np.concatenate(kept)[:batch_size])
    raise (NoHeldOutInputs if want_held_out else ValueError)(
        f"could not draw {batch_size} {split} examples for {spec}: the example space is too small "
        f"to hold out 1/{HOLDOUT_MODULUS} of it for evaluation"
    )
