"""Verify a construction exactly against Python integers, at any format and accumulation.

    python -m constructions.verify --task=add|iter_add|mul --base=P --n=N [--k=K] [--l=L]
        [--chunk=C] [--variant=log|constant] [--format=F] [--random=1000]
        [--accumulation=once|sequential|pairwise] [--inputs=FILE] [--json] [--seed=0]

The built-in input set is exhaustive when there are at most 10^5 inputs, else adversarial
families (long carry chains, all digits p-1, chains that stop one column early, column sums one
below a multiple of p, maximal products) plus seeded random inputs. `--inputs=FILE` checks the
operand lists in FILE instead (one JSON list of integers per line). Prints exact match, the number
checked and the first failing input; `--json` prints one JSON object. Exit status 0 when every
input passes, 1 when some fail, 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from arith_precision import formats, tasks
from arith_precision.simulate.policy import ACCUMULATIONS
from constructions import VARIANTS


def _read_inputs(path: str, spec: tasks.TaskSpec) -> list[list[int]]:
    out = []
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                ops = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: not JSON ({e.msg}): {line.strip()!r}") from None
            if not isinstance(ops, list) or not all(isinstance(x, int) and not isinstance(x, bool)
                                                    for x in ops):
                raise ValueError(f"{path}:{lineno}: expected a JSON list of integers, got "
                                 f"{line.strip()!r}")
            try:
                spec.exact_answer(ops)  # validates the count and the range
            except ValueError as e:
                raise ValueError(f"{path}:{lineno}: {e}") from None
            out.append(ops)
    if not out:
        raise ValueError(f"{path} holds no inputs")
    return out


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m constructions.verify", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", required=True, choices=tasks.TASKS)
    ap.add_argument("--base", type=int, required=True)
    ap.add_argument("--n", type=int, required=True)
    ap.add_argument("--k", type=int, default=None, help="operands (iter_add)")
    ap.add_argument("--l", type=int, default=None, help="answer digits (mul; default 2n)")
    ap.add_argument("--chunk", type=int, default=1, help="digits per token (tokenizer T_c)")
    ap.add_argument("--variant", default="log", choices=VARIANTS,
                    help="log (default; all tasks) or constant (ADD at constant precision)")
    ap.add_argument("--format", default="fp32", help="format string (fp32, bf16, e5m10, ...)")
    ap.add_argument("--accumulation", default="once", choices=ACCUMULATIONS)
    ap.add_argument("--inputs", default=None, help="file of operand lists, one JSON list a line")
    ap.add_argument("--random", type=int, default=1000, help="random inputs (built-in set)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--json", action="store_true")
    return ap


def spec_from_args(args) -> tasks.TaskSpec:
    if args.k is not None and args.task != "iter_add":
        raise ValueError(f"--k={args.k} only applies to --task=iter_add")
    if args.l is not None and args.task != "mul":
        raise ValueError(f"--l={args.l} only applies to --task=mul")
    return tasks.TaskSpec(args.task, base=args.base, n=args.n,
                          k=(3 if args.k is None else args.k) if args.task == "iter_add" else 2,
                          l=args.l, chunk=args.chunk)


def verify(spec: tasks.TaskSpec, fmt="fp32", accumulation="once", operands=None,
           num_random: int = 1000, seed: int = 0, batch_size: int = 256,
           variant: str = "log") -> dict:
    """Build the construction for `spec` and check it; returns the verifier's JSON object."""
    from constructions import build, inputs, run

    construction = build(spec, variant=variant)
    families = {"user": len(operands)} if operands is not None else None
    if operands is None:
        operands, families = inputs.verification_set(spec, num_random=num_random, seed=seed)
    run.enable_carrier(fmt)
    start = time.time()
    result = run.check(construction, operands, fmt, accumulation, batch_size)
    result.update(task=spec.task, variant=variant, base=spec.base, n=spec.n, chunk=spec.chunk,
                  k=spec.num_operands,
                  l=spec.answer_digits if spec.task == "mul" else None,
                  format=str(formats.as_format(fmt)), accumulation=accumulation,
                  families=families, d_model=construction.d_model,
                  num_layers=construction.config.num_layers, d_ff=construction.config.d_ff,
                  seconds=time.time() - start)
    return result


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    try:
        spec = spec_from_args(args)
        fmt = formats.as_format(args.format)
        if args.batch_size < 1 or args.random < 0:
            raise ValueError(f"--batch-size must be >= 1 and --random >= 0, got "
                             f"{args.batch_size}, {args.random}")
        operands = _read_inputs(args.inputs, spec) if args.inputs else None
        result = verify(spec, fmt, args.accumulation, operands, args.random, args.seed,
                        args.batch_size, args.variant)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result, default=str))
    else:
        print(f"{spec} format={result['format']} accumulation={args.accumulation}")
        print(f"construction ({args.variant} precision): {result['num_layers']} layers, "
              f"d_model={result['d_model']}, d_ff={result['d_ff']}")
        print(f"checked {result['checked']} inputs ({result['families']}): exact match "
              f"{result['exact_match']:.6f} ({result['failures']} failures) in "
              f"{result['seconds']:.1f}s")
        if result["first_failure"] is not None:
            d = result["first_failure_detail"]
            print(f"first failure: operands {d['operands']} expected {d['expected']} got tokens "
                  f"{d['got_tokens']}")
    return 0 if result["failures"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
