"""Write the notebooks in colabs/ (outputs stripped) from the cell sources below.

    python colabs/_make_notebooks.py            # (re)write colabs/*.ipynb
    python colabs/_make_notebooks.py --check    # exit 1 if a notebook differs from this script

The notebooks are generated so they stay reproducible and reviewable: edit the cells here, not in
Jupyter, then regenerate. Every notebook reads `SMOKE` from the environment (default "0"); the CI
test (`tests/test_notebooks.py`) runs them with SMOKE=1, where every setting is tiny. Notebooks
only call the library (`arith_precision`, `constructions`, `experiments`) plus matplotlib glue.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import textwrap

import nbformat
from nbformat import v4

HERE = pathlib.Path(__file__).resolve().parent
# The GitHub owner of the repository. A placeholder until the repository is published: replace it
# here and regenerate to make the "Open in Colab" badges and the Colab install cell work.
OWNER = "OWNER"
REPO = "arith-precision"


# ---- shared cells ------------------------------------------------------------------------------


def md(text: str) -> tuple[str, str]:
    return ("markdown", textwrap.dedent(text).strip())


def code(text: str) -> tuple[str, str]:
    return ("code", textwrap.dedent(text).strip())


def header(name: str, title: str, intro: str) -> list[tuple[str, str]]:
    url = f"https://colab.research.google.com/github/{OWNER}/{REPO}/blob/main/colabs/{name}.ipynb"
    badge = (f"<!-- OWNER is a placeholder for the repository's GitHub owner "
             f"(colabs/_make_notebooks.py) -->\n"
             f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
             f"({url})")
    return [
        ("markdown", f"# {title}\n\n{badge}\n\n{textwrap.dedent(intro).strip()}"),
        code(f'''
            # Setup. On Colab, install the library from GitHub (OWNER: the repository's owner);
            # locally, install the repository with `pip install -e .` first.
            import os
            import sys

            if "google.colab" in sys.modules:
                %pip install -q "git+https://github.com/{OWNER}/{REPO}"

            # SMOKE=1 (set by the CI test) makes every setting tiny; the default runs the demo.
            SMOKE = os.environ.get("SMOKE", "0") == "1"
            print("SMOKE mode: tiny settings" if SMOKE else "full mode")
        '''),
    ]


# ---- 01: number formats ------------------------------------------------------------------------

NB01 = header("01_number_formats", "Number formats, rounding and the simulation layer", """
    The paper's results are about *precision*: how many bits each intermediate scalar of a
    Transformer holds. This notebook shows the pieces the rest of the project is built on:

    1. what a number format is (`arith_precision.formats`),
    2. how rounding to it looks (grids, errors, ties-to-even, subnormals, stochastic rounding),
    3. the dtype-simulation layer, which runs an *unmodified* JAX function with every floating
       intermediate rounded (`arith_precision.simulate.simulate`),
    4. why the order of a long sum matters: round once (hardware) vs after every addition (the
       theory).
""") + [
    code("""
        import jax
        import jax.numpy as jnp
        import matplotlib.pyplot as plt
        import numpy as np

        from arith_precision import formats
        from arith_precision.simulate import simulate
    """),
    md("""
        ## 1. What a format is

        A format is a frozen dataclass parsed from a string: `eEmM` is an IEEE-like float with E
        exponent bits and M mantissa bits (subnormals, top exponent for inf/NaN); aliases such as
        `bf16` (= `e8m7`) and `fp16` (= `e5m10`); the ml_dtypes variants (`e4m3fn`, `e5m2fnuz`,
        ...); fixed point `fixedI.F`.
    """),
    code("""
        # Parse a format and look at its fields and derived constants.
        fmt = formats.parse("e4m3")
        print(repr(fmt))
        print(f"{fmt.total_bits} bits: max {fmt.max_value}, min normal {fmt.min_normal}, "
              f"min subnormal {fmt.min_positive}, eps {fmt.eps}")
    """),
    code("""
        # A few formats: the canonical string always parses back to an equal object.
        for name in ["fp32", "bf16", "fp16", "tf32", "e5m2", "e4m3", "e4m3fn", "e4m3b11fnuz",
                     "e2m1fn", "fixed8.8"]:
            f = formats.parse(name)
            assert formats.parse(str(f)) == f  # str round trip
            print(f"{name:>12} -> {str(f):<12} {f.total_bits:>2} bits, max {f.max_value:.6g}")
    """),
    md("""
        ## 2. Rounding pictures

        `formats.quantize(x, fmt)` rounds an array exactly (integer bit arithmetic on the
        float32 carrier). Near 1 the grid spacing is `2^-M`: 1/8 for e4m3, 1/4 for e5m2, 1/128
        for bf16.
    """),
    code("""
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
    """),
    code("""
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
    """),
    md("""
        **Ties go to even.** In e4m3 the neighbours of 1 are 1 and 1.125; the midpoint 1.0625
        rounds to 1 (even last mantissa bit), the next midpoint 1.1875 rounds up to 1.25.
        `toward_zero` truncates instead.
    """),
    code("""
        # Midpoints between e4m3 neighbours: nearest-even vs toward-zero.
        ties = jnp.array([1.0625, 1.1875, 1.3125, 1.4375])
        print("x            ", np.asarray(ties))
        print("nearest_even ", np.asarray(formats.quantize(ties, "e4m3")))
        print("toward_zero  ", np.asarray(formats.quantize(ties, "e4m3", rounding="toward_zero")))
    """),
    md("""
        **Subnormals.** Below the smallest normal number (2^-6 for e4m3) the grid stops shrinking:
        the spacing stays 2^-9 down to zero (gradual underflow). `_ftz` formats flush those
        results to zero.
    """),
    code("""
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
    """),
    md("""
        **Stochastic rounding** rounds up with probability equal to the distance to the lower
        neighbour, so it is unbiased: the mean of many stochastic roundings is the value itself,
        while nearest-even is a deterministic staircase. It is keyed, hence reproducible.
    """),
    code("""
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
    """),
    md("""
        ## 3. The simulation layer

        `simulate(fn, "bf16")` returns a function with the same signature whose every
        floating-point intermediate (through `jit`, `grad`, Flax modules, ...) is rounded to the
        format. The function itself is not modified.
    """),
    code("""
        # A small function: a softmax-weighted average and its gradient.
        def f(x):
            return jnp.sum(jax.nn.softmax(x) * jnp.tanh(x))

        x = jnp.linspace(-2.0, 3.0, 8)
        for name in ["fp32", "bf16", "e4m3"]:
            value = simulate(f, name)(x)
            grad = simulate(jax.grad(f), name)(x)
            print(f"{name:>5}: f = {float(value):.8f}  grad[:3] = {np.asarray(grad[:3])}")
    """),
    md("""
        ## 4. Accumulation: round once or after every addition

        Sums and matmuls follow an accumulation mode: `once` (a wide accumulator, one rounding,
        as hardware does), `sequential` (rounded after every addition, left to right, as in the
        theory) or `pairwise`. Summing 4096 copies of 0.01 in bf16: the sequential sum stalls
        at 4, where half an ulp (2^-6) exceeds the addend, so every later addition rounds back.
    """),
    code("""
        # Sum 4096 copies of 0.01 in bf16 with each accumulation mode.
        xs = jnp.full((4096,), 0.01)
        print(f"exact      {4096 * 0.01:.4f}")
        print(f"(the addend bf16(0.01) is {float(formats.quantize(jnp.float32(0.01), 'bf16'))})")
        for mode in ["once", "sequential", "pairwise"]:
            total = simulate(jnp.sum, "bf16", accumulation=mode)(xs)
            print(f"{mode:<10} {float(total):.4f}")
    """),
    code("""
        # Running sums (cumsum follows the accumulation mode too).
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.plot(np.arange(1, 4097) * 0.01, "k:", label="exact")
        for mode in ["once", "sequential"]:
            ax.plot(simulate(jnp.cumsum, "bf16", accumulation=mode)(xs), label=f"bf16, {mode}")
        ax.set_xlabel("terms added")
        ax.set_ylabel("running sum")
        ax.legend()
        plt.show()
    """),
    md("""
        Next: `02_constructions.ipynb` builds Transformers that add exactly, and shrinks their
        precision until they break.
    """),
]


# ---- 02: constructions -------------------------------------------------------------------------

NB02 = header("02_constructions", "Hand-built Transformers that add and multiply", """
    The positive results of the paper are *constructions*: with logarithmic precision a
    constant-depth Transformer of constant width adds (ADD, IterADD) and, with O(n^2) width,
    multiplies. `constructions/` sets the weights of the project's own `Transformer` by hand and
    verifies them exactly against Python integers. Here we build them, look inside, shrink the
    precision until they break, and measure the *precision frontier*.
""") + [
    code("""
        import json

        from IPython.display import Image, Markdown, display

        from arith_precision import tasks
        from constructions import build
        from constructions.frontier import plot, run_frontier, to_markdown
        from constructions.verify import verify
    """),
    md("""
        ## ADD: build and look inside

        `build("add", base, n)` returns a `Construction`: the task spec, the model config, the
        parameter tree and the *named residual stream* (which coordinate holds what).
    """),
    code("""
        # ADD in base 10 for 4-digit operands: the width does not depend on n.
        c = build("add", 10, 4)
        print(c.summary())
        print(tasks.make_example(c.spec, [1234, 8766]).text)
        print(c.residual.legend())
    """),
    md("""
        The carry chain is the hard part: the carry into a column is the *generate* bit `g` of
        the nearest lower column that does not propagate (`npm`); the construction counts
        non-propagating columns (`N`) and finds that column by matching the count. Below: the
        residual stream after the last layer for 1234 + 8766 = 10000 (a carry through every
        column), restricted to a few coordinates.
    """),
    code("""
        # The named residual stream after the last sub-layer, a few coordinates only.
        names = ("digit", "S", "q", "r", "g", "npm", "N", "c", "answer")
        print(c.explain([1234, 8766], stages=("layer_4/mlp",), names=names))
    """),
    md("""
        ## Verify exactly

        `verify(spec, fmt)` runs the construction with every intermediate rounded to `fmt` and
        compares each answer with Python integers: exhaustively when there are at most 10^5
        inputs, else adversarial families (longest carry chains, all digits p-1, ...) plus
        seeded random inputs.
    """),
    code("""
        # fp32: every input of the built-in set is exact.
        NUM_RANDOM = 16 if SMOKE else 200
        result = verify(c.spec, "fp32", num_random=NUM_RANDOM)
        print({k: result[k] for k in ("format", "exact_match", "checked", "families",
                                      "first_failure")})
    """),
    code("""
        # IterADD: three 4-digit numbers, the same 5-layer construction.
        c3 = build("iter_add", 10, 4, k=3)
        print(c3.summary())
        result = verify(c3.spec, "fp32", num_random=NUM_RANDOM)
        print({k: result[k] for k in ("format", "exact_match", "checked", "first_failure")})
    """),
    md("""
        ## Shrink the precision until it breaks

        Floats `e8mM` keep float32's exponent range and keep M mantissa bits. We lower M until the
        verifier finds a wrong answer and print the first failing input: the construction needs
        a number of bits that grows like log n (it compares counts up to about n exactly).
    """),
    code("""
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
    """),
    md("""
        ## MUL

        Multiplication needs O(n^2) MLP units (the anti-diagonal column sums), then reduces the
        column sums digit by digit on exact integers until each carry is one bit; its width grows
        with n and its bits with log n: in base 10, bf16 is exact up to n = 3 and fails from
        n = 4 (e.g. 9998 * 9999, an adversarial input).
    """),
    code("""
        # MUL: full product of two 4-digit numbers; exact in fp32, not in bf16.
        cm = build("mul", 10, 4)
        print(cm.summary())
        for name in ["fp32", "bf16"]:
            r = verify(cm.spec, name, num_random=NUM_RANDOM)
            print(f"{name}: exact match {r['exact_match']:.3f} on {r['checked']} inputs, "
                  f"first failure {r['first_failure']}")
    """),
    md("""
        ## ADD at constant precision (Theorem 4.1)

        `build("add", p, n, variant="constant")` trades width for bits: every digit is copied to
        every answer position by hard attention on a one-hot position code (weights exactly 1 and
        0), and the carry into column i is one ReLU per lower column j, relu(g_j - #non-propagating
        columns between), so no value in the network grows with n. A fixed 8-bit float (e4m3)
        is then exact at every n, where the log-precision ADD above needs more bits as n grows.
    """),
    code("""
        # The same e4m3 (3 mantissa bits) at two sizes: constant precision vs the default.
        for n in ([4] if SMOKE else [4, 16]):
            spec = tasks.TaskSpec("add", base=10, n=n)
            for variant in ("constant", "log"):
                r = verify(spec, "e4m3", num_random=NUM_RANDOM, variant=variant)
                print(f"n={n:>2} {variant:>8}: d_model {r['d_model']:>3}, d_ff {r['d_ff']:>4}, "
                      f"e4m3 exact match {r['exact_match']:.3f} on {r['checked']} inputs")
    """),
    md("""
        ## The precision frontier

        `run_frontier` checks, for each n, every mantissa width M = 0..24 of `e8mM` and reports
        the threshold (the smallest M from which every wider width passes) and the narrower
        widths that pass too (exactness is not monotonic in M); also the fewest fraction bits of
        fixed point, and which common formats still pass. The 25 widths share one compiled
        decoder per carrier (the width is a runtime value); fixed point, fp16, e4m3 and e5m2
        compile one decoder per format tried, so it is still slow on a CPU (minutes per n on a
        busy 2-core machine). For the full curve use the CLI, e.g.
        `python -m constructions.frontier --task=add --base=10 --n=2,4,8,16,32,64 --out=DIR`.
    """),
    code("""
        # Two sizes, "once" accumulation only. SMOKE mode (CI) skips it: ~10 compiles per size.
        # (The frontier itself is tested in tests/test_constructions.py.)
        frontier = None
        if not SMOKE:
            frontier = run_frontier({"task": "add", "base": 10, "k": 2, "l": None}, [4, 16],
                                    accumulations=("once",), num_random=32, seed=0)
            display(Markdown(to_markdown(frontier)))
    """),
    code("""
        # The frontier plot (the library writes a PNG), and the raw numbers.
        if frontier is not None:
            plot([frontier], "frontier_add.png")
            display(Image("frontier_add.png"))
            print(json.dumps([{"n": e["n"], "mantissa_bits": e["float_mantissa_bits"]}
                              for e in frontier["entries"]]))
    """),
]


# ---- 03: precision training --------------------------------------------------------------------

NB03 = header("03_precision_training", "Training at fp32 and bf16", """
    The paper trains small Transformers from scratch in float32 and bfloat16: ADD works in both,
    while iterated addition and multiplication collapse in bf16 as n grows. This notebook trains
    small models with `arith_precision.train.train_and_evaluate` at both precisions (bf16 is
    *simulated*: every intermediate rounded to e8m7, fp32 master weights), then runs a tiny
    sweep with `experiments.sweep_lib` and draws the paper-style figure.

    On a CPU these are toy budgets (seconds, not the paper's 100k steps of batch 512): they show
    the workflow, not the paper's numbers. The real grid is
    `python -m experiments.sweep --config=experiments/configs/paper_fig2.py --workdir=DIR`.
""") + [
    code("""
        import csv
        import json
        import tempfile

        import matplotlib.pyplot as plt
        from IPython.display import Image, display

        from arith_precision import train
        from experiments import sweep_lib
        from experiments.configs import paper_fig2
        from experiments.configs.train import get_config

        WORKDIR = tempfile.mkdtemp(prefix="arith_nb03_")  # fresh: runs resume from a workdir
        print(WORKDIR)
    """),
    md("""
        ## One run per (task, precision)

        `get_config(ARGS)` builds the training config from `key=value` pairs (the `smoke` switch
        selects a tiny model and budget; explicit keys override it). `eval_ns` evaluates the
        trained model at several n. Positions are learned, so a model only knows the layout of
        the n it was trained on: the other n show how little it generalises in length.
    """),
    code("""
        # Tiny settings: 2 layers, d_model 64, a few hundred steps (SMOKE: d_model 32, 10 steps).
        if SMOKE:
            RUNS = {"add": "task=add,base=10,n=3,eval_ns=2;3,smoke,steps=10",
                    "iter_add": "task=iter_add,base=2,n=4,k=3,eval_ns=3;4,smoke,steps=10"}
        else:
            TINY = "smoke,d_model=64,batch=64,lr=3e-3"
            RUNS = {"add": f"task=add,base=10,n=3,eval_ns=2;3;4,{TINY},steps=600",
                    "iter_add": f"task=iter_add,base=2,n=4,k=3,eval_ns=3;4;5,{TINY},steps=400"}
    """),
    code("""
        # Train and evaluate each (task, precision); bf16 is simulated (e8m7 compute).
        summaries = {}
        for task, args in RUNS.items():
            for precision in ["fp32", "bf16"]:
                config = get_config(f"{args},precision={precision}")
                config.train.log_every = max(1, config.train.steps // 4)  # 4 progress lines
                config.eval.update(num_examples=32 if SMOKE else 256, batch_size=256)
                summaries[task, precision] = train.train_and_evaluate(
                    config, os.path.join(WORKDIR, f"{task}_{precision}"))
    """),
    code("""
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
    """),
    code("""
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
    """),
    md("""
        ## A tiny sweep and the paper-style figure

        A sweep is a grid of such runs: every combination of the listed values is one cell, one
        training run at its own n. `run_sweep` runs the cells that are not done yet (a killed
        sweep resumes) and aggregates them into `results.csv`, `report.md` and plots.
        `experiments/configs/paper_fig2.py` is the paper's Figure 2 grid; here a tiny grid:
        IterADD (k = 3, base 2) at fp32 and bf16.
    """),
    code("""
        # The paper's grid, for scale: GPU-days at the paper's budget.
        print(len(sweep_lib.expand(paper_fig2.get_config())), "cells in paper_fig2.py")
    """),
    code("""
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
    """),
    code("""
        # results.csv: one row per (task, base, n, precision, ...) over seeds.
        with open(out["outputs"]["results"]) as f:
            results = list(csv.DictReader(f))
        for r in results:
            print(r["task"], "n =", r["n"], r["precision"], "exact match", r["exact_match_mean"])
    """),
    code("""
        # The sweep library's plot: one panel per (task, base, layers), one line per precision.
        sweep_lib.plot(sweep_lib.group(sweep_lib.collect(sweep_dir)), "figure2.png")
        display(Image("figure2.png"))
    """),
]


# ---- 04: quantization --------------------------------------------------------------------------

NB04 = header("04_quantization", "Post-training quantization and QLoRA", """
    The paper's LLaMA study: int4 (and QLoRA) lose to bf16 (and LoRA) on arithmetic. Here, on a
    small model trained from scratch: quantize the weights to int8 / int4 / NF4 with
    `arith_precision.quantized` (weight-only, the unchanged model runs on implicit arrays),
    compare exact match and memory, then fine-tune LoRA adapters on the int4 base (QLoRA) with
    `arith_precision.lora.finetune`.
""") + [
    code("""
        import tempfile

        import matplotlib.pyplot as plt
        import orbax.checkpoint as ocp

        from arith_precision import lora, quantized, train
        from experiments.configs.train import get_config
    """),
    md("""
        ## Train (or reuse) a small model

        `train_and_evaluate` checkpoints into its workdir. To reuse a model trained earlier, set
        `workdir` to that run's directory (and `args` to its ARGS): a finished run resumes at its
        last step and is only re-evaluated. d_model = 64 so that NF4's blocks of 64 inputs divide
        every kernel.
    """),
    code("""
        # ADD in base 10, 3 digits: a tiny budget in SMOKE mode.
        args = "task=add,base=10,n=3,smoke,d_model=64"
        args += ",steps=20,batch=16" if SMOKE else ",steps=800,batch=64,lr=3e-3"
        config = get_config(args)
        config.train.log_every = max(1, config.train.steps // 4)  # 4 progress lines
        workdir = tempfile.mkdtemp(prefix="arith_nb04_")
        summary = train.train_and_evaluate(config, workdir)
        print("fp32 exact match:", summary["exact_match"])
    """),
    code("""
        # Load the trained parameters from the run's latest orbax checkpoint.
        with ocp.CheckpointManager(os.path.join(workdir, "checkpoints")) as manager:
            state = manager.restore(manager.latest_step(), args=ocp.args.StandardRestore())
        params = state["params"]
        assert train.params_sha256(params) == summary["params_sha256"]
        model_config, spec = train.model_config(config), train.task_spec(config.task)
    """),
    md("""
        ## Quantize and compare

        `quantize_params(params, scheme)` replaces the attention and MLP kernels by
        `QuantizedArray`s (codes + scales; embeddings and unembedding stay float32 by default);
        `evaluate_quantized` decodes greedily with the unchanged model on the held-out split.
    """),
    code("""
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
    """),
    code("""
        # Exact match per weight format, labelled with the nominal bits per parameter.
        fig, ax = plt.subplots(figsize=(6, 3.2))
        ax.bar(list(rows), [row[0] for row in rows.values()])
        for i, (exact, _, bits, _) in enumerate(rows.values()):
            ax.text(i, exact + 0.02, f"{bits:.1f} bits", ha="center", fontsize=8)
        ax.set_ylabel("exact match")
        ax.set_ylim(0, 1.1)
        plt.show()
    """),
    md("""
        ## QLoRA: LoRA adapters on the int4 base

        The int4 codes and scales stay frozen; only the low-rank factors A, B (B starts at zero,
        so the adapted model starts exactly at the int4 model) are trained.
    """),
    code("""
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
    """),
    code("""
        # The QLoRA training loss.
        fig, ax = plt.subplots(figsize=(5, 3))
        ax.plot(result.losses)
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.set_title("QLoRA on the int4 base")
        plt.show()
    """),
]

NOTEBOOKS = {
    "01_number_formats": NB01,
    "02_constructions": NB02,
    "03_precision_training": NB03,
    "04_quantization": NB04,
}


# ---- writing -----------------------------------------------------------------------------------


def make_notebook(name: str, cells) -> nbformat.NotebookNode:
    nb = v4.new_notebook()
    nb.metadata = {
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"},
        "colab": {"name": f"{name}.ipynb", "provenance": []},
    }
    for i, (kind, source) in enumerate(cells):
        cell = v4.new_markdown_cell(source) if kind == "markdown" else v4.new_code_cell(source)
        cell.id = f"{name[:2]}-{i:02d}"  # deterministic ids: regeneration gives the same file
        nb.cells.append(cell)
    nbformat.validate(nb)
    return nb


def render(name: str) -> str:
    return nbformat.writes(make_notebook(name, NOTEBOOKS[name])) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="compare instead of writing")
    ap.add_argument("--out", default=str(HERE), help="directory to write (default: colabs/)")
    args = ap.parse_args(argv)
    out, stale = pathlib.Path(args.out), []
    for name in NOTEBOOKS:
        path = out / f"{name}.ipynb"
        text = render(name)
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path))
        else:
            path.write_text(text)
            print(f"wrote {path}")
    if stale:
        print("out of date (run python colabs/_make_notebooks.py):", *stale, sep="\n  ")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
