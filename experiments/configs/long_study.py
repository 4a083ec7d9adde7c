"""The long study (`python -m experiments.reproduce --workdir=DIR --long`): the paper's Figure 2
decided on a CPU, resumable across sessions of work (kill it any time; the same command goes on).

Recipe (one for every cell; `TRAIN_ARGS`, `OVERRIDES`): 2 layers, d_model 64, 4 heads, d_ff 256,
batch 128, AdamW at lr 3e-3 after 200 warmup steps, then constant until the training loss stops
falling: x 0.3 whenever the mean loss of a 250-step window has not beaten the best window by 1%
for 4 windows (`optim.plateau_factor`; no decay before a plateau: a constant 3e-3 left fp32 at
IterADD n = 8 oscillating between 0.15 and 0.37 for 10000 steps), validation every 250 steps on
1000 examples of the task distribution (the paper's protocol) and of the held-out inputs, stop
at iid exact match >= 0.98 twice in a row, at most `CAPS` steps. The final evaluation scores
2000 examples under both protocols.

Groups, in the order they run (the decisive cells first, so a partial run already answers the
question), each as two stages: fp32 first, then the low-precision arms (pure_bf16, bf16), whose
step cap is twice the step at which fp32 converged on the same cell and seed (at most the cap; the
whole cap when fp32 did not converge), so a delayed transition is not counted as a collapse:

    1  IterADD base 2 (k = 3) n = 8, seeds 0, 1           (the decisive length: see below)
    2  ADD base 2 n = 8, seeds 0, 1                         (the control the verdict needs)
    3  IterADD base 10 (k = 3) n = 3, 4, 5, seeds 0, 1      (the paper: bf16 collapses at 3-4)
    4  IterADD base 2 (k = 3) n = 8, seed 2                 (the decisive length's third seed)
    5  MUL base 2 n = 4, 5, 6 and base 10 n = 2, 3, seeds 0, 1 (judged under the iid protocol)
    6  the region arms at group 1's cell, seeds 0, 1: bf16_except_attention, bf16_attention_only,
       bf16_mlp_only, bf16_storage, pure_bf16_sr_update (`training/precision.py`)
    7  ADD base 2 n = 12 and base 10 n = 6, IterADD base 2 n = 10, seeds 0, 1

The third seed of the decisive cell runs after the cheap groups 2 and 3, so that the decisive
cell's low-precision arms on two seeds come first: they take most of the study's CPU time. The
ADD control comes right after them: the verdict rule needs it before any IterADD gap counts.

The decisive IterADD length is n = 8 (where the medium run's fp32 reached 0.911 / 0.986) unless
the recipe search at n = 10 (fp32 only, at most one CPU-hour a trial, committed with the run as
`recipe.md`) finds a recipe that reaches 0.95 there; n = 10 runs last, with this recipe.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

TRAIN_ARGS = "layers=2,d_model=64,heads=4,batch=128,lr=3e-3,steps=16000,early_stop=250"
OVERRIDES = {
    "model": {"d_ff": 256},
    "optim": {"warmup_steps": 200, "final_lr_fraction": 1.0, "plateau_factor": 0.3,
              "plateau_window": 250, "plateau_patience": 4},
    "train": {"log_every": 250, "checkpoint_every": 500},
    "eval": {"num_examples": 2000, "batch_size": 500},
    "early_stop": {"threshold": 0.98, "patience": 2, "num_examples": 1000, "batch_size": 500,
                   "protocol": "iid"},
}
CAPS = ((("add",), 6000), (("iter_add", 10), 16000), (("iter_add", 2), 16000),
        (("mul",), 12000))
LOW_ARMS = ("pure_bf16", "bf16")
REGION_ARMS = ("bf16_except_attention", "bf16_attention_only", "bf16_mlp_only",
               "bf16_storage", "pure_bf16_sr_update")
DECISIVE = {"task": "iter_add", "base": 2, "n": 8}

# (name, grid: tasks, bases, ns (per "<task>_b<base>"), seeds; arms of the second stage)
GROUPS = (
    ("decisive", dict(tasks=("iter_add",), bases=(2,), ns={"iter_add_b2": (8,)},
                      seeds=(0, 1)), LOW_ARMS),
    ("control", dict(tasks=("add",), bases=(2,), ns={"add_b2": (8,)}, seeds=(0, 1)), LOW_ARMS),
    ("iter_add_b10", dict(tasks=("iter_add",), bases=(10,), ns={"iter_add_b10": (3, 4, 5)},
                          seeds=(0, 1)), LOW_ARMS),
    ("decisive_seed2", dict(tasks=("iter_add",), bases=(2,), ns={"iter_add_b2": (8,)},
                            seeds=(2,)), LOW_ARMS),
    ("mul_b2", dict(tasks=("mul",), bases=(2,), ns={"mul_b2": (4, 5, 6)}, seeds=(0, 1)),
     LOW_ARMS),
    ("mul_b10", dict(tasks=("mul",), bases=(10,), ns={"mul_b10": (2, 3)}, seeds=(0, 1)),
     LOW_ARMS),
    ("regions", dict(tasks=("iter_add",), bases=(2,), ns={"iter_add_b2": (8,)}, seeds=(0, 1)),
     REGION_ARMS),
    ("longer_add", dict(tasks=("add",), bases=(2, 10), ns={"add_b2": (12,), "add_b10": (6,)},
                        seeds=(0, 1)), LOW_ARMS),
    ("longer_iter_add", dict(tasks=("iter_add",), bases=(2,), ns={"iter_add_b2": (10,)},
                             seeds=(0, 1)), LOW_ARMS),
)
DESCRIPTION = ("Training from scratch at a constant learning rate with early stopping, fp32 "
               "first; the low-precision arms run at least twice as many steps as fp32 needed "
               "to converge on the same cell and seed.")


def cap(task: str, base: int) -> int:
    for key, steps in CAPS:
        if key == (task,) or key == (task, base):
            return steps
    raise KeyError((task, base))


def _rules(grid: Mapping[str, Any]) -> list[dict]:
    rules = []
    for task in grid["tasks"]:
        for base in grid["bases"]:
            rules.append({"when": {"task": task, "base": base},
                          "set": {"train": {"steps": cap(task, base)}}})
    return rules


def _config(grid: Mapping[str, Any], precisions: Sequence[str], rules: Sequence[dict]):
    from experiments import sweep

    full = dict(grid, ks=(3,), ls=(0,), precisions=tuple(precisions), accumulations=("once",),
                layers=(2,))
    return sweep.sweep_config("reproduce_long", description=DESCRIPTION, train_args=TRAIN_ARGS,
                              grid=full, overrides=OVERRIDES, rules=tuple(rules))


def low_precision_caps(rows: Sequence[Mapping[str, Any]], grid: Mapping[str, Any],
                       arms: Sequence[str]) -> list[dict]:
    """Rules giving each low-precision cell its step cap: 2 x the step at which fp32 converged on
    the same (task, base, n, seed), at most the task's cap (the cap when fp32 did not converge,
    or has not run)."""
    converged = {(r["task"], r["base"], r["n"], r["seed"]): r.get("steps_to_converge")
                 for r in rows if r["precision"] == "fp32" and r.get("status") == "completed"}
    rules = _rules(grid)
    for (task, base, n, seed), step in sorted(converged.items()):
        if step is None or task not in grid["tasks"] or base not in grid["bases"]:
            continue
        for arm in arms:
            rules.append({"when": {"task": task, "base": base, "n": n, "seed": seed,
                                   "precision": arm},
                          "set": {"train": {"steps": min(cap(task, base), 2 * int(step))}}})
    return rules


def stages() -> list[Callable[[Sequence[Mapping[str, Any]]], Any]]:
    """The sweep configs in the order they run, each built from the rows finished so far."""
    out = []
    for _, grid, arms in GROUPS:
        if arms is REGION_ARMS:  # fp32 of this cell already ran in the decisive group
            out.append(lambda rows, g=grid, a=arms: _config(g, a, low_precision_caps(rows, g, a)))
            continue
        out.append(lambda rows, g=grid: _config(g, ("fp32",), _rules(g)))
        out.append(lambda rows, g=grid, a=arms: _config(g, a, low_precision_caps(rows, g, a)))
    return out


def whole_grid() -> list:
    """Every stage's config with no fp32 results known (the cells the study will run; their
    step caps are the upper bounds): for progress and the report's list of cells."""
    return [stage([]) for stage in stages()]
