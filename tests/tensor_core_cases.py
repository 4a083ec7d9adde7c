"""The tensor-core contraction against the carrier path, case by case (`tensor_core.py`).

    XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type= PYTHONPATH=. \
        python tests/tensor_core_cases.py [FORMAT ...]     # default: every QUALIFYING format

prints one JSON object per (format, inputs, function): `mismatches` counts the output bits
patterns that differ between `tensor_core_dot="on"` and `"off"`. Run in a subprocess by
tests/simulate/test_tensor_core_dot.py, because the XLA flag must be set before JAX starts.
"""

from __future__ import annotations

import json
import sys

import jax
import jax.numpy as jnp
import numpy as np

from arith_precision import formats
from arith_precision.simulate import Policy, simulate

# Every format the bf16 path takes (compute formats whose values are all bfloat16 values) that
# can hold a sum: e8m0fnu also qualifies, but has no zero and no negative values (every
# contraction output here would be NaN), so its case would check nothing.
QUALIFYING = ("bf16", "e5m7", "e5m2", "e4m3", "e3m4", "e4m3fn", "e4m3fnuz", "e5m2fnuz",
              "e4m3b11fnuz", "e3m2fn", "e2m3fn", "e2m1fn", "p3109_k8p3", "e5m2_sat")
M, K, N = 12, 96, 20


def _inputs(fmt: str, kind: str):
    """(x, w) rounded to `fmt` on entry by the simulation; scaled to the format's range."""
    rng = np.random.default_rng(abs(hash((fmt, kind))) % 2**32)
    top = float(formats.as_format(fmt).max_exact)
    scale = min(4.0, np.sqrt(top / K) / 2)  # sums of K products stay finite
    if kind == "random":
        x = rng.standard_normal((M, K)) * scale
        w = rng.standard_normal((K, N)) * scale
    elif kind == "cancelling":  # big products that cancel around small ones: order matters
        big = min(2.0**12, 2.0 ** np.floor(np.log2(top / K) / 2))  # big * big * K <= max
        x = np.where(rng.random((M, K)) < 0.5, big, 1.0) * rng.choice([-1.0, 1.0], (M, K))
        w = np.ones((K, N)) * np.where(np.arange(K) % 2, big, -big)[:, None]
        w[K // 2:] = -w[: K // 2][::-1]  # second half mirrors the first: sums near 0
        w = w + rng.standard_normal((K, N)) * (scale / 4)
    else:  # special values: an inf or NaN in one row and column
        x = rng.standard_normal((M, K)) * scale
        w = rng.standard_normal((K, N)) * scale
        x[0, 3] = np.inf
        w[5, 2] = -np.inf
        x[1, 1] = np.nan
    return jnp.asarray(x, jnp.float32), jnp.asarray(w, jnp.float32)


def _functions(policy):
    def forward(x, w):
        h = jnp.tanh(x @ w)
        out = jnp.einsum("mn,kn->mk", h, w)  # a contraction over the other axis too
        # A batched contraction whose batch axis sits at different positions (attention-like).
        x3, w3 = x.reshape(M, 4, K // 4), w.T.reshape(N, K // 4, 4)
        return out, jnp.einsum("ahk,bkh->hab", x3, w3)

    def loss(x, w):
        out, batched = forward(x, w)
        return (jnp.sum(out ** 2) + jnp.sum(batched ** 2)) * 1e-3

    return {
        "jit": jax.jit(simulate(forward, policy)),
        "grad_inside": jax.jit(simulate(jax.grad(loss, argnums=(0, 1)), policy)),
        "grad_outside": jax.jit(jax.grad(simulate(loss, policy), argnums=(0, 1))),
    }


def _bits(tree):
    return [np.asarray(leaf).view(np.uint32) for leaf in jax.tree.leaves(tree)]


def main(names) -> None:
    kinds = ("random", "cancelling", "special")
    for fmt in names or QUALIFYING:
        fast = _functions(Policy(compute=fmt, tensor_core_dot="on"))
        slow = _functions(Policy(compute=fmt, tensor_core_dot="off"))
        for kind in kinds:
            x, w = _inputs(fmt, kind)
            for name in fast:
                got, want = _bits(fast[name](x, w)), _bits(slow[name](x, w))
                mismatches = int(sum(np.sum(g != h) for g, h in zip(got, want, strict=True)))
                finite = int(sum(np.sum(np.isfinite(h.view(np.float32))) for h in want))
                print(json.dumps({"format": fmt, "inputs": kind, "function": name,
                                  "mismatches": mismatches, "finite_outputs": finite}))
                sys.stdout.flush()


if __name__ == "__main__":
    main(sys.argv[1:])
