"""Certificates at every committed frontier point, against the measured widths.

    python -m constructions.certify.points [--out=results/certify/certify.json] [--refresh]
        [--frontier-root=results/frontier] [--markdown=FILE]

For each results/frontier/*/frontier.json entry and accumulation mode: the certified mantissa
bits (constructions.certify) next to the measured threshold, the measured widths that fail (old
binary-search runs measured only the widths their search visited: the threshold passes and the
one below it fails) and the gap. Rows feed the table of docs/certificates.md and
tests/constructions/test_certify.py. Every
width e8m0..e8m24 is analysed: the threshold and the narrower certified widths (the bound is not
monotone in M: e8m23 sums on a float32 carrier, e8m11..e8m22 on float64) are both compared with
the measured failures.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import time

from arith_precision import tasks
from arith_precision.common import atomic, cli_errors, markdown
from arith_precision.common.cli_errors import UsageError
from constructions import build
from constructions.certify.certificate import certify


def measured_points(root: str = "results/frontier") -> list[dict]:
    rows = []
    for path in sorted(glob.glob(os.path.join(root, "*", "frontier.json"))):
        data = json.load(open(path))
        s = data["spec"]
        for e in data["entries"]:
            for acc, m in e["float_mantissa_bits"].items():
                checked = e.get("float_checked", {}).get(acc)
                if checked is not None:
                    failing = sorted(int(w) for w, ok in checked.items() if not ok)
                else:  # binary search: the threshold passes and M - 1 was seen failing
                    failing = [m - 1] if m is not None and m > 0 else []
                rows.append({"dir": os.path.basename(os.path.dirname(path)), "task": s["task"],
                             "base": s["base"], "k": s["k"], "l": s["l"], "n": e["n"],
                             "variant": data.get("variant", "log"), "accumulation": acc,
                             "measured_threshold": m, "measured_failing": failing,
                             "full_scan": checked is not None,
                             "measured_d_model": e.get("d_model")})
    return rows


def _spec(row: dict) -> tasks.TaskSpec:
    return tasks.TaskSpec(row["task"], base=row["base"], n=row["n"], k=row["k"], l=row["l"])


def _finish(row: dict, cert: dict) -> dict:
    """The row with its certificate and gap. A frontier run made with an earlier version of
    the construction (its d_model is not the current build's: results/frontier/mul_b2) is
    marked `stale`: its measured widths are another network's, so no gap is computed (the
    certificate is of the current construction)."""
    row.update({k: cert[k] for k in ("certified", "certified_narrower", "exponent_bits",
                                     "failure_below")})
    current = build(_spec(row), variant=row["variant"]).config.d_model
    row["stale"] = row["measured_d_model"] is not None and row["measured_d_model"] != current
    m = row["measured_threshold"]
    row["gap"] = (None if row["certified"] is None or m is None or row["stale"]
                  else row["certified"] - m)
    return row


def _spec_key(row: dict) -> tuple:
    return tuple(row[k] for k in ("task", "base", "k", "l", "n", "variant", "accumulation"))


def to_markdown(rows: list[dict]) -> str:
    """One table: certified vs measured threshold and the gap, per committed frontier point."""
    lines = []
    for r in rows:
        fail = r["measured_failing"]
        shown = "none" if not fail else _widths(fail)
        if not r["full_scan"]:
            shown += " (binary search)"
        cert = "none up to 24" if r["certified"] is None else str(r["certified"])
        if r.get("certified_narrower"):  # the bound is not monotone in M: narrower ones too
            cert += f" (also {_widths(r['certified_narrower'])})"
        gap = "" if r["gap"] is None else f"{r['gap']:+d}"
        measured = str(r["measured_threshold"])
        if r.get("stale"):
            measured += " (earlier construction)"
            gap = "n/a"
        lines.append([r["dir"], r["n"], r["accumulation"], measured, shown, cert, gap])
    return "\n".join(markdown.table(
        ["frontier run", "n", "accumulation", "measured threshold", "measured failing widths",
         "certified", "gap"], lines))


def _widths(ws: list[int]) -> str:
    """"3" / "3..7" for a run of consecutive widths / "2, 5, 9" otherwise."""
    if len(ws) == 1:
        return str(ws[0])
    if ws == list(range(ws[0], ws[-1] + 1)):
        return f"{ws[0]}..{ws[-1]}"
    return ", ".join(map(str, ws))


def _parser() -> argparse.ArgumentParser:
    ap = cli_errors.ArgumentParser(prog="python -m constructions.certify.points",
                                   description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="results/certify/certify.json")
    ap.add_argument("--frontier-root", default="results/frontier",
                    help="the directory whose */frontier.json runs are certified")
    ap.add_argument("--markdown", default=None,
                    help="render an existing --out file as a markdown table and exit")
    ap.add_argument("--refresh", action="store_true",
                    help="re-read the frontier runs and rewrite --out with the certificates it "
                         "already holds (a certificate depends on the spec, variant and "
                         "accumulation only), leaving out points not yet certified")
    return ap


def _load(flag: str, path: str) -> list[dict]:
    try:
        with open(path) as fh:
            return json.load(fh)
    except (OSError, ValueError) as e:
        raise UsageError(flag, path, f"cannot be read as a certify.json ({e})") from None


def main(argv=None) -> int:
    return cli_errors.run_cli(lambda: _main(sys.argv[1:] if argv is None else argv))


def _main(argv) -> int:
    args = _parser().parse_args(argv)
    if args.markdown:
        print(to_markdown(_load("--markdown", args.markdown)))
        return 0
    if not os.path.isdir(args.frontier_root):
        raise UsageError("--frontier-root", args.frontier_root, "is not a directory")
    cli_errors.check_writable_dir("--out", os.path.dirname(os.path.abspath(args.out)))
    # cheapest first: the O(n^2)-width constructions (constant-precision ADD, MUL: hundreds to
    # thousands of MLP units) after the rest
    rows = sorted(measured_points(args.frontier_root),
                  key=lambda r: (r["task"] == "mul", r["variant"] == "constant", r["n"],
                                 r["dir"], r["accumulation"]))
    known = {}
    if args.refresh or os.path.exists(args.out):  # a certificate depends on the spec only
        old_rows = _load("--out", args.out)
        # the same point's row first (its own timing), else any row of the same spec
        known = {_spec_key(r): r for r in old_rows}
        known.update({(r["dir"], *_spec_key(r)): r for r in old_rows})
    # Every point already certified is finished first and written with every new one, so that
    # a run stopped anywhere (or one with nothing left to compute) keeps all of them.
    finished = {}
    for row in rows:
        old = known.get((row["dir"], *_spec_key(row)), known.get(_spec_key(row)))
        if old is not None:
            if "seconds" in old:
                row["seconds"] = old["seconds"]
            finished[id(row)] = _finish(row, old)
    todo = [] if args.refresh else [r for r in rows if id(r) not in finished]
    start = time.time()
    for i, row in enumerate(todo):
        t0 = time.time()
        result = certify(build(_spec(row), variant=row["variant"]), row["accumulation"],
                         exponent_search=False)
        _finish(row, {"certified": result["certified_mantissa_bits"],
                      "certified_narrower": result["certified_narrower"],
                      "exponent_bits": result["exponent_bits"],
                      "failure_below": result["failure_below"]})
        row["seconds"] = round(time.time() - t0, 1)
        finished[id(row)] = row
        elapsed = time.time() - start
        print(f"[{i + 1}/{len(todo)}] {row['dir']} n={row['n']} {row['accumulation']}: "
              f"certified {row['certified']} measured {row['measured_threshold']}"
              f"{' (earlier construction)' if row['stale'] else ''} in {row['seconds']}s "
              f"(elapsed {elapsed:.0f}s, ETA {elapsed / (i + 1) * (len(todo) - i - 1):.0f}s)",
              flush=True)
        _write(args.out, [finished[id(r)] for r in rows if id(r) in finished])
    _write(args.out, [finished[id(r)] for r in rows if id(r) in finished])
    return 0


def _write(path: str, rows: list[dict]) -> None:
    atomic.write_json(path, rows, indent=1)
    atomic.write_text(os.path.splitext(path)[0] + ".md", to_markdown(rows) + "\n")


if __name__ == "__main__":
    sys.exit(main())
