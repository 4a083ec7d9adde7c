"""Trained runs as inputs of the studies that follow training: restored fp32 models.

`load_run(run_dir)` restores a finished fp32 run's final parameters (checked against its
summary's SHA-256) with its config, task and model config; `sweep_runs(sweep_dir)` lists the
completed fp32 cells of a sweep directory. The quantization study and the precision probe start
from these.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable


class BaseRun:
    """A restored fp32 training run: `name`, `run_dir`, `config`, `spec`, `mcfg`, `params`."""

    def __init__(self, name, run_dir, config, spec, mcfg, params, summary):
        self.name, self.run_dir, self.config, self.spec = name, run_dir, config, spec
        self.mcfg, self.params, self.summary = mcfg, params, summary

    @property
    def data_seed(self) -> int:
        return int(self.config.data_seed)


def load_run(run_dir: str, *, name: str | None = None) -> BaseRun:
    """Restore the final parameters of a finished training run from its orbax checkpoint.

    Raises:
        ValueError: no summary.json / checkpoints, a run that did not complete, a run not trained
            in fp32, or restored parameters whose SHA-256 differs from the summary's.
    """
    from arith_precision import training as train

    params, config, summary, _ = train.restore_params(run_dir)
    if config.precision.name != "fp32" or config.precision.get("native", False):
        raise ValueError(f"run {run_dir!r} was trained in {config.precision.name!r}; the study "
                         f"quantizes fp32-trained models")
    mcfg = train.model_config(config)
    return BaseRun(name or os.path.basename(os.path.normpath(run_dir)), run_dir, config,
                   train.task_spec(config.task), mcfg, params, summary)


def sweep_runs(sweep_dir: str, *, tasks: Iterable[str] | None = None) -> dict[str, str]:
    """{cell name: cell dir} of the completed fp32 cells of a sweep directory (sorted by name)."""
    if not os.path.isdir(sweep_dir):
        raise ValueError(f"sweep directory {sweep_dir!r} does not exist")
    wanted = set(tasks) if tasks is not None else None
    out = {}
    for name in sorted(os.listdir(sweep_dir)):
        cell_dir = os.path.join(sweep_dir, name)
        meta, summary = (os.path.join(cell_dir, f) for f in ("cell.json", "summary.json"))
        if not (os.path.isfile(meta) and os.path.isfile(summary)):
            continue
        with open(meta) as f:
            coords = json.load(f)["coords"]
        with open(summary) as f:
            status = json.load(f)["status"]
        if (coords["precision"] == "fp32" and coords["accumulation"] == "once"
                and status == "completed" and (wanted is None or coords["task"] in wanted)):
            out[name] = cell_dir
    return out
