"""Print examples of a task.

    python -m arith_precision.tasks --task=add --base=10 --n=8 --num=5 --seed=0
    python -m arith_precision.tasks --task=mul --base=2 --n=6 --l=4 --chunk=2 --num=3 --seed=1 \
        --json

Examples come from the vectorised generator's evaluation-free *train* stream for (seed, step 0),
and each is re-derived with Python integers before printing (a mismatch would be a bug and exits 1).
"""

from __future__ import annotations

import argparse
import json
import sys

from arith_precision.tasks.batches import digits_to_ints, sample_batch
from arith_precision.tasks.reference import make_example
from arith_precision.tasks.spec import OPERAND_DISTRIBUTIONS, TASKS, TaskSpec


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
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
    parser.add_argument("--split", default="train", choices=("train", "eval"))
    parser.add_argument("--num", type=int, required=True, help="how many examples")
    parser.add_argument("--seed", type=int, required=True, help="data seed")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.num < 1:
            raise ValueError(f"--num must be >= 1, got {args.num}")
        spec = TaskSpec(
            task=args.task,
            base=args.base,
            n=args.n,
            k=2 if args.k is None else args.k,
            l=args.l,
            chunk=args.chunk,
            reverse_answer=args.reverse_answer,
            operand_distribution=args.distribution,
        )
        batch = sample_batch(
            spec, data_seed=args.seed, step=0, batch_size=args.num, split=args.split
        )
    except ValueError as e:
        parser.error(str(e))  # exits 2 with the message
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
