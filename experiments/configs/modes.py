"""The reproduction's modes as data: what `python -m experiments.reproduce --<mode>` runs.

`SETTINGS[mode]()` builds a `Settings` (frontier sizes, the training sweep, the quantization
study's and the precision probe's arguments). `experiments/reproduce.py` runs them and the
quantization study's CLI reuses them; neither imports the other for it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

MODES = ("smoke", "quick", "medium", "long", "full")


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything a mode decides.

    Attributes:
        name: smoke | quick | medium | full.
        frontiers: ((spec kwargs for tasks.TaskSpec without n, ns), ...).
        frontier_full: True: `constructions.frontier.run_frontier` (float, fixed point, common
            formats, every accumulation); False: a lean search for the float mantissa bits only.
        frontier_accumulations: accumulation modes of the frontier.
        frontier_random: random inputs on top of the adversarial set (when not exhaustive).
        sweep: builds the sweep config (`experiments.sweep.sweep_config`).
        workers: sweep worker processes.
        quant_tasks: the sweep tasks whose fp32 cells the quant study uses.
        quant_finetune_tasks: of those, the tasks whose cells get LoRA / QLoRA.
        quant: keyword arguments of `quant_study.run_quant_study`.
        probe: keyword arguments of `precision_probe.probe`.
        stages: None (the sweep runs `sweep()` at once) or a function returning the sweep's
            stages in order, each `stage(rows so far) -> sweep config` (the long study: fp32
            first, then the low-precision arms with caps from fp32's convergence); `sweep()`
            is then the first stage.
    """

    name: str
    frontiers: tuple
    frontier_full: bool
    frontier_accumulations: tuple[str, ...]
    frontier_random: int
    sweep: Callable[[], Any]
    workers: int
    quant_tasks: tuple[str, ...]
    quant_finetune_tasks: tuple[str, ...]
    quant: dict
    probe: dict = dataclasses.field(default_factory=dict)
    stages: Callable[[], list] | None = None


def _spec(task: str, base: int, k: int = 2) -> dict:
    return {"task": task, "base": base, "k": k if task == "iter_add" else 2, "l": None}


def _small_sweep(name: str, *, tasks, ns, train_args: str, overrides, rules=(),
                 precisions=("fp32", "pure_bf16", "bf16"), seeds=(0,), layers=2):
    from experiments import sweep as sweep_lib

    grid = dict(tasks=tasks, bases=(2,), ns=ns, ks=(3,), ls=(0,), precisions=precisions,
                accumulations=("once",), layers=(layers,), seeds=seeds)
    return sweep_lib.sweep_config(
        name, description="Training from scratch, exact match against n: fp32; pure_bf16 "
                          "(weights, activations, gradients and optimizer in bf16); bf16 (mixed: "
                          "bf16 compute, fp32 master weights and optimizer).",
        train_args=train_args, grid=grid, overrides=overrides, rules=rules)


def smoke_settings() -> Settings:
    def sweep():
        return _small_sweep("reproduce_smoke", tasks=("add", "iter_add"), ns={"default": (3,)},
                            train_args="smoke,steps=10", precisions=("fp32", "bf16"),
                            overrides={"train": {"log_every": 5, "checkpoint_every": 10}})

    return Settings(
        name="smoke", frontiers=((_spec("add", 2), (2, 3)),), frontier_full=False,
        frontier_accumulations=("once",), frontier_random=10, sweep=sweep, workers=2,
        quant_tasks=("add",), quant_finetune_tasks=("add",),
        quant=dict(schemes=("int8", "int4"), qlora_schemes=("int4",), finetune_steps=5,
                   lora_rank=2, lora_batch=8, num_examples=32, eval_batch=32),
        probe=dict(region_sets=("all", "mlp", "all_but_attention"), num_examples=32,
                   batch_size=32, min_bits=8, named_formats=("bf16",)))


def quick_settings() -> Settings:
    def sweep():
        return _small_sweep(
            "reproduce_quick", tasks=("add", "iter_add", "mul"),
            ns={"add": (6,), "iter_add": (4, 6), "mul": (4,)},
            train_args="layers=2,d_model=64,heads=4,batch=64,lr=3e-3,steps=1500",
            overrides={"model": {"d_ff": 256}, "optim": {"warmup_steps": 100},
                       "train": {"log_every": 250, "checkpoint_every": 1000},
                       "eval": {"num_examples": 256, "batch_size": 256}},
            rules=({"when": {"task": "iter_add", "n": 4}, "set": {"train": {"steps": 1000}}},
                   {"when": {"task": "iter_add", "n": 6}, "set": {"train": {"steps": 2000}}}))

    return Settings(
        name="quick",
        frontiers=((_spec("add", 10), (4, 8, 16, 32)), (_spec("iter_add", 2, 3), (4, 8, 16)),
                   (_spec("mul", 2), (2, 4, 16))),
        frontier_full=False, frontier_accumulations=("once",), frontier_random=30, sweep=sweep,
        workers=2, quant_tasks=("add", "iter_add", "mul"), quant_finetune_tasks=("iter_add",),
        quant=dict(schemes=("int8", "int4", "int4_g32", "nf4_g32", "e4m3", "e5m2", "bf16",
                            "mxfp8_e4m3", "mxfp6_e2m3", "mxfp4_e2m1", "nvfp4"),
                   qlora_schemes=("int4", "mxfp4_e2m1", "nvfp4"), finetune_steps=100,
                   lora_rank=8, lora_batch=64, lora_lr=1e-3,
                   num_examples=256, eval_batch=256),
        probe=dict(num_examples=256, batch_size=256, named_formats=("bf16",)))


# The medium recipe: the quick model (2 layers, d_model 64) at twice its batch, 2 seeds, early
# stopping every 250 steps, step caps sized so the worst case (nothing converges) fits 2.5 h on 2
# cores. Pilot runs: d_model 128 / 3 layers reaches 0.73 on IterADD n=8 after 4000 steps
# but runs ~2 steps/s per worker, 5x slower: too slow for 30 cells in the budget.
MEDIUM_TRAIN_ARGS = "layers=2,d_model=64,heads=4,batch=128,lr=3e-3,steps=8000,early_stop=250"
MEDIUM_NS = {"add": (8,), "iter_add": (6, 8), "mul": (4, 5)}
MEDIUM_STEPS = (({"task": "add"}, 3000), ({"task": "iter_add", "n": 6}, 4000),
                ({"task": "mul", "n": 4}, 4000))  # the rest: 8000


def medium_settings() -> Settings:
    def sweep():
        return _small_sweep(
            "reproduce_medium", tasks=("add", "iter_add", "mul"), ns=MEDIUM_NS,
            train_args=MEDIUM_TRAIN_ARGS, seeds=(0, 1),
            overrides={"model": {"d_ff": 256}, "optim": {"warmup_steps": 200},
                       "train": {"log_every": 250, "checkpoint_every": 500},
                       "eval": {"num_examples": 1000, "batch_size": 500}},
            rules=tuple({"when": when, "set": {"train": {"steps": steps}}}
                        for when, steps in MEDIUM_STEPS))

    quick = quick_settings()
    return dataclasses.replace(
        quick, name="medium", sweep=sweep,
        quant=dict(quick.quant, num_examples=1000, eval_batch=500),
        probe=dict(num_examples=1000, batch_size=500, named_formats=("bf16",)))


def long_settings() -> Settings:
    from experiments.configs import long_study

    medium = medium_settings()
    return dataclasses.replace(
        medium, name="long", sweep=lambda: long_study.stages()[0]([]), stages=long_study.stages,
        quant=dict(medium.quant, num_examples=2000, eval_batch=500),
        probe=dict(num_examples=1000, batch_size=500, named_formats=("bf16",)))


def full_settings() -> Settings:
    def sweep():
        from experiments.configs import paper_fig2

        return paper_fig2.get_config()

    return Settings(
        name="full",
        frontiers=((_spec("add", 10), (4, 8, 16, 32, 64, 128)),
                   (_spec("iter_add", 2, 3), (4, 8, 16, 32, 64)),
                   (_spec("mul", 2), (2, 3, 4, 6, 10, 16))),
        frontier_full=True, frontier_accumulations=("once", "sequential"), frontier_random=200,
        sweep=sweep, workers=4, quant_tasks=("add", "iter_add", "mul"),
        quant_finetune_tasks=("iter_add", "mul"),
        quant=dict(schemes=("int8", "int4", "int4_g64", "nf4_g64", "e4m3", "e5m2", "bf16",
                            "mxfp8_e4m3", "mxfp6_e2m3", "mxfp4_e2m1", "nvfp4"),
                   qlora_schemes=("int4", "mxfp4_e2m1", "nvfp4"), finetune_steps=1000,
                   lora_rank=16, lora_batch=256, lora_lr=1e-3,
                   num_examples=2000, eval_batch=500),
        probe=dict(accumulations=("once", "sequential"), num_examples=2000, batch_size=500))


SETTINGS = {"smoke": smoke_settings, "quick": quick_settings, "medium": medium_settings,
            "long": long_settings, "full": full_settings}


