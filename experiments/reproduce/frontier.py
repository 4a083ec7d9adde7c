"""The main job's frontier phase: each construction's e8mM mantissa threshold against n, cached.

Full mode runs `constructions.frontier.run_frontier` (float and fixed point, the common formats,
every accumulation); the other modes run `lean_frontier`, the public mantissa scan in its quick
mode. Results are cached in DIR/frontier/<task>.json together with the settings that made them,
and reused while the settings are the same. Rendering (frontier.md, frontier.png) is
`experiments.report.frontier`'s.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence

from arith_precision.common import atomic
from constructions.frontier import BF16_MANTISSA
from experiments.configs.modes import Settings


def label(spec_kwargs: dict) -> str:
    """e.g. 'add p=10', 'iter_add p=2 k=3': a task's name in logs, tables and file names."""
    text = f"{spec_kwargs['task']} p={spec_kwargs['base']}"
    return text + (f" k={spec_kwargs['k']}" if spec_kwargs["task"] == "iter_add" else "")


def lean_frontier(spec_kwargs: dict, ns: Sequence[int], accumulation: str = "once",
                  num_random: int = 30, seed: int = 0, batch_size: int = 512,
                  progress: Callable[[str], None] = print,
                  on_entry: Callable[[int], None] = lambda n: None) -> dict:
    """The e8mM mantissa threshold of the construction, for each n (the public frontier scan).

    The verifier set is `constructions.check.inputs.verification_set` (exhaustive when small, else
    adversarial + `num_random` random inputs). Each n runs `constructions.frontier.mantissa_scan`
    in its quick mode through the runtime-width decoder (one compile per shape): every width from
    e8m24 down is checked until the first that fails, so the reported M is the threshold (every
    wider width passes, M - 1 fails) without assuming exactness is monotonic in M; narrower
    widths that might pass again are not checked (`constructions.frontier` checks them all).
    Returns a dict shaped like
    `frontier.run_frontier`'s (label, ns, accumulations, entries with float_mantissa_bits,
    fits) so `frontier.plot` draws it; fixed point and the common formats are left out (`bf16`
    passes exactly when M <= 7: bf16 is e8m7). `on_entry(n)` is called after each n (progress).
    """
    from arith_precision import tasks
    from constructions import build, frontier
    from constructions.check import inputs, run

    entries = []
    for n in ns:
        start = time.time()
        spec = tasks.TaskSpec(n=n, **spec_kwargs)
        construction = build(spec)
        operands, families = inputs.verification_set(spec, num_random=num_random, seed=seed)

        def passes(m, construction=construction, operands=operands):
            fmt = f"e8m{m}"
            run.enable_carrier(fmt)
            return run.check(construction, operands, fmt, accumulation, batch_size,
                             stop_at_first_failure=True, runtime=True)["failures"] == 0

        scan = frontier.mantissa_scan(passes, frontier.MIN_MANTISSA, frontier.MAX_MANTISSA,
                                      quick=True)
        m = scan["threshold"]
        probes = scan["checked"]
        entries.append({"n": n, "checked": len(operands), "families": families,
                        "d_model": construction.d_model, "float_mantissa_bits": {accumulation: m},
                        "probes": {str(k): v for k, v in sorted(probes.items())},
                        "bf16_exact": m is not None and m <= BF16_MANTISSA,
                        "seconds": round(time.time() - start, 1)})
        progress(f"[frontier]   {label(spec_kwargs)} n={n}: {m} mantissa bits "
                 f"({len(operands)} inputs, {len(probes)} probes, {time.time() - start:.0f}s)")
        on_entry(n)
    fits = {accumulation: frontier.fit_line(list(ns), [e["float_mantissa_bits"][accumulation]
                                                       for e in entries])}
    return {"label": label(spec_kwargs), "spec": spec_kwargs, "ns": list(ns),
            "accumulations": [accumulation], "exponent_bits": 8, "entries": entries,
            "fits": fits, "lean": True}


def _settings_key(s: Settings, spec_kwargs: dict, ns) -> dict:
    return {"spec": spec_kwargs, "ns": list(ns), "full": s.frontier_full,
            "accumulations": list(s.frontier_accumulations), "random": s.frontier_random}


def _path(workdir: str, spec_kwargs: dict) -> str:
    slug = label(spec_kwargs).replace(" ", "_").replace("=", "")
    return os.path.join(workdir, "frontier", f"{slug}.json")


def _read(path: str, key: dict) -> dict | None:
    """The cached result at `path` if it was computed with settings `key`."""
    if not os.path.exists(path):
        return None
    with open(path) as f:
        cached = json.load(f)
    return cached["result"] if cached.get("settings") == key else None


def run_frontiers(workdir: str, s: Settings, log: Callable[[str], None],
                  on_entry: Callable[[int], None] = lambda n: None) -> list[dict]:
    """Compute (or reuse the cached) frontier of every task of the settings; `on_entry(n)` after
    each n computed or reused (progress)."""
    from constructions import frontier

    os.makedirs(os.path.join(workdir, "frontier"), exist_ok=True)
    results = []
    for spec_kwargs, ns in s.frontiers:
        key, path = _settings_key(s, spec_kwargs, ns), _path(workdir, spec_kwargs)
        cached = _read(path, key)
        if cached is not None:
            log(f"[frontier] {label(spec_kwargs)}: reusing {path}")
            results.append(dict(cached, reused=True))
            for n in ns:
                on_entry(n)
            continue
        start = time.time()
        log(f"[frontier] {label(spec_kwargs)} n={list(ns)}")
        if s.frontier_full:
            # every verdict kept in workdir/frontier/checks.json: a stopped phase resumes
            # within a frontier, not only between them
            result = frontier.run_frontier(spec_kwargs, list(ns), s.frontier_accumulations,
                                           s.frontier_random, 0, 512, log,
                                           checks_dir=os.path.join(workdir, "frontier"))
            for n in ns:
                on_entry(n)
        else:
            result = lean_frontier(spec_kwargs, ns, s.frontier_accumulations[0],
                                   s.frontier_random, progress=log, on_entry=on_entry)
        result["seconds"] = round(time.time() - start, 1)
        atomic.write_json(path, {"settings": key, "result": result}, indent=1)
        results.append(result)
    return results


def cached_frontiers(workdir: str, s: Settings) -> list[dict]:
    """The frontiers a previous run of these settings left in workdir (none: [])."""
    out = []
    for spec_kwargs, ns in s.frontiers:
        cached = _read(_path(workdir, spec_kwargs), _settings_key(s, spec_kwargs, ns))
        if cached is not None:
            out.append(cached)
    return out
