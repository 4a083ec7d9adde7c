"""Tasks: the vectorised generator against Python integers, layout, determinism, splits, errors."""

import itertools
import json
import subprocess
import sys

import numpy as np
import pytest

from arith_precision import tasks
from arith_precision.tasks import TaskSpec

SPECS = [
    TaskSpec("add", base=10, n=8),
    TaskSpec("add", base=2, n=13, chunk=3),
    TaskSpec("add", base=7, n=5, reverse_answer=True),
    TaskSpec("add", base=36, n=4, chunk=2),
    TaskSpec("iter_add", base=2, n=9, k=3),
    TaskSpec("iter_add", base=10, n=6, k=5, chunk=2, reverse_answer=True),
    TaskSpec("iter_add", base=3, n=4, k=11),
    TaskSpec("iter_add", base=10, n=40, k=12),
    TaskSpec("mul", base=10, n=5),
    TaskSpec("mul", base=2, n=9, l=4),
    TaskSpec("mul", base=10, n=7, l=9, chunk=4, reverse_answer=True),
    TaskSpec("mul", base=16, n=30, l=1),
    TaskSpec("add", base=10, n=8, operand_distribution="uniform_length"),
    TaskSpec("mul", base=3, n=6, operand_distribution="uniform_length", chunk=2),
]


def _operands(spec, batch):
    flat = tasks.digits_to_ints(batch.operand_digits.reshape(-1, spec.n), spec.base)
    k = spec.num_operands
    return [flat[i * k:(i + 1) * k] for i in range(len(batch))]


@pytest.mark.parametrize("spec", SPECS, ids=str)
def test_vectorised_matches_python_ints(spec):
    for split in ("train", "eval"):
        batch = tasks.sample_batch(spec, data_seed=3, step=5, batch_size=64, split=split)
        assert batch.tokens.dtype == np.int32 and batch.tokens.shape == (64, spec.sequence_length)
        for i, ops in enumerate(_operands(spec, batch)):
            ex = tasks.make_example(spec, ops)
            assert list(ex.input_tokens) == batch.input_tokens[i].tolist()
            assert list(ex.answer_tokens) == batch.answer_tokens[i].tolist()
            assert tasks.digits_to_ints(batch.answer_digits[i:i + 1], spec.base) == [ex.answer]
            full = list(ex.input_tokens) + list(ex.answer_tokens) + [spec.eos_id]
            assert full == batch.tokens[i].tolist()
            # and the answer is really the arithmetic result
            if spec.task == "mul":
                assert ex.answer == (ops[0] * ops[1]) % spec.base ** spec.answer_digits
            else:
                assert ex.answer == sum(ops)
            assert tasks.decode_answer(spec, ex.answer_tokens) == ex.answer


@pytest.mark.parametrize("spec", SPECS[:4] + SPECS[8:10], ids=str)
def test_adversarial_operands_match_python_ints(spec):
    top = spec.base ** spec.n - 1
    ops = [[top] * spec.num_operands, [0] * spec.num_operands,
           [top] + [1] + [0] * (spec.num_operands - 2),
           [top // spec.base * spec.base] + [spec.base - 1] * (spec.num_operands - 1)]
    batch = tasks.batch_from_operands(spec, ops)
    for i, o in enumerate(ops):
        assert list(tasks.make_example(spec, o).answer_tokens) == batch.answer_tokens[i].tolist()


def test_exhaustive_small_add_and_mul():
    for spec in (TaskSpec("add", base=3, n=2), TaskSpec("mul", base=3, n=2, l=3),
                 TaskSpec("iter_add", base=2, n=2, k=4)):
        space = list(itertools.product(range(spec.base ** spec.n), repeat=spec.num_operands))
        batch = tasks.batch_from_operands(spec, space)
        answers = tasks.decode_answers(spec, batch.answer_tokens)
        want = [spec.exact_answer(o) for o in space]
        assert answers == want


def test_layout_and_widths():
    spec = TaskSpec("add", base=10, n=4)
    ex = tasks.make_example(spec, [123, 9999])
    assert ex.text == "0123+9999=10122"
    assert ex.input_tokens == (spec.bos_id, 0, 1, 2, 3, spec.special("+"), 9, 9, 9, 9,
                               spec.equals_id)
    assert ex.answer_tokens == (1, 0, 1, 2, 2)
    assert TaskSpec("iter_add", base=10, n=4, k=10).answer_digits == 5
    assert TaskSpec("iter_add", base=10, n=4, k=11).answer_digits == 6
    assert TaskSpec("iter_add", base=2, n=4, k=3).answer_digits == 6
    assert TaskSpec("iter_add", base=2, n=4, k=4).answer_digits == 6
    assert TaskSpec("mul", base=10, n=4).answer_digits == 8
    assert TaskSpec("mul", base=10, n=4, l=3).answer_digits == 3
    rev = TaskSpec("add", base=10, n=4, reverse_answer=True)
    assert tasks.make_example(rev, [123, 9999]).answer_tokens == (2, 2, 1, 0, 1)
    # T_c: tokens are base-p^c digits aligned at the least significant end
    c2 = TaskSpec("add", base=10, n=5, chunk=2)
    ex = tasks.make_example(c2, [12345, 1])
    assert ex.input_tokens[1:4] == (1, 23, 45) and ex.answer_tokens == (1, 23, 46)
    assert ex.text == "1|23|45+0|00|01=01|23|46"
    assert c2.vocab_size == 100 + 6
    mask = tasks.target_mask(spec)
    assert mask.sum() == spec.answer_tokens and mask[spec.input_length - 1]


def test_max_answer_fits_width():
    for spec in SPECS:
        top = [spec.base ** spec.n - 1] * spec.num_operands
        assert spec.exact_answer(top) < spec.base ** spec.answer_digits


def test_determinism_and_resume():
    spec = TaskSpec("iter_add", base=10, n=12, k=4)
    a = tasks.sample_batch(spec, data_seed=1, step=7, batch_size=32)
    b = tasks.sample_batch(spec, data_seed=1, step=7, batch_size=32)
    np.testing.assert_array_equal(a.tokens, b.tokens)
    c = tasks.sample_batch(spec, data_seed=1, step=8, batch_size=32)
    d = tasks.sample_batch(spec, data_seed=2, step=7, batch_size=32)
    assert not np.array_equal(a.tokens, c.tokens) and not np.array_equal(a.tokens, d.tokens)


def test_train_and_eval_never_overlap():
    # A tiny space (9^2 * ... = 6561 examples) where random streams would surely collide.
    spec = TaskSpec("add", base=3, n=4)
    train = {tuple(r) for s in range(40)
             for r in tasks.sample_batch(spec, data_seed=0, step=s, batch_size=256)
             .operand_digits.reshape(256, -1).tolist()}
    evals = {tuple(r) for s in range(10)
             for r in tasks.sample_batch(spec, data_seed=0, step=s, batch_size=64, split="eval")
             .operand_digits.reshape(64, -1).tolist()}
    assert len(train) > 3000 and len(evals) > 200
    assert not train & evals
    # The split is a fixed function of the example, independent of seeds.
    batch = tasks.sample_batch(spec, data_seed=5, step=0, batch_size=256, split="eval")
    assert tasks.is_held_out(batch.operand_digits).all()
    frac = tasks.is_held_out(
        tasks.sample_batch(spec, data_seed=5, step=0, batch_size=4096).operand_digits).mean()
    assert frac == 0.0


def test_holdout_fraction_is_about_one_sixteenth():
    rng = np.random.default_rng(0)
    digits = rng.integers(0, 10, size=(50_000, 2, 6), dtype=np.int8)
    frac = tasks.is_held_out(digits).mean()
    assert abs(frac - 1 / tasks.HOLDOUT_MODULUS) < 0.005


def test_uniform_length_distribution():
    spec = TaskSpec("add", base=10, n=8, operand_distribution="uniform_length")
    b = tasks.sample_batch(spec, data_seed=0, step=0, batch_size=4000)
    values = np.array(tasks.digits_to_ints(b.operand_digits.reshape(-1, 8), 10))
    lengths = np.array([len(str(v)) for v in values])
    counts = np.bincount(lengths, minlength=9)[1:]
    assert (counts > 0).all() and counts.min() > 0.7 * counts.mean()
    uniform = TaskSpec("add", base=10, n=8)
    b = tasks.sample_batch(uniform, data_seed=0, step=0, batch_size=4000)
    values = np.array(tasks.digits_to_ints(b.operand_digits.reshape(-1, 8), 10))
    assert (values >= 10**7).mean() > 0.85  # uniform value: most numbers have all 8 digits


def test_scoring():
    spec = TaskSpec("add", base=10, n=3)
    target = np.array([[1, 0, 2, 2], [0, 5, 5, 5]])
    pred = np.array([[1, 0, 2, 2], [0, 5, 4, spec.eos_id]])
    np.testing.assert_array_equal(tasks.exact_match(spec, pred, target), [True, False])
    np.testing.assert_allclose(tasks.digit_accuracy(spec, pred, target), [1.0, 0.5])
    assert tasks.decode_answers(spec, pred) == [1022, None]
    assert tasks.score(spec, pred, target) == {"exact_match": 0.5, "digit_accuracy": 0.75}
    # chunked and reversed: a leading token too large for its digits is invalid
    c = TaskSpec("add", base=10, n=3, chunk=3, reverse_answer=True)  # W=4 -> tokens [_ , ___]
    assert tasks.decode_answer(c, [22, 1]) == 1022
    assert tasks.decode_answer(c, [22, 10]) is None
    np.testing.assert_allclose(tasks.digit_accuracy(c, [[22, 10]], [[22, 1]]), [0.75])
    with pytest.raises(ValueError, match="shape"):
        tasks.exact_match(spec, pred[:, :3], target[:, :3])


@pytest.mark.parametrize("kwargs, match", [
    (dict(task="add", base=1, n=3), "base must be >= 2, got 1"),
    (dict(task="add", base=37, n=3), "base must be <= 36, got 37"),
    (dict(task="add", base=10, n=0), "n must be >= 1, got 0"),
    (dict(task="add", base=10, n=2.5), "n must be an integer, got 2.5"),
    (dict(task="iter_add", base=10, n=3, k=1), "k must be >= 2, got 1"),
    (dict(task="add", base=10, n=3, k=3), "k=3 is only meaningful"),
    (dict(task="mul", base=10, n=3, l=0), "l must be >= 1, got 0"),
    (dict(task="mul", base=10, n=3, l=7), r"l must be <= 2n = 6, got l=7"),
    (dict(task="add", base=10, n=3, l=2), "l=2 is only meaningful"),
    (dict(task="add", base=10, n=3, chunk=0), "chunk must be >= 1, got 0"),
    (dict(task="add", base=10, n=3, chunk=10), "does not fit int32"),
    (dict(task="sub", base=10, n=3), "unknown task 'sub'"),
    (dict(task="add", base=10, n=3, operand_distribution="gauss"), "unknown operand_distribution"),
])
def test_bad_spec_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TaskSpec(**kwargs)


def test_empty_eval_partition_is_an_error(monkeypatch):
    # With a 2^-40 held-out fraction, none of the 4 examples of ADD_2(1) is held out.
    monkeypatch.setattr(tasks.batches, "HOLDOUT_MODULUS", 2**40)
    with pytest.raises(ValueError, match="too small"):
        tasks.sample_batch(TaskSpec("add", base=2, n=1), data_seed=0, step=0, batch_size=4,
                           split="eval")


def test_bad_call_errors():
    spec = TaskSpec("add", base=10, n=3)
    with pytest.raises(ValueError, match="operand 1000 is not in"):
        spec.exact_answer([1000, 1])
    with pytest.raises(ValueError, match="takes 2 operands, got 3"):
        spec.exact_answer([1, 2, 3])
    with pytest.raises(ValueError, match="unknown split 'test'"):
        tasks.sample_batch(spec, data_seed=0, step=0, batch_size=4, split="test")
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1, got 0"):
        tasks.sample_batch(spec, data_seed=0, step=0, batch_size=0)
    with pytest.raises(ValueError, match="step must be an integer >= 0, got -1"):
        tasks.sample_batch(spec, data_seed=0, step=-1, batch_size=4)
    with pytest.raises(ValueError, match="token 12 is not a digit token"):
        tasks.from_tokens([1, 12], spec)
    with pytest.raises(ValueError, match="unknown special token"):
        spec.special("-")


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "arith_precision.tasks", *args],
                          capture_output=True, text=True, check=False)


def test_cli_json_matches_python_ints():
    r = _cli("--task=mul", "--base=10", "--n=4", "--l=5", "--chunk=2", "--reverse-answer",
             "--num=5", "--seed=3", "--json")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 5
    spec = TaskSpec("mul", base=10, n=4, l=5, chunk=2, reverse_answer=True)
    for line in lines:
        obj = json.loads(line)
        assert set(obj) == {"operands", "answer", "input_tokens", "answer_tokens", "text"}
        a, b = obj["operands"]
        assert obj["answer"] == (a * b) % 10**5
        assert tasks.decode_answer(spec, obj["answer_tokens"]) == obj["answer"]
        assert obj["input_tokens"] == list(tasks.make_example(spec, [a, b]).input_tokens)


def test_cli_text_and_errors():
    r = _cli("--task=iter_add", "--k=3", "--base=2", "--n=5", "--num=2", "--seed=0")
    assert r.returncode == 0 and len(r.stdout.splitlines()) == 2
    assert r.stdout.count("+") == 4
    for args, msg in [(("--task=add", "--base=1", "--n=3", "--num=1", "--seed=0"), "base must be"),
                      (("--task=mul", "--base=10", "--n=3", "--l=9", "--num=1", "--seed=0"),
                       "l must be <= 2n"),
                      (("--task=add", "--base=10", "--n=3", "--num=0", "--seed=0"), "--num"),
                      (("--task=div", "--base=10", "--n=3", "--num=1", "--seed=0"), "div")]:
        r = _cli(*args)
        assert r.returncode != 0 and msg in r.stderr, (args, r.stderr)
