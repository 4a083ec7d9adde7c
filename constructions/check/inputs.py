"""The verifier's input set: exhaustive when small, adversarial families, seeded random inputs.

Every input is a list of operands (Python ints in [0, p^n)). `verification_set(spec)` returns the
union, de-duplicated, in a fixed order: exhaustive inputs first when there are at most
`EXHAUSTIVE_LIMIT` of them (then nothing else is needed), else adversarial families followed by
`num_random` random inputs (half uniform over values, half with uniform digit lengths).
"""

from __future__ import annotations

import itertools
import random

from arith_precision import tasks

EXHAUSTIVE_LIMIT = 100_000


def exhaustive_count(spec: tasks.TaskSpec) -> int:
    return (spec.base ** spec.n) ** spec.num_operands


def exhaustive(spec: tasks.TaskSpec) -> list[list[int]]:
    values = range(spec.base ** spec.n)
    return [list(ops) for ops in itertools.product(values, repeat=spec.num_operands)]


def _digits_value(digits_msb_first: list[int], p: int) -> int:
    v = 0
    for d in digits_msb_first:
        v = v * p + d
    return v


def adversarial_bound(spec: tasks.TaskSpec) -> int:
    """An upper bound on len(adversarial(spec)) from the spec alone, for memory checks before
    anything is built: 8 N + k + 8 per digit system (N digits of base p, and under T_c also
    N / c tokens of base p^c), against 8 N + 4, + k + 4 when k > 2 (ADD, IterADD) and
    8 N + 2 (MUL) by the families below."""
    k = spec.num_operands
    total = 8 * spec.n + k + 8
    if spec.chunk > 1:
        total += 8 * spec.operand_tokens + k + 8
    return total


def adversarial(spec: tasks.TaskSpec) -> list[list[int]]:
    """Inputs that stress carries: long chains, chains that stop early, maximal column sums.

    The families are built on base-p digits and, under the tokenizer T_c (chunk c > 1), also on
    the base-p^c digits the tokens are (those in range [0, p^n)), so that carry chains through
    whole tokens are covered as well as chains through digits.
    """
    out = _adversarial(spec.task, spec.base, spec.n, spec.num_operands)
    if spec.chunk > 1:
        limit = spec.base ** spec.n
        out += [ops for ops in _adversarial(spec.task, spec.token_base, spec.operand_tokens,
                                            spec.num_operands) if max(ops) < limit]
    return out


def _adversarial(task: str, p: int, n: int, k: int) -> list[list[int]]:
    top = p ** n - 1
    out: list[list[int]] = []

    def add(ops):
        out.append([int(x) for x in ops])

    add([0] * k)
    add([top] * k)  # all digits p-1: maximal column sums (and (p^n - 1)^2 for MUL)
    if task == "mul":
        for m in range(1, n + 1):
            add([top, p ** m - 1])  # long carry chains in the product
            add([p ** m - 1, top])
            add([p ** (m - 1), top])
            add([top, p ** (m - 1)])
            add([p ** m - 1, p ** m - 1])
            add([_digits_value([p - 1] * m + [0] * (n - m), p), top])
        for m in range(n):  # one non-maximal digit somewhere
            add([top - p ** m, top])
            add([top, top - (p - 1) * p ** m])
        return out
    rest = [0] * (k - 2)
    for m in range(1, n + 1):
        chain = p ** m - 1  # (p-1)...(p-1) in the low m columns
        add([chain, 1] + rest)  # carry ripples through m columns
        add([1, chain] + rest)
        add([top, p ** (n - m)] + rest)  # ripple from column n-m to the top
        add([chain - 1, 1] + rest)  # stops one column early: no carry at all
        add([chain, 1] + [top] * (k - 2))
    for j in range(n):  # chain broken at column j (digit p-2 there), or a kill at column j
        add([top - p ** j, 1] + rest)
        add([top - (p - 1) * p ** j, 1] + rest)
        add([top - p ** j, p ** j] + rest)
    # Column sums one below a multiple of p: alternating propagate / generate patterns.
    alt = _digits_value([(p - 1) if i % 2 else 0 for i in range(n)], p)
    add([alt, top - alt] + rest)
    add([alt, top - alt + 1 if top - alt + 1 <= top else top] + rest)
    if k > 2:
        add([top] * (k - 1) + [1])
        add([top] * (k - 1) + [0])
        # Column sums S = p - 1 + multiple of p in every column, then one unit at the bottom.
        for first in range(k):
            ops = [0] * k
            ops[first] = top
            ops[(first + 1) % k] = 1
            add(ops)
        per_col = (k * (p - 1)) // p * p + (p - 1)  # largest S_j = -1 mod p reachable
        digits = []
        for _ in range(k):  # split per_col into k digits <= p-1, same in every column
            d = min(p - 1, max(0, per_col - sum(digits)))
            digits.append(d)
        if sum(digits) == per_col:
            add([_digits_value([d] * n, p) for d in digits])
            add([_digits_value([d] * n, p) + (1 if i == 0 and d < p - 1 else 0)
                 for i, d in enumerate(digits)])
    return out


def random_inputs(spec: tasks.TaskSpec, num: int, seed: int) -> list[list[int]]:
    rng = random.Random(seed)
    p, n, k = spec.base, spec.n, spec.num_operands
    out = []
    for i in range(num):
        if i % 2 == 0:
            out.append([rng.randrange(p ** n) for _ in range(k)])
        else:
            out.append([rng.randrange(p ** rng.randint(1, n)) for _ in range(k)])
    return out


def verification_set(spec: tasks.TaskSpec, num_random: int = 1000,
                     seed: int = 0) -> tuple[list[list[int]], dict[str, int]]:
    """(inputs, counts per family). Exhaustive when there are <= EXHAUSTIVE_LIMIT inputs."""
    if exhaustive_count(spec) <= EXHAUSTIVE_LIMIT:
        ops = exhaustive(spec)
        return ops, {"exhaustive": len(ops)}
    seen, ops, counts = set(), [], {}
    for family, items in (("adversarial", adversarial(spec)),
                          ("random", random_inputs(spec, num_random, seed))):
        counts[family] = 0
        for item in items:
            key = tuple(item)
            if any(not 0 <= x < spec.base ** spec.n for x in item):
                raise AssertionError(f"adversarial family produced an invalid input {item}")
            if key in seen:
                continue
            seen.add(key)
            ops.append(item)
            counts[family] += 1
    return ops, counts
