# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.17.3
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Training at fp32 and bf16
#
# The paper trains small Transformers from scratch in float32 and bfloat16: ADD works in both,
# while iterated addition and multiplication collapse in bf16 as n grows. This notebook trains
# small models with `arith_precision.training.train_and_evaluate` at both precisions (bf16 is
# *simulated*: every intermediate rounded to e8m7, fp32 master weights), then runs a tiny
# sweep with `experiments.sweep` and draws the paper-style figure.
#
# On a CPU these are toy budgets (seconds, not the paper's 100k steps of batch 512): they show
# the workflow, not the paper's numbers. The real grid is
# `python -m experiments.sweep --config=experiments/configs/paper_fig2.py --workdir=DIR`.

# %%
# Setup: run from a checkout after `pip install -c requirements-lock.txt -e '.[dev]'`.
import os

# SMOKE=1 (set by the CI test) makes every setting tiny; the default runs the demo.
SMOKE = os.environ.get("SMOKE", "0") == "1"
print("SMOKE mode: tiny settings" if SMOKE else "full mode")

# %%
import csv
import json
import tempfile

import matplotlib.pyplot as plt
from IPython.display import Image, display

from arith_precision import training as train
from arith_precision.training.config import get_config
from experiments import sweep as sweep_lib
from experiments.configs import paper_fig2

WORKDIR = tempfile.mkdtemp(prefix="arith_nb03_")  # fresh: runs resume from a workdir
print(WORKDIR)

# %% [markdown]
# ## One run per (task, precision)
#
# `get_config(ARGS)` builds the training config from `key=value` pairs (the `smoke` switch
# selects a tiny model and budget; explicit keys override it). `eval_ns` evaluates the
# trained model at several n. Positions are learned, so a model only knows the layout of
# the n it was trained on: the other n show how little it generalises in length.

# %%
# Tiny settings: 2 layers, d_model 64, a few hundred steps (SMOKE: d_model 32, 10 steps).
if SMOKE:
    RUNS = {"add": "task=add,base=10,n=3,eval_ns=2;3,smoke,steps=10",
            "iter_add": "task=iter_add,base=2,n=4,k=3,eval_ns=3;4,smoke,steps=10"}
else:
    TINY = "smoke,d_model=64,batch=64,lr=3e-3"
    RUNS = {"add": f"task=add,base=10,n=3,eval_ns=2;3;4,{TINY},steps=600",
            "iter_add": f"task=iter_add,base=2,n=4,k=3,eval_ns=3;4;5,{TINY},steps=400"}

# %%
# Train and evaluate each (task, precision); bf16 is simulated (e8m7 compute).
summaries = {}
for task, args in RUNS.items():
    for precision in ["fp32", "bf16"]:
        config = get_config(f"{args},precision={precision}")
        config.train.log_every = max(1, config.train.steps // 4)  # 4 progress lines
        config.eval.update(num_examples=32 if SMOKE else 256, batch_size=256)
        summaries[task, precision] = train.train_and_evaluate(
            config, os.path.join(WORKDIR, f"{task}_{precision}"))

# %%
# Exact match against the evaluated n, one panel per task.
fig, axes = plt.subplots(1, len(RUNS), figsize=(9, 3.2))
for ax, task in zip(axes, RUNS, strict=True):
    for precision in ["fp32", "bf16"]:
        em = summaries[task, precision]["exact_match"]
        ns = sorted(em, key=int)
        ax.plot([int(n) for n in ns], [em[n] for n in ns], "o-", label=precision)
    ax.set_xticks([int(n) for n in ns])
    ax.set_title(f"{task} (trained at n={get_config(RUNS[task]).task.n})")
    ax.set_xlabel("n (digits)")
    ax.set_ylabel("exact match")
    ax.set_ylim(-0.05, 1.05)
    ax.legend()
plt.show()

# %%
# Each run wrote metrics.jsonl: the training loss of the four runs.
fig, ax = plt.subplots(figsize=(6, 3.2))
for task, precision in summaries:
    with open(os.path.join(WORKDIR, f"{task}_{precision}", "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    ax.plot([r["step"] for r in rows], [r["loss"] for r in rows],
            label=f"{task} {precision}")
ax.set_xlabel("step")
ax.set_ylabel("loss")
ax.legend()
plt.show()
print({k: v["wall_time_s"] for k, v in summaries.items()})

# %% [markdown]
# ## A tiny sweep and the paper-style figure
#
# A sweep is a grid of such runs: every combination of the listed values is one cell, one
# training run at its own n. `run_sweep` runs the cells that are not done yet (a killed
# sweep resumes) and aggregates them into `results.csv`, `report.md` and plots.
# `experiments/configs/paper_fig2.py` is the paper's Figure 2 grid; here a tiny grid:
# IterADD (k = 3, base 2) at fp32 and bf16.

# %%
# The paper's grid, for scale: GPU-days at the paper's budget.
print(len(sweep_lib.expand(paper_fig2.get_config())), "cells in paper_fig2.py")

# %%
# A tiny grid (train_args: the ARGS of experiments/configs/train.py for every cell).
train_args = "smoke,steps=10" if SMOKE else "smoke,d_model=64,steps=300,batch=64,lr=3e-3"
sweep = sweep_lib.sweep_config(
    "nb03_iter_add", train_args=train_args,
    description="IterADD (k=3, base 2): exact match against n, fp32 vs bf16",
    grid=dict(tasks=("iter_add",), bases=(2,), ns={"default": (3,) if SMOKE else (3, 6)},
              ks=(3,), ls=(0,), precisions=("fp32", "bf16"), accumulations=("once",),
              layers=(2,), seeds=(0,)))
print([cell.name for cell in sweep_lib.expand(sweep)])
sweep_dir = os.path.join(WORKDIR, "sweep")
out = sweep_lib.run_sweep(sweep, sweep_dir)

# %%
# results.csv: one row per (task, base, n, precision, ...) over seeds.
with open(out["outputs"]["results"]) as f:
    results = list(csv.DictReader(f))
for r in results:
    print(r["task"], "n =", r["n"], r["precision"], "exact match", r["exact_match_mean"])

# %%
# The sweep library's plot: one panel per (task, base, layers), one line per precision.
sweep_lib.plot(sweep_lib.group(sweep_lib.collect(sweep_dir)), "figure2.png")
display(Image("figure2.png"))
