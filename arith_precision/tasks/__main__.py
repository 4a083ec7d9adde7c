"""Print examples of a task.

    python -m arith_precision.tasks --task=add --base=10 --n=8 --num=5 --seed=0
    python -m arith_precision.tasks --task=mul --base=2 --n=6 --l=4 --chunk=2 --num=3 --seed=1 \
        --json

Examples come from the vectorised generator's evaluation-free *train* stream for (seed, step 0),
and each is re-derived with Python integers before printing (a mismatch would be a bug and exits 1).

Exit status: 0 printed, 1 internal error, 2 bad input (one line `error: <flag>: <value>: <why>`).
Limits, checked before any work: estimated memory (about num * (32 k n + 24 * sequence length)
bytes) at most 16 GiB (ARITH_PRECISION_MAX_MEMORY_GB), and the Python-int cross-check, quadratic
in n, at most 3e10 digit steps (num * k * n^2; about 30-60 s on one CPU core).
"""

from __future__ import annotations

import json
import sys

from arith_precision.common.cli_errors import ArgumentParser, UsageError, check_memory, run_cli
from arith_precision.tasks.batches import digits_to_ints, sample_batch
from arith_precision.tasks.reference import make_example
from arith_precision.tasks.spec import OPERAND_DISTRIBUTIONS, TASKS, TaskSpec

MAX_CROSS_CHECK_STEPS = 3e10  # num * k * n^2 digit steps of the Python-int re-derivation


def build_parser() -> ArgumentParser:
    import argparse

    parser = ArgumentParser(
        prog="python -m arith_precision.tasks",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--task", required=True, choices=TASKS)
    parser.add_argument("--base", type=int, required=True, help="base p, 2..36")
    parser.add_argument("--n", type=int, required=True, help="digits per operand")
    parser.add_argument("--k", type=int, default=None, help="operands (iter_add only)")
    parser.add_argument("--l", type=int, default=None, help="answer digits (mul only; default 2n)")
    parser.add_argument("--chunk", type=int, default=1, help="digits per token (T_c)")
    parser.add_argument("--reverse-answer", action="store_true", help="answer LSB first")
    parser.add_argument("--distribution", default="uniform_value", choices=OPERAND_DISTRIBUTIONS)
    parser.add_argument("--split", default="train", choices=("train", "eval", "iid"))
    parser.add_argument("--num", type=int, required=True, help="how many examples")
    parser.add_argument("--seed", type=int, required=True, help="data seed")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    return parser


_SPEC_FLAGS = {"base": "--base", "n": "--n", "k": "--k", "l": "--l", "chunk": "--chunk",
               "vocabulary": "--chunk"}


def spec_from_args(args) -> TaskSpec:
    """The TaskSpec of the flags; every bad value a UsageError naming its flag."""
    if args.task == "iter_add" and args.k is None:
        raise UsageError("--k", "(missing)", "is required with --task=iter_add")
    if args.k is not None and args.task != "iter_add":
        raise UsageError("--k", args.k, f"only applies to --task=iter_add, not {args.task}")
    if args.l is not None and args.task != "mul":
        raise UsageError("--l", args.l, f"only applies to --task=mul, not {args.task}")
    if args.num < 1:
        raise UsageError("--num", args.num, "must be >= 1")
    if args.seed < 0:
        raise UsageError("--seed", args.seed, "must be >= 0")
    try:
        return TaskSpec(task=args.task, base=args.base, n=args.n,
                        k=2 if args.k is None else args.k, l=args.l, chunk=args.chunk,
                        reverse_answer=args.reverse_answer,
                        operand_distribution=args.distribution)
    except ValueError as e:
        first = str(e).split()[0]
        flag = _SPEC_FLAGS.get(first, "--" + first if first in _SPEC_FLAGS else "--task")
        value = getattr(args, flag[2:].replace("-", "_"), None)
        raise UsageError(flag, value, str(e)) from None


def check_sizes(spec: TaskSpec, num: int) -> None:
    """Reject outputs that cannot fit in memory or whose cross-check would run for hours.

    Checked for one example first (then n is too large), then for all of them (then num is)."""
    k = spec.num_operands
    for flag, value, count in (("--n", spec.n, 1), ("--num", num, num)):
        check_memory(flag, value, count * (32.0 * k * spec.n + 24.0 * spec.sequence_length),
                     f"{count} example(s) of sequence length {spec.sequence_length}")
        steps = float(count) * k * spec.n ** 2
        if steps > MAX_CROSS_CHECK_STEPS:
            raise UsageError(flag, value, f"re-deriving {count} example(s) with Python integers "
                             f"takes ~{steps:.2g} digit steps (num * k * n^2), over the "
                             f"{MAX_CROSS_CHECK_STEPS:.0e} limit (minutes to hours)")


def main(argv=None) -> int:
    return run_cli(lambda: _main(argv))


def _main(argv) -> int:
    args = build_parser().parse_args(argv)
    spec = spec_from_args(args)
    check_sizes(spec, args.num)
    batch = sample_batch(spec, data_seed=args.seed, step=0, batch_size=args.num, split=args.split)
    operands = digits_to_ints(batch.operand_digits.reshape(-1, spec.n), spec.base)
    for i in range(args.num):
        ex = make_example(spec, operands[i * spec.num_operands : (i + 1) * spec.num_operands])
        if (
            list(ex.input_tokens) != batch.input_tokens[i].tolist()
            or list(ex.answer_tokens) != batch.answer_tokens[i].tolist()
        ):
            print(
                f"internal error: vectorised and Python-int paths disagree on {ex.operands}",
                file=sys.stderr,
            )
            return 1
        print(json.dumps(ex.as_json()) if args.json else ex.text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
