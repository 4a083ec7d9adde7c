"""Arithmetic tasks: ADD_p(n), IterADD_p(n, k), MUL_p(n, l), the T_c tokenizer and scoring.

    spec = TaskSpec("add", base=10, n=8)
    batch = sample_batch(spec, data_seed=0, step=0, batch_size=512)   # vectorised, exact
    ex = make_example(spec, [12, 345])                                  # one example, Python ints
    score(spec, predicted_answer_tokens, batch.answer_tokens)

CLI: `python -m arith_precision.tasks --task=add --base=10 --n=8 --num=5 --seed=0 [--json]`.
"""

from arith_precision.tasks.batches import (
    HELD_OUT_SPLITS,
    HOLDOUT_MODULUS,
    IID_SPLITS,
    SPLITS,
    Batch,
    NoHeldOutInputs,
    batch_from_operand_digits,
    batch_from_operands,
    digits_to_ints,
    distinct_inputs,
    ints_to_digits,
    is_held_out,
    sample_batch,
    target_mask,
)
from arith_precision.tasks.reference import (
    Example,
    from_tokens,
    make_example,
    render_text,
    sample_examples_python,
    to_digits,
    to_tokens,
)
from arith_precision.tasks.scoring import (
    answer_tokens_to_digits,
    decode_answer,
    decode_answers,
    digit_accuracy,
    exact_match,
    score,
)
from arith_precision.tasks.spec import SPECIAL_TOKENS, TASKS, TaskSpec, ceil_log, task_title

__all__ = [
    "HELD_OUT_SPLITS",
    "HOLDOUT_MODULUS",
    "IID_SPLITS",
    "SPLITS",
    "SPECIAL_TOKENS",
    "TASKS",
    "Batch",
    "Example",
    "NoHeldOutInputs",
    "TaskSpec",
    "answer_tokens_to_digits",
    "batch_from_operand_digits",
    "batch_from_operands",
    "ceil_log",
    "task_title",
    "decode_answer",
    "decode_answers",
    "digit_accuracy",
    "digits_to_ints",
    "distinct_inputs",
    "exact_match",
    "from_tokens",
    "ints_to_digits",
    "is_held_out",
    "make_example",
    "render_text",
    "sample_batch",
    "sample_examples_python",
    "score",
    "target_mask",
    "to_digits",
    "to_tokens",
]
