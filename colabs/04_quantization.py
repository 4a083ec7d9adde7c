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
# # Post-training quantization and QLoRA
#
# The paper's LLaMA study: int4 (and QLoRA) lose to bf16 (and LoRA) on arithmetic. Here, on a
# small model trained from scratch: quantize the weights to int8 / int4 / NF4 with
# `arith_precision.quant.quantized` (weight-only, the unchanged model runs on implicit arrays),
# compare exact match and memory, then fine-tune LoRA adapters on the int4 base (QLoRA) with
# `arith_precision.quant.lora.finetune`.

# %%
# Setup: run from a checkout after `pip install -c requirements-lock.txt -e '.[dev]'`.
import os

# SMOKE=1 (set by the CI test) makes every setting tiny; the default runs the demo.
SMOKE = os.environ.get("SMOKE", "0") == "1"
print("SMOKE mode: tiny settings" if SMOKE else "full mode")

# %%
import tempfile

import matplotlib.pyplot as plt

from arith_precision import training as train
from arith_precision.quant import lora, quantized
from arith_precision.training.config import get_config

# %% [markdown]
# ## Train (or reuse) a small model
#
# `train_and_evaluate` checkpoints into its workdir. To reuse a model trained earlier, set
# `workdir` to that run's directory (and `args` to its ARGS): a finished run resumes at its
# last step and is only re-evaluated. d_model = 64 so that NF4's blocks of 64 inputs divide
# every kernel.

# %%
# ADD in base 10, 3 digits: a tiny budget in SMOKE mode.
args = "task=add,base=10,n=3,smoke,d_model=64"
args += ",steps=20,batch=16" if SMOKE else ",steps=800,batch=64,lr=3e-3"
config = get_config(args)
config.train.log_every = max(1, config.train.steps // 4)  # 4 progress lines
workdir = tempfile.mkdtemp(prefix="arith_nb04_")
summary = train.train_and_evaluate(config, workdir)
print("fp32 exact match:", summary["exact_match"])

# %%
# Load the trained parameters from the run's final checkpoint (checked against the summary's
# params_sha256 by restore_params).
params = train.restore_params(workdir).params
model_config, spec = train.model_config(config), train.task_spec(config.task)

# %% [markdown]
# ## Quantize and compare
#
# `quantize_params(params, scheme)` replaces the attention and MLP kernels by
# `QuantizedArray`s (codes + scales; embeddings and unembedding stay float32 by default);
# `evaluate_quantized` decodes greedily with the unchanged model on the held-out split.

# %%
# Exact match and memory for each weight format.
EVAL = {"num_examples": 64 if SMOKE else 1000, "batch_size": 64 if SMOKE else 500,
        "data_seed": 0}
rows = {}
for scheme in ["fp32", "int8", "int4", "nf4", "int2"]:
    tree = params if scheme == "fp32" else quantized.quantize_params(params, scheme)
    metrics = quantized.evaluate_quantized(tree, model_config, spec, **EVAL)
    memory = quantized.memory_report(tree)
    rows[scheme] = (metrics["exact_match"], metrics["digit_accuracy"],
                    memory["bits_per_param"], memory["compression"])
    print(f"{scheme:>5}: exact {rows[scheme][0]:.3f}  digits {rows[scheme][1]:.3f}  "
          f"{rows[scheme][2]:.2f} bits/param  compression {rows[scheme][3]:.2f}x")

# %%
# Exact match per weight format, labelled with the nominal bits per parameter.
fig, ax = plt.subplots(figsize=(6, 3.2))
ax.bar(list(rows), [row[0] for row in rows.values()])
for i, (exact, _, bits, _) in enumerate(rows.values()):
    ax.text(i, exact + 0.02, f"{bits:.1f} bits", ha="center", fontsize=8)
ax.set_ylabel("exact match")
ax.set_ylim(0, 1.1)
plt.show()

# %% [markdown]
# ## QLoRA: LoRA adapters on the int4 base
#
# The int4 codes and scales stay frozen; only the low-rank factors A, B (B starts at zero,
# so the adapted model starts exactly at the int4 model) are trained.

# %%
# Fine-tune rank-4 adapters on the int4 base, then evaluate base + adapters.
base = quantized.quantize_params(params, "int4")
result = lora.finetune(base, model_config, spec, steps=10 if SMOKE else 300, rank=4,
                       alpha=8, lr=1e-3, batch_size=16 if SMOKE else 64, data_seed=1,
                       seed=0)
after = result.evaluate(**EVAL)
print(f"trainable: {lora.num_trainable(result.adapters)} of "
      f"{quantized.memory_report(base)['num_params']} parameters")
print(f"int4 exact match {rows['int4'][0]:.3f} -> QLoRA {after['exact_match']:.3f} "
      f"(fp32 {rows['fp32'][0]:.3f})")

# %%
# The QLoRA training loss.
fig, ax = plt.subplots(figsize=(5, 3))
ax.plot(result.losses)
ax.set_xlabel("step")
ax.set_ylabel("loss")
ax.set_title("QLoRA on the int4 base")
plt.show()
