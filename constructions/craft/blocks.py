"""Building blocks: attention heads and MLP units with exactly known behaviour.

Each block writes weights through a `ParamBuilder` and is documented with the function it computes,
the conditions under which it is exact, and the precision it needs. Notation: S = max_len (number
of positions), x_name[t] = the residual coordinate `name` at position t, eps = the unit roundoff of
the simulated format (2^-(M+1) for M mantissa bits).

Position angles. A position (or any small integer index) i is written into the positional table as
the unit vector (cos(2 pi i / P), sin(2 pi i / P)) with a period P larger than every index used,
so distinct indices have distinct angles and cos(angle difference) <= cos(2 pi / P) < 1 for them.
"""

from __future__ import annotations

import math

from arith_precision import tasks
from constructions.craft.builder import Head, ParamBuilder

# Score margins (in nats) that make a softmax "hard": a wrong key gets weight <= e^-GAP relative
# to the right one. With GAP = 40, e^-40 ~ 4e-18, far below float32's unit roundoff.
GAP = 40.0


def angle(index: float, period: int) -> tuple[float, float]:
    """(cos, sin) of 2 pi index / period."""
    a = 2.0 * math.pi * index / period
    return math.cos(a), math.sin(a)


def write_angle(b: ParamBuilder, position: int, name: str, index: float, period: int) -> None:
    """Table entries name_cos, name_sin at `position` hold the angle of `index`."""
    c, s = angle(index, period)
    b.table(position, name + "_cos", c)
    b.table(position, name + "_sin", s)


def angle_sharpness(period: int, gap: float = GAP) -> float:
    """lambda with lambda (1 - cos(2 pi / period)) = gap: the score margin of `match_head`."""
    return gap / (1.0 - math.cos(2.0 * math.pi / period))


def match_head(b: ParamBuilder, layer: int, pointer: str, key: str, period: int,
               values: list[tuple[dict[str, float], str]], gap: float = GAP,
               idle: tuple[str, str] | None = None) -> Head:
    """COPY (one matching key) or MEAN (several matching keys) by angle matching.

    score(q, k) = lam * <pointer(q), key(k)> = lam * cos(theta_q - theta_k), lam = gap / (1 -
    cos(2 pi / P)), where pointer(q) = (x_{pointer}_cos[q], x_{pointer}_sin[q]) comes from the
    table and key(k) = (x_{key}_cos[k], x_{key}_sin[k]). Keys whose angle equals the query's
    pointer angle score lam; every other key with a unit angle scores <= lam - gap, and keys whose
    key vector is 0 (not marked) score 0 <= lam - gap whenever lam >= gap. So the output is

        out[q] = mean over the matching keys k <= q of  sum_i w_i x_i[k]      (+ error)

    written to each `values` destination. Error: at most (S e^-gap) * max |value| in exact
    arithmetic. Precision: the scores are ~lam ~ gap P^2 / (2 pi^2), and must be resolved to much
    better than `gap`, so the format needs about 2 log2(P) + 1 mantissa bits beyond the handful the
    softmax needs (P ~ S for position pointers: log precision), and an exponent range holding lam.
    A query whose pointer is (0, 0) attends uniformly. With `idle=(flag, bos)`, a query whose
    table flag x_flag is 0 instead scores 2 lam on the BOS key (x_bos = 1) and so reads BOS's
    value, which is 0: the output is (up to leakage) exactly 0 off the flagged positions, so
    later MLPs need no gating there.
    """
    lam = angle_sharpness(period, gap)
    h = b.new_head(layer)
    h.score_term({pointer + "_cos": lam}, 0.0, {key + "_cos": 1.0})
    h.score_term({pointer + "_sin": lam}, 0.0, {key + "_sin": 1.0})
    if idle is not None:
        flag, bos = idle
        h.score_term({flag: -2 * lam}, 2 * lam, {bos: 1.0})
    for source, dest in values:
        h.value(source, dest)
    return h


def write_sink(b: ParamBuilder, name: str, total: float) -> None:
    """Table entry `name` at position t holds log(total - t) (for `sum_head`)."""
    for t in range(b.config.max_len):
        b.table(t, name, math.log(total - t))


def sum_head(b: ParamBuilder, layer: int, sink: str, bos: str, total: float,
             values: list[tuple[dict[str, float], str]]) -> Head:
    """SUM over all earlier positions: out[q] = sum_{1 <= k <= q} sum_i w_i x_i[k].

    A causal softmax averages; to sum, the BOS token (position 0) acts as a sink. Its key has
    x_bos = 1 and the query at position q reads x_sink[q] = log(C - q) from the table
    (`write_sink`, C = `total` > max_len), so score(q, BOS) = log(C - q) and every other key
    scores 0. The softmax weights are then (C - q)/C on BOS and exactly 1/C on each of the q other
    keys: the normaliser is the constant C whatever q is. Values are C * (sum_i w_i x_i) (and 0 at
    BOS), so the output is the plain sum. Exact in real arithmetic. Precision: exp(log(C - q))
    and the normaliser carry a relative error of a few eps * log2(C), so the sum of values up to
    V in magnitude over q <= S terms is off by about S V eps log2(S): log precision.
    """
    h = b.new_head(layer)
    h.score_term({sink: 1.0}, 0.0, {bos: 1.0})
    for source, dest in values:
        h.value({name: w * total for name, w in source.items()}, dest)
    return h


def quadratic_match_head(b: ParamBuilder, layer: int, target: dict[str, float],
                         target_offset: float, key_value: str, key_square: str, bonus: str,
                         values: list[tuple[dict[str, float], str]], lam: float = GAP,
                         bonus_weight: float = 2 * GAP) -> Head:
    """COPY from the unique key with x_{key_value}[k] = T[q] and x_{bonus}[k] = 1.

    T[q] = sum_i a_i x_i[q] + target_offset. With x_{key_square}[k] = x_{key_value}[k]^2 (computed
    by an earlier layer), the score

        lam (2 T[q] N_k - N_k^2) + mu bonus_k = lam T^2 - lam (N_k - T)^2 + mu bonus_k

    is bilinear in (query, key) features and, for integer N_k, peaks at N_k = T with a margin of
    lam over every other integer; `bonus` (0/1) adds mu = bonus_weight, so among keys with
    N_k = T the marked one wins by mu. Exact (up to e^-min(lam, mu) leakage) when exactly one
    marked key has N_k = T. Precision: the score terms are ~lam N^2, resolved to << lam, so the
    format needs about 2 log2(max N) + log2(lam) + 2 mantissa bits: log precision.
    """
    h = b.new_head(layer)
    h.score_term({name: 2 * lam * w for name, w in target.items()}, 2 * lam * target_offset,
                 {key_value: 1.0})
    h.score_term({}, -lam, {key_square: 1.0})
    h.score_term({}, bonus_weight, {bonus: 1.0})
    for source, dest in values:
        h.value(source, dest)
    return h


# ---- MLP blocks --------------------------------------------------------------------------------


def step(b: ParamBuilder, layer: int, x: dict[str, float], threshold: float,
         out: dict[str, float], gate: str | None = None, big: float = 0.0) -> None:
    """out += [X >= threshold] (times each output weight), for X = sum_i w_i x_i near an integer.

    Two ReLU units: (relu(4(X - th) + 3 - G) - relu(4(X - th) + 1 - G)) / 2, G = big (1 - x_gate).
    For gate = 1 and X within 1/4 of an integer this is exactly 1 if X >= th and exactly 0 if
    X <= th - 1 (a clean step: small errors in X are removed, not propagated). For gate = 0 both
    units are 0 provided big > 4 |X - th| + 3. Weights and biases are small integers (and big, a
    power of two), so they are exact in any format with enough bits for 4 max|X| + big:
    log2(max |X|) + 3 bits.
    """
    inputs = {name: 4.0 * w for name, w in x.items()}
    bias = -4.0 * threshold
    if gate:
        inputs[gate] = inputs.get(gate, 0.0) + big
        bias -= big
    b.relu_unit(layer, inputs, bias + 3.0, {name: w / 2 for name, w in out.items()})
    b.relu_unit(layer, inputs, bias + 1.0, {name: -w / 2 for name, w in out.items()})


def equals(b: ParamBuilder, layer: int, x: dict[str, float], value: float,
           out: dict[str, float], gate: str | None = None, big: float = 0.0) -> None:
    """out += [X == value] for X near an integer: step(value) - step(value + 1) (4 units)."""
    step(b, layer, x, value, out, gate, big)
    step(b, layer, x, value + 1, {name: -w for name, w in out.items()}, gate, big)


def int_step(b: ParamBuilder, layer: int, x: dict[str, float], threshold: int,
             out: dict[str, float], off: str | None = None, big: float = 0.0) -> None:
    """out += [X >= threshold] for X = sum_i w_i x_i an *exact* integer (two units).

    relu(X - th + 1 - big x_off) - relu(X - th - big x_off): 1 if X >= th, 0 if X <= th - 1, and
    0 where the coordinate `off` is 1, provided big >= max(X - th + 1). Unlike `step` it does not
    clean a noisy X (no 4x margin), so it needs only the bits of the integers |X - th| + 1: a
    constant when X is bounded independently of the input length. The gate is an *off* flag on
    purpose: where the unit acts, nothing large enters its sum (an on-flag with weight +big and
    bias -big would need the bits of big + X, since the matmul rounds X + big before the bias is
    added), and where it is off the sum is negative, which rounding never makes positive.
    """
    inputs = dict(x)
    if off:
        inputs[off] = inputs.get(off, 0.0) - big
    bias = -float(threshold)
    b.relu_unit(layer, inputs, bias + 1.0, dict(out))
    b.relu_unit(layer, inputs, bias, {name: -w for name, w in out.items()})


def onehot_copy_head(b: ParamBuilder, layer: int, flag: str, source: dict[str, float],
                     dest: str, sharpness: float = 64.0) -> Head:
    """dest += source at the one position whose table coordinate `flag` is 1 (every query).

    Score sharpness * flag_k (query side a constant): the flagged key scores lambda, every other
    key 0. With lambda = 64, exp(-lambda) ~ 1.6e-28 underflows to 0 in every format narrower than
    float32 and is far below half an ulp of 1 in float32 and float64 (for fewer than 1e11 keys),
    so the softmax weights round to exactly 1 and 0: a copy with no averaging and no 1/n, exact at
    constant precision. It needs only the exponent range for 2 lambda = 128 (the query weight,
    times sqrt(head_dim) = 2). The cost is one table coordinate per copied position: O(n) width
    instead of the O(1) of an angle match, whose O(log n) bits it avoids.
    """
    head = b.new_head(layer)
    head.score_term({}, sharpness, {flag: 1.0})
    head.value(source, dest)
    return head


def gated_identity(b: ParamBuilder, layer: int, x: dict[str, float], gate: str, big: float,
                   out: dict[str, float], bias: float = 0.0) -> None:
    """out += x_gate * X for X = sum_i w_i x_i + bias >= 0 and a 0/1 gate (one unit).

    relu(X - big (1 - x_gate)): equals X when the gate is 1 and 0 when it is 0, provided
    0 <= X < big. Exact in real arithmetic; this is also the exact product of a bit and a
    non-negative integer. Precision: X + big must round to within the tolerance of the consumer.
    """
    inputs = dict(x)
    inputs[gate] = inputs.get(gate, 0.0) + big
    b.relu_unit(layer, inputs, bias - big, out)


def lookup(b: ParamBuilder, layer: int, x: dict[str, float], table: dict[int, float],
           out: str, gate: str | None = None, big: float = 0.0) -> None:
    """out += f(X) for an integer X in [min(table), max(table)], f given as {X: f(X)}.

    f(X) = f(lo) [X >= lo] + sum_{m = lo+1..hi} (f(m) - f(m-1)) [X >= m]: one clean `step` (2 units)
    per point where f changes. Exact for X within 1/4 of an integer in range; gated like `step`.
    Width 2 * (number of changes of f), independent of anything but the table.
    """
    keys = sorted(table)
    if keys != list(range(keys[0], keys[-1] + 1)):
        raise ValueError("lookup tables must cover a contiguous integer range")
    previous = 0.0
    for m in keys:
        delta = table[m] - previous
        previous = table[m]
        if delta == 0:
            continue
        step(b, layer, x, m, {out: delta}, gate, big)  # at m = lo: f(lo) [X >= lo]


# ---- task layout -------------------------------------------------------------------------------


def column_group(k: int, base: int) -> int:
    """L, the digits per column of the ADD / IterADD construction: 1 if k <= base, else
    ceil(log_base k), so that k <= base^L (every carry fits below one column)."""
    return 1 if k <= base else tasks.ceil_log(k, base)


def check_spec(spec, task_names: tuple[str, ...]) -> None:
    """Most-significant-first answers; the tokenizer T_c where the token layouts agree.

    Under T_c every token is one base-P digit, P = p^c (a number is written as its base-P digits,
    `tasks.to_tokens`), so the constructions work on tokens: they are built for base P and
    n' = ceil(n / c) operand tokens, reading `spec.token_base` and `spec.operand_tokens`. That
    construction writes the right tokens exactly when the task's answer has the width, and the
    modulus, of the base-P task: for ADD / IterADD ceil(W / c) = n' + L(k, P) answer tokens (e.g.
    ADD: c divides n; otherwise the base-P answer has one more, always-zero, token), for MUL c
    divides l (the answer is the product mod p^l = P^(l / c)). Other layouts raise ValueError.
    """
    if spec.task not in task_names:
        raise ValueError(f"this construction builds {task_names}, not {spec.task!r}")
    c, big_p, n_tok = spec.chunk, spec.token_base, spec.operand_tokens
    if c > 1 and spec.task == "mul" and spec.answer_digits % c:
        raise ValueError(f"MUL with the tokenizer T_c needs c to divide l (the construction "
                         f"answers mod p^(c ceil(l / c))): got l={spec.answer_digits}, chunk={c}")
    if c > 1 and spec.task != "mul":
        group = column_group(spec.num_operands, big_p)
        if spec.answer_tokens != n_tok + group:
            raise ValueError(
                f"{spec.task} with the tokenizer T_c needs ceil(W / c) = n' + L answer tokens "
                f"(W = {spec.answer_digits} answer digits, n' = ceil(n / c) = {n_tok}, L = "
                f"{group}): got {spec.answer_tokens} for n={spec.n}, chunk={c} (for ADD, "
                f"choose c dividing n)")
    if spec.reverse_answer:
        raise ValueError("the constructions generate the answer most significant digit first; "
                         "reverse_answer=True is not supported")


# ---- readout -----------------------------------------------------------------------------------


def digit_readout(b: ParamBuilder, spec, name: str, scale: float = 8.0) -> None:
    """Unembedding: logit_d = A (2 d x_name - d^2) for digit tokens d; specials far below.

    logit_d = A (x^2 - (x - d)^2): the argmax is the digit nearest to x, with a margin of at least
    A (1 - 2 |x - round(x)|) over the runner-up. All weights are small integers times A.
    """
    p = spec.token_base  # digit tokens 0 .. p^c - 1
    for d in range(p):
        b.unembed(name, d, scale * 2 * d)
        b.unembed_bias(d, -scale * d * d)
    for tok in range(p, spec.vocab_size):
        b.unembed_bias(tok, -scale * (4 * p * p + 8))
