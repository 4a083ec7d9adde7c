"""Named subspaces of a construction's residual stream (like tracr's labelled bases).

A construction declares every coordinate of its residual stream once, with a name and a sentence
saying what it holds, and where (embedding, table or which layer writes it). Blocks then address
coordinates by name, and `describe` prints, for one input, what each coordinate holds after
every sub-layer.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Coordinate:
    name: str
    written_by: str  # "embed", "table", "layer_2/attn", "layer_2/mlp", ...
    meaning: str


class Residual:
    """An ordered set of named coordinates; `index(name)` is the coordinate's position in D."""

    def __init__(self):
        self._coords: list[Coordinate] = []
        self._index: dict[str, int] = {}

    def add(self, name: str, written_by: str, meaning: str) -> int:
        if name in self._index:
            raise ValueError(f"residual coordinate {name!r} declared twice")
        self._index[name] = len(self._coords)
        self._coords.append(Coordinate(name, written_by, meaning))
        return self._index[name]

    def index(self, name: str) -> int:
        try:
            return self._index[name]
        except KeyError:
            raise KeyError(f"no residual coordinate named {name!r}; have {list(self._index)}") \
                from None

    @property
    def names(self) -> list[str]:
        return [c.name for c in self._coords]

    @property
    def coordinates(self) -> list[Coordinate]:
        return list(self._coords)

    @property
    def size(self) -> int:
        return len(self._coords)

    def legend(self) -> str:
        """One line per coordinate: index, name, writer and meaning."""
        width = max(len(c.name) for c in self._coords)
        return "\n".join(f"{i:3d} {c.name:<{width}}  [{c.written_by}]  {c.meaning}"
                         for i, c in enumerate(self._coords))


def describe(residual: Residual, residuals: dict[str, np.ndarray], tokens: list[str],
             stages: tuple[str, ...] | None = None, names: tuple[str, ...] | None = None,
             digits: int = 3) -> str:
    """A text table per stage: one row per named coordinate, one column per position.

    `residuals` is the dict the model returns with `return_residuals=True` for ONE sequence
    (each value L x D). Only coordinates already written at a stage are shown there.
    """
    stage_order = list(residuals)
    stages = tuple(stages or stage_order)
    out = []
    head = " " * 12 + "".join(f"{t:>9}" for t in tokens)
    for stage in stages:
        x_LxD = np.asarray(residuals[stage])
        done = stage_order[: stage_order.index(stage) + 1]
        out.append(f"== {stage} ==")
        out.append(head)
        for i, c in enumerate(residual.coordinates):
            if names is not None and c.name not in names:
                continue
            writer = c.written_by.split("+")[-1]
            writer = "embed" if writer in ("table", "embed") else writer
            if writer not in done:
                continue
            row = "".join(f"{v:9.{digits}g}" for v in x_LxD[:, i])
            out.append(f"{c.name[:11]:<12}{row}")
    return "\n".join(out)
