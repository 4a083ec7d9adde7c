"""Certificates at every committed frontier point, against the measured widths.

    python -m constructions.certify_points [--out=results/certify/certify.json]

For each results/frontier/*/frontier.json entry and accumulation mode: the certified mantissa
bits (constructions.certify) next to the measured threshold, the measured widths that fail (old
binary-search runs measured only the widths their search visited: the threshold passes and the
one below it fails) and the gap. Rows feed the README table and tests/test_certify.py.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import time

from arith_precision import tasks
from constructions import build
from constructions.certify import certify


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
                             "full_scan": checked is not None})
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="results/certify/certify.json")
    args = ap.parse_args(argv)
    rows = measured_points()
    start = time.time()
    for i, row in enumerate(rows):
        spec = tasks.TaskSpec(row["task"], base=row["base"], n=row["n"], k=row["k"], l=row["l"])
        result = certify(build(spec, variant=row["variant"]), row["accumulation"])
        row["certified"] = result["certified_mantissa_bits"]
        row["certified_narrower"] = result["certified_narrower"]
        row["exponent_bits"] = result["exponent_bits"]
        row["failure_below"] = result["failure_below"]
        m = row["measured_threshold"]
        row["gap"] = None if row["certified"] is None or m is None else row["certified"] - m
        elapsed = time.time() - start
        print(f"[{i + 1}/{len(rows)}] {row['dir']} n={row['n']} {row['accumulation']}: certified "
              f"{row['certified']} measured {m} (elapsed {elapsed:.0f}s, ETA "
              f"{elapsed / (i + 1) * (len(rows) - i - 1):.0f}s)", flush=True)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump(rows, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
