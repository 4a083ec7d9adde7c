"""The house's floors: no import circle and no upward import in `arith_precision/`,
`constructions/` or `experiments/`, counting imports inside functions too (a lazy import still
couples two modules; it only delays the cost).

`FLOORS` lists the floors from the bottom up; a module may import its own floor and the floors
below it, never one above. Within a floor (and within a package) the imports must not form a
circle (a package's `__init__`, its public face, counts as a module of its own)."""

import ast
import pathlib

import pytest

from tests import repo

ROOT = repo.ROOT
PACKAGES = ("arith_precision", "constructions", "experiments")

# Bottom up. A module belongs to the floor of the longest prefix listed here.
FLOORS = (
    ("arith_precision", "arith_precision.common"),
    ("arith_precision.tasks",),
    ("arith_precision.formats",),
    ("arith_precision.simulate",),
    ("arith_precision.model",),
    ("arith_precision.decode",),
    ("arith_precision.evaluate",),
    ("arith_precision.training",),
    ("arith_precision.quant",),
    ("constructions.craft",),
    ("constructions", "constructions.add_constant", "constructions.column_add",
     "constructions.lookup_add", "constructions.mul"),
    ("constructions.check",),
    ("constructions.verify", "constructions.frontier", "constructions.certify"),
    ("experiments", "experiments.row_cache", "experiments.training_verdict",
     "experiments.trained_runs"),
    ("experiments.report",),
    ("experiments.sweep",),
    ("experiments.configs",),
    ("experiments.quant_study", "experiments.precision_probe", "experiments.recipe_search",
     "experiments.gpu_numerics"),
    ("experiments.reproduce",),
    ("experiments.main",),
)


def _module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolve(name: str, known: set[str]) -> str | None:
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def _imports(path: pathlib.Path, known: set[str]) -> set[str]:
    """The project modules `path` imports, anywhere in the file (`from a import b` counts as a.b
    when that is a module, else as a)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" for a in node.names]
        out |= {m for m in (_resolve(n, known) for n in names) if m}
    return out


def _floor(module: str) -> int:
    best, floor = -1, None
    for i, prefixes in enumerate(FLOORS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, floor = len(prefix), i
    if floor is None:
        raise AssertionError(f"{module} is on no floor: add it to FLOORS")
    return floor


def _graph() -> dict[str, set[str]]:
    paths = sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))
    known = {_module_name(p) for p in paths}
    return {_module_name(p): _imports(p, known) - {_module_name(p)} for p in paths}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}

    def visit(node, stack):
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt, stack + [nxt])):
                return found
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start, [start])):
            return found
    return None


def test_cycle_finder_and_floors_find_what_they_should():
    assert _cycle({"a": {"b"}, "b": {"a"}}) == ["a", "b", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None
    assert _floor("arith_precision.training.loop") > _floor("arith_precision.evaluate")
    assert _floor("experiments.report.plots") < _floor("experiments.sweep.render")
    with pytest.raises(AssertionError, match="on no floor"):
        _floor("nowhere.module")


def test_the_graph_sees_function_level_imports():
    graph = _graph()
    # experiments/reproduce/pipeline.py imports the quantization study inside a function.
    assert "experiments.quant_study" in graph["experiments.reproduce.pipeline"]
    assert "experiments.configs.modes" in graph["experiments.reproduce.pipeline"]


def test_no_import_circle_anywhere():
    graph = _graph()
    cycle = _cycle(graph)
    assert cycle is None, " -> ".join(cycle)


def test_no_upward_import_anywhere():
    graph = _graph()
    upward = sorted(f"{m} (floor {_floor(m)}) -> {d} (floor {_floor(d)})"
                    for m, deps in graph.items() for d in deps if _floor(d) > _floor(m))
    assert not upward, "\n".join(upward)

