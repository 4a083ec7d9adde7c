"""Verify a construction exactly against Python integers, at any format and accumulation.

    python -m constructions.verify --task=add|iter_add|mul --base=P --n=N [--k=K] [--l=L]
        [--chunk=C] [--variant=log|constant|lookup] [--format=F] [--random=1000]
        [--accumulation=once|sequential|pairwise] [--inputs=FILE] [--json] [--seed=0]
        [--checks=DIR [--shard=I/M]] [--prefill-chunk=C]

The built-in input set is exhaustive when there are at most 10^5 inputs, else adversarial
families (long carry chains, all digits p-1, chains that stop one column early, column sums one
below a multiple of p, maximal products) plus seeded random inputs. `--inputs=FILE` checks the
operand lists in FILE instead (one JSON list of integers per line). Prints exact match, the number
checked and the first failing input; `--json` prints one JSON object. Progress (inputs checked,
failures so far, elapsed, ETA) goes to stderr after a batch, at most every 20 s. `--checks=DIR`
keeps each batch's verdict in DIR/checks.json (keyed by digests of the weights and the batch's
inputs, `check/log.py`): the same command run again skips the batches that passed. With
`--shard=I/M` only batches I, I + M, ... are checked, so M processes sharing DIR split one check
(on a CPU, single-threaded shards can beat one multi-threaded process); the command without
--shard then reuses their verdicts and reports the whole set. Exit status 0
when every input passes, 1 when some fail (or on an internal error, with its traceback), 2 on bad
input: one line `error: <flag>: <value>: <why>`, before any work. Sizes: the estimated memory
(`constructions/check/sizes.py`: parameters, attention heads x T^2 and MLP activations per batch
element, the inputs) must stay within 16 GiB (ARITH_PRECISION_MAX_MEMORY_GB); n is rejected when
one example does not fit, --batch-size when the batch does not.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

from arith_precision import formats, tasks
from arith_precision.common.cli_errors import (
    ArgumentParser,
    UsageError,
    memory_limit_bytes,
    run_cli,
)
from arith_precision.simulate.policy import ACCUMULATION_FORMS, check_accumulation
from constructions.check.spec_flags import add_spec_arguments, spec_error, spec_from_args


def _read_inputs(path: str, spec: tasks.TaskSpec) -> list[list[int]]:
    """The operand lists of `path`; any problem is a UsageError naming --inputs and the line."""
    try:
        size = os.path.getsize(path)
        if os.path.isdir(path):
            raise UsageError("--inputs", path, "is a directory")
        if 16 * size > memory_limit_bytes():  # Python ints and lists: ~16x the text
            raise UsageError("--inputs", path, f"is {size} bytes: too large to hold in memory")
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise UsageError("--inputs", path, f"cannot be read ({e.strerror or e})") from None
    except UnicodeDecodeError as e:
        raise UsageError("--inputs", path, f"is not a UTF-8 text file (byte "
                         f"{e.object[e.start]:#04x} at offset {e.start})") from None
    out = []
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            ops = json.loads(line)
        except ValueError as e:
            raise UsageError("--inputs", where, f"not JSON ({getattr(e, 'msg', e)}): "
                             f"{line.strip()[:80]!r}") from None
        if not isinstance(ops, list) or not all(isinstance(x, int) and not isinstance(x, bool)
                                                for x in ops):
            raise UsageError("--inputs", where, f"expected a JSON list of integers, got "
                             f"{line.strip()[:80]!r}")
        try:
            spec.exact_answer(ops)  # validates the count and the range
        except ValueError as e:
            raise UsageError("--inputs", where, str(e)) from None
        out.append(ops)
    if not out:
        raise UsageError("--inputs", path, "holds no inputs")
    return out


class Progress:
    """`progress(checked, total, failures)` for `verify`: a line with the elapsed time and an ETA
    on `stream`, after a batch, at most every `every` seconds. The rate is measured from the
    first call on (so neither the first batch's compile nor batches reused from a checks log
    count as checking speed)."""

    def __init__(self, every: float = 20.0, stream=None):
        self.every, self.stream = every, stream
        self.start = self.last = time.time()
        self.base = None  # (time, checked) of the first call

    def __call__(self, checked: int, total: int, failures: int) -> None:
        now = time.time()
        if self.base is None:
            self.base = (now, checked)
        if now - self.last < self.every or checked >= total:
            return
        self.last = now
        since, done = now - self.base[0], checked - self.base[1]
        eta = f"{since / done * (total - checked):.0f}s" if done > 0 else "pending"
        print(f"checked {checked}/{total} inputs, {failures} failures; elapsed "
              f"{now - self.start:.0f}s, ETA {eta}", file=self.stream or sys.stderr, flush=True)


def parser() -> argparse.ArgumentParser:
    ap = ArgumentParser(prog="python -m constructions.verify", description=__doc__,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    add_spec_arguments(ap)
    ap.add_argument("--format", default="fp32", help="format string (fp32, bf16, e5m10, ...)")
    ap.add_argument("--accumulation", default="once",
                    help=f"one of {', '.join(ACCUMULATION_FORMS)}")
    ap.add_argument("--inputs", default=None, help="file of operand lists, one JSON list a line")
    ap.add_argument("--random", type=int, default=None,
                    help="random inputs of the built-in set (default 1000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--prefill-chunk", type=int, default=None,
                    help="feed prompts through the KV cache this many tokens at a time "
                         "(attention memory C x T instead of T x T; for very long prompts)")
    ap.add_argument("--checks", default=None,
                    help="directory of checks.json: each batch's verdict, reused by a rerun")
    ap.add_argument("--shard", default=None,
                    help="I/M: check only batches I, I + M, I + 2M, ... (M processes sharing "
                         "--checks split one check; rerun without --shard for the whole result)")
    return ap


def check_format(flag: str, text: str):
    """The format of `text` (and its carrier switched on); a UsageError naming `flag`."""
    from constructions.check import run

    try:
        fmt = formats.as_format(text)
        run.enable_carrier(fmt)
    except ValueError as e:
        raise UsageError(flag, text, str(e)) from None
    return fmt


def verify(spec: tasks.TaskSpec, fmt="fp32", accumulation="once", operands=None,
           num_random: int = 1000, seed: int = 0, batch_size: int = 256,
           variant: str = "log", construction=None, progress=None,
           checks_dir: str | None = None, prefill_chunk: int | None = None,
           shard: tuple[int, int] | None = None) -> dict:
    """Build the construction for `spec` (unless given) and check it; returns the verifier's
    JSON object. `operands`: operand lists to check instead of the built-in set (None); an empty
    list raises ValueError (zero failures over no inputs would claim nothing). The reference is
    Python integer arithmetic (`run.check`). `progress(checked, total, failures)`: called after
    each batch. `checks_dir`: record each batch's verdict in checks_dir/checks.json
    (`check_log`) and count a batch that passed before without checking it again (a stopped run
    resumes; "reused" in the result says how many inputs were). A batch that failed is checked
    again, for its details. `prefill_chunk`: prompts go through the KV cache this many tokens
    at a time (attention memory C x T instead of T x T per head; `decode.greedy_decode`).
    `shard` = (I, M) (needs `checks_dir`): only the batches whose index is I mod M, so that M
    processes sharing `checks_dir` split one check; the result ("shard": "I/M") counts those
    batches only, and the same call without `shard` then reuses every verdict."""
    from constructions import build
    from constructions.check import inputs, run

    if operands is not None and len(operands) == 0:
        raise ValueError("operands: empty list; give at least one operand list, or None for "
                         "the built-in input set")
    if shard is not None and (checks_dir is None or len(shard) != 2
                              or not 0 <= shard[0] < shard[1]):
        raise ValueError(f"shard={shard!r}: expected (I, M) with 0 <= I < M, and a checks_dir "
                         f"that the shards share")
    construction = construction or build(spec, variant=variant)
    families = {"user": len(operands)} if operands is not None else None
    if operands is None:
        operands, families = inputs.verification_set(spec, num_random=num_random, seed=seed)
    run.enable_carrier(fmt)
    start = time.time()
    if checks_dir is None:
        result = run.check(construction, operands, fmt, accumulation, batch_size,
                           progress=progress, prefill_chunk=prefill_chunk)
        result["reused"] = 0
    else:
        result = _check_resuming(construction, operands, fmt, accumulation, batch_size,
                                 progress, checks_dir, prefill_chunk, shard or (0, 1))
    result.update(task=spec.task, variant=variant, base=spec.base, n=spec.n, chunk=spec.chunk,
                  k=spec.num_operands,
                  l=spec.answer_digits if spec.task == "mul" else None,
                  format=str(formats.as_format(fmt)), accumulation=accumulation,
                  families=families, d_model=construction.d_model,
                  num_layers=construction.config.num_layers, d_ff=construction.config.d_ff,
                  prefill_chunk=prefill_chunk, shard=shard and f"{shard[0]}/{shard[1]}",
                  seconds=time.time() - start)
    return result


def _check_resuming(construction, operands, fmt, accumulation, batch_size, progress,
                    checks_dir, prefill_chunk, shard) -> dict:
    """`run.check` batch by batch, each verdict kept in `checks_dir`; the batches of `shard`
    (I, M) only (see `verify`)."""
    from constructions.check import log as check_log
    from constructions.check import run

    log = check_log.CheckLog(checks_dir)
    digest = check_log.construction_digest(construction)
    index, count = shard
    batches = [operands[i:i + batch_size] for i in range(0, len(operands), batch_size)]
    if index >= len(batches):
        raise ValueError(f"shard={index}/{count}: the {len(operands)} inputs make "
                         f"{len(batches)} batches, so this shard would check none")
    batches = batches[index::count]
    total = sum(len(b) for b in batches)
    keys = [check_log.key(digest, check_log.operands_digest(b), fmt, accumulation,
                          prefill_chunk) for b in batches]
    known = [log.get(k) is True for k in keys]
    checked = reused = sum(len(b) for b, ok in zip(batches, known, strict=True) if ok)
    failures, first = 0, None
    if progress is not None:
        progress(checked, total, 0)
    for batch, key, ok in zip(batches, keys, known, strict=True):
        if ok:
            continue
        result = run.check(construction, batch, fmt, accumulation, batch_size,
                           prefill_chunk=prefill_chunk)
        log.record(key, result["failures"] == 0)
        checked += len(batch)
        failures += result["failures"]
        first = first or result["first_failure_detail"]
        if progress is not None:
            progress(checked, total, failures)
    return {"exact_match": (checked - failures) / max(checked, 1), "checked": checked,
            "failures": failures, "first_failure": first and first["operands"],
            "first_failure_detail": first, "reused": reused}


def _parse_shard(text: str | None, checks: str | None) -> tuple[int, int] | None:
    """--shard=I/M as (I, M), 0 <= I < M; it needs --checks (where the shards meet)."""
    if text is None:
        return None
    parts = text.split("/")
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise UsageError("--shard", text, "expected I/M with integers 0 <= I < M, e.g. 0/2")
    index, count = int(parts[0]), int(parts[1])
    if not 0 <= index < count:
        raise UsageError("--shard", text, f"expected 0 <= I < M, got I={index}, M={count}")
    if checks is None:
        raise UsageError("--shard", text, "needs --checks=DIR, where the shards' verdicts meet")
    return index, count


def main(argv=None) -> int:
    return run_cli(lambda: _main(argv))


def _main(argv) -> int:
    from constructions import build
    from constructions.check import inputs, sizes

    args = parser().parse_args(argv)
    spec = spec_from_args(args)
    fmt = check_format("--format", args.format)
    try:
        check_accumulation(args.accumulation)
    except ValueError as e:
        raise UsageError("--accumulation", args.accumulation, str(e)) from None
    if args.batch_size < 1:
        raise UsageError("--batch-size", args.batch_size, "must be >= 1")
    if args.inputs is not None and args.random is not None:
        raise UsageError("--random", args.random, "does not apply with --inputs")
    args.random = 1000 if args.random is None else args.random
    if args.random < 0:
        raise UsageError("--random", args.random, "must be >= 0")
    if args.seed < 0:
        raise UsageError("--seed", args.seed, "must be >= 0")
    if args.prefill_chunk is not None and args.prefill_chunk < 1:
        raise UsageError("--prefill-chunk", args.prefill_chunk, "must be >= 1")
    if args.checks is not None:
        from constructions.check import log as check_log

        check_log.check_cli_dir("--checks", args.checks)
    shard = _parse_shard(args.shard, args.checks)
    # (p^n)^k in log space first: the exact count of n = 10^9 would itself never finish.
    exhaustive = (spec.n * spec.num_operands * math.log10(spec.base) < 6
                  and inputs.exhaustive_count(spec) <= inputs.EXHAUSTIVE_LIMIT)
    num_inputs = (0 if args.inputs else inputs.exhaustive_count(spec) if exhaustive
                  else args.random + inputs.adversarial_bound(spec))  # --inputs: checked below
    sizes.check(spec, sizes.lower_bound_widths(spec, args.variant), args.batch_size, num_inputs,
                args.variant, ("--random", args.random), args.prefill_chunk)
    try:
        construction = build(spec, variant=args.variant)  # also checks the T_c layout, variant
    except ValueError as e:
        raise spec_error(e, args) from None
    operands = _read_inputs(args.inputs, spec) if args.inputs else None
    sizes.check(spec, sizes.construction_widths(construction), args.batch_size,
                len(operands) if operands is not None else num_inputs, args.variant,
                ("--inputs", args.inputs) if operands is not None else ("--random", args.random),
                args.prefill_chunk)
    try:
        result = verify(spec, fmt, args.accumulation, operands, args.random, args.seed,
                        args.batch_size, args.variant, construction=construction,
                        progress=Progress(), checks_dir=args.checks,
                        prefill_chunk=args.prefill_chunk, shard=shard)
    except ValueError as e:
        if not str(e).startswith("shard="):
            raise
        raise UsageError("--shard", args.shard, str(e).split(": ", 1)[1]) from None
    if args.json:
        print(json.dumps(result, default=str))
    else:
        print(f"{spec} format={result['format']} accumulation={args.accumulation}")
        kind = ("lookup: width independent of n and k" if args.variant == "lookup"
                else f"{args.variant} precision")
        print(f"construction ({kind}): {result['num_layers']} layers, "
              f"d_model={result['d_model']}, d_ff={result['d_ff']}")
        reused = f", {result['reused']} of them passed in {args.checks}" if result["reused"] else ""
        part = f"shard {args.shard} of " if shard else ""
        print(f"checked {result['checked']} inputs ({part}{result['families']}{reused}): "
              f"exact match {result['exact_match']:.6f} ({result['failures']} failures) in "
              f"{result['seconds']:.1f}s")
        if result["first_failure"] is not None:
            d = result["first_failure_detail"]
            print(f"first failure: operands {d['operands']} expected {d['expected']} got tokens "
                  f"{d['got_tokens']}")
    return 0 if result["failures"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
