r"""The paper's int4 / QLoRA study on our own models: post-training quantization, LoRA vs QLoRA.

    python -m experiments.quant_study --workdir=DIR [--smoke | --quick] \
        [--sweep=SWEEP_DIR | --runs=RUN_DIR,RUN_DIR,...] [--schemes=int8,int4,...] \
        [--finetune_steps=S] [--examples=N]

Feng et al. (2024, Section 6) fine-tune LLaMA-3.1-8B on arithmetic with LoRA (bf16 base) and
QLoRA (int4 base) and find int4 / QLoRA behind, the gap widening with the number of digits. Here
the "LLM" is one of our own fp32-trained Transformers (one per task and n):

1. Base models: fp32 training runs, restored from their orbax checkpoints (`train.py` saves the
   state {"params", "opt_state", "step"}; the restored parameters are checked against the run's
   `params_sha256`). They come from a sweep directory (`--sweep`: its completed fp32 cells), from
   run directories (`--runs`), or, with neither, are trained here into `DIR/bases/`.
2. Post-training weight quantization (`arith_precision.quant.quantized`: quax implicit arrays, the
   model code unchanged; embeddings and unembedding stay fp32, as in bitsandbytes/QLoRA) with
   each scheme: int8 and int4 per output channel, int4 in groups, NF4 in blocks, and plain number
   formats (e4m3, e5m2, bf16); exact match and digit accuracy on held-out examples of the run's
   own task and n (the run's evaluation stream, so the fp32 row repeats the run's own summary).
   The block formats (OCP MX mxfp8_e4m3 / mxfp6_e2m3 / mxfp4_e2m1 and NVIDIA nvfp4, blocked along
   each kernel's input axis) stand next to int4 and NF4.
3. A short fine-tune on the same task: LoRA on the frozen fp32 base against QLoRA (the same LoRA
   on a frozen quantized base: int4 as in the paper, and mxfp4_e2m1 and nvfp4;
   `--qlora_schemes`), same steps, rank, learning rate and data.

Outputs in DIR: `quant_results.csv` (one row per run x stage x scheme), `quant_report.md`
(tables), `quant_exact_match.png` (exact match against n, one line per scheme, one panel per
task) and `quant_lora.png` (fp32 / int4 before, LoRA / QLoRA after, against n), rendered by
`experiments/report/quant.py` from the study's rows. Finished rows are cached in
`quant_rows.jsonl`: re-running skips them.

Settings (`--smoke`, `--quick`, default full; the bases only when trained here):
  smoke  the fp32 ADD cell of `experiments.reproduce --smoke` (base 2, n=3, 2 layers, d=32, 10
         steps), schemes int8 and int4, 5-step LoRA/QLoRA, 32 examples: measured 1m13s on a
         busy 2-core CPU; checks the plumbing only.
  quick  the fp32 cells of `experiments.reproduce --quick` (ADD base 2 n=6, IterADD base 2 k=3
         n=4 and 6, MUL base 2 n=4; 2 layers, d=64, 1000-2000 steps), every default scheme,
         100-step LoRA/QLoRA, 256 examples: ~2.5 min for the study itself on a busy 2-core CPU
         (measured inside the main job), plus ~5-8 min to train the 4 bases when not given.
  full   ADD base 10 n=4/8/16, IterADD base 2 k=3 n=4..12, MUL base 2 n=4/6/8 (3 layers,
         d=128, batch 512, 20k steps), 1000-step LoRA/QLoRA, 2000 examples: a GPU job (an
         estimate, not measured: ~1 GPU-hour for the bases, minutes for the study itself).
Result of the quick settings (measured, one seed; results/reproduce_quick/quant/): int8, bf16 and
e4m3 stay within ~0.07 of fp32; int4 per channel loses the most (IterADD base 2: fp32 0.996 /
0.879 at n=4 / 6, int4 0.531 / 0.508); grouped int4 and NF4 (g32) sit in between at n=4 (0.836 /
0.781) and not at n=6 (0.293 / 0.504); mxfp8_e4m3 and mxfp6_e2m3 track e4m3 (n=6: 0.816 / 0.770,
e4m3 0.809); mxfp4_e2m1 and nvfp4 land near int4 / NF4 (n=4: 0.582 / 0.801; n=6: 0.520 /
0.570). After 100 steps, LoRA on the fp32 base reaches 1.000 / 0.941; QLoRA on int4, mxfp4_e2m1
and nvfp4 ends 0.066, 0.094 and 0.102 below it at n=6 (within 0.004 at n=4).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from arith_precision.common import cli_errors
from arith_precision.tasks.spec import TASKS
from experiments.report import quant as report_quant
from experiments.row_cache import RowCache
from experiments.trained_runs import BaseRun, load_run, sweep_runs

DEFAULT_SCHEMES = ("int8", "int4", "int4_g32", "nf4_g32", "e4m3", "e5m2", "bf16", "mxfp8_e4m3",
                   "mxfp6_e2m3", "mxfp4_e2m1", "nvfp4")
DEFAULT_QLORA = ("int4", "mxfp4_e2m1", "nvfp4")
STAGES = ("ptq", "lora", "qlora")
ROWS_FILE = "quant_rows.jsonl"


def train_bases(workdir: str, configs: Mapping[str, Any], progress=print) -> dict[str, str]:
    """Train (or resume, or skip when finished) one fp32 run per config into workdir/bases/NAME."""
    from arith_precision import training as train

    out = {}
    for name, config in configs.items():
        run_dir = os.path.join(workdir, "bases", name)
        summary = os.path.join(run_dir, "summary.json")
        if os.path.isfile(summary):
            with open(summary) as f:
                done = json.load(f).get("status") == "completed"
        else:
            done = False
        if not done:
            start = time.time()
            progress(f"[quant] training base {name} ({config.train.steps} steps)")
            train.train_and_evaluate(config, run_dir)
            progress(f"[quant] trained base {name} in {time.time() - start:.0f}s")
        out[name] = run_dir
    return out


# ---- the study ---------------------------------------------------------------------------------


def _key(row: Mapping[str, Any]) -> str:
    return json.dumps([row["run"], row["stage"], row["scheme"], row["n"], row["num_examples"],
                       row.get("settings", "")])


def _check_positive(name: str, value, lo: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise ValueError(f"{name} must be an integer >= {lo}, got {value!r}")


def _as_runs(base_runs) -> dict[str, str]:
    if isinstance(base_runs, str):
        base_runs = [base_runs]
    if isinstance(base_runs, Mapping):
        runs = dict(base_runs)
    else:
        runs = {os.path.basename(os.path.normpath(d)): d for d in base_runs}
    if not runs:
        raise ValueError("base_runs is empty: give at least one fp32 training run directory")
    return runs


def run_quant_study(workdir: str, *, base_runs: Sequence[str] | Mapping[str, str],
                    schemes: Sequence[str] = DEFAULT_SCHEMES, ns: Iterable[int] | None = None,
                    finetune_steps: int = 200, finetune_runs: Iterable[str] | None = None,
                    qlora_schemes: Sequence[str] = DEFAULT_QLORA, lora_rank: int = 8,
                    lora_alpha: float = 16.0,
                    lora_lr: float = 1e-3, lora_batch: int = 64, num_examples: int = 512,
                    eval_batch: int = 256, seed: int = 0,
                    progress: Callable[[str], None] = print) -> dict[str, Any]:
    """Quantize fp32-trained runs post-training, evaluate, fine-tune LoRA vs QLoRA; write outputs.

    Args:
        workdir: output directory (created).
        base_runs: finished fp32 run directories (a list, or {name: dir or loaded `BaseRun`});
            `sweep_runs` lists a sweep's.
        schemes: `quant.scheme.parse_scheme` strings, applied to every run (fp32 is always the
            reference row).
        ns: keep only the runs trained at these n (None: all). Each run is evaluated at its own
            n: a model trained on n-digit layouts does not transfer to other n.
        finetune_steps: LoRA and QLoRA steps (0: no fine-tuning).
        finetune_runs: names of the runs to fine-tune (None: all of them).
        qlora_schemes: the frozen quantized bases of QLoRA (the paper: int4), one arm each.
        lora_rank, lora_alpha, lora_lr, lora_batch: the LoRA settings (both arms).
        num_examples, eval_batch: held-out examples per evaluation and the decoding batch.
        seed: LoRA initialisation; fine-tuning data is the run's data_seed + 1 training stream.
        progress: called with one line per finished evaluation (elapsed time included).

    Returns:
        {"rows": [...], "csv", "report", "plots": [paths], "skipped": cached rows reused}.

    Raises:
        ValueError: bad arguments, an unknown scheme or one that does not fit a run's kernels
            (group size), an unknown finetune run, or a run that `load_run` rejects; all checked
            before any evaluation.
    """
    import jax

    from arith_precision import evaluate as evaluate_lib
    from arith_precision.quant import lora, quantized
    from arith_precision.quant import scheme as quant_scheme

    start = time.time()
    runs = _as_runs(base_runs)
    schemes, qlora_schemes = tuple(schemes), tuple(qlora_schemes)
    for s in (*schemes, *qlora_schemes):
        quant_scheme.parse_scheme(s)
    _check_positive("finetune_steps", finetune_steps, 0)
    for name, value in (("lora_rank", lora_rank), ("lora_batch", lora_batch),
                        ("num_examples", num_examples), ("eval_batch", eval_batch)):
        _check_positive(name, value)
    if not lora_lr > 0 or not lora_alpha > 0:
        raise ValueError(f"lora_lr and lora_alpha must be > 0, got {lora_lr!r}, {lora_alpha!r}")
    finetune_set = set(runs) if finetune_runs is None else set(finetune_runs)
    unknown = sorted(finetune_set - set(runs))
    if unknown:
        raise ValueError(f"finetune_runs {unknown} are not among the base runs {sorted(runs)}")
    loaded = [d if isinstance(d, BaseRun) else load_run(d, name=name) for name, d in runs.items()]
    if ns is not None:
        ns = set(ns)
        loaded = [r for r in loaded if r.spec.n in ns]
        if not loaded:
            raise ValueError(f"no base run was trained at n in {sorted(ns)}")
    for run in loaded:  # fail before any work on a scheme that does not fit a run's kernels
        for s in (*schemes, *qlora_schemes):
            try:
                quantized.quantize_params(run.params, s)
            except ValueError as e:
                raise ValueError(f"scheme {s!r} does not fit run {run.name}: {e}") from None

    os.makedirs(workdir, exist_ok=True)
    rows_path = os.path.join(workdir, ROWS_FILE)
    cache = RowCache(rows_path, _key)
    rows, skipped = [], 0
    lora_settings = json.dumps(dict(steps=finetune_steps, rank=lora_rank, alpha=lora_alpha,
                                    lr=lora_lr, batch=lora_batch, seed=seed,
                                    qlora=list(qlora_schemes)), sort_keys=True)

    def record(run: BaseRun, stage: str, scheme: str, compute: Callable[[], dict]) -> dict:
        nonlocal skipped
        cfg = run.config
        row = dict(run=run.name, task=run.spec.task, base=run.spec.base,
                   k=run.spec.k if run.spec.task == "iter_add" else "", n=run.spec.n,
                   layers=cfg.model.num_layers, d_model=cfg.model.d_model, stage=stage,
                   scheme=scheme, num_examples=num_examples,
                   settings=lora_settings if stage != "ptq" else "")
        key = _key(row)
        if key in cache:
            skipped += 1
            rows.append(cache[key])
            return cache[key]
        t0 = time.time()
        row.update(compute())
        row["wall_time_s"] = round(time.time() - t0, 2)
        cache.add(row)
        rows.append(row)
        tail = (f" after {row['finetune_steps']} steps (loss {row['final_loss']:.3f})"
                if stage != "ptq" else "")
        progress(f"[quant] {run.name} {stage:5s} {scheme:9s}: exact match "
                 f"{row['exact_match']:.3f}, digits {row['digit_accuracy']:.3f}{tail} "
                 f"({row['wall_time_s']:.0f}s; elapsed {time.time() - start:.0f}s)")
        return row

    def evaluate(run: BaseRun, params) -> dict:
        kwargs = dict(num_examples=num_examples, batch_size=eval_batch, data_seed=run.data_seed)
        if any(quantized.is_implicit(x) for x in
               jax.tree.leaves(params, is_leaf=quantized.is_implicit)):
            return quantized.evaluate_quantized(params, run.mcfg, run.spec, **kwargs)
        return evaluate_lib.evaluate(params, run.mcfg, run.spec, **kwargs)

    for run in loaded:
        for scheme in ("fp32", *schemes):
            def ptq(run=run, scheme=scheme):
                params = run.params if scheme == "fp32" else \
                    quantized.quantize_params(run.params, scheme)
                bits = 32.0 if scheme == "fp32" else \
                    quantized.memory_report(params)["bits_per_quantized_weight"]
                m = evaluate(run, params)
                return dict(exact_match=m["exact_match"], digit_accuracy=m["digit_accuracy"],
                            bits_per_weight=round(bits, 3), finetune_steps=0, final_loss="")
            record(run, "ptq", scheme, ptq)
        if finetune_steps and run.name in finetune_set:
            for stage, scheme in (("lora", "fp32"), *(("qlora", q) for q in qlora_schemes)):
                def tune(run=run, stage=stage, scheme=scheme):
                    base = run.params if stage == "lora" else \
                        quantized.quantize_params(run.params, scheme)
                    result = lora.finetune(base, run.mcfg, run.spec, steps=finetune_steps,
                                           rank=lora_rank, alpha=lora_alpha, lr=lora_lr,
                                           batch_size=lora_batch, data_seed=run.data_seed + 1,
                                           seed=seed)
                    m = result.evaluate(num_examples=num_examples, batch_size=eval_batch,
                                        data_seed=run.data_seed)
                    bits = 32.0 if stage == "lora" else \
                        quantized.memory_report(base)["bits_per_quantized_weight"]
                    return dict(exact_match=m["exact_match"], digit_accuracy=m["digit_accuracy"],
                                bits_per_weight=round(bits, 3), finetune_steps=finetune_steps,
                                final_loss=float(result.losses[-1]))
                record(run, stage, scheme, tune)
    out = report_quant.write_outputs(workdir, rows, schemes=("fp32", *schemes),
                                     qlora_schemes=qlora_schemes)
    progress(f"[quant] {len(rows)} rows ({skipped} cached) in {time.time() - start:.0f}s: "
             f"{out['csv']}, {out['report']}")
    return dict(out, rows=rows, skipped=skipped)


# ---- settings of the standalone CLI ------------------------------------------------------------

MODES = ("smoke", "quick", "full")  # of the main job's modes (experiments.configs.modes)


def base_configs(mode: str) -> dict[str, Any]:
    """The fp32 base runs the CLI trains when given no --sweep / --runs.

    smoke / quick: the fp32 cells of `experiments.reproduce`'s sweep of that mode (the same
    models the main job quantizes); full: paper-sized fp32 models (see the module docstring).
    """
    from arith_precision.training import config as train_config
    from experiments import sweep as sweep_lib

    if mode in ("smoke", "quick"):
        from experiments.configs import modes

        settings = modes.SETTINGS[mode]()
        cells = sweep_lib.expand(settings.sweep())
        return {c.name: c.config for c in cells
                if c.coords["precision"] == "fp32" and c.coords["task"] in settings.quant_tasks}
    if mode != "full":
        raise ValueError(f"unknown mode {mode!r}; expected one of {MODES}")
    configs = {}
    for task, base, ns in (("add", 10, (4, 8, 16)), ("iter_add", 2, (4, 6, 8, 10, 12)),
                           ("mul", 2, (4, 6, 8))):
        k = ",k=3" if task == "iter_add" else ""
        for n in ns:
            configs[f"{task}_b{base}_n{n}"] = train_config.get_config(
                f"task={task},base={base},n={n}{k},batch=512,steps=20000")
    return configs


def study_settings(mode: str) -> dict[str, Any]:
    """`run_quant_study` keyword arguments of a mode (the main job's, `experiments.reproduce`)."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; expected one of {MODES}")
    from experiments.configs import modes

    return dict(modes.SETTINGS[mode]().quant)


def _finetune_tasks(mode: str, arg: str | None) -> set[str] | None:
    """The tasks to fine-tune: None for all, else a set (the mode's default without `arg`)."""
    if arg is None:
        from experiments.configs import modes

        return set(modes.SETTINGS[mode]().quant_finetune_tasks)
    if arg.strip() == "all":
        return None
    tasks = set(_split(arg))
    bad = sorted(tasks - set(TASKS))
    if bad or not tasks:
        raise ValueError(f"--finetune_tasks={arg!r}: expected 'all' or tasks from {TASKS}")
    return tasks


def _run_task(run_dir: str) -> str | None:
    path = os.path.join(run_dir, "summary.json")
    if not os.path.isfile(path):
        return None  # load_run reports it
    with open(path) as f:
        return json.load(f)["config"]["task"]["task"]


def _split(text: str) -> list[str]:
    return [s.strip() for s in text.split(",") if s.strip()]


def _parser() -> cli_errors.ArgumentParser:
    ap = cli_errors.ArgumentParser(prog="python -m experiments.quant_study", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", required=True, help="output directory")
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--smoke", action="store_true", help="tiny everything (plumbing only)")
    mode.add_argument("--quick", action="store_true", help="CPU-sized settings")
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--sweep", default=None, help="use the completed fp32 cells of this sweep")
    src.add_argument("--runs", default=None, help="comma-separated fp32 run directories")
    ap.add_argument("--schemes", default=None, help="comma-separated quantization schemes")
    ap.add_argument("--qlora_schemes", default=None,
                    help="comma-separated frozen bases of the QLoRA arms (default: the mode's, "
                         f"else {','.join(DEFAULT_QLORA)})")
    ap.add_argument("--finetune_steps", type=int, default=None)
    ap.add_argument("--finetune_tasks", default=None,
                    help="comma-separated tasks whose runs get LoRA / QLoRA (default: the "
                         "mode's, e.g. iter_add in --quick; 'all' for every run)")
    ap.add_argument("--examples", type=int, default=None, help="held-out examples per evaluation")
    return ap


def _schemes(flag: str, text: str) -> tuple[str, ...]:
    """The schemes of a comma-separated flag, each parsed (a UsageError naming the flag)."""
    from arith_precision.quant import scheme as quant_scheme

    schemes = tuple(_split(text))
    if not schemes:
        raise cli_errors.UsageError(flag, text, "lists no scheme")
    for s in schemes:
        try:
            quant_scheme.parse_scheme(s)
        except ValueError as e:
            raise cli_errors.UsageError(flag, text, str(e)) from None
    return schemes


def _main(argv: Sequence[str] | None) -> int:
    args = _parser().parse_args(argv)
    name = "smoke" if args.smoke else "quick" if args.quick else "full"
    settings = study_settings(name)
    if args.schemes is not None:
        settings["schemes"] = _schemes("--schemes", args.schemes)
    if args.qlora_schemes is not None:
        settings["qlora_schemes"] = _schemes("--qlora_schemes", args.qlora_schemes)
    if args.finetune_steps is not None:
        cli_errors.check_int("--finetune_steps", args.finetune_steps, 1)
        settings["finetune_steps"] = args.finetune_steps
    if args.examples is not None:
        cli_errors.check_int("--examples", args.examples, 1)
        settings["num_examples"] = args.examples
        settings["eval_batch"] = min(settings["eval_batch"], args.examples)
    cli_errors.check_writable_dir("--workdir", args.workdir)
    try:
        tasks = _finetune_tasks(name, args.finetune_tasks)
    except ValueError as e:
        raise cli_errors.UsageError("--finetune_tasks", args.finetune_tasks, str(e)) from None
    if args.sweep is not None:
        try:
            runs = sweep_runs(args.sweep)
        except ValueError as e:
            raise cli_errors.UsageError("--sweep", args.sweep, str(e)) from None
        if not runs:
            raise cli_errors.UsageError("--sweep", args.sweep, "has no completed fp32 cell")
        flag, value = "--sweep", args.sweep
    elif args.runs is not None:
        runs = _split(args.runs)
        missing = [d for d in runs if not os.path.isdir(d)]
        if missing or not runs:
            raise cli_errors.UsageError("--runs", args.runs,
                                        f"not a directory: {', '.join(missing) or '(none)'}")
        flag, value = "--runs", args.runs
    else:
        runs = train_bases(args.workdir, base_configs(name))
        flag, value = "--workdir", args.workdir
    runs = _as_runs(runs)
    finetune = [r for r, d in runs.items() if tasks is None or _run_task(d) in tasks]
    try:
        loaded = {name: load_run(d, name=name) for name, d in runs.items()}
    except ValueError as e:  # not a finished fp32 run: bad input, found before any work
        raise cli_errors.UsageError(flag, value, str(e)) from None
    run_quant_study(args.workdir, base_runs=loaded, finetune_runs=finetune, **settings)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; bad input is one line `error: <flag>: <value>: <why>`, exit status 2."""
    return cli_errors.run_cli(lambda: _main(argv))


if __name__ == "__main__":
    sys.exit(main())
