"""Sweep configs and their grid: the schema, the `k=v` ARGS of config files, the cells, shards.

A *sweep config* (ml_collections, see `sweep_config`) names a grid over

    task, base, n (per task/base), k (iter_add), l (mul), precision[@accumulation],
    accumulation, layers, seed

plus the training config every cell starts from (`train_args`, the ARGS of
`experiments/configs/train.py`), `overrides` applied to every cell (a nested dict mirroring the
training config, e.g. {"train": {"steps": 5000}}) and `rules`, per-cell overrides
({"when": {"task": "mul"}, "set": {"train": {"steps": 20000}}}). The cells are the cartesian
product, in a fixed order (seed outermost, so a partial sweep already covers the grid once).
Each cell is one training run named by its coordinates (`cell_name`), e.g.
`iter_add_b2_n8_k3_bf16_L3_s0`. Running them is `experiments.sweep.run_sweep`.
"""

from __future__ import annotations

import copy
import itertools
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import ml_collections

from arith_precision.simulate.policy import ACCUMULATION_FORMS, is_accumulation
from arith_precision.tasks.spec import TASKS

COORDS = ("task", "base", "n", "k", "l", "precision", "accumulation", "layers", "seed")
GRID_KEYS = ("tasks", "bases", "ns", "ks", "ls", "precisions", "accumulations", "layers", "seeds")
TOP_KEYS = ("name", "description", "train_args", "grid", "overrides", "rules", "vary_data_seed")

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
    if not g.accumulations or any(not is_accumulation(a) for a in g.accumulations):
        raise ValueError(f"grid.accumulations must be a non-empty tuple from {ACCUMULATION_FORMS}, "
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
    if not name or (acc and not is_accumulation(acc)) or (sep and not acc):
        raise ValueError(f"bad grid.precisions entry {entry!r}: expected 'name' or "
                         f"'name@accumulation' with accumulation in {ACCUMULATION_FORMS}")
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
    """A sweep config's ARGS (`arith_precision.common.config_args.parse`; errors name "sweep
    config")."""
    from arith_precision.common import config_args as args_lib

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
        g.accumulations = _str_list("accumulations", args["accumulations"])
        bad = [a for a in g.accumulations if not is_accumulation(a)]
        if bad:
            raise ValueError(f"bad value for accumulations: {bad} not in {ACCUMULATION_FORMS}")
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
    from arith_precision.training import config as train_config

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
    from arith_precision.training import config as train_config

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
