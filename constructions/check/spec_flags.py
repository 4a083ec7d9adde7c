"""The task-spec flags every constructions command takes, parsed and checked in one place.

    --task=add|iter_add|mul --base=P --n=N [--k=K] [--l=L] [--chunk=C] [--variant=...]

`add_spec_arguments` declares them (`--n` as one integer, or as a comma-separated list for the
frontier); `spec_kwargs` checks the flags that only some tasks take and returns the TaskSpec
keyword arguments without n (k defaults to 3 for iter_add); `spec_at(args, n)` builds the spec
at one size; every TaskSpec or construction ValueError becomes a `UsageError` naming the flag it
is about (`spec_error`), so a bad value is one line `error: --flag: value: why`.
"""

from __future__ import annotations

import argparse

from arith_precision import tasks
from arith_precision.common.cli_errors import UsageError
from constructions import VARIANTS

VARIANT_HELP = ("log (default; all tasks), constant (ADD at constant precision) or lookup "
                "(ADD / IterADD, width independent of n and k)")
DEFAULT_K = 3  # iter_add without --k
_SPEC_FLAGS = ("base", "n", "k", "l", "chunk")


def add_spec_arguments(ap: argparse.ArgumentParser, *, n_list: bool = False,
                       chunk: bool = True) -> None:
    """--task --base --n --k --l [--chunk] --variant on `ap`."""
    ap.add_argument("--task", required=True, choices=tasks.TASKS)
    ap.add_argument("--base", type=int, required=True)
    if n_list:
        ap.add_argument("--n", required=True, help="comma-separated list, e.g. 2,4,8,16")
    else:
        ap.add_argument("--n", type=int, required=True)
    ap.add_argument("--k", type=int, default=None,
                    help=f"operands (iter_add; default {DEFAULT_K})")
    ap.add_argument("--l", type=int, default=None, help="answer digits (mul; default 2n)")
    if chunk:
        ap.add_argument("--chunk", type=int, default=1, help="digits per token (tokenizer T_c)")
    ap.add_argument("--variant", default="log", choices=VARIANTS, help=VARIANT_HELP)


def spec_error(e: ValueError, args, default: str = "--task") -> UsageError:
    """A TaskSpec / construction ValueError as a UsageError naming the flag it is about."""
    message = str(e)
    first = message.split()[0].split("=")[0] if message.split() else ""
    if first in _SPEC_FLAGS:
        return UsageError(f"--{first}", getattr(args, first, None), message)
    if "T_c" in message or "chunk" in message or "vocabulary" in message:
        return UsageError("--chunk", getattr(args, "chunk", 1), message)
    if "variant" in message:
        return UsageError("--variant", args.variant, message)
    return UsageError(default, getattr(args, default[2:]), message)


def spec_kwargs(args) -> dict:
    """TaskSpec keyword arguments (all but n) of the flags; a UsageError for a flag the task
    does not take."""
    if args.k is not None and args.task != "iter_add":
        raise UsageError("--k", args.k, "only applies to --task=iter_add")
    if args.l is not None and args.task != "mul":
        raise UsageError("--l", args.l, "only applies to --task=mul")
    kwargs = {"task": args.task, "base": args.base,
              "k": (DEFAULT_K if args.k is None else args.k) if args.task == "iter_add" else 2,
              "l": args.l if args.task == "mul" else None}
    if getattr(args, "chunk", 1) != 1:
        kwargs["chunk"] = args.chunk
    return kwargs


def spec_at(args, n: int, kwargs: dict | None = None) -> tasks.TaskSpec:
    """The TaskSpec of the flags at size n (errors name --n with this size, via args.n)."""
    kwargs = spec_kwargs(args) if kwargs is None else kwargs
    try:
        return tasks.TaskSpec(n=n, **kwargs)
    except ValueError as e:
        args.n = n
        raise spec_error(e, args) from None


def spec_from_args(args) -> tasks.TaskSpec:
    """The TaskSpec of the flags (`--n` one integer)."""
    return spec_at(args, args.n)
