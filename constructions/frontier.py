"""The precision frontier: the fewest bits for which a construction is still exact, against n.

    python -m constructions.frontier --task=add --base=10 --n=2,4,8,16,32,64 [--k=K] [--l=L]
        [--chunk=C] [--accumulation=once,sequential] [--random=200] [--out=DIR] [--json]

For each n and accumulation mode it finds, by binary search, the fewest mantissa bits M such
that the verifier passes on its full input set (exhaustive or adversarial + `--random` random
inputs) in the float format e{E}m{M} (E = 8 exponent bits, float32's range, large enough for
every construction value), and the fewest fraction bits F of fixed point fixed{I}.{F} (I = the
integer bits the construction's largest value needs at that n, measured). The search assumes the
verifier passes for every width above the frontier and checks it at the two ends: the reported M
passes and M - 1 fails. It also reports, for each common format (bf16, fp16, e4m3, e5m2), the
largest n of the list at which it still passes (sizes are visited in increasing order; a format
is not re-checked at larger n once it has failed, and the searches start from the previous n's
answer).

Outputs (with --out): frontier.json, frontier.md (tables) and frontier.png (bits against log2 n
with a least-squares line per mode). Without --out it prints the markdown tables (or the JSON
with --json). `python -m constructions.frontier --merge=DIR1,DIR2,... --out=DIR` combines several
runs into one table file and one plot.

Exit status: 0 done, 1 internal error (with its traceback), 2 bad input: one line
`error: <flag>: <value>: <why>`, before the search starts; that includes an --out directory that
cannot be written and, for every n of the list, a construction whose estimated memory
(`constructions/sizes.py`, at --batch-size) is over 16 GiB (ARITH_PRECISION_MAX_MEMORY_GB).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import numpy as np

from arith_precision import cli_errors, tasks
from arith_precision import model as model_lib
from arith_precision.cli_errors import UsageError
from arith_precision.simulate.policy import ACCUMULATIONS
from constructions import VARIANTS

EXPONENT_BITS = 8
MAX_MANTISSA = 24  # e8m24 is the widest a float64 carrier simulates exactly
MAX_FIXED_BITS = 25  # I + F on a float64 carrier
COMMON_FORMATS = ("bf16", "fp16", "e4m3", "e5m2")


_CACHE: dict = {}


def _passes(construction, operands, fmt, accumulation, batch_size) -> bool:
    """Does the verifier pass on `operands`? Cached per (construction, format, accumulation)."""
    from arith_precision import formats
    from constructions import run

    # Keyed by the task spec and the model config (which tells the variants apart), never by
    # id(): a later construction may reuse a freed id.
    key = (construction.spec, construction.config, hash(tuple(map(tuple, operands))),
           str(formats.as_format(fmt)), accumulation)
    if key not in _CACHE:
        run.enable_carrier(fmt)
        result = run.check(construction, operands, fmt, accumulation, batch_size,
                           stop_at_first_failure=True)
        _CACHE[key] = result["failures"] == 0
    return _CACHE[key]


def _search(passes, lo: int, hi: int) -> int | None:
    """Smallest b in [lo, hi] with passes(b), assuming monotonicity; None if passes(hi) fails."""
    if not passes(hi):
        return None
    while lo < hi:
        mid = (lo + hi) // 2
        if passes(mid):
            hi = mid
        else:
            lo = mid + 1
    return lo


def _search_from(passes, start: int, lo: int, hi: int) -> int | None:
    """Like `_search`, walking from a guess (the previous n's answer): usually 2 checks."""
    start = min(max(start, lo), hi)
    if passes(start):
        while start > lo and passes(start - 1):
            start -= 1
        return start
    while start < hi:
        start += 1
        if passes(start):
            return start
    return None


def integer_bits(construction, operands) -> int:
    """Integer bits (sign excluded) for the largest |value| of a float64 run: scores, residuals."""
    import jax
    import jax.numpy as jnp

    from constructions import run

    run.enable_carrier("e11m24")
    config = construction.config
    cfg64 = model_lib.TransformerConfig(**{**config.__dict__, "dtype": jnp.float64,
                                           "param_dtype": jnp.float64})
    params = jax.tree.map(lambda a: np.asarray(a, np.float64), construction.params)
    spec = construction.spec
    batch = tasks.batch_from_operands(spec, operands[:64])
    tokens = np.concatenate([batch.input_tokens, batch.answer_tokens[:, :-1]], axis=1)
    _, residuals = model_lib.Transformer(cfg64).apply({"params": params}, tokens,
                                                      return_residuals=True)
    largest = max(float(np.max(np.abs(np.asarray(v)))) for v in residuals.values())
    largest = max(largest, max(float(np.max(np.abs(a))) for a in jax.tree.leaves(params)))
    # Attention scores: |q.k| <= |q| |k| per head; bound by the products of the largest entries.
    for layer in range(config.num_layers):
        x = np.asarray(residuals["embed" if layer == 0 else f"layer_{layer - 1}/mlp"])
        attn = params[f"layer_{layer}"]["attn"]
        q = np.einsum("bld,dhk->blhk", x, attn["query"]["kernel"]) + attn["query"]["bias"]
        k = np.einsum("bld,dhk->blhk", x, attn["key"]["kernel"]) + attn["key"]["bias"]
        scores = np.einsum("blhk,bmhk->bhlm", q, k) / math.sqrt(config.effective_head_dim)
        largest = max(largest, float(np.max(np.abs(scores))))
    return max(1, math.ceil(math.log2(largest + 1)) + 1)


def frontier_for(spec: tasks.TaskSpec, accumulations=("once", "sequential"),
                 num_random: int = 200, seed: int = 0, batch_size: int = 512,
                 progress=print, previous: dict | None = None, variant: str = "log") -> dict:
    """Frontier entries for one spec: float mantissa bits, fixed fraction bits, common formats.

    `previous` (the entry of the next smaller n) warm-starts the searches, and a common format
    that already failed there is not checked again (recorded as failing, "not re-checked").
    Every reported minimum is still checked at both ends (M passes, M - 1 fails).
    """
    from constructions import build, inputs

    construction = build(spec, variant=variant)
    operands, families = inputs.verification_set(spec, num_random=num_random, seed=seed)
    entry = {"n": spec.n, "checked": len(operands), "families": families,
             "d_model": construction.d_model, "float_mantissa_bits": {},
             "fixed": {}, "common": {}}
    int_bits = integer_bits(construction, operands)
    for acc in accumulations:
        start = time.time()
        def float_ok(b, acc=acc):
            return _passes(construction, operands, f"e{EXPONENT_BITS}m{b}", acc, batch_size)

        prev_m = previous["float_mantissa_bits"].get(acc) if previous else None
        m = (_search_from(float_ok, prev_m, 1, MAX_MANTISSA) if prev_m is not None
             else _search(float_ok, 1, MAX_MANTISSA))
        if m is not None and m > 1:  # the end check: one bit fewer must fail
            assert not _passes(construction, operands, f"e{EXPONENT_BITS}m{m - 1}", acc,
                               batch_size), (spec, acc, m)
        entry["float_mantissa_bits"][acc] = m
        max_frac = MAX_FIXED_BITS - int_bits
        def fixed_ok(b, acc=acc):
            return _passes(construction, operands, f"fixed{int_bits}.{b}", acc, batch_size)

        prev_f = previous["fixed"][acc]["frac_bits"] if previous else None
        if max_frac < 1:
            f = None
        elif prev_f is not None:
            f = _search_from(fixed_ok, prev_f, 1, max_frac)
        else:
            f = _search(fixed_ok, 1, max_frac)
        entry["fixed"][acc] = {"int_bits": int_bits, "frac_bits": f}
        entry["common"][acc] = {
            fmt: (False if previous and not previous["common"][acc][fmt]
                  else _passes(construction, operands, fmt, acc, batch_size))
            for fmt in COMMON_FORMATS}
        progress(f"  {spec.task} p={spec.base} n={spec.n} [{acc}]: float M={m}, fixed "
                 f"{int_bits}.{f}, common {entry['common'][acc]} ({time.time() - start:.0f}s)")
    return entry


def fit_line(ns, bits) -> tuple[float, float] | None:
    """Least-squares bits = a log2(n) + b over the entries that have a value."""
    pts = [(math.log2(n), b) for n, b in zip(ns, bits, strict=True) if b is not None]
    if len(pts) < 2:
        return None
    x, y = np.array(pts).T
    a, b = np.polyfit(x, y, 1)
    return float(a), float(b)


def to_markdown(result: dict) -> str:
    lines = []
    for acc in result["accumulations"]:
        lines.append(f"**{result['label']}, accumulation `{acc}`**\n")
        lines.append("| n | log2 n | float mantissa bits (e8mM) | fixed point (I.F) | checked |")
        lines.append("|---|---|---|---|---|")
        for e in result["entries"]:
            fx = e["fixed"][acc]
            fixed = (f"fixed{fx['int_bits']}.{fx['frac_bits']}" if fx["frac_bits"] is not None
                     else f"none with I={fx['int_bits']}, I+F <= {MAX_FIXED_BITS}")
            m = e["float_mantissa_bits"][acc]
            lines.append(f"| {e['n']} | {math.log2(e['n']):.2f} | "
                         f"{m if m is not None else '> ' + str(MAX_MANTISSA)} | {fixed} | "
                         f"{e['checked']} |")
        fit = result["fits"].get(acc)
        if fit:
            lines.append(f"\nFitted: mantissa bits ~ {fit[0]:.2f} log2 n + {fit[1]:.2f}\n")
        lines.append("\n| format | largest n of the list that passes |")
        lines.append("|---|---|")
        for fmt in COMMON_FORMATS:
            ok = [e["n"] for e in result["entries"] if e["common"][acc][fmt]]
            fails = [e["n"] for e in result["entries"] if not e["common"][acc][fmt]]
            if not ok:
                text = f"fails at every n tested (from n={min(fails)})"
            else:
                text = str(max(ok)) + (f" (fails from n={min(n for n in fails if n > max(ok))})"
                                       if any(n > max(ok) for n in fails) else " (passes all)")
            lines.append(f"| {fmt} | {text} |")
        lines.append("")
    return "\n".join(lines)


def plot(results: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    many = len(results) > 2
    fig, ax = plt.subplots(figsize=(11, 5.2) if many else (6.5, 4.2))
    for result in results:
        ns = [e["n"] for e in result["entries"]]
        for acc, style in zip(result["accumulations"], ("o-", "s--", "^:"), strict=False):
            bits = [e["float_mantissa_bits"][acc] for e in result["entries"]]
            pts = [(math.log2(n), b) for n, b in zip(ns, bits, strict=True) if b is not None]
            if not pts:
                continue
            x, y = zip(*pts, strict=True)
            line = ax.plot(x, y, style, label=f"{result['label']} ({acc})")[0]
            fit = result["fits"].get(acc)
            if fit:
                xs = np.linspace(min(x), max(x), 20)
                ax.plot(xs, fit[0] * xs + fit[1], color=line.get_color(), alpha=0.35, lw=3,
                        label=f"fit {round(fit[0], 2) + 0.0:.2f} log2 n + {fit[1]:.1f}")
    for name, m in (("bf16", 7), ("fp16", 10), ("e4m3/e5m2", 3)):
        ax.axhline(m, color="gray", lw=0.6, ls=":")
        ax.text(ax.get_xlim()[0], m + 0.2, name, fontsize=7, color="gray")
    ax.set_xlabel("log2 n")
    ax.set_ylabel("fewest mantissa bits that stay exact")
    ax.set_title("Precision frontier of the constructions")
    if many:  # beside the axes, where it cannot hide a curve
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    else:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_frontier(spec_kwargs: dict, ns: list[int], accumulations, num_random: int, seed: int,
                 batch_size: int = 512, progress=print, variant: str = "log") -> dict:
    ns = sorted(ns)
    entries = []
    for n in ns:
        spec = tasks.TaskSpec(n=n, **spec_kwargs)
        entries.append(frontier_for(spec, accumulations, num_random, seed, batch_size,
                                    progress, previous=entries[-1] if entries else None,
                                    variant=variant))
    label = f"{spec_kwargs['task']} p={spec_kwargs['base']}"
    if spec_kwargs["task"] == "iter_add":
        label += f" k={spec_kwargs['k']}"
    if spec_kwargs["task"] == "mul" and spec_kwargs.get("l"):
        label += f" l={spec_kwargs['l']}"
    if spec_kwargs.get("chunk", 1) > 1:
        label += f" c={spec_kwargs['chunk']}"
    if variant != "log":
        label += f" [{variant} precision]"
    fits = {acc: fit_line(ns, [e["float_mantissa_bits"][acc] for e in entries])
            for acc in accumulations}
    return {"label": label, "spec": spec_kwargs, "variant": variant, "ns": ns,
            "accumulations": list(accumulations), "exponent_bits": EXPONENT_BITS,
            "entries": entries, "fits": fits}


def merge(directories: list[str], out: str) -> str:
    """Combine several `--out` directories into one frontier.md and one frontier.png in `out`."""
    results = []
    for d in directories:
        path = os.path.join(d, "frontier.json")
        try:
            with open(path) as f:
                loaded = json.load(f)
        except OSError as e:
            raise UsageError("--merge", d, f"cannot read {path} ({e.strerror or e})") from None
        except ValueError as e:
            raise UsageError("--merge", d, f"{path} is not valid JSON ({e})") from None
        if not isinstance(loaded, dict) or "entries" not in loaded:
            raise UsageError("--merge", d, f"{path} is not one frontier run's output")
        results.append(loaded)
    cli_errors.check_writable_dir("--out", out)
    markdown = "\n".join(to_markdown(r) for r in results)
    with open(os.path.join(out, "frontier.md"), "w") as f:
        f.write(markdown + "\n")
    with open(os.path.join(out, "frontier.json"), "w") as f:
        json.dump(results, f, indent=1)
    plot(results, os.path.join(out, "frontier.png"))
    return markdown


def _parser() -> argparse.ArgumentParser:
    ap = cli_errors.ArgumentParser(prog="python -m constructions.frontier", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", required=True, choices=tasks.TASKS)
    ap.add_argument("--base", type=int, required=True)
    ap.add_argument("--n", required=True, help="comma-separated list, e.g. 2,4,8,16")
    ap.add_argument("--k", type=int, default=None, help="operands (iter_add; default 3)")
    ap.add_argument("--l", type=int, default=None)
    ap.add_argument("--chunk", type=int, default=1, help="digits per token (tokenizer T_c)")
    ap.add_argument("--variant", default="log", choices=VARIANTS,
                    help="log (default; all tasks) or constant (ADD at constant precision)")
    ap.add_argument("--accumulation", default="once,sequential")
    ap.add_argument("--random", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--out", default=None, help="directory for frontier.{json,md,png}")
    ap.add_argument("--json", action="store_true")
    return ap


def validate(args) -> tuple[dict, list[int], list[str]]:
    """(spec kwargs, sizes, accumulations) of the flags; a UsageError for the first bad one,
    including sizes that cannot fit and an --out that cannot be written."""
    from constructions import build, sizes
    from constructions.verify import spec_error

    ns = cli_errors.int_list("--n", args.n, lo=1)
    if len(set(ns)) != len(ns):
        raise UsageError("--n", args.n, "lists a size twice")
    accs = [a.strip() for a in args.accumulation.split(",")]
    bad = [a for a in accs if a not in ACCUMULATIONS]
    if bad:
        raise UsageError("--accumulation", args.accumulation,
                         f"{bad[0]!r} is not one of {', '.join(ACCUMULATIONS)}")
    if len(set(accs)) != len(accs):
        raise UsageError("--accumulation", args.accumulation, "lists a mode twice")
    if args.k is not None and args.task != "iter_add":
        raise UsageError("--k", args.k, "only applies to --task=iter_add")
    if args.l is not None and args.task != "mul":
        raise UsageError("--l", args.l, "only applies to --task=mul")
    for flag, value, lo in (("--random", args.random, 0), ("--seed", args.seed, 0),
                            ("--batch-size", args.batch_size, 1)):
        cli_errors.check_int(flag, value, lo)
    kwargs = {"task": args.task, "base": args.base,
              "k": (3 if args.k is None else args.k) if args.task == "iter_add" else 2,
              "l": args.l if args.task == "mul" else None}
    if args.chunk != 1:
        kwargs["chunk"] = args.chunk
    for n in sorted(ns):  # every size (its T_c layout, its memory) before the (long) search
        args.n = n  # spec_error names --n with this size
        try:
            spec = tasks.TaskSpec(n=n, **kwargs)
        except ValueError as e:
            raise spec_error(e, args) from None
        num_inputs = args.random + 12 * n * spec.num_operands
        sizes.check(spec, sizes.lower_bound_widths(spec, args.variant), args.batch_size,
                    num_inputs, args.variant, ("--random", args.random))
        try:
            construction = build(spec, variant=args.variant)
        except ValueError as e:
            raise spec_error(e, args) from None
        sizes.check(spec, sizes.construction_widths(construction), args.batch_size, num_inputs,
                    args.variant, ("--random", args.random))
    if args.out:
        cli_errors.check_writable_dir("--out", args.out)
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
    result = run_frontier(kwargs, ns, accs, args.random, args.seed, args.batch_size, log,
                          variant=args.variant)
    markdown = to_markdown(result)
    if args.out:
        with open(os.path.join(args.out, "frontier.json"), "w") as f:
            json.dump(result, f, indent=1)
        with open(os.path.join(args.out, "frontier.md"), "w") as f:
            f.write(markdown + "\n")
        plot([result], os.path.join(args.out, "frontier.png"))
    print(json.dumps(result) if args.json else markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
