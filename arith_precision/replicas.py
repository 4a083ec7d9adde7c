"""R training runs of the same shapes in one compiled program (the step only).

    step_R = replica_step(mcfg, spec, tx, precision, mode="unrolled")
    states_R = stack([init_state(seed) for seed in seeds])          # leading axis R
    states_R, metrics_R = jax.jit(step_R)(states_R, tokens_RxBxT)

Replicas differ in their data (parameters, optimizer state, data stream: seeds and data
seeds); the model shapes, optimizer and precision arm are shared (a precision policy is static,
so R different arms are R programs; runtime-width formats `RuntimeMantissa` are the exception
the simulation layer already has, not used here).

Two ways to put R steps in one program:
  unrolled  R independent copies of the step in one jitted program. Every replica's operations
            are those of a separate run with the same shapes, so its parameters are
            bit-identical to a separate run's (tested on XLA:CPU). Saves per-step dispatch and
            lets XLA overlap the copies; does not batch them.
  vmap      `jax.vmap` of the step: batched contractions and reductions (what fills a GPU with
            small models). NOT bit-identical to separate runs: XLA:CPU's batched kernels sum in
            another order (measured: parameters differ after a few steps, also between R = 1
            and R = 4 of vmap itself), so replicas trained this way are equivalent runs in
            distribution, not in bits.

The run driver is `train_group.py`: R runs (any seeds, precisions and lengths) in one program
of unrolled copies, each writing its checkpoints, metrics and summary.json exactly as
`train.train_and_evaluate` would, with resume; `experiments/sweep_groups.py` puts a sweep's cells
into such batches (`experiments.sweep --replicas=R`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

MODES = ("unrolled", "vmap")


def stack(trees):
    """A list of R pytrees of equal structure -> one pytree with a leading axis R."""
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def unstack(tree, num: int):
    """The inverse of `stack`: replica r's pytree for r in 0..num-1."""
    return [jax.tree.map(lambda x, r=r: x[r], tree) for r in range(num)]


def replica_step(step, mode: str = "unrolled"):
    """`step(state, tokens) -> (state, metrics)` of one run -> the same over a leading replica
    axis of both arguments and results (not jitted)."""
    if mode not in MODES:
        raise ValueError(f"unknown replica mode {mode!r}; expected one of {MODES}")
    if mode == "vmap":
        return jax.vmap(step)

    def unrolled(states_R, tokens_RxBxT):
        num = tokens_RxBxT.shape[0]
        outs = [step(s, tokens_RxBxT[r]) for r, s in enumerate(unstack(states_R, num))]
        return stack([o[0] for o in outs]), stack([o[1] for o in outs])

    return unrolled
