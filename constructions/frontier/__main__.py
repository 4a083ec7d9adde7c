"""The frontier's command line: `python -m constructions.frontier` (see `search.py` for what it
measures, `report.py` for its tables and plot).

    python -m constructions.frontier --task=add --base=10 --n=2,4,8,16,32,64 [--k=K] [--l=L]
        [--chunk=C] [--accumulation=once,sequential] [--random=200] [--out=DIR] [--json]
        [--float-only]
    python -m constructions.frontier --merge=DIR1,DIR2,... --out=DIR

Exit status: 0 done, 1 internal error (with its traceback), 2 bad input: one line
`error: <flag>: <value>: <why>`, before the search starts; that includes an --out directory that
cannot be written and, for every n of the list, a construction whose estimated memory
(`constructions/check/sizes.py`, at --batch-size) is over 16 GiB (ARITH_PRECISION_MAX_MEMORY_GB).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from arith_precision.common import atomic, cli_errors
from arith_precision.common.cli_errors import UsageError
from arith_precision.simulate.policy import ACCUMULATION_FORMS, is_accumulation
from constructions import build
from constructions.check import inputs, sizes
from constructions.check import log as check_log
from constructions.check.spec_flags import add_spec_arguments, spec_at, spec_error, spec_kwargs
from constructions.frontier import search
from constructions.frontier.report import merge, plot, to_markdown


def _parser() -> argparse.ArgumentParser:
    ap = cli_errors.ArgumentParser(prog="python -m constructions.frontier",
                                   description=search.__doc__ + "\n" + __doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    add_spec_arguments(ap, n_list=True)
    ap.add_argument("--accumulation", default="once,sequential")
    ap.add_argument("--random", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--out", default=None, help="directory for frontier.{json,md,png}")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--float-only", action="store_true",
                    help="only the e8mM scan (and bf16 = e8m7): no fixed point, fp16, e4m3, e5m2")
    return ap


def validate(args) -> tuple[dict, list[int], list[str]]:
    """(spec kwargs, sizes, accumulations) of the flags; a UsageError for the first bad one,
    including sizes that cannot fit and an --out that cannot be written."""
    ns = cli_errors.int_list("--n", args.n, lo=1)
    if len(set(ns)) != len(ns):
        raise UsageError("--n", args.n, "lists a size twice")
    accs = [a.strip() for a in args.accumulation.split(",")]
    bad = [a for a in accs if not is_accumulation(a)]
    if bad:
        raise UsageError("--accumulation", args.accumulation,
                         f"{bad[0]!r} is not one of {', '.join(ACCUMULATION_FORMS)}")
    if len(set(accs)) != len(accs):
        raise UsageError("--accumulation", args.accumulation, "lists a mode twice")
    kwargs = spec_kwargs(args)
    for flag, value, lo in (("--random", args.random, 0), ("--seed", args.seed, 0),
                            ("--batch-size", args.batch_size, 1)):
        cli_errors.check_int(flag, value, lo)
    for n in sorted(ns):  # every size (its T_c layout, its memory) before the (long) search
        spec = spec_at(args, n, kwargs)
        args.n = n  # spec_error names --n with this size
        num_inputs = args.random + inputs.adversarial_bound(spec)
        sizes.check(spec, sizes.lower_bound_widths(spec, args.variant), args.batch_size,
                    num_inputs, args.variant, ("--random", args.random))
        try:
            construction = build(spec, variant=args.variant)
        except ValueError as e:
            raise spec_error(e, args) from None
        sizes.check(spec, sizes.construction_widths(construction), args.batch_size, num_inputs,
                    args.variant, ("--random", args.random))
    if args.out:
        check_log.check_cli_dir("--out", args.out)  # the verdicts a resumed run reuses
    return kwargs, ns, accs


def main(argv=None) -> int:
    return cli_errors.run_cli(lambda: _main(sys.argv[1:] if argv is None else argv))


def _main(argv) -> int:
    if any(a.startswith("--merge") for a in argv):
        mp = cli_errors.ArgumentParser(prog="python -m constructions.frontier --merge")
        mp.add_argument("--merge", required=True, help="comma-separated --out directories")
        mp.add_argument("--out", required=True)
        margs = mp.parse_args(argv)
        dirs = [d for d in margs.merge.split(",") if d.strip()]
        if not dirs:
            raise UsageError("--merge", margs.merge, "lists no directories")
        print(merge(dirs, margs.out))
        return 0
    args = _parser().parse_args(argv)
    kwargs, ns, accs = validate(args)
    log = (lambda *a: print(*a, file=sys.stderr)) if args.json else print
    result = search.run_frontier(kwargs, ns, accs, args.random, args.seed, args.batch_size, log,
                          variant=args.variant, float_only=args.float_only,
                          checks_dir=args.out)
    markdown = to_markdown(result)
    if args.out:
        atomic.write_json(os.path.join(args.out, "frontier.json"), result, indent=1)
        atomic.write_text(os.path.join(args.out, "frontier.md"), markdown + "\n")
        plot([result], os.path.join(args.out, "frontier.png"))
    print(json.dumps(result) if args.json else markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
