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
# # Hand-built Transformers that add and multiply
#
# The positive results of the paper are *constructions*: with logarithmic precision a
# constant-depth Transformer of constant width adds (ADD, IterADD) and, with O(n^2) width,
# multiplies. `constructions/` sets the weights of the project's own `Transformer` by hand and
# verifies them exactly against Python integers. Here we build them, look inside, shrink the
# precision until they break, and measure the *precision frontier*.

# %%
# Setup: run from a checkout after `pip install -c requirements-lock.txt -e '.[dev]'`.
import os

# SMOKE=1 (set by the CI test) makes every setting tiny; the default runs the demo.
SMOKE = os.environ.get("SMOKE", "0") == "1"
print("SMOKE mode: tiny settings" if SMOKE else "full mode")

# %%
import json

from IPython.display import Image, Markdown, display

from arith_precision import tasks
from constructions import build
from constructions.frontier import plot, run_frontier, to_markdown
from constructions.verify import verify

# %% [markdown]
# ## ADD: build and look inside
#
# `build("add", base, n)` returns a `Construction`: the task spec, the model config, the
# parameter tree and the *named residual stream* (which coordinate holds what).

# %%
# ADD in base 10 for 4-digit operands: the width does not depend on n.
c = build("add", 10, 4)
print(c.summary())
print(tasks.make_example(c.spec, [1234, 8766]).text)
print(c.residual.legend())

# %% [markdown]
# The carry chain is the hard part: the carry into a column is the *generate* bit `g` of
# the nearest lower column that does not propagate (`npm`); the construction counts
# non-propagating columns (`N`) and finds that column by matching the count. Below: the
# residual stream after the last layer for 1234 + 8766 = 10000 (a carry through every
# column), restricted to a few coordinates.

# %%
# The named residual stream after the last sub-layer, a few coordinates only.
names = ("digit", "S", "q", "r", "g", "npm", "N", "c", "answer")
print(c.explain([1234, 8766], stages=("layer_4/mlp",), names=names))

# %% [markdown]
# ## Verify exactly
#
# `verify(spec, fmt)` runs the construction with every intermediate rounded to `fmt` and
# compares each answer with Python integers: exhaustively when there are at most 10^5
# inputs, else adversarial families (longest carry chains, all digits p-1, ...) plus
# seeded random inputs.

# %%
# fp32: every input of the built-in set is exact.
NUM_RANDOM = 16 if SMOKE else 200
result = verify(c.spec, "fp32", num_random=NUM_RANDOM)
print({k: result[k] for k in ("format", "exact_match", "checked", "families",
                              "first_failure")})

# %%
# IterADD: three 4-digit numbers, the same 5-layer construction.
c3 = build("iter_add", 10, 4, k=3)
print(c3.summary())
result = verify(c3.spec, "fp32", num_random=NUM_RANDOM)
print({k: result[k] for k in ("format", "exact_match", "checked", "first_failure")})

# %% [markdown]
# ## Shrink the precision until it breaks
#
# Floats `e8mM` keep float32's exponent range and keep M mantissa bits. We lower M until the
# verifier finds a wrong answer and print the first failing input: the construction needs
# a number of bits that grows like log n (it compares counts up to about n exactly).

# %%
# Lower the mantissa width M until the first failure, for each n.
SHRINK = {4: 8} if SMOKE else {4: 10, 16: 10}  # n -> the M to start from
for n, start in SHRINK.items():
    spec = tasks.TaskSpec("add", base=10, n=n)
    for m in range(start, 0, -1):
        r = verify(spec, f"e8m{m}", num_random=NUM_RANDOM)
        print(f"n={n:>2} e8m{m:<2} exact match {r['exact_match']:.3f} "
              f"on {r['checked']} inputs")
        if r["failures"]:
            d = r["first_failure_detail"]
            print(f"  first failure: {d['operands']} expected {d['expected']}, "
                  f"got tokens {d['got_tokens']}")
            break

# %% [markdown]
# ## MUL
#
# Multiplication needs O(n^2) MLP units (the anti-diagonal column sums), then reduces the
# column sums digit by digit on exact integers until each carry is one bit; its width grows
# with n and its bits with log n: in base 10, bf16 is exact up to n = 3 and fails from
# n = 4 (e.g. 9998 * 9999, an adversarial input).

# %%
# MUL: full product of two 4-digit numbers; exact in fp32, not in bf16.
cm = build("mul", 10, 4)
print(cm.summary())
for name in ["fp32", "bf16"]:
    r = verify(cm.spec, name, num_random=NUM_RANDOM)
    print(f"{name}: exact match {r['exact_match']:.3f} on {r['checked']} inputs, "
          f"first failure {r['first_failure']}")

# %% [markdown]
# ## ADD at constant precision (Theorem 4.1)
#
# `build("add", p, n, variant="constant")` trades width for bits: every digit is copied to
# every answer position by hard attention on a one-hot position code (weights exactly 1 and
# 0), and the carry into column i is one ReLU per lower column j, relu(g_j - #non-propagating
# columns between), so no value in the network grows with n. A fixed 8-bit float (e4m3)
# is then exact at every n, where the log-precision ADD above needs more bits as n grows.

# %%
# The same e4m3 (3 mantissa bits) at two sizes: constant precision vs the default.
for n in ([4] if SMOKE else [4, 16]):
    spec = tasks.TaskSpec("add", base=10, n=n)
    for variant in ("constant", "log"):
        r = verify(spec, "e4m3", num_random=NUM_RANDOM, variant=variant)
        print(f"n={n:>2} {variant:>8}: d_model {r['d_model']:>3}, d_ff {r['d_ff']:>4}, "
              f"e4m3 exact match {r['exact_match']:.3f} on {r['checked']} inputs")

# %% [markdown]
# ## The precision frontier
#
# `run_frontier` checks, for each n, every mantissa width M = 0..24 of `e8mM` and reports
# the threshold (the smallest M from which every wider width passes) and the narrower
# widths that pass too (exactness is not monotonic in M); also the fewest fraction bits of
# fixed point, and which common formats still pass. The 25 widths share one compiled
# decoder per carrier (the width is a runtime value); fixed point, fp16, e4m3 and e5m2
# compile one decoder per format tried, so it is still slow on a CPU (minutes per n on a
# busy 2-core machine). For the full curve use the CLI, e.g.
# `python -m constructions.frontier --task=add --base=10 --n=2,4,8,16,32,64 --out=DIR`.

# %%
# Two sizes, "once" accumulation only. SMOKE mode (CI) skips it: ~10 compiles per size.
# (The frontier itself is tested in tests/constructions/test_constructions.py.)
frontier = None
if not SMOKE:
    frontier = run_frontier({"task": "add", "base": 10, "k": 2, "l": None}, [4, 16],
                            accumulations=("once",), num_random=32, seed=0)
    display(Markdown(to_markdown(frontier)))

# %%
# The frontier plot (the library writes a PNG), and the raw numbers.
if frontier is not None:
    plot([frontier], "frontier_add.png")
    display(Image("frontier_add.png"))
    print(json.dumps([{"n": e["n"], "mantissa_bits": e["float_mantissa_bits"]}
                      for e in frontier["entries"]]))
