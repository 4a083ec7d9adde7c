"""Every width bound the constructions state is true over its whole stated range (bases 2..36),
and the verifier's reference is what its documentation says (Python integers)."""

from __future__ import annotations

import random

import numpy as np
import pytest

from arith_precision import tasks
from constructions import add_constant, build, column_add, mul
from constructions import verify as verify_lib
from constructions.check import run
from constructions.craft import blocks

BASES = range(2, 37)


def _config_widths(c) -> dict[str, int]:
    cfg = c.config
    return {"d_model": cfg.d_model, "d_ff": cfg.d_ff, "heads": cfg.num_heads,
            "layers": cfg.num_layers}


# ---- ADD / IterADD (column_add.py): d_model = 26 + 3L (+ L), d_ff <= max(6, 2k - 1) / 8 p k ----


def test_column_add_width_bounds_every_base():
    for p in BASES:
        for k in [*range(2, 301), 1000]:
            w = column_add.widths(p, k)
            group = blocks.column_group(k, p)
            assert w["layers"] == 5 and w["heads"] == max(2, group)
            if k <= p:
                assert group == 1 and w["d_model"] == 29, (p, k, w)
                assert w["d_ff"] <= max(6, 2 * k - 1), (p, k, w)
            else:
                assert w["d_model"] == 26 + 4 * group, (p, k, w)
                assert w["d_ff"] <= 8 * p * k, (p, k, w)


@pytest.mark.parametrize("p", [2, 36])
def test_column_add_built_widths_are_the_stated_ones(p):
    # build_column_add also asserts that its residual and its busiest MLP match widths().
    for k in sorted({2, 3, p + 1}):
        for n in (1,):
            c = build("iter_add", p, n, k=k) if k > 2 else build("add", p, n)
            assert _config_widths(c) == column_add.widths(p, k), (p, k, n)


@pytest.mark.slow
def test_column_add_built_widths_every_base():
    for p in BASES:
        for k in sorted({2, 3, p, p + 1, p * p + 1}):
            c = build("iter_add", p, 2, k=k) if k > 2 else build("add", p, 2)
            assert _config_widths(c) == column_add.widths(p, k), (p, k)


# ---- constant-precision ADD: d_model = 8n + p + 2, d_ff <= (n + 1)(n + 2p + 2) -----------------


def test_add_constant_width_bounds_every_base():
    for p in BASES:
        for n in range(1, 201):
            w = add_constant.widths(p, n)
            assert w["d_model"] == 8 * n + p + 2 and w["heads"] == 2 * n and w["layers"] == 3
            assert w["d_ff"] <= (n + 1) * (n + 2 * p + 2), (p, n, w)
    for p in (2, 36):
        for n in (1, 3):
            c = build("add", p, n, variant="constant")
            assert _config_widths(c) == add_constant.widths(p, n)


# ---- MUL (mul.py): d_model <= 2n(p + 15) + 4, d_ff <= 4 n^2 (p - 1) + 2n(2n + 1), R <= 3 -------


def _check_mul_bounds(p, n, l):
    w = mul.widths(p, n, l)
    assert w["heads"] == 2 * n
    assert 4 <= w["layers"] <= 7, (p, n, l, w)  # 4 + R, R <= 3 reductions for n <= 64
    assert w["d_model"] <= 2 * n * (p + 15) + 4, (p, n, l, w)
    assert w["d_ff"] <= 4 * n * n * (p - 1) + 2 * n * (2 * n + 1), (p, n, l, w)


def test_mul_width_bounds_every_base():
    # Every l for n <= 6, the ends of l's range for n <= 64 (every l, every n: the slow test).
    for p in BASES:
        for n in range(1, 65):
            ls = range(1, 2 * n + 1) if n <= 6 else (1, 2 * n)
            for l in ls:
                _check_mul_bounds(p, n, l)


@pytest.mark.slow  # ~2 minutes
def test_mul_width_bounds_every_base_every_l():
    for p in BASES:
        for n in range(1, 65):
            for l in range(1, 2 * n + 1):
                _check_mul_bounds(p, n, l)


@pytest.mark.parametrize("p,n,l", [(2, 1, 2), (2, 16, 32), (3, 4, 5), (10, 2, 4), (11, 1, 2),
                                   (16, 2, 4), (36, 2, 4), (36, 2, 1)])
def test_mul_built_widths_are_the_stated_ones(p, n, l):
    # build_mul asserts its residual and busiest MLP match widths(); the config must too.
    c = build("mul", p, n, l=l)
    assert _config_widths(c) == mul.widths(p, n, l)


def test_mul_reductions_bring_columns_to_one_carry_bit():
    for p in BASES:
        for n in (1, 2, 16, 64):
            plan = mul.reduction_plan(p, n, 2 * n)
            assert max(plan[-1]) <= 2 * p - 2
            assert plan[0][n - 1] == n * (p - 1) ** 2  # the middle column: n products
    assert mul.num_reductions(10, 2, 4) == 1 and mul.num_reductions(2, 16, 32) == 3


def test_mul_reduction_bounds_hold_on_random_products():
    # The bound M' of one reduction really bounds sum_d digit_d(X_{j-d}) on real column sums.
    rng = random.Random(0)
    for p, n in ((2, 16), (10, 8), (36, 4), (7, 12)):
        plan = mul.reduction_plan(p, n, 2 * n)
        for _ in range(50):
            a = [rng.choice([p - 1, rng.randrange(p)]) for _ in range(n)]
            b = [rng.choice([p - 1, rng.randrange(p)]) for _ in range(n)]
            cols = [sum(a[u] * b[j - u] for u in range(n) if 0 <= j - u < n)
                    for j in range(2 * n)]
            value = sum(c * p ** j for j, c in enumerate(cols))
            for bound in plan:
                assert all(x <= m for x, m in zip(cols, bound, strict=True)), (p, n, cols)
                cols = [sum((cols[j - d] // p ** d) % p for d in range(j + 1))
                        for j in range(2 * n)]
            assert sum(c * p ** j for j, c in enumerate(cols)) % p ** (2 * n) == value % p ** (
                2 * n)


# ---- the verifier's reference: Python integers; no empty checks ------------------------------


@pytest.mark.parametrize("task,p,n,k", [("add", 10, 256, 2), ("add", 2, 256, 2),
                                        ("iter_add", 10, 128, 5), ("iter_add", 2, 128, 3),
                                        ("iter_add", 10, 64, 1000), ("mul", 10, 16, 2),
                                        ("mul", 2, 16, 2), ("mul", 36, 1024, 2),
                                        ("add", 36, 4096, 2)])
def test_reference_is_python_integers_at_the_largest_n(task, p, n, k):
    # The largest sizes the verifier is run at (tests, frontier), and beyond: the reference
    # tokens are the base-p digits of the Python-int answer, read back independently with int().
    spec = tasks.TaskSpec(task, base=p, n=n, k=k)
    rng = random.Random(n)
    top = p ** n - 1
    ops = [[top] * k, [0] * k, [top] + [1] * (k - 1)]
    ops += [[rng.randrange(p ** n) for _ in range(k)] for _ in range(20)]
    want = run.reference_answer_tokens(spec, [spec.exact_answer(o) for o in ops])
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    for o, row in zip(ops, want, strict=True):
        exact = (o[0] * o[1]) % p ** spec.answer_digits if task == "mul" else sum(o)
        assert int("".join(digits[t] for t in row), p) == exact
        assert len(row) == spec.answer_tokens
    # The vectorised NumPy int64-limb path (prompts, training batches) agrees with it.
    assert np.array_equal(tasks.batch_from_operands(spec, ops).answer_tokens, want)


@pytest.mark.slow  # one more compile (~7 s); the reference itself is checked above
def test_check_reports_a_wrong_construction_against_python_integers():
    spec = tasks.TaskSpec("add", base=10, n=3)
    c = build(spec)
    c.params["unembed"]["bias"][3] += 1e3  # always predicts digit 3
    result = run.check(c, [[123, 456], [333, 0]])
    assert result["failures"] == 2 and result["first_failure_detail"]["expected"] == 579


def test_verify_refuses_an_empty_operand_list():
    spec = tasks.TaskSpec("add", base=10, n=3)
    with pytest.raises(ValueError, match="operands: empty"):
        verify_lib.verify(spec, operands=[])
    with pytest.raises(ValueError, match="operands: empty"):
        run.check(build(spec), [])
