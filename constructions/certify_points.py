"""Certificates at every committed frontier point, against the measured widths.

    python -m constructions.certify_points [--out=results/certify/certify.json]

For each results/frontier/*/frontier.json entry and accumulation mode: the certified mantissa
bits (constructions.certify) next to the measured threshold, the measured widths that fail (old
binary-search runs measured only the widths their search visited: the threshold passes and the
one below it fails) and the gap. Rows feed the README table and tests/test_certify.py. Every
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
    out = ["| frontier run | n | accumulation | measured threshold | measured failing widths | "
           "certified | gap |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        fail = r["measured_failing"]
        shown = ("none" if not fail else str(fail[0]) if len(fail) == 1 else
                 f"{fail[0]}..{fail[-1]}" if fail == list(range(fail[0], fail[-1] + 1))
                 else ", ".join(map(str, fail)))
        if not r["full_scan"]:
            shown += " (binary search)"
        cert = "none up to 24" if r["certified"] is None else str(r["certified"])
        narrower = r.get("certified_narrower") or []
        if narrower:  # the bound is not monotone in M: narrower widths certified as well
            cert += " (also " + (f"{narrower[0]}..{narrower[-1]}" if narrower == list(
                range(narrower[0], narrower[-1] + 1)) else ", ".join(map(str, narrower))) + ")"
        gap = "" if r["gap"] is None else f"{r['gap']:+d}"
        measured = str(r["measured_threshold"])
        if r.get("stale"):
            measured += " (earlier construction)"
            gap = "n/a"
        out.append(f"| {r['dir']} | {r['n']} | {r['accumulation']} | {measured} "
                   f"| {shown} | {cert} | {gap} |")
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="results/certify/certify.json")
    ap.add_argument("--markdown", default=None,
                    help="render an existing --out file as a markdown table and exit")
    ap.add_argument("--refresh", action="store_true",
                    help="re-read the frontier runs and rewrite --out with the certificates it "
                         "already holds (a certificate depends on the spec, variant and "
                         "accumulation only), leaving out points not yet certified")
    args = ap.parse_args(argv)
    if args.refresh:
        with open(args.out) as fh:
            known = {_spec_key(r): r for r in json.load(fh)}
        rows = []
        for row in measured_points():
            old = known.get(_spec_key(row))
            if old is None:
                continue
            rows.append(_finish(row, old))
        _write(args.out, rows)
        return 0
    if args.markdown:
        with open(args.markdown) as fh:
            print(to_markdown(json.load(fh)))
        return 0
    # cheapest first: the O(n^2)-width constructions (constant-precision ADD, MUL: hundreds to
    # thousands of MLP units) after the rest
    rows = sorted(measured_points(),
                  key=lambda r: (r["task"] == "mul", r["variant"] == "constant", r["n"],
                                 r["dir"], r["accumulation"]))
    known = {}
    if os.path.exists(args.out):  # resume: a certificate depends on the spec only
        with open(args.out) as fh:
            known = {_spec_key(r): r for r in json.load(fh)}
    start = time.time()
    done = []
    for i, row in enumerate(rows):
        if _spec_key(row) in known:
            old = known[_spec_key(row)]
            if "seconds" in old:
                row["seconds"] = old["seconds"]
            done.append(_finish(row, old))
            continue
        t0 = time.time()
        result = certify(build(_spec(row), variant=row["variant"]), row["accumulation"],
                         exponent_search=False)
        _finish(row, {"certified": result["certified_mantissa_bits"],
                      "certified_narrower": result["certified_narrower"],
                      "exponent_bits": result["exponent_bits"],
                      "failure_below": result["failure_below"]})
        row["seconds"] = round(time.time() - t0, 1)
        m = row["measured_threshold"]
        elapsed = time.time() - start
        print(f"[{i + 1}/{len(rows)}] {row['dir']} n={row['n']} {row['accumulation']}: certified "
              f"{row['certified']} measured {m}{' (earlier construction)' if row['stale'] else ''}"
              f" in {row['seconds']}s (elapsed {elapsed:.0f}s, ETA "
              f"{elapsed / (i + 1) * (len(rows) - i - 1):.0f}s)", flush=True)
        done.append(row)
        _write(args.out, done)  # after every point: a partial run keeps what it computed
    return 0


def _write(path: str, rows: list[dict]) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as fh:
        json.dump(rows, fh, indent=1)
    with open(os.path.splitext(path)[0] + ".md", "w") as fh:
        fh.write(to_markdown(rows) + "\n")


if __name__ == "__main__":
    sys.exit(main())
