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
# # Number formats, rounding and the simulation layer
#
# The paper's results are about *precision*: how many bits each intermediate scalar of a
# Transformer holds. This notebook shows the pieces the rest of the project is built on:
#
# 1. what a number format is (`arith_precision.formats`),
# 2. how rounding to it looks (grids, errors, ties-to-even, subnormals, stochastic rounding),
# 3. the dtype-simulation layer, which runs an *unmodified* JAX function with every floating
#    intermediate rounded (`arith_precision.simulate.simulate`),
# 4. why the order of a long sum matters: round once (hardware) vs after every addition (the
#    theory).

# %%
# Setup: run from a checkout after `pip install -c requirements-lock.txt -e '.[dev]'`.
import os

# SMOKE=1 (set by the CI test) makes every setting tiny; the default runs the demo.
SMOKE = os.environ.get("SMOKE", "0") == "1"
print("SMOKE mode: tiny settings" if SMOKE else "full mode")

# %%
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

from arith_precision import formats
from arith_precision.simulate import simulate

# %% [markdown]
# ## 1. What a format is
#
# A format is a frozen dataclass parsed from a string: `eEmM` is an IEEE-like float with E
# exponent bits and M mantissa bits (subnormals, top exponent for inf/NaN); aliases such as
# `bf16` (= `e8m7`) and `fp16` (= `e5m10`); the ml_dtypes variants (`e4m3fn`, `e5m2fnuz`,
# ...); fixed point `fixedI.F`.

# %%
# Parse a format and look at its fields and derived constants.
fmt = formats.parse("e4m3")
print(repr(fmt))
print(f"{fmt.total_bits} bits: max {fmt.max_value}, min normal {fmt.min_normal}, "
      f"min subnormal {fmt.min_positive}, eps {fmt.eps}")

# %%
# A few formats: the canonical string always parses back to an equal object.
for name in ["fp32", "bf16", "fp16", "tf32", "e5m2", "e4m3", "e4m3fn", "e4m3b11fnuz",
             "e2m1fn", "fixed8.8"]:
    f = formats.parse(name)
    assert formats.parse(str(f)) == f  # str round trip
    print(f"{name:>12} -> {str(f):<12} {f.total_bits:>2} bits, max {f.max_value:.6g}")

# %% [markdown]
# ## 2. Rounding pictures
#
# `formats.quantize(x, fmt)` rounds an array exactly (integer bit arithmetic on the
# float32 carrier). Near 1 the grid spacing is `2^-M`: 1/8 for e4m3, 1/4 for e5m2, 1/128
# for bf16.

# %%
# The representable values in [0.5, 2]: round a fine grid and keep the distinct results.
fine = jnp.linspace(0.5, 2.0, 20001)
fig, ax = plt.subplots(figsize=(8, 2.2))
for row, name in enumerate(["e5m2", "e4m3", "bf16"]):
    grid = np.unique(np.asarray(formats.quantize(fine, name)))
    ax.plot(grid, np.full_like(grid, row), "|", ms=14, label=f"{name}: {grid.size} values")
ax.set_yticks([0, 1, 2], ["e5m2", "e4m3", "bf16"])
ax.set_xlabel("value")
ax.set_title("Representable values near 1")
plt.show()

# %%
# Rounding error of e4m3 against the value: it grows with the binade (relative precision).
x = jnp.linspace(0.25, 4.0, 4001)
err = formats.quantize(x, "e4m3") - x
half_ulp = 2.0 ** (jnp.floor(jnp.log2(x)) - 3) / 2  # M = 3 mantissa bits
fig, ax = plt.subplots(figsize=(8, 3))
ax.plot(x, err, lw=0.8, label="quantize(x) - x")
ax.plot(x, half_ulp, "k--", lw=0.8, label="+- half an ulp")
ax.plot(x, -half_ulp, "k--", lw=0.8)
ax.set_xscale("log", base=2)
ax.set_xlabel("x")
ax.legend()
ax.set_title("e4m3 rounding error (nearest-even)")
plt.show()

# %% [markdown]
# **Ties go to even.** In e4m3 the neighbours of 1 are 1 and 1.125; the midpoint 1.0625
# rounds to 1 (even last mantissa bit), the next midpoint 1.1875 rounds up to 1.25.
# `toward_zero` truncates instead.

# %%
# Midpoints between e4m3 neighbours: nearest-even vs toward-zero.
ties = jnp.array([1.0625, 1.1875, 1.3125, 1.4375])
print("x            ", np.asarray(ties))
print("nearest_even ", np.asarray(formats.quantize(ties, "e4m3")))
print("toward_zero  ", np.asarray(formats.quantize(ties, "e4m3", rounding="toward_zero")))

# %% [markdown]
# **Subnormals.** Below the smallest normal number (2^-6 for e4m3) the grid stops shrinking:
# the spacing stays 2^-9 down to zero (gradual underflow). `_ftz` formats flush those
# results to zero.

# %%
# Values around e4m3's smallest normal number, with and without flush-to-zero.
small = jnp.linspace(0.0, 4 * fmt.min_normal, 400)
fig, ax = plt.subplots(figsize=(8, 3))
ax.plot(small, formats.quantize(small, "e4m3"), label="e4m3 (subnormals)")
ax.plot(small, formats.quantize(small, "e4m3_ftz"), "--", label="e4m3_ftz (flushed)")
ax.axvline(fmt.min_normal, color="gray", lw=0.6)
ax.text(fmt.min_normal, 0, " min normal", color="gray")
ax.set_xlabel("x")
ax.set_ylabel("quantize(x)")
ax.legend()
plt.show()

# %% [markdown]
# **Stochastic rounding** rounds up with probability equal to the distance to the lower
# neighbour, so it is unbiased: the mean of many stochastic roundings is the value itself,
# while nearest-even is a deterministic staircase. It is keyed, hence reproducible.

# %%
# Mean of many stochastic roundings of each value vs nearest-even, in e4m3.
samples = 256 if SMOKE else 4096
values = jnp.linspace(1.0, 1.25, 41)
many = jnp.broadcast_to(values, (samples, values.size))
stochastic = formats.quantize(many, "e4m3", rounding="stochastic", key=jax.random.key(0))
fig, ax = plt.subplots(figsize=(6, 3.5))
ax.plot(values, formats.quantize(values, "e4m3"), label="nearest-even")
ax.plot(values, stochastic.mean(axis=0), ".", label=f"mean of {samples} stochastic")
ax.plot(values, values, "k:", lw=0.8, label="x")
ax.set_xlabel("x")
ax.legend()
plt.show()
print("largest |mean - x|:", float(jnp.abs(stochastic.mean(axis=0) - values).max()))


# %% [markdown]
# ## 3. The simulation layer
#
# `simulate(fn, "bf16")` returns a function with the same signature whose every
# floating-point intermediate (through `jit`, `grad`, Flax modules, ...) is rounded to the
# format. The function itself is not modified.

# %%
# A small function: a softmax-weighted average and its gradient.
def f(x):
    return jnp.sum(jax.nn.softmax(x) * jnp.tanh(x))

x = jnp.linspace(-2.0, 3.0, 8)
for name in ["fp32", "bf16", "e4m3"]:
    value = simulate(f, name)(x)
    grad = simulate(jax.grad(f), name)(x)
    print(f"{name:>5}: f = {float(value):.8f}  grad[:3] = {np.asarray(grad[:3])}")

# %% [markdown]
# ## 4. Accumulation: round once or after every addition
#
# Sums and matmuls follow an accumulation mode: `once` (a wide accumulator, one rounding,
# as hardware does), `sequential` (rounded after every addition, left to right, as in the
# theory) or `pairwise`. Summing 4096 copies of 0.01 in bf16: the sequential sum stalls
# at 4, where half an ulp (2^-6) exceeds the addend, so every later addition rounds back.

# %%
# Sum 4096 copies of 0.01 in bf16 with each accumulation mode.
xs = jnp.full((4096,), 0.01)
print(f"exact      {4096 * 0.01:.4f}")
print(f"(the addend bf16(0.01) is {float(formats.quantize(jnp.float32(0.01), 'bf16'))})")
for mode in ["once", "sequential", "pairwise"]:
    total = simulate(jnp.sum, "bf16", accumulation=mode)(xs)
    print(f"{mode:<10} {float(total):.4f}")

# %%
# Running sums (cumsum follows the accumulation mode too).
fig, ax = plt.subplots(figsize=(6, 3.5))
ax.plot(np.arange(1, 4097) * 0.01, "k:", label="exact")
for mode in ["once", "sequential"]:
    ax.plot(simulate(jnp.cumsum, "bf16", accumulation=mode)(xs), label=f"bf16, {mode}")
ax.set_xlabel("terms added")
ax.set_ylabel("running sum")
ax.legend()
plt.show()

# %% [markdown]
# Next: `02_constructions.ipynb` builds Transformers that add exactly, and shrinks their
# precision until they break.
