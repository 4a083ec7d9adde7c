"""Sweeps: a grid of training runs, run resumably (in parallel, sharded), then tables and plots.

A *sweep config* (ml_collections, see `sweep_config`) names a grid over

    task, base, n (per task/base), k (iter_add), l (mul), precision[@accumulation],
    accumulation, layers, seed

plus the training config every cell starts from (`train_args`, the ARGS of
`experiments/configs/train.py`), `overrides` applied to every cell (a nested dict mirroring the
training config, e.g. {"train": {"steps": 5000}}) and `rules`, per-cell overrides
({"when": {"task": "mul"}, "set": {"train": {"steps": 20000}}}). The cells are the cartesian
product, in a fixed order (seed outermost, so a partial sweep already covers the grid once).
Each cell is one `train.train_and_evaluate` run in `workdir/<cell name>/`, e.g.
`iter_add_b2_n8_k3_bf16_L3_s0`.

Files of a cell directory:
    cell.json     coordinates and the resolved training config (written before the run; a later
                  sweep refuses to reuse the directory for a different config)
    summary.json  written by training: status "completed" or "diverged" -> the cell is done
    error.json    the run raised: status "error", the message and traceback (retried on re-run)
    log.txt       the run's stdout/stderr
    checkpoints/, metrics.jsonl   training's own (an interrupted cell resumes from them)

Parallelism: `workers > 1` runs each cell in a fresh process of a "spawn" pool (nothing leaks
between cells: JAX state, compilation caches, memory). Workers set
XLA_PYTHON_CLIENT_PREALLOCATE=false (several share one GPU; these models are far too small to
fill one) and, on CPU, one XLA thread each. With several GPUs, run one shard per GPU instead:
`CUDA_VISIBLE_DEVICES=i python -m experiments.sweep ... --shard=i/N` (a cell uses every device
it sees). Workers exit when the sweep process dies, so a killed sweep leaves no orphans.

Why it is built this way: a sweep is hours of GPU time, so it must survive being killed (cells
are skipped once done, resumed when half done), must not stop at one bad cell (a divergence is a
result, an exception is recorded), and must split over machines (`shard`) with the results of
all shards aggregated from the directory alone (`aggregate`).
"""

from __future__ import annotations

import collections
import contextlib
import copy
import csv
import itertools
import json
import math
import multiprocessing
import os
import re
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import ml_collections

from arith_precision import early_stop
from arith_precision.simulate.policy import ACCUMULATIONS
from arith_precision.tasks.spec import TASKS

# JAX is imported lazily (inside functions): spawned workers must set XLA_FLAGS before it loads.

COORDS = ("task", "base", "n", "k", "l", "precision", "accumulation", "layers", "seed")
GRID_KEYS = ("tasks", "bases", "ns", "ks", "ls", "precisions", "accumulations", "layers", "seeds")
TOP_KEYS = ("name", "description", "train_args", "grid", "overrides", "rules", "vary_data_seed")
DONE = ("completed", "diverged")  # statuses that training wrote; such a cell is never re-run

# Training-config paths that are grid coordinates: overrides and rules may not set them.
_COORD_PATHS = {("task", "task"), ("task", "base"), ("task", "n"), ("task", "k"), ("task", "l"),
                ("precision", "name"), ("precision", "accumulation"), ("model", "num_layers"),
                ("seed",)}

# ---- sweep configs -----------------------------------------------------------------------------


def sweep_config(name: str, *, train_args: str, grid: Mapping[str, Any], description: str = "",
                 overrides: Mapping[str, Any] | None = None, rules: Sequence[Mapping] = (),
                 vary_data_seed: bool = True) -> ml_collections.ConfigDict:
    """Build a sweep ConfigDict (unlocked). `grid` must give every key of GRID_KEYS.

    `grid["ns"]` maps "<task>_b<base>", "<task>" or "default" to a tuple of n (most specific
    first). `ls` are MUL answer lengths, 0 meaning the full product (2n). `precisions` entries
    are a precision name (crossed with every `accumulations` entry) or "name@accumulation".
    `vary_data_seed`: a cell's data_seed equals its seed, so seeds are independent replicates
    (training data, evaluation set and initialisation); False keeps the base config's data_seed.
    """
    c = ml_collections.ConfigDict()
    c.name = name
    c.description = description
    c.train_args = train_args
    c.grid = ml_collections.ConfigDict(dict(grid))
    c.overrides = ml_collections.ConfigDict(dict(overrides or {}))
    c.rules = tuple(dict(r) for r in rules)
    c.vary_data_seed = vary_data_seed
    check_sweep_config(c)
    return c


def _ints(name: str, values, lo: int) -> None:
    if not isinstance(values, (tuple, list)) or not values:
        raise ValueError(f"grid.{name} must be a non-empty tuple, got {values!r}")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise ValueError(f"grid.{name} entries must be integers >= {lo}, got {v!r}")


def check_sweep_config(c) -> None:
    """Structural checks with the offending key (cell configs are validated by `expand`)."""
    keys, grid_keys = set(c.keys()), set(c.grid.keys())
    if keys != set(TOP_KEYS):
        raise ValueError(f"sweep config keys {sorted(keys)} != expected {sorted(TOP_KEYS)}")
    if grid_keys != set(GRID_KEYS):
        raise ValueError(f"unknown grid key(s) {sorted(grid_keys - set(GRID_KEYS))} / missing "
                         f"{sorted(set(GRID_KEYS) - grid_keys)}; grid keys are {GRID_KEYS}")
    g = c.grid
    if not g.tasks or any(t not in TASKS for t in g.tasks):
        raise ValueError(f"grid.tasks must be a non-empty tuple from {TASKS}, got {g.tasks!r}")
    _ints("bases", g.bases, 2)
    _ints("ks", g.ks, 2)
    _ints("ls", g.ls, 0)
    _ints("layers", g.layers, 1)
    _ints("seeds", g.seeds, 0)
    for key, ns in g.ns.items():
        m = re.fullmatch(r"(add|iter_add|mul)(_b(\d+))?|default", key)
        if not m:
            raise ValueError(f"grid.ns key {key!r} is not '<task>', '<task>_b<base>' or "
                             f"'default' (tasks: {TASKS})")
        _ints(f"ns.{key}", ns, 1)
    if not g.accumulations or any(a not in ACCUMULATIONS for a in g.accumulations):
        raise ValueError(f"grid.accumulations must be a non-empty tuple from {ACCUMULATIONS}, "
                         f"got {g.accumulations!r}")
    if not g.precisions:
        raise ValueError("grid.precisions must be a non-empty tuple")
    for entry in g.precisions:
        _split_precision(entry)
    for i, rule in enumerate(c.rules):
        if set(rule) != {"when", "set"}:
            raise ValueError(f"rules[{i}] must have exactly the keys 'when' and 'set', got "
                             f"{sorted(rule)}")
        bad = sorted(set(rule["when"]) - set(COORDS))
        if bad:
            raise ValueError(f"rules[{i}].when: unknown coordinate(s) {bad}; known: {COORDS}")


def _split_precision(entry) -> tuple[str, str | None]:
    """'bf16' -> ('bf16', None); 'bf16@sequential' -> ('bf16', 'sequential')."""
    if not isinstance(entry, str) or not entry or entry.count("@") > 1:
        raise ValueError(f"bad grid.precisions entry {entry!r}: expected 'name' or "
                         f"'name@accumulation'")
    name, sep, acc = entry.partition("@")
    if not name or (acc and acc not in ACCUMULATIONS) or (sep and not acc):
        raise ValueError(f"bad grid.precisions entry {entry!r}: expected 'name' or "
                         f"'name@accumulation' with accumulation in {ACCUMULATIONS}")
    return name, acc or None


# ---- ARGS of sweep config files ----------------------------------------------------------------

GRID_ARGS = {
    "tasks": "tasks, ';'-separated (add;iter_add;mul)",
    "bases": "bases, ';'-separated",
    "ns": "n values for every task and base, ';'-separated",
    "layers": "layer counts, ';'-separated",
    "precisions": "precision names or name@accumulation, ';'-separated",
    "accumulations": "accumulations (once;sequential;pairwise)",
    "seeds": "number of seeds S (runs seeds 0..S-1)",
    "steps": "training steps of every cell",
    "batch": "training batch size of every cell",
    "native": "0|1: real bf16/fp16 arrays instead of simulation (fast on GPUs)",
}


def parse_args(arg: str | None, *, switches: Sequence[str], keys: Iterable[str]) -> dict:
    """A sweep config's ARGS (`experiments.configs.args.parse`, errors name "sweep config")."""
    from experiments.configs import args as args_lib

    return args_lib.parse(arg, keys=keys, switches=switches, what="sweep config")


def _int_list(key: str, value: str, lo: int) -> tuple[int, ...]:
    try:
        out = tuple(int(v) for v in value.split(";") if v.strip())
    except ValueError:
        raise ValueError(f"bad value for {key}: {value!r} (expected integers separated by ';')"
                         ) from None
    if not out or any(v < lo for v in out):
        raise ValueError(f"bad value for {key}: {value!r} (expected integers >= {lo})")
    return out


def _str_list(key: str, value: str, allowed: Sequence[str] | None = None) -> tuple[str, ...]:
    out = tuple(v.strip() for v in value.split(";") if v.strip())
    if not out:
        raise ValueError(f"bad value for {key}: {value!r} (empty list)")
    if allowed is not None:
        bad = [v for v in out if v not in allowed]
        if bad:
            raise ValueError(f"bad value for {key}: {bad} not in {tuple(allowed)}")
    return out


def apply_grid_args(c, args: Mapping[str, str]) -> None:
    """Apply the GRID_ARGS present in `args` to sweep config `c` (others are left alone)."""
    g = c.grid
    if "tasks" in args:
        g.tasks = _str_list("tasks", args["tasks"], TASKS)
    if "bases" in args:
        g.bases = _int_list("bases", args["bases"], 2)
    if "ns" in args:
        g.ns = ml_collections.ConfigDict({"default": _int_list("ns", args["ns"], 1)})
    if "layers" in args:
        g.layers = _int_list("layers", args["layers"], 1)
    if "precisions" in args:
        g.precisions = _str_list("precisions", args["precisions"])
    if "accumulations" in args:
        g.accumulations = _str_list("accumulations", args["accumulations"], ACCUMULATIONS)
    if "seeds" in args:
        (count,) = _int_list("seeds", args["seeds"], 1)
        g.seeds = tuple(range(count))
    overrides = c.overrides.to_dict()
    if "steps" in args:
        (steps,) = _int_list("steps", args["steps"], 1)
        overrides.setdefault("train", {})["steps"] = steps
    if "batch" in args:
        (batch,) = _int_list("batch", args["batch"], 1)
        overrides.setdefault("train", {})["batch_size"] = batch
    if "native" in args:
        if args["native"] not in ("0", "1"):
            raise ValueError(f"bad value for native: {args['native']!r} (expected 0 or 1)")
        overrides.setdefault("precision", {})["native"] = args["native"] == "1"
    c.overrides = ml_collections.ConfigDict(overrides)


# ---- the grid ----------------------------------------------------------------------------------


class Cell:
    """One grid point: `index` in the full grid, readable `name`, `coords`, training `config`."""

    def __init__(self, index: int, coords: dict[str, Any], config):
        self.index, self.coords, self.config = index, coords, config
        self.name = cell_name(coords)

    def __repr__(self):
        return f"Cell({self.index}, {self.name})"


def cell_name(coords: Mapping[str, Any]) -> str:
    """e.g. add_b10_n8_fp32_L3_s0, iter_add_b2_n8_k3_bf16-sequential_L3_s1, mul_b10_n4_l4_..."""
    parts = [coords["task"], f"b{coords['base']}", f"n{coords['n']}"]
    if coords["task"] == "iter_add":
        parts.append(f"k{coords['k']}")
    if coords["task"] == "mul" and coords["l"]:
        parts.append(f"l{coords['l']}")
    precision = coords["precision"]
    if coords["accumulation"] != "once":
        precision += f"-{coords['accumulation']}"
    parts += [re.sub(r"[^A-Za-z0-9._-]", "-", precision), f"L{coords['layers']}",
              f"s{coords['seed']}"]
    return "_".join(parts)


def _ns_for(grid, task: str, base: int) -> tuple[int, ...]:
    for key in (f"{task}_b{base}", task, "default"):
        if key in grid.ns:
            return tuple(grid.ns[key])
    raise ValueError(f"grid.ns has no entry for task {task!r} in base {base}: add "
                     f"'{task}_b{base}', '{task}' or 'default' (present: {sorted(grid.ns)})")


def _set_nested(cfg, updates, where: str, path: tuple[str, ...] = ()) -> None:
    """Set the leaves of a nested dict `updates` in the (locked) training config `cfg`."""
    for key, value in updates.items():
        p = path + (key,)
        dotted = ".".join(p)
        if p in _COORD_PATHS:
            raise ValueError(f"{where}: {dotted} is a grid coordinate; set it in the grid")
        if key not in cfg:
            raise ValueError(f"{where}: unknown training config key {dotted!r}; known here: "
                             f"{sorted(cfg.keys())}")
        if isinstance(value, (dict, ml_collections.ConfigDict)):
            if not isinstance(cfg[key], ml_collections.ConfigDict):
                raise ValueError(f"{where}: {dotted} is a value, not a section")
            _set_nested(cfg[key], value, where, p)
            continue
        try:
            cfg[key] = value
        except (TypeError, AttributeError, ValueError) as e:
            raise ValueError(f"{where}: bad value for {dotted}: {value!r} ({e})") from None


def _matches(when: Mapping[str, Any], coords: Mapping[str, Any]) -> bool:
    for key, want in when.items():
        options = want if isinstance(want, (tuple, list)) else (want,)
        if coords[key] not in options:
            return False
    return True


def expand(c) -> list[Cell]:
    """Every cell of the grid, in order, each with its validated training config."""
    from experiments.configs import train as train_config

    check_sweep_config(c)
    g = c.grid
    try:
        base = train_config.get_config(c.train_args)
    except ValueError as e:
        raise ValueError(f"bad train_args {c.train_args!r}: {e}") from None
    pairs = []  # (precision, accumulation), in order, no duplicates
    for entry in g.precisions:
        name, acc = _split_precision(entry)
        pairs += [(name, a) for a in ((acc,) if acc else g.accumulations)]
    cells, seen = [], {}
    for seed, task, b in itertools.product(g.seeds, g.tasks, g.bases):
        ks = g.ks if task == "iter_add" else (2,)
        ls = g.ls if task == "mul" else (0,)
        for k, l, layers, n, (precision, acc) in itertools.product(
                ks, ls, g.layers, _ns_for(g, task, b), pairs):
            coords = dict(task=task, base=b, n=n, k=k, l=l, precision=precision,
                          accumulation=acc, layers=layers, seed=seed)
            cell = Cell(len(cells), coords, None)
            if cell.name in seen:
                raise ValueError(f"the grid yields cell {cell.name} twice (check precisions "
                                 f"against accumulations)")
            seen[cell.name] = cell
            cell.config = _cell_config(base, coords, c, cell.name)
            cells.append(cell)
    return cells


def _cell_config(base, coords, c, name: str):
    cfg = copy.deepcopy(base)  # stays locked: no new keys
    cfg.task.task, cfg.task.base, cfg.task.n = coords["task"], coords["base"], coords["n"]
    cfg.task.k, cfg.task.l = coords["k"], coords["l"]
    cfg.precision.name, cfg.precision.accumulation = coords["precision"], coords["accumulation"]
    cfg.model.num_layers = coords["layers"]
    cfg.seed = coords["seed"]
    if c.vary_data_seed:
        cfg.data_seed = coords["seed"]
    _set_nested(cfg, c.overrides, f"cell {name}: overrides")
    for i, rule in enumerate(c.rules):
        if _matches(rule["when"], coords):
            _set_nested(cfg, rule["set"], f"cell {name}: rules[{i}]")
    from experiments.configs import train as train_config

    try:
        train_config.validate(cfg)
    except ValueError as e:
        raise ValueError(f"cell {name}: {e}") from None
    return cfg


def parse_shard(shard: str | None) -> tuple[int, int] | None:
    """'i/N' -> (i, N) with 0 <= i < N; None/'' -> None (all cells)."""
    if not shard:
        return None
    m = re.fullmatch(r"\s*(-?\d+)\s*/\s*(-?\d+)\s*", shard)
    if not m:
        raise ValueError(f"bad shard {shard!r}: expected 'i/N', e.g. '0/4'")
    i, num = int(m.group(1)), int(m.group(2))
    if num < 1 or not 0 <= i < num:
        raise ValueError(f"bad shard {shard!r}: need N >= 1 and 0 <= i < N")
    return i, num


def select_shard(cells: Sequence[Cell], shard: tuple[int, int] | None) -> list[Cell]:
    """Cells with index % N == i (the whole grid when shard is None)."""
    if shard is None:
        return list(cells)
    i, num = shard
    return [cell for cell in cells if cell.index % num == i]


# ---- cell state on disk ------------------------------------------------------------------------


def _read_json(path: str):
    with open(path) as f:
        return json.load(f)


def _write_json(path: str, obj) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"  # unique: several shards may write the same file
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True, default=str)
    os.replace(tmp, path)


def cell_status(cell_dir: str) -> str:
    """completed | diverged (training's summary) | error | pending (started or planned) | new."""
    summary = os.path.join(cell_dir, "summary.json")
    if os.path.exists(summary):
        return _read_json(summary)["status"]
    if os.path.exists(os.path.join(cell_dir, "error.json")):
        return "error"
    return "pending" if os.path.exists(os.path.join(cell_dir, "cell.json")) else "new"


def _normalized(config) -> dict:
    return json.loads(json.dumps(config.to_dict(), sort_keys=True, default=str))


def _flatten(d: Mapping, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _check_reuse(cells: Sequence[Cell], workdir: str) -> None:
    """A cell directory written for another config must not be silently skipped or resumed."""
    problems = []
    for cell in cells:
        path = os.path.join(workdir, cell.name, "cell.json")
        if not os.path.exists(path):
            continue
        old = _flatten(_read_json(path)["config"])
        new = _flatten(_normalized(cell.config))
        diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        if diff:
            shown = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in diff[:4])
            problems.append(f"{cell.name} ({shown})")
    if problems:
        raise ValueError(
            f"{len(problems)} cell directories in {workdir} hold runs of a different config: "
            f"{'; '.join(problems[:5])}. Use another --workdir, or delete those cell "
            f"directories to redo them.")


# ---- running cells -----------------------------------------------------------------------------


@contextlib.contextmanager
def _output_to(path: str):
    """Send fds 1 and 2 (Python, absl and XLA output alike) to `path` for the duration."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(path, "a") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def run_cell(job: Mapping[str, Any]) -> dict[str, Any]:
    """Train and evaluate one cell; an exception is written to error.json, not raised.

    `job`: {"name", "dir", "config"}. Returns a record for the progress line.
    """
    cell_dir, start = job["dir"], time.time()
    os.makedirs(cell_dir, exist_ok=True)
    error_path = os.path.join(cell_dir, "error.json")
    if os.path.exists(error_path):
        os.remove(error_path)  # a retry
    _write_json(os.path.join(cell_dir, "worker.json"), {"pid": os.getpid(), "start": start})
    record = {"name": job["name"], "status": "error", "exact_match": None, "error": None}
    try:
        with _output_to(os.path.join(cell_dir, "log.txt")):
            from arith_precision import train

            summary = train.train_and_evaluate(job["config"], cell_dir)
        record["status"] = summary["status"]
        record["exact_match"] = summary["exact_match"].get(str(job["config"].task.n))
        record["diverged_at_step"] = summary["diverged_at_step"]
    except Exception as e:  # noqa: BLE001 -- any failure of one cell is recorded, not fatal
        record["error"] = f"{type(e).__name__}: {e}"
        trace = traceback.format_exc()
        _write_json(error_path, {"status": "error", "error": record["error"],
                                 "traceback": trace, "time": time.time()})
        with open(os.path.join(cell_dir, "log.txt"), "a") as log:
            log.write(trace)
    record["wall_time_s"] = time.time() - start
    return record


def _worker_env(workers: int) -> dict[str, str]:
    """Environment for worker processes sharing one machine (set before JAX loads)."""
    env = {"XLA_PYTHON_CLIENT_PREALLOCATE": "false",  # several processes share one GPU
           "TF_CPP_MIN_LOG_LEVEL": "1"}
    flags = os.environ.get("XLA_FLAGS", "")
    if workers > 1 and "xla_cpu_multi_thread_eigen" not in flags:
        # On CPU, W workers each using every core would oversubscribe: one thread each.
        flags = f"{flags} --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    env["XLA_FLAGS"] = flags.strip()
    return env


def _init_worker(parent_pid: int, env: Mapping[str, str]) -> None:
    for key, value in env.items():
        if key == "XLA_FLAGS" or key not in os.environ:
            os.environ[key] = value

    def watch():  # a killed sweep must not leave orphans training into its cell directories
        while True:
            if os.getppid() != parent_pid:
                os._exit(1)
            time.sleep(1.0)

    threading.Thread(target=watch, daemon=True).start()


def _job(cell: Cell, workdir: str) -> dict[str, Any]:
    return {"name": cell.name, "dir": os.path.join(workdir, cell.name), "config": cell.config}


def _run_parallel(jobs: list[dict], workers: int, on_record: Callable[[dict], None]) -> None:
    """Run jobs in `workers` spawned processes, one fresh process per cell (no state leaks).

    If a worker dies (killed, out of memory, segfault) the pool breaks and every unfinished
    future fails; cells that had started in that pool are charged one death and re-queued with
    the rest in a fresh pool. A cell charged twice is recorded as an error.
    """
    ctx = multiprocessing.get_context("spawn")
    deaths: collections.Counter = collections.Counter()
    queue = list(jobs)
    while queue:
        round_start = time.time()
        with ProcessPoolExecutor(max_workers=min(workers, len(queue)), mp_context=ctx,
                                 initializer=_init_worker,
                                 initargs=(os.getpid(), _worker_env(workers)),
                                 max_tasks_per_child=1) as pool:
            futures = {pool.submit(run_cell, job): job for job in queue}
            queue = []
            for future in as_completed(futures):
                job = futures[future]
                try:
                    on_record(future.result())
                    continue
                except BrokenProcessPool:
                    pass
                marker = os.path.join(job["dir"], "worker.json")
                started = os.path.exists(marker) and _read_json(marker)["start"] >= round_start
                if started and cell_status(job["dir"]) not in DONE:
                    deaths[job["name"]] += 1
                if deaths[job["name"]] >= 2:
                    message = ("the worker process running this cell died twice (killed, out of "
                               "memory or crashed); see log.txt")
                    _write_json(os.path.join(job["dir"], "error.json"),
                                {"status": "error", "error": message, "time": time.time()})
                    on_record({"name": job["name"], "status": "error", "error": message,
                               "exact_match": None, "wall_time_s": 0.0})
                elif cell_status(job["dir"]) in DONE:  # finished before the pool broke
                    on_record({"name": job["name"], "status": cell_status(job["dir"]),
                               "exact_match": None, "wall_time_s": 0.0})
                else:
                    queue.append(job)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"


class Progress:
    """Prints one line per finished cell: done/total, status counts, elapsed and ETA.

    The ETA extrapolates the wall time per cell run so far (skipped cells excluded), so with W
    workers it already reflects the parallelism.
    """

    def __init__(self, total: int, skipped: int, log: Callable[[str], None]):
        self.total, self.skipped, self.log = total, skipped, log
        self.counts: collections.Counter = collections.Counter()
        self.start = time.time()

    def update(self, record: Mapping[str, Any]) -> None:
        self.counts[record["status"]] += 1
        ran = sum(self.counts.values())
        done = self.skipped + ran
        elapsed = time.time() - self.start
        eta = elapsed / ran * (self.total - done)
        detail = record["status"]
        if record.get("exact_match") is not None:
            detail += f", exact match {record['exact_match']:.3f}"
        if record.get("error"):
            detail += f": {record['error'][:200]}"
        counts = ", ".join(f"{k} {v}" for k, v in sorted(self.counts.items()))
        self.log(f"[sweep] {done}/{self.total} cells ({self.skipped} skipped; {counts}) | "
                 f"elapsed {_duration(elapsed)} | ETA {_duration(eta)} | {record['name']}: "
                 f"{detail} ({_duration(record.get('wall_time_s') or 0.0)})")


def _current_step(cell_dir: str) -> int:
    """The last logged training step of a cell (0 before its first log line)."""
    path = os.path.join(cell_dir, "metrics.jsonl")
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.path.getsize(path) - 4096))
            lines = [ln for ln in f.read().decode(errors="replace").splitlines() if ln.strip()]
        return int(json.loads(lines[-1])["step"]) if lines else 0
    except (OSError, ValueError, KeyError, IndexError):
        return 0


class Heartbeat:
    """Between finished cells, one line every `every` seconds: the running cells' steps and an
    ETA from the steps trained so far in this run (an upper bound with early stopping, which can
    end a cell before its last step)."""

    def __init__(self, jobs: Sequence[Mapping[str, Any]], log: Callable[[str], None],
                 every: float = 30.0):
        self.jobs, self.log, self.every = list(jobs), log, every
        self.start = time.time()
        self.first = {j["name"]: _current_step(j["dir"]) for j in self.jobs}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        if self.jobs:
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()

    def line(self) -> str:
        done, running, trained, remaining = 0, [], 0, 0
        for j in self.jobs:
            planned = int(j["config"].train.steps)
            step = _current_step(j["dir"])
            trained += step - self.first[j["name"]]
            if cell_status(j["dir"]) in DONE:
                done += 1
                continue
            remaining += planned - step
            marker = os.path.join(j["dir"], "worker.json")
            if os.path.exists(marker) and _read_json(marker)["start"] >= self.start:
                running.append(f"{j['name']} {step}/{planned}")
        elapsed = time.time() - self.start
        rate = trained / elapsed if trained > 0 else None
        eta = "unknown (no steps logged yet)" if rate is None else \
            f"at most {_duration(remaining / rate)} at {rate:.1f} steps/s"
        return (f"[sweep] heartbeat: {done}/{len(self.jobs)} cells of this run done | running: "
                f"{', '.join(running) or 'starting'} | elapsed {_duration(elapsed)} | ETA {eta}")

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.log(self.line())


def run_sweep(c, workdir: str, *, workers: int = 1, shard: str | tuple | None = None,
              log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the cells of sweep config `c` (this shard's) that are not done, then `aggregate`.

    Returns {"cells": selected count, "skipped": already done, "counts": {status: n} over the
    cells run now, "outputs": aggregate's paths}.
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
    shard = parse_shard(shard) if isinstance(shard, str) or shard is None else shard
    grid = expand(c)
    cells = select_shard(grid, shard)
    os.makedirs(workdir, exist_ok=True)
    _check_reuse(cells, workdir)
    _write_json(os.path.join(workdir, "sweep.json"),  # the last sweep run here, for the report
                {"name": c.name, "description": c.description, "config": c.to_dict(),
                 "cells": [cell.name for cell in grid]})
    todo, skipped = [], 0
    for cell in cells:
        cell_dir = os.path.join(workdir, cell.name)
        if cell_status(cell_dir) in DONE:
            skipped += 1
            continue
        os.makedirs(cell_dir, exist_ok=True)
        if not os.path.exists(os.path.join(cell_dir, "cell.json")):
            _write_json(os.path.join(cell_dir, "cell.json"),
                        {"name": cell.name, "index": cell.index, "sweep": c.name,
                         "coords": cell.coords, "config": _normalized(cell.config)})
        todo.append(cell)
    where = f"shard {shard[0]}/{shard[1]}, " if shard else ""
    log(f"[sweep] {c.name}: {where}{len(cells)} cells, {skipped} already done, {len(todo)} to "
        f"run with {workers} worker(s) in {workdir}")
    progress = Progress(len(cells), skipped, log)
    jobs = [_job(cell, workdir) for cell in todo]
    with Heartbeat(jobs, log):
        if workers == 1:
            for job in jobs:
                log(f"[sweep] running {job['name']} (log: {os.path.join(job['dir'], 'log.txt')})")
                progress.update(run_cell(job))
        elif jobs:
            _run_parallel(jobs, workers, progress.update)
    outputs = aggregate(workdir)
    log(f"[sweep] results: {outputs['results']}, report: {outputs['report']}")
    return {"cells": len(cells), "skipped": skipped, "counts": dict(progress.counts),
            "outputs": outputs}


# ---- aggregation -------------------------------------------------------------------------------

CELL_COLUMNS = (*COORDS, "status", "exact_match", "digit_accuracy", "diverged_at_step", "steps",
                "steps_to_converge", "convergence", "validation_last", "wall_time_s", "name",
                "error")
GROUP_COORDS = ("task", "base", "n", "k", "l", "precision", "accumulation", "layers")
STATUSES = ("completed", "diverged", "error", "pending")
RESULT_COLUMNS = (*GROUP_COORDS, "num_seeds", "exact_match_mean", "exact_match_std",
                  "exact_match_min", "exact_match_max", "digit_accuracy_mean", "digit_accuracy_std",
                  *(f"num_{s}" for s in STATUSES), "num_converged", "steps_to_converge_max",
                  "convergence")


def collect(workdir: str) -> list[dict[str, Any]]:
    """One row per cell directory of `workdir` (any shard, any sweep), sorted by name."""
    rows = []
    for name in sorted(os.listdir(workdir)) if os.path.isdir(workdir) else []:
        cell_dir = os.path.join(workdir, name)
        meta_path = os.path.join(cell_dir, "cell.json")
        if not os.path.isfile(meta_path):
            continue
        meta = _read_json(meta_path)
        row = dict(meta["coords"], name=meta["name"], index=meta.get("index", 0),
                   status=cell_status(cell_dir),
                   exact_match=None, digit_accuracy=None, diverged_at_step=None, steps=None,
                   steps_to_converge=None, convergence=None, validation_last=None,
                   wall_time_s=None, error=None)
        if row["status"] in DONE:
            s = _read_json(os.path.join(cell_dir, "summary.json"))
            key = str(row["n"])
            history = s.get("validation") or []
            row.update(exact_match=s["exact_match"].get(key),
                       digit_accuracy=s["digit_accuracy"].get(key),
                       diverged_at_step=s.get("diverged_at_step"), steps=s.get("steps"),
                       steps_to_converge=s.get("steps_to_converge"),
                       # early stopping off: no validation curve, nothing to say
                       convergence=early_stop.trend(history, s.get("steps_to_converge"))
                       if s.get("early_stop") else None,
                       validation_last=history[-1]["exact_match"] if history else None,
                       wall_time_s=s.get("wall_time_s"))
        elif row["status"] == "error":
            row["error"] = _read_json(os.path.join(cell_dir, "error.json"))["error"]
        rows.append(row)
    return rows


def _mean(xs: Sequence[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def _std(xs: Sequence[float]) -> float | None:
    """Sample standard deviation (ddof=1); 0 for a single value, None for none."""
    if not xs:
        return None
    if len(xs) == 1:
        return 0.0
    m = sum(xs) / len(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def _group_order(key: tuple) -> tuple:
    task, base, n, k, l, precision, accumulation, layers = key
    return (TASKS.index(task), base, k, l, layers, precision, accumulation, n)


def group(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One result per GROUP_COORDS over seeds; statistics over completed cells only.

    A diverged or failed cell has no evaluation; it is counted (num_diverged, num_error), not
    averaged in as 0. exact_match_std is the sample standard deviation (0 for one seed).
    """
    groups: dict[tuple, list] = collections.defaultdict(list)
    for row in rows:
        groups[tuple(row[k] for k in GROUP_COORDS)].append(row)
    out = []
    for key in sorted(groups, key=lambda k: (min(r["index"] for r in groups[k]),
                                             _group_order(k))):  # the grid's order
        members = groups[key]
        em = [r["exact_match"] for r in members if r["exact_match"] is not None]
        da = [r["digit_accuracy"] for r in members if r["digit_accuracy"] is not None]
        res = dict(zip(GROUP_COORDS, key, strict=True), num_seeds=len(members),
                   exact_match_mean=_mean(em), exact_match_std=_std(em),
                   exact_match_min=min(em) if em else None,
                   exact_match_max=max(em) if em else None,
                   digit_accuracy_mean=_mean(da), digit_accuracy_std=_std(da),
                   first_index=min(r["index"] for r in members))  # grid order, not in the csv
        statuses = collections.Counter(r["status"] for r in members)
        for s in STATUSES:
            res[f"num_{s}"] = statuses.get(s, 0)
        steps = [r["steps_to_converge"] for r in members if r["steps_to_converge"] is not None]
        res.update(num_converged=len(steps), steps_to_converge_max=max(steps) if steps else None,
                   convergence=_convergence_summary(members))
        out.append(res)
    return out


def _convergence_summary(members: Sequence[Mapping[str, Any]]) -> str | None:
    """Per seed, in seed order: 'converged@S', 'rising' (needs more steps), 'flat' (never gets
    there at this recipe), 'unknown'; None when no member used early stopping."""
    if all(r.get("convergence") is None for r in members):
        return None
    parts = []
    for r in sorted(members, key=lambda r: r["seed"]):
        c = r.get("convergence") or r["status"]
        parts.append(f"converged@{r['steps_to_converge']}" if c == "converged" else c)
    return " ".join(parts)


def _write_csv(path: str, columns: Sequence[str], rows: Iterable[Mapping]) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if row.get(k) is None else row[k] for k in columns})
    os.replace(tmp, path)


def _line_label(r: Mapping) -> str:
    return r["precision"] + ("" if r["accumulation"] == "once" else f" ({r['accumulation']})")


def _labels(members: Sequence[Mapping]) -> list[str]:
    """Line labels in the order of the sweep's grid (e.g. fp32 before bf16 as configured)."""
    first = {}
    for r in members:
        label = _line_label(r)
        first[label] = min(first.get(label, r["first_index"]), r["first_index"])
    return sorted(first, key=first.get)


def _panel_key(r: Mapping) -> tuple:
    return (r["task"], r["base"], r["k"], r["l"], r["layers"])


def _panel_title(key: tuple) -> str:
    task, base, k, l, layers = key
    name = {"add": "ADD", "iter_add": f"IterADD (k={k})", "mul": "MUL"}[task]
    if task == "mul":
        name += f" (l={l})" if l else " (full product)"
    return f"{name}, base {base}, {layers} layers"


def plot(results: Sequence[Mapping], path: str, metric: str = "exact_match") -> None:
    """Accuracy against n: one panel per (task, base, layers), one line per precision.

    Rows of panels are (task, base[, k, l]), columns the layer counts (the paper's Figure 2).
    Error bars: standard deviation over completed seeds. A group whose every seed diverged is
    drawn as an 'x' at 0 (no model to evaluate).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = collections.defaultdict(list)
    for r in results:
        panels[_panel_key(r)].append(r)
    row_keys = sorted({k[:4] for k in panels}, key=lambda k: (TASKS.index(k[0]), *k[1:]))
    col_keys = sorted({k[4] for k in panels})
    all_labels = _labels(results)
    palette = plt.get_cmap("tab10" if len(all_labels) <= 10 else "tab20")
    fig, axes = plt.subplots(len(row_keys), len(col_keys), squeeze=False,
                             figsize=(4.2 * len(col_keys), 3.2 * len(row_keys)))
    for i, rk in enumerate(row_keys):
        for j, layers in enumerate(col_keys):
            ax = axes[i][j]
            members = panels.get((*rk, layers))
            if not members:
                ax.set_visible(False)
                continue
            for label in _labels(members):
                color = palette(all_labels.index(label) % palette.N)  # same in every panel
                rs = sorted((r for r in members if _line_label(r) == label), key=lambda r: r["n"])
                ok = [r for r in rs if r[f"{metric}_mean"] is not None]
                if ok:
                    ys = [r[f"{metric}_mean"] for r in ok]
                    errs = [r.get(f"{metric}_std") or 0.0 for r in ok]
                    ax.errorbar([r["n"] for r in ok], ys, yerr=errs, marker="o", ms=4,
                                capsize=3, label=label, color=color)
                dead = [r["n"] for r in rs if r[f"{metric}_mean"] is None and r["num_diverged"]]
                if dead:
                    ax.plot(dead, [0.0] * len(dead), "x", color=color, ms=7,
                            label=None if ok else f"{label} (diverged)")
            ax.set_xticks(sorted({r["n"] for r in members}))
            ax.set_title(_panel_title((*rk, layers)), fontsize=10)
            ax.set_xlabel("n (digits)")
            ax.set_ylabel(metric.replace("_", " "))
            ax.set_ylim(-0.05, 1.05)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = f"{path}.{os.getpid()}.tmp.png"
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def report(workdir: str, rows: Sequence[Mapping], results: Sequence[Mapping],
           plots: Sequence[str]) -> str:
    """Markdown: status counts, the plots, one table per panel (n x precision), failures."""
    meta_path = os.path.join(workdir, "sweep.json")
    meta = _read_json(meta_path) if os.path.exists(meta_path) else {}
    counts = collections.Counter(r["status"] for r in rows)
    lines = [f"# Sweep report: {meta.get('name', os.path.basename(workdir))}", ""]
    if meta.get("description"):
        lines += [meta["description"], ""]
    lines += [f"Cells present: {len(rows)} ("
              + ", ".join(f"{s} {counts.get(s, 0)}" for s in STATUSES) + ")."]
    if meta.get("cells"):
        status = {r["name"]: r["status"] for r in rows}
        done = sum(status.get(name) in DONE for name in meta["cells"])
        lines[-1] += (f" The grid of the last sweep run here ({meta['name']}) has "
                      f"{len(meta['cells'])} cells, {done} of them done.")
    lines += ["",
              "Entries: exact match, mean ± standard deviation over the completed seeds "
              "(completed/seeds when some did not complete: a diverged or failed run has no "
              "evaluation). Plots: error bars are that standard deviation; an x at 0 marks an n "
              "where every seed diverged. Per-cell values: `cells.csv`; groups: `results.csv`.",
              ""]
    lines += [f"![{os.path.splitext(p)[0]}]({p})" for p in plots] + [""]
    panels = collections.defaultdict(list)
    for r in results:
        panels[_panel_key(r)].append(r)
    for key in sorted(panels, key=lambda k: (TASKS.index(k[0]), *k[1:])):
        members = panels[key]
        labels = _labels(members)
        lines += [f"## {_panel_title(key)}", "", "| n | " + " | ".join(labels) + " |",
                  "|---|" + "---|" * len(labels)]
        by = {(r["n"], _line_label(r)): r for r in members}
        for n in sorted({r["n"] for r in members}):
            cells = []
            for label in labels:
                r = by.get((n, label))
                if r is None:
                    cells.append("")
                    continue
                text = _fmt(r["exact_match_mean"])
                if r["exact_match_mean"] is not None and r["num_completed"] > 1:
                    text += f" ± {r['exact_match_std']:.3f}"
                if r["num_completed"] != r["num_seeds"]:
                    others = ", ".join(f"{r[f'num_{s}']} {s}" for s in STATUSES[1:]
                                       if r[f"num_{s}"])
                    text += f" ({r['num_completed']}/{r['num_seeds']}; {others})"
                cells.append(text)
            lines.append(f"| {n} | " + " | ".join(cells) + " |")
        lines.append("")
        if any(r.get("convergence") for r in members):
            lines += ["Convergence per seed (early stopping): `converged@S` stopped at step S; "
                      "`rising` did not converge but its validation still rose (more steps may "
                      "get there); `flat` did not converge and stopped improving.", "",
                      "| n | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
            for n in sorted({r["n"] for r in members}):
                lines.append(f"| {n} | " + " | ".join(
                    (by[(n, label)].get("convergence") or "") if (n, label) in by else ""
                    for label in labels) + " |")
            lines.append("")
    bad = [r for r in rows if r["status"] in ("diverged", "error")]
    if bad:
        lines += ["## Diverged and failed cells", ""]
        for r in bad:
            why = (f"non-finite loss at step {r['diverged_at_step']}" if r["status"] == "diverged"
                   else r["error"])
            lines.append(f"- `{r['name']}`: {r['status']}: {why}")
        lines.append("")
    return "\n".join(lines)


def aggregate(workdir: str) -> dict[str, str]:
    """Write cells.csv, results.csv, exact_match.png, digit_accuracy.png and report.md.

    Reads only the cell directories in `workdir`, so it can run on its own, over the union of
    all shards, while other shards are still running (their cells show as pending).
    """
    if not os.path.isdir(workdir):
        raise ValueError(f"sweep directory {workdir!r} does not exist")
    rows = collect(workdir)
    results = group(rows)
    out = {"cells": os.path.join(workdir, "cells.csv"),
           "results": os.path.join(workdir, "results.csv"),
           "report": os.path.join(workdir, "report.md")}
    _write_csv(out["cells"], CELL_COLUMNS, rows)
    _write_csv(out["results"], RESULT_COLUMNS, results)
    plots = []
    if results:
        for metric in ("exact_match", "digit_accuracy"):
            name = f"{metric}.png"
            plot(results, os.path.join(workdir, name), metric)
            out[metric + "_plot"] = os.path.join(workdir, name)
            plots.append(name)
    tmp = f"{out['report']}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        f.write(report(workdir, rows, results, plots))
    os.replace(tmp, out["report"])
    return out
