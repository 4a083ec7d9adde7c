"""R training steps in one compiled program: the one replica mechanism of training.

    multi = unrolled([step_0, ..., step_R-1])      # each `(state, tokens) -> (state, metrics)`
    states, metrics = jax.jit(multi)(states, batches)   # tuples of R

`unrolled` puts R independent copies of a step into one program. Every replica's operations are
those of a separate run, so its parameters are bit-identical to a separate run's on a
deterministic backend (tested on XLA:CPU). It saves per-step dispatch and lets XLA overlap the
copies; it does not batch them. The copies need not share shapes, precision or optimizer:
`loop.train_group` advances the runs that stand at the same step with one such program.

`vmapped` is the alternative that fills an accelerator with small models: `jax.vmap` of one step
over a leading replica axis (batched contractions and reductions). It is NOT bit-identical to
separate runs: XLA:CPU's batched kernels sum in another order (measured: parameters differ after
a few steps, also between R = 1 and R = 4 of vmap itself), so replicas trained this way are
equivalent runs in distribution, not in bits; training does not use it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp


def unrolled(steps: Sequence[Callable]) -> Callable:
    """R steps -> one `(states_R, batches_R) -> (states_R, metrics_R)` over tuples (unjitted)."""
    steps = tuple(steps)

    def multi_step(states, batches):
        outs = [step(s, b) for step, s, b in zip(steps, states, batches, strict=True)]
        return tuple(o[0] for o in outs), tuple(o[1] for o in outs)

    return multi_step


def stack(trees):
    """A list of R pytrees of equal structure -> one pytree with a leading axis R."""
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def unstack(tree, num: int):
    """The inverse of `stack`: replica r's pytree for r in 0..num-1."""
    return [jax.tree.map(lambda x, r=r: x[r], tree) for r in range(num)]


def vmapped(step: Callable) -> Callable:
    """One step -> the same over a leading replica axis of states and tokens (`stack`ed)."""
    return jax.vmap(step)
