"""Every bad invocation of every CLI: exit 2, one `error: <flag or key>: <value>: <why>` line on
stderr naming the bad value, no traceback, before any work.

The table runs through `tests/cli_harness.py`: one interpreter per CLI imports the heavy
libraries once and forks a process per case that runs `python -m <cli> ARGS` (runpy, its own
stdout, stderr and exit status). A few cases per CLI also run as plain `python -m` subprocesses.
"""

import functools
import json
import os
import subprocess
import sys

import pytest

from arith_precision import tasks
from arith_precision.common import cli_errors
from constructions import build
from constructions.check import sizes
from tests import repo

REPO = str(repo.ROOT)
TRAIN = "--config=experiments/configs/train.py"
FIG2 = "--config=experiments/configs/paper_fig2.py"
HEAVY = "jax,flax,optax,orbax.checkpoint,numpy"

# (args, text the error line must contain: the bad value, and the flag or key where it helps).
CASES = {
    "arith_precision.tasks": ("numpy", [
        ("--task=iter_add --base=10 --n=4 --num=2 --seed=0", "error: --k: (missing)"),
        ("--task=add --base=10 --n=4 --k=3 --num=2 --seed=0", "--k: 3"),
        ("--task=add --base=10 --n=4 --l=3 --num=2 --seed=0", "--l: 3"),
        ("--task=add --base=1 --n=4 --num=2 --seed=0", "--base: 1"),
        ("--task=add --base=37 --n=4 --num=2 --seed=0", "--base: 37"),
        ("--task=add --base=10 --n=0 --num=2 --seed=0", "--n: 0"),
        ("--task=add --base=10 --n=-3 --num=2 --seed=0", "--n: -3"),
        ("--task=add --base=10 --n=x --num=2 --seed=0", "--n: x"),
        ("--task=iter_add --base=10 --n=4 --k=1 --num=2 --seed=0", "--k: 1"),
        ("--task=mul --base=10 --n=3 --l=7 --num=2 --seed=0", "--l: 7"),
        ("--task=mul --base=10 --n=3 --l=0 --num=2 --seed=0", "--l: 0"),
        ("--task=add --base=10 --n=4 --chunk=0 --num=2 --seed=0", "--chunk: 0"),
        ("--task=add --base=10 --n=4 --chunk=40 --num=2 --seed=0", "--chunk: 40"),
        ("--task=sub --base=10 --n=4 --num=2 --seed=0", "--task: sub"),
        ("--task=add --base=10 --n=4 --num=0 --seed=0", "--num: 0"),
        ("--task=add --base=10 --n=4 --num=2 --seed=-1", "--seed: -1"),
        ("--task=add --base=10 --n=4 --num=2", "--seed: (missing)"),
        ("--task=add --base=10 --n=4 --num=2 --seed=0 --split=test", "--split: test"),
        ("--task=add --base=10 --n=4 --num=2 --seed=0 --distribution=gauss", "gauss"),
        ("--task=add --base=10 --n=4 --num=2 --seed=0 --bogus=1", "--bogus: 1"),
        ("--task=add --base=10 --n=4 --num=2 --seed=0 stray", "stray"),
        ("--task=add --base=10 --num=2 --seed=0 --n", "--n: (none): expects a value"),
        ("--task=add --base=10 --n=4 --num=2 --seed=0 --json=1", "--json: 1: takes no value"),
        ("--task=add --base=10 --n=4 --nu=2 --seed=0", "--nu: 2: unknown argument"),
        ("--task=add --base=10 --n=1000000000 --num=1 --seed=0", "--n: 1000000000: "),
        ("--task=add --base=10 --n=8 --num=1000000000 --seed=0", "--num: 1000000000: "),
        ("--task=add --base=10 --n=100000 --num=2 --seed=0", "--num: 2: re-deriving"),
    ]),
    "constructions.verify": (HEAVY + ",constructions,constructions.check", [
        ("--task=add --base=1 --n=4", "--base: 1"),
        ("--task=add --base=10 --n=0", "--n: 0"),
        ("--task=add --base=10 --n=4 --k=3", "--k: 3"),
        ("--task=add --base=10 --n=4 --l=3", "--l: 3"),
        ("--task=iter_add --base=10 --n=4 --k=1", "--k: 1"),
        ("--task=mul --base=10 --n=3 --l=9", "--l: 9"),
        ("--task=add --base=10 --n=4 --format=bf17", "--format: bf17"),
        ("--task=add --base=10 --n=4 --format=e8m30", "--format: e8m30"),
        ("--task=add --base=10 --n=4 --accumulation=kahan", "--accumulation: kahan"),
        ("--task=add --base=10 --n=4 --variant=linear", "--variant: linear"),
        ("--task=mul --base=10 --n=4 --variant=constant", "--variant: constant"),
        ("--task=add --base=10 --n=3 --chunk=2", "--chunk: 2"),
        ("--task=add --base=10 --n=4 --batch-size=0", "--batch-size: 0"),
        ("--task=add --base=10 --n=4 --random=-5", "--random: -5"),
        ("--task=add --base=10 --n=4 --seed=-1", "--seed: -1"),
        ("--task=add --base=10 --n=4 --inputs={tmp}/binary.dat", "--inputs: {tmp}/binary.dat"),
        ("--task=add --base=10 --n=4 --inputs={tmp}/missing.jsonl", "{tmp}/missing.jsonl"),
        ("--task=add --base=10 --n=4 --inputs={tmp}", "--inputs: {tmp}: is a directory"),
        ("--task=add --base=10 --n=4 --inputs={tmp}/notjson.jsonl", "notjson.jsonl:2"),
        ("--task=add --base=10 --n=4 --inputs={tmp}/range.jsonl", "range.jsonl:1"),
        ("--task=add --base=10 --n=4 --inputs={tmp}/empty.jsonl", "empty.jsonl: holds no"),
        ("--task=add --base=10 --n=4 --inputs={tmp}/range.jsonl --random=5", "--random: 5"),
        ("--task=add --base=10 --n=1000000000", "--n: 1000000000: "),
        ("--task=iter_add --base=10 --n=4 --k=1000000000", "--k: 1000000000: "),
        ("--task=mul --base=10 --n=300", "--n: 300: "),
        ("--task=add --base=10 --n=2000", "--batch-size: 256: "),
        ("--task=add --base=10 --n=4 --batch-size=1000000000", "--batch-size: 1000000000"),
        ("--task=add --base=10 --n=8 --random=1000000000", "--random: 1000000000: holding"),
        ("--task=add --base=2 --n=4 --checks={tmp}/a_file", "--checks: {tmp}/a_file"),
        ("--task=add --base=2 --n=4 --prefill-chunk=0", "--prefill-chunk: 0"),
        ("--task=iter_add --base=10 --n=64 --k=1000 --variant=lookup --batch-size=1",
         "--k: 1000: "),
        ("--task=add --base=2 --n=4 --checks=/proc/no/such", "--checks: /proc/no/such"),
        ("--task=add --base=2 --n=4 --checks={tmp}/badjson", "--checks: {tmp}/badjson: its "),
        ("--task=add --base=2 --n=4 --shard=0/2", "--shard: 0/2: needs --checks"),
        ("--task=add --base=2 --n=4 --shard=2/2 --checks={tmp}", "--shard: 2/2: expected 0 <="),
        ("--task=add --base=2 --n=4 --shard=1 --checks={tmp}", "--shard: 1: expected I/M"),
        ("--task=add --base=2 --n=4 --shard=-1/2 --checks={tmp}", "--shard: -1/2: expected I/M"),
        ("--task=add --base=2 --n=2 --shard=1/2 --checks={tmp}",
         "--shard: 1/2: the 16 inputs make 1 batches"),
    ]),
    "constructions.frontier": (HEAVY + ",constructions,constructions.check", [
        ("--task=add --base=10 --n=2,x", "--n: 2,x: item 'x'"),
        ("--task=add --base=10 --n=4,0", "--n: 4,0"),
        ("--task=add --base=10 --n=", "--n: ''"),
        ("--task=add --base=10 --n=4,4", "--n: 4,4"),
        ("--task=add --base=10 --n=1000000000", "--n: 1000000000: "),
        ("--task=iter_add --base=2 --n=4 --k=0", "--k: 0"),
        ("--task=add --base=2 --n=4 --k=3", "--k: 3"),
        ("--task=add --base=2 --n=4 --l=3", "--l: 3"),
        ("--task=add --base=1 --n=4", "--base: 1"),
        ("--task=add --base=2 --n=4 --random=-5", "--random: -5"),
        ("--task=add --base=2 --n=4 --batch-size=0", "--batch-size: 0"),
        ("--task=add --base=2 --n=4 --seed=-2", "--seed: -2"),
        ("--task=add --base=10 --n=8 --random=1000000000", "--random: 1000000000: holding"),
        ("--task=add --base=2 --n=4 --accumulation=once,kahan", "--accumulation: once,kahan"),
        ("--task=add --base=2 --n=4 --accumulation=", "--accumulation: ''"),
        ("--task=add --base=2 --n=4 --out={tmp}/a_file", "--out: {tmp}/a_file"),
        ("--task=add --base=2 --n=4 --out=/proc/no/such", "--out: /proc/no/such"),
        ("--task=add --base=2 --n=4 --out={tmp}/badjson", "--out: {tmp}/badjson: its checks.json"),
        ("--task=mul --base=2 --n=4 --variant=constant", "--variant: constant"),
        ("--task=add --base=10 --n=4,3 --chunk=2", "--chunk: 2"),
        ("--task=add --base=10 --n=64 --variant=constant", "--batch-size: 512"),
        ("--merge={tmp}/missing --out={tmp}/merged", "--merge: {tmp}/missing"),
        ("--merge={tmp}/badjson --out={tmp}/merged", "--merge: {tmp}/badjson"),
        ("--merge= --out={tmp}/merged", "--merge: ''"),
        ("--merge={tmp}/missing", "--out: (missing)"),
    ]),
    "experiments.main": (HEAVY + ",arith_precision.training,arith_precision.training.config", [
        (f"{TRAIN}:base=1 --workdir={{tmp}}/w", "error: task.base: 1: "),
        (f"{TRAIN}:n=0 --workdir={{tmp}}/w", "task.n: 0"),
        (f"{TRAIN}:k=1 --workdir={{tmp}}/w", "task.k: 1: only applies to iter_add"),
        (f"{TRAIN}:task=iter_add,k=1 --workdir={{tmp}}/w", "task.k: 1"),
        (f"{TRAIN}:l=3 --workdir={{tmp}}/w", "task.l: 3"),
        (f"{TRAIN}:task=sub --workdir={{tmp}}/w", "task: sub"),
        (f"{TRAIN}:precision=bf17 --workdir={{tmp}}/w", "precision: bf17"),
        (f"{TRAIN}:accumulation=kahan --workdir={{tmp}}/w", "kahan"),
        (f"{TRAIN}:foo=1 --workdir={{tmp}}/w", "foo: 1: unknown config key"),
        (f"{TRAIN}:steps=-5 --workdir={{tmp}}/w", "train.steps: -5"),
        (f"{TRAIN}:steps=x --workdir={{tmp}}/w", "steps: x: not a number"),
        (f"{TRAIN}:lr=-1 --workdir={{tmp}}/w", "optim.learning_rate: -1.0"),
        (f"{TRAIN}:lr=0 --workdir={{tmp}}/w", "optim.learning_rate: 0.0"),
        (f"{TRAIN}:lr=nan --workdir={{tmp}}/w", "optim.learning_rate: nan"),
        (f"{TRAIN}:batch=0 --workdir={{tmp}}/w", "train.batch_size: 0"),
        (f"{TRAIN}:heads=5 --workdir={{tmp}}/w", "model."),
        (f"{TRAIN}:seed=-1 --workdir={{tmp}}/w", "seed: -1"),
        (f"{TRAIN}:eval_ns=0 --workdir={{tmp}}/w", "eval.ns: 0"),
        (f"{TRAIN}:smoke=0 --workdir={{tmp}}/w", "smoke: 0"),
        (f"{TRAIN}:oops --workdir={{tmp}}/w", "config argument: oops: is neither key=value nor"),
        (f"{TRAIN}:n=1000000000 --workdir={{tmp}}/w", "task.n: 1000000000: "),
        (f"{TRAIN}:batch=1000000000 --workdir={{tmp}}/w", "train.batch_size: 1000000000: "),
        (f"{TRAIN}:smoke --config.eval.num_examples=0 --workdir={{tmp}}/w", "eval.num_examples: 0"),
        (f"{TRAIN}:smoke --config.eval.batch_size=0 --workdir={{tmp}}/w", "eval.batch_size: 0"),
        (f"{TRAIN}:smoke --config.optim.b2=1.5 --workdir={{tmp}}/w", "optim.b2: 1.5"),
        (f"{TRAIN}:smoke --config.optim.warmup_steps=-1 --workdir={{tmp}}/w", "warmup_steps: -1"),
        (f"{TRAIN}:smoke --config.train.nonexistent=3 --workdir={{tmp}}/w",
         "--config.train.nonexistent: 3: no such key"),
        (f"{TRAIN}:smoke --config.train.steps=abc --workdir={{tmp}}/w",
         "--config.train.steps: abc"),
        ("--config=experiments/configs/missing.py --workdir={tmp}/w", "configs/missing.py"),
        (f"{TRAIN}:smoke --workdir={{tmp}}/a_file", "--workdir: {tmp}/a_file: exists"),
        (f"{TRAIN}:smoke --workdir=/proc/no/such", "--workdir: /proc/no/such: cannot"),
        (f"{TRAIN}:smoke", "--workdir: (missing): is required"),
        ("--workdir={tmp}/w", "--config: (missing): is required"),
        (f"{TRAIN}:smoke --workdir={{tmp}}/w --bogus=1", "--bogus: 1: unknown flag"),
        (f"{TRAIN}:smoke --workdir={{tmp}}/w stray", "stray"),
    ]),
    "experiments.sweep": (HEAVY + ",arith_precision.training,experiments.sweep", [
        (f"{FIG2}:smoke,bogus=1 --workdir={{tmp}}/s", "bogus"),
        (f"{FIG2}:smoke --workdir={{tmp}}/a_file", "--workdir: {tmp}/a_file"),
        (f"{FIG2}:smoke --workdir={{tmp}}/s --shard=2/2", "--shard: 2/2"),
        (f"{FIG2}:smoke --workdir={{tmp}}/s --workers=0", "--workers: 0"),
        (f"{FIG2}:smoke --workdir={{tmp}}/s --replicas=0", "--replicas: 0: must be auto, off"),
        (f"{FIG2}:smoke --workdir={{tmp}}/s --replicas=many", "--replicas: many: must be auto"),
        (f"{FIG2}:smoke --workdir={{tmp}}/s --config.grid.seeds=(-1,)", "got -1"),
        (f"{FIG2}:smoke --workdir={{tmp}}/s --config.grid.nope=1", "--config.grid.nope: 1"),
        ("--config=experiments/configs/missing.py --workdir={tmp}/s", "configs/missing.py"),
        ("--workdir={tmp}/s", "--config: (missing)"),
        ("--aggregate_only --workdir={tmp}/no_such_dir", "--workdir: {tmp}/no_such_dir"),
        (f"{FIG2}:smoke --workdir={{tmp}}/s --workers=auto2", "--workers: auto2: must be auto"),
        (f"{FIG2}:smoke --workdir={{tmp}}/s --launcher=slurm", "--launcher: slurm: value should"),
        (f"{FIG2}:smoke --workdir={{tmp}}/s --partition=gpu",
         "--partition: gpu: applies with --launcher=submitit"),
        (f"{FIG2}:smoke --workdir={{tmp}}/s --launcher=submitit --workers=2",
         "--workers: 2: applies to --launcher=local"),
        (f"{FIG2}:smoke --workdir={{tmp}}/s --launcher=submitit --cells_per_job=0",
         "--cells_per_job: 0: must be >= 1"),
        (f"{FIG2}:smoke --workdir={{tmp}}/s --launcher=submitit --gpus_per_job=65",
         "--gpus_per_job: 65: must be <= 64"),
        (f"{FIG2}:smoke --workdir={{tmp}}/s --launcher=submitit --cluster=slurm",
         "--cluster: slurm: no `srun` on PATH"),
        (f"{FIG2} --estimate --launcher=submitit --gpus=0", "--gpus: 0: must be >= 1"),
        (f"{FIG2} --estimate --launcher=submitit --gpus_per_job=2 --gpus=3",
         "--gpus: 3: is not a multiple of --gpus_per_job (2)"),
    ]),
    "experiments.gpu_numerics": ("", [
        ("--out={tmp}/g --constructions=add:10", "--constructions: add:10"),
        ("--out={tmp}/g --constructions=sub:10:4", "--constructions: sub:10:4"),
        ("--out={tmp}/g --constructions=add:1:4", "--constructions: add:1:4"),
        ("--out={tmp}/g --formats=fp64", "--formats: fp64"),
        ("--out={tmp}/g --gpus=a200", "--gpus: a200"),
        ("--out={tmp}/g --random=-1", "--random: -1"),
        ("--out={tmp}/g --runs={tmp}/nope", "--runs: {tmp}/nope"),
        ("--out={tmp}/a_file", "--out: {tmp}/a_file"),
    ]),
    "experiments.reproduce": ("", [
        ("--workdir={tmp}/a_file --smoke", "--workdir: {tmp}/a_file"),
        ("--workdir={tmp}/r --smoke --workers=0", "--workers: 0"),
        ("--workdir={tmp}/r --smoke --phases=sweep,bogus", "--phases: sweep,bogus"),
        ("--workdir={tmp}/r --smoke --quick", "--quick: (given): not allowed with --smoke"),
        ("--smoke", "--workdir: (missing)"),
        ("--workdir=/proc/no/such --smoke", "--workdir: /proc/no/such"),
    ]),
}


@pytest.fixture(scope="module")
def tmp(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    (d / "binary.dat").write_bytes(b"\xf1\xf2\x00binary")
    (d / "notjson.jsonl").write_text("[1, 2]\n[1, x]\n")
    (d / "range.jsonl").write_text("[1, 100000]\n")
    (d / "empty.jsonl").write_text("\n\n")
    (d / "a_file").write_text("")
    (d / "badjson").mkdir()
    (d / "badjson" / "frontier.json").write_text("{not json")
    (d / "badjson" / "checks.json").write_text('{"verdicts": [1')  # a torn frontier check log
    return str(d)


@functools.cache
def _results(module: str, tmp: str) -> dict:
    preload, cases = CASES[module]
    argvs = [args.format(tmp=tmp).split(" ") for args, _ in cases]
    proc = subprocess.run([sys.executable, os.path.join(REPO, "tests", "cli_harness.py"), module,
                           preload], input=json.dumps(argvs), cwd=REPO, capture_output=True,
                          text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {" ".join(r["args"]): r for r in json.loads(proc.stdout)}


@pytest.mark.parametrize("module, args, needle", [
    (module, args, needle) for module, (_, cases) in CASES.items() for args, needle in cases])
def test_bad_invocation_is_one_line_and_exit_2(tmp, module, args, needle):
    args, needle = args.format(tmp=tmp), needle.format(tmp=tmp)
    r = _results(module, tmp)[args]
    output = r["stdout"] + r["stderr"]
    assert "Traceback" not in output, output
    assert r["returncode"] == 2, output
    lines = r["stderr"].splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r["stderr"]
    assert needle in lines[0], lines[0]
    assert lines[0].count(": ") >= 2  # error: <flag or key>: <value>: <why>
    assert r["stdout"] == "", r["stdout"]  # rejected before any work printed anything


def _python_m(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, check=False)


@pytest.mark.parametrize("module, args", [
    ("arith_precision.tasks", ["--task=iter_add", "--base=10", "--n=4", "--num=2", "--seed=0"]),
    ("constructions.verify", ["--task=add", "--base=10", "--n=1000000000"]),
    ("constructions.frontier", ["--task=add", "--base=10", "--n=2,x"]),
    ("experiments.main", [f"{TRAIN}:base=1", "--workdir=/tmp/unused"]),
])
def test_real_subprocess_agrees(module, args):
    r = _python_m(module, *args)
    assert r.returncode == 2 and "Traceback" not in r.stdout + r.stderr
    assert len(r.stderr.splitlines()) == 1 and r.stderr.startswith("error: ")


@pytest.mark.parametrize("module", ["arith_precision.tasks", "constructions.verify",
                                    "constructions.frontier", "experiments.main",
                                    "experiments.sweep", "experiments.reproduce"])
def test_help_exits_0(module):
    r = _python_m(module, "--help")
    assert r.returncode == 0 and "Traceback" not in r.stderr
    assert r.stdout or r.stderr


def test_internal_errors_keep_their_traceback():
    def broken():
        raise KeyError("a bug, not bad input")

    with pytest.raises(KeyError):
        cli_errors.run_cli(broken)


def test_memory_limit_env(monkeypatch):
    monkeypatch.setenv(cli_errors.MEMORY_LIMIT_ENV, "0.5")
    assert cli_errors.memory_limit_bytes() == 2**29
    with pytest.raises(cli_errors.UsageError, match="1 GiB, over the 512 MiB limit"):
        cli_errors.check_memory("--n", 9, 2**30, "it")
    monkeypatch.setenv(cli_errors.MEMORY_LIMIT_ENV, "lots")
    with pytest.raises(cli_errors.UsageError, match="ARITH_PRECISION_MAX_MEMORY_GB: lots"):
        cli_errors.memory_limit_bytes()


@pytest.mark.parametrize("task, base, n, k, l, chunk, variant", [
    ("add", 2, 5, 2, None, 1, "log"), ("add", 10, 8, 2, None, 1, "log"),
    ("add", 10, 6, 2, None, 2, "log"), ("iter_add", 2, 6, 3, None, 1, "log"),
    ("iter_add", 2, 6, 5, None, 1, "log"), ("iter_add", 10, 4, 11, None, 1, "log"),
    ("iter_add", 3, 4, 5, None, 2, "log"), ("mul", 2, 6, 2, None, 1, "log"),
    ("mul", 10, 4, 2, None, 1, "log"), ("mul", 10, 5, 2, 3, 1, "log"),
    ("mul", 2, 6, 2, None, 2, "log"), ("add", 10, 6, 2, None, 1, "constant"),
    ("add", 2, 9, 2, None, 1, "constant"), ("iter_add", 2, 6, 5, None, 1, "lookup"),
    ("iter_add", 3, 4, 5, None, 2, "lookup"), ("add", 10, 3, 2, None, 1, "lookup"),
])
def test_size_lower_bounds_hold(task, base, n, k, l, chunk, variant):
    """The pre-build size check uses lower bounds: it never rejects what the real widths allow."""
    spec = tasks.TaskSpec(task, base=base, n=n, k=k, l=l, chunk=chunk)
    low = sizes.lower_bound_widths(spec, variant)
    real = sizes.construction_widths(build(spec, variant=variant))
    assert low["heads"] == real["heads"]  # exact; MUL's layers are 4 + R, R >= 0 reductions
    assert low["layers"] == real["layers"] if task != "mul" else low["layers"] <= real["layers"]
    assert low["d_model"] <= real["d_model"] and low["d_ff"] <= real["d_ff"]
    assert sizes.estimate_bytes(spec, low) <= sizes.estimate_bytes(spec, real)


def test_prefill_chunk_lowers_the_attention_estimate():
    # IterADD k = 1000 at n = 64: 65 001 positions. One example's T x T scores do not fit in
    # 16 GiB; fed 2048 tokens at a time they do (long-prompt checks on a GPU rely on this).
    spec = tasks.TaskSpec("iter_add", base=10, n=64, k=1000)
    w = sizes.lower_bound_widths(spec, "lookup")
    t = spec.sequence_length
    whole, chunked = sizes.estimate_bytes(spec, w, 1), sizes.estimate_bytes(spec, w, 1, 0, 2048)
    assert whole - chunked == 8 * 1.5 * w["heads"] * (t - 2048) * t
    with pytest.raises(cli_errors.UsageError, match="--k: 1000: "):  # k = 3 would fit
        sizes.check(spec, w, 1, 1613, "lookup")
    sizes.check(spec, w, 1, 1613, "lookup", prefill_chunk=2048)


def test_readme_example_constant_add_n64_batch_limit():
    """docs/constructions.md: constant-precision ADD at n = 64 needs --batch-size <= 128 under
    16 GiB."""
    spec = tasks.TaskSpec("add", base=10, n=64)
    real = sizes.construction_widths(build(spec, variant="constant"))
    sizes.check(spec, real, 128, 1000, "constant")
    with pytest.raises(cli_errors.UsageError, match="--batch-size: 256: "):
        sizes.check(spec, real, 256, 1000, "constant")


def test_importing_the_library_starts_no_jax_backend():
    """No JAX computation at import time: it would start XLA's thread pools, making the forks of
    tests/cli_harness.py deadlock-prone and every CLI's bad-input path slower."""
    code = ("import arith_precision.formats, arith_precision.simulate, arith_precision.training, "
            "constructions, experiments.precision_probe, experiments.reproduce\n"
            "from jax._src import xla_bridge\n"
            "assert not xla_bridge._backends, sorted(xla_bridge._backends)\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
