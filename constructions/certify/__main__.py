"""The certificate's command line: `python -m constructions.certify` (what it proves:
`certificate.py`).

    python -m constructions.certify --task=add --base=10 --n=8 [--k=K] [--l=L] [--variant=log]
        [--accumulation=once|sequential] [--exponent-bits=8] [--json] [--explain]

Exit status: 0 certified (1 when no width up to 24 is), 2 bad input (one line).
"""

from __future__ import annotations

import argparse
import json
import sys

from arith_precision import tasks
from arith_precision.common import cli_errors
from arith_precision.common.cli_errors import UsageError
from constructions import build
from constructions.certify import certificate
from constructions.certify.certificate import ACCUMULATIONS, MAX_MANTISSA, certify, explain
from constructions.check.spec_flags import add_spec_arguments, spec_from_args


def _parser() -> argparse.ArgumentParser:
    ap = cli_errors.ArgumentParser(prog="python -m constructions.certify",
                                   description=certificate.__doc__ + "\n" + __doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    add_spec_arguments(ap, chunk=False)
    ap.add_argument("--accumulation", default="once", choices=ACCUMULATIONS)
    ap.add_argument("--exponent-bits", type=int, default=8)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--explain", action="store_true")
    return ap


def _spec(args) -> tasks.TaskSpec:
    if not 2 <= args.exponent_bits <= 8:
        raise UsageError("--exponent-bits", args.exponent_bits,
                         "must be in 2..8 (the certificate scans e{E}m0..e{E}m24)")
    if args.variant == "constant" and args.task != "add":
        raise UsageError("--variant", args.variant, "the constant variant exists for add only")
    return spec_from_args(args)


def _main(argv) -> int:
    args = _parser().parse_args(argv)
    spec = _spec(args)
    try:
        construction = build(spec, variant=args.variant)
    except ValueError as e:
        raise UsageError("--task", args.task, str(e)) from None
    result = certify(construction, args.accumulation, args.exponent_bits)
    if args.json:
        print(json.dumps(result))
    elif args.explain:
        print(explain(result))
    else:
        m = result["certified_mantissa_bits"]
        print(f"{result['spec']} [{args.accumulation}]: certified "
              + (f"{result['format']} (M >= {m}"
                 + (f"; also M in {result['certified_narrower']}" if result["certified_narrower"]
                    else "") + ")" if m is not None else f"no width up to e8m{MAX_MANTISSA}"))
    if args.explain and args.json:
        print(explain(result), file=sys.stderr)
    return 0 if result["certified_mantissa_bits"] is not None else 1


def main(argv=None) -> int:
    return cli_errors.run_cli(lambda: _main(argv))


if __name__ == "__main__":
    sys.exit(main())
