"""The training loop for R runs at once: `train_group(configs, workdirs)`.

Each run ("replica") keeps its own parameters, optimizer state, data stream, precision,
checkpoints, metrics, early stopping and summary, and writes exactly what a run of its own would
(`train_and_evaluate` is `train_group` with R = 1). What they share is the program: every
step, the replicas that stand at the same step are advanced by one jitted call holding R
independent copies of the step (`replicas.unrolled`: each copy's
operations are those of a separate run, so its parameters are bit-identical to a separate run's
on a deterministic backend; tested on XLA:CPU). The replicas need not share shapes or precision:
the program is compiled once per set of replicas advanced together (one set while all run;
another when one stops early, converges or diverges, and the others go on).

Resume: each replica restores its own newest checkpoint (`checkpoints.py`). Replicas that
resumed at different steps are advanced separately until they stand at the same step, then
together again; the batches, a pure function of (data_seed, step), are the same either way.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

from arith_precision import evaluate as evaluate_lib
from arith_precision import tasks
from arith_precision.common import atomic
from arith_precision.common.cli_errors import UsageError
from arith_precision.training import checkpoints as checkpoints_lib
from arith_precision.training import checks as train_checks
from arith_precision.training import curve, replicas
from arith_precision.training import early_stop as early_stop_lib
from arith_precision.training import step as ts
from arith_precision.training.mesh import DataMesh


def _format_seconds(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else \
        f"{seconds // 60}m{seconds % 60:02d}s"


def _text(score: float | None) -> str:
    return "n/a" if score is None else f"{score:.4f}"


def _rewrite_metrics(path: str, keep_up_to: int) -> None:
    """After a resume, drop lines logged past the restored checkpoint (they will be redone)."""
    if not os.path.exists(path):
        return
    with open(path) as f:
        lines = [ln for ln in f if ln.strip() and json.loads(ln)["step"] <= keep_up_to]
    with open(path, "w") as f:
        f.writelines(lines)


class _Replica:
    """One run's host side: its objects, state, checkpoints, metrics file and bookkeeping."""

    def __init__(self, config, workdir: str, mesh: DataMesh, prefix: str):
        self.config, self.workdir, self.mesh, self.prefix = config, workdir, mesh, prefix
        self.start_time = time.time()
        os.makedirs(workdir, exist_ok=True)
        self.spec = ts.task_spec(config.task)
        self.mcfg = ts.model_config(config)
        self.precision = ts.precision_of(config)
        self.especs = ts.eval_specs(config)
        self.tx, self.schedule = ts.optimizer(config)
        self.train_cfg = config.train
        if self.train_cfg.batch_size % mesh.devices:
            raise UsageError("train.batch_size", self.train_cfg.batch_size,
                             f"is not divisible by the {mesh.devices} devices")
        init_state = ts.state_initializer(config, self.mcfg, self.tx)
        self.abstract = jax.eval_shape(init_state)
        self.state_sharding = jax.tree.map(lambda _: mesh.replicated, self.abstract)
        self.step_fn = ts.make_train_step(self.mcfg, self.spec, self.tx, self.precision)
        self.eval_policy = self.precision.eval_policy
        self.stopper = early_stop_lib.from_config(config)
        self._loss_fn = None
        self.state, self.latest = self._restore_or_init(init_state)
        self.step, self.total = int(self.state["step"]), self.train_cfg.steps
        self.converged_at = self._resume_early_stopping()
        self.log("task %s | model %s | precision %s | %d device(s) | steps %d..%d", self.spec,
                 self.mcfg, self.precision.description, self.mesh.devices, self.step,
                 self.total)
        self.status, self.diverged_at = "completed", None
        self.pending = []  # (step, metrics) not yet fetched from the device
        self.window_start, self.window_steps = time.time(), 0
        self.metrics_file = open(self.metrics_path, "a")  # noqa: SIM115 -- closed in finish()
        self.summary = None

    # ---- start -------------------------------------------------------------------------------

    def _restore_or_init(self, init_state) -> tuple[Any, int | None]:
        """(state, step restored from or None): the newest good checkpoint, else a fresh state.
        Sets the checkpoint manager, and cuts metrics.jsonl and the validation history back to
        the restored step (a fresh start empties them)."""
        checkpoint_dir = os.path.abspath(os.path.join(self.workdir, "checkpoints"))
        self.checkpoint_dir = checkpoint_dir
        train_cfg = self.train_cfg

        def open_manager():
            return ocp.CheckpointManager(checkpoint_dir, options=checkpoints_lib.manager_options(
                max_to_keep=train_cfg.keep_checkpoints,
                save_interval_steps=train_cfg.checkpoint_every))

        def restore(manager, step):
            target = jax.tree.map(
                lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), self.abstract,
                self.state_sharding)
            return manager.restore(step, args=ocp.args.StandardRestore(target))

        self.metrics_path = os.path.join(self.workdir, "metrics.jsonl")
        self.manager, latest, state = checkpoints_lib.restore_newest_good(
            checkpoint_dir, open_manager, restore)
        if latest is not None:
            _rewrite_metrics(self.metrics_path, latest)
            self.history = early_stop_lib.read_history(self.workdir, up_to=latest)
            self.log("resumed from step %d", latest)
        else:
            state = jax.jit(init_state, out_shardings=self.state_sharding)()
            with open(self.metrics_path, "w"):
                pass
            self.history = []
        if self.stopper is not None:
            early_stop_lib.rewrite_history(self.workdir, self.history)
        return state, latest

    def _resume_early_stopping(self) -> int | None:
        """The step a resumed run had converged at (None if it had not, or on a fresh start).
        A run killed after a checkpoint but before that step's validation was written runs the
        validation now, so the history is what an uninterrupted run would have."""
        stopper, first = self.stopper, self.step
        if stopper is None:
            return None
        if first and first % stopper.every == 0 and \
                not any(h["step"] == first for h in self.history):
            self._validate(first)
        if self.history and self.history[-1]["step"] == first and \
                stopper.converged(self.history):
            return first  # it had converged: stop where it stopped, as before
        return None

    def log(self, message: str, *args) -> None:
        """Progress goes to stdout (absl's INFO log is flooded by orbax's checkpoint chatter)."""
        print(self.prefix + message % args, flush=True)

    # ---- the loop ----------------------------------------------------------------------------

    @property
    def training(self) -> bool:
        return self.step < self.total and self.converged_at is None and \
            self.status == "completed"

    def batch(self):
        tokens = tasks.sample_batch(self.spec, data_seed=self.config.data_seed, step=self.step,
                                    batch_size=self.train_cfg.batch_size).tokens
        return jax.make_array_from_callback(tokens.shape, self.mesh.data,
                                            lambda idx: tokens[idx])

    def _validation_loss(self) -> float:
        """Answer-token cross-entropy of the current parameters on the first iid validation
        batch, in float32: a pure function of the parameters, so a resumed run recomputes it."""
        if self._loss_fn is None:
            tokens = tasks.sample_batch(self.spec, data_seed=self.config.data_seed, step=0,
                                        batch_size=self.stopper.batch_size,
                                        split="iid_valid").tokens
            mask = tasks.target_mask(self.spec)
            fn = jax.jit(lambda p, t: ts.loss_fn(p, t, config=self.mcfg, mask_T=mask)[0])
            self._loss_fn = lambda p: fn(p, tokens)
        return float(self._loss_fn(self.state["params"]))

    def _validate(self, step: int) -> bool:
        """Early stopping's validation at `step` (both protocols); True when the rule fires."""
        stopper = self.stopper
        result = evaluate_lib.evaluate_protocols(
            self.state["params"], self.mcfg, self.spec, num_examples=stopper.num_examples,
            batch_size=stopper.batch_size, data_seed=self.config.data_seed,
            policy=self.eval_policy, validation=True)
        row = {"step": step, "exact_match": result[f"exact_match_{stopper.protocol}"],
               "digit_accuracy": result[f"digit_accuracy_{stopper.protocol}"],
               **{f"{what}_{p}": result[f"{what}_{p}"] for p in ("iid", "unseen")
                  for what in ("exact_match", "digit_accuracy", "distinct")},
               "loss": self._validation_loss()}
        self.history.append(row)
        early_stop_lib.append(self.workdir, row)
        score = row["exact_match"]
        self.log("validation at step %d: exact match %s [%s] (iid %s, unseen %s; stop at >= "
                 "%.2f, %d in a row)", step, _text(score), stopper.protocol,
                 _text(row["exact_match_iid"]), _text(row["exact_match_unseen"]),
                 stopper.threshold, stopper.patience)
        return stopper.converged(self.history)

    def stepped(self, state, metrics) -> None:
        """Bookkeeping after one step: checkpoint, validation, divergence check, metrics line."""
        self.state = state
        self.step += 1
        step = self.step
        self.window_steps += 1
        self.pending.append((step, metrics))
        self.manager.save(step, args=ocp.args.StandardSave(state))  # every checkpoint_every
        if self.stopper is not None and step % self.stopper.every == 0 and self._validate(step):
            self.converged_at = step
        if step % self.train_cfg.log_every and step != self.total and self.converged_at is None:
            return
        fetched = jax.device_get(self.pending)
        self.pending = []
        bad = [s for s, m in fetched if not math.isfinite(float(m["loss"]))]
        if bad:
            self.status, self.diverged_at = "diverged", bad[0]
            logging.warning("%snon-finite loss at step %d: stopping", self.prefix, bad[0])
            return
        elapsed = time.time() - self.window_start
        rate = self.window_steps / max(elapsed, 1e-9)
        s, m = fetched[-1]
        record = {"step": s, "loss": float(m["loss"]),
                  "token_accuracy": float(m["token_accuracy"]),
                  "grad_norm": float(m["grad_norm"]), "lr": float(self.schedule(s - 1)),
                  "steps_per_sec": rate}
        self.metrics_file.write(json.dumps(record) + "\n")
        self.metrics_file.flush()
        self.log("step %d/%d loss %.4f tok_acc %.4f | %.1f steps/s | ETA %s", s, self.total,
                 record["loss"], record["token_accuracy"], rate,
                 _format_seconds((self.total - s) / max(rate, 1e-9)))
        self.window_start, self.window_steps = time.time(), 0

    # ---- the end -----------------------------------------------------------------------------

    def finish(self) -> dict[str, Any]:
        """Final checkpoint, evaluation and summary.json; returns the summary."""
        self.metrics_file.close()
        manager, state = self.manager, self.state
        manager.wait_until_finished()
        final_step = int(state["step"])
        if self.status == "completed" and manager.latest_step() != final_step:
            manager.save(final_step, args=ocp.args.StandardSave(state), force=True)
            manager.wait_until_finished()
        manager.close()
        checkpoints_lib.purge_deleted(self.checkpoint_dir)
        params = state["params"]
        results = {}
        if self.status == "completed":
            for espec in self.especs:
                r = results[str(espec.n)] = evaluate_lib.evaluate_protocols(
                    params, self.mcfg, espec, num_examples=self.config.eval.num_examples,
                    batch_size=self.config.eval.batch_size, data_seed=self.config.data_seed,
                    policy=self.eval_policy)
                self.log("eval n=%d: exact match iid %s (%d distinct inputs), unseen %s (%d "
                         "distinct inputs)", espec.n, _text(r["exact_match_iid"]),
                         r["distinct_iid"], _text(r["exact_match_unseen"]), r["distinct_unseen"])
        config, stopper = self.config, self.stopper
        self.summary = {
            "status": self.status,
            "diverged_at_step": self.diverged_at,
            "steps": final_step if self.status == "completed" else self.diverged_at,
            "steps_to_converge": self.converged_at,
            "early_stop": None if stopper is None else dataclasses.asdict(stopper),
            "validation": self.history,
            "exact_match": {n: r["exact_match"] for n, r in results.items()},
            "digit_accuracy": {n: r["digit_accuracy"] for n, r in results.items()},
            "exact_match_iid": {n: r["exact_match_iid"] for n, r in results.items()},
            "exact_match_unseen": {n: r["exact_match_unseen"] for n, r in results.items()},
            "curve": {p: curve.reading(self.history, status=self.status, protocol=p)
                      for p in ("iid", "unseen")} if stopper is not None else None,
            "eval": results,
            "wall_time_s": time.time() - self.start_time,
            "resumed_from_step": self.latest,
            "precision": self.precision.description,
            "versions": ts.versions(),
            "device_kind": jax.devices()[0].device_kind,
            "device_count": self.mesh.devices,
            "num_params": int(sum(np.size(x) for x in jax.tree.leaves(params))),
            "config": config.to_dict() if hasattr(config, "to_dict") else dict(config),
            "params_sha256": ts.params_sha256(params),
        }
        if jax.process_index() == 0:
            atomic.write_json(os.path.join(self.workdir, "summary.json"), self.summary, indent=2,
                              sort_keys=True, default=str)
        return self.summary


def _program(runs: Sequence[_Replica], group: tuple[int, ...], mesh: DataMesh):
    """One jitted call advancing the replicas `group` by one step each (unrolled copies)."""
    multi_step = replicas.unrolled([runs[i].step_fn for i in group])
    state_shardings = tuple(runs[i].state_sharding for i in group)
    return jax.jit(multi_step, in_shardings=(state_shardings, (mesh.data,) * len(group)),
                   out_shardings=(state_shardings, (mesh.replicated,) * len(group)))


def train_group(configs: Sequence[Any], workdirs: Sequence[str], *,
                prefixes: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Train, checkpoint and evaluate R runs in one program; resume each from its workdir.

    Returns the R summaries (each also written to its `workdir/summary.json`), in order. Bad
    config values raise `cli_errors.UsageError` (a ValueError naming the key) before any work.
    `prefixes`: what starts each replica's progress lines (default: its workdir's name when
    R > 1, nothing when R = 1).
    """
    if not configs or len(configs) != len(workdirs):
        raise ValueError(f"train_group needs one workdir per config, got {len(configs)} "
                         f"config(s) and {len(workdirs)} workdir(s)")
    dirs = [os.path.abspath(w) for w in workdirs]
    if len(set(dirs)) != len(dirs):
        raise ValueError(f"train_group: every replica needs its own workdir, got {workdirs}")
    for config in configs:
        train_checks.validate(config)
    if any(c.get("distributed", False) for c in configs):
        jax.distributed.initialize()
    jax.config.update("jax_default_matmul_precision", "highest")  # fp32 means fp32, not TF32
    if prefixes is None:
        prefixes = [""] if len(configs) == 1 else \
            [f"[{os.path.basename(d)}] " for d in dirs]
    mesh = DataMesh.make()
    runs = [_Replica(c, w, mesh, p) for c, w, p in zip(configs, workdirs, prefixes, strict=True)]
    programs = {}
    summaries: list[dict[str, Any] | None] = [None] * len(runs)
    while True:
        for i, run in enumerate(runs):
            if summaries[i] is None and not run.training:
                summaries[i] = run.finish()
        active = [i for i, run in enumerate(runs) if run.training]
        if not active:
            break
        low = min(runs[i].step for i in active)
        group = tuple(i for i in active if runs[i].step == low)
        if group not in programs:
            programs[group] = _program(runs, group, mesh)
        states, metrics = programs[group](tuple(runs[i].state for i in group),
                                          tuple(runs[i].batch() for i in group))
        for i, state, m in zip(group, states, metrics, strict=True):
            runs[i].stepped(state, m)
    return summaries


def train_and_evaluate(config, workdir: str) -> dict[str, Any]:
    """Train, checkpoint, evaluate; resume from `workdir` if it holds a checkpoint.

    Returns the summary dict (also written to `workdir/summary.json`). Bad config values raise
    `cli_errors.UsageError` (a ValueError naming the key) before any work. It is `train_group`
    with one run.
    """
    return train_group([config], [workdir])[0]
