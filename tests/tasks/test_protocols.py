"""The two test protocols on tiny tasks: the iid set overlaps training where the input space is
small, the unseen set never does, and the distinct-input counts are exact."""

import numpy as np
import pytest

from arith_precision import evaluate as evaluate_lib
from arith_precision import model as model_lib
from arith_precision import tasks

SPEC = tasks.TaskSpec("mul", base=2, n=4)  # 256 input pairs, 16 held out by the hash


def _space(spec):
    rows = []
    for a in range(spec.base ** spec.n):
        for b in range(spec.base ** spec.n):
            rows.append([a, b])
    return tasks.batch_from_operands(spec, rows).operand_digits


def _keys(digits):
    return {bytes(r) for r in np.ascontiguousarray(digits.reshape(len(digits), -1))}


def test_iid_overlaps_training_and_unseen_never_does():
    everything = _space(SPEC)
    held = _keys(everything[tasks.is_held_out(everything)])
    assert 0 < len(held) < 256
    train = set()
    for step in range(40):
        batch = tasks.sample_batch(SPEC, data_seed=0, step=step, batch_size=64)
        train |= _keys(batch.operand_digits)
    assert not train & held  # training never sees a held-out input
    assert len(train) == 256 - len(held)  # and, at this size, sees every other input
    iid = _keys(tasks.sample_batch(SPEC, data_seed=0, step=0, batch_size=500,
                                   split="iid").operand_digits)
    assert iid & train and iid & held  # the task distribution: both kinds
    for split in ("eval", "valid"):
        unseen = _keys(tasks.sample_batch(SPEC, data_seed=0, step=0, batch_size=500,
                                          split=split).operand_digits)
        assert unseen <= held and not unseen & train


def test_distinct_inputs_is_exact():
    digits = _space(SPEC)[[0, 1, 1, 5, 0, 7]]
    assert tasks.distinct_inputs(digits) == 4
    assert tasks.distinct_inputs(digits[:0]) == 0


def _oracle(spec, wrong_on=frozenset()):
    """A decoder that answers exactly except on the inputs in `wrong_on`."""

    def decode(params, prompt_BxT):
        batch_digits = []
        width = spec.operand_tokens
        for row in np.asarray(prompt_BxT):
            ops = [row[1 + i * (width + 1): 1 + i * (width + 1) + width]
                   for i in range(spec.num_operands)]
            batch_digits.append(ops)
        digits = np.asarray(batch_digits, dtype=np.int8)
        answers = tasks.batch_from_operand_digits(spec, digits).answer_tokens.copy()
        for i, row in enumerate(digits.reshape(len(digits), -1)):
            if bytes(row) in wrong_on:
                answers[i, 0] = (answers[i, 0] + 1) % spec.base
        return answers

    return decode


def test_both_protocols_with_their_distinct_counts():
    cfg = model_lib.TransformerConfig(vocab_size=SPEC.vocab_size, max_len=SPEC.sequence_length,
                                      num_layers=1, d_model=8, num_heads=1, d_ff=8)
    everything = _space(SPEC)
    held = [bytes(r) for r in everything[tasks.is_held_out(everything)].reshape(-1, 8)]
    # wrong on every held-out input: unseen exact match 0, iid = the share of trained inputs
    result = evaluate_lib.evaluate_protocols(None, cfg, SPEC, num_examples=300, batch_size=100,
                                             data_seed=0, decode=_oracle(SPEC, set(held)))
    assert result["exact_match_unseen"] == 0.0
    assert result["distinct_unseen"] == len(held)  # 300 draws over 16 held-out pairs
    iid = np.concatenate([tasks.sample_batch(SPEC, data_seed=0, step=i, batch_size=100,
                                             split="iid").operand_digits for i in range(3)])
    in_held = tasks.is_held_out(iid)
    assert result["distinct_iid"] == tasks.distinct_inputs(iid)
    assert result["exact_match_iid"] == pytest.approx(1 - in_held.mean())
    assert result["iid_in_training_split"] == pytest.approx(1 - in_held.mean())
    assert result["exact_match"] == result["exact_match_unseen"]  # the default protocol


def test_a_space_with_nothing_held_out_has_no_unseen_numbers():
    spec = tasks.TaskSpec("mul", base=2, n=2)  # 16 inputs, none held out by the hash
    cfg = model_lib.TransformerConfig(vocab_size=spec.vocab_size, max_len=spec.sequence_length,
                                      num_layers=1, d_model=8, num_heads=1, d_ff=8)
    result = evaluate_lib.evaluate_protocols(None, cfg, spec, num_examples=64, batch_size=64,
                                             data_seed=0, decode=_oracle(spec))
    iid = tasks.sample_batch(spec, data_seed=0, step=0, batch_size=64, split="iid")
    assert result["exact_match_iid"] == 1.0
    assert result["distinct_iid"] == len(_keys(iid.operand_digits)) > 8
    assert result["exact_match_unseen"] is None and result["distinct_unseen"] == 0
