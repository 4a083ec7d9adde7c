"""The tensor-core contraction path (`arith_precision/simulate/tensor_core.py`): which formats
take it, that it is taken, and that it is bit-identical to the carrier path."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from arith_precision import formats
from arith_precision.simulate import Policy, simulate, tensor_core
from arith_precision.simulate.runtime_format import RuntimeMantissa
from tests import repo

ROOT = str(repo.ROOT)
from tests import tensor_core_cases  # noqa: E402

# (format, embeds in bf16): M <= 7 and the range inside bf16's, else the carrier path.
EMBEDDING = [
    ("bf16", True), ("e8m7", True), ("e5m7", True), ("e5m2", True), ("e4m3", True),
    ("e4m3fn", True), ("e4m3fnuz", True), ("e5m2fnuz", True), ("e4m3b11fnuz", True),
    ("e3m2fn", True), ("e2m3fn", True), ("e2m1fn", True), ("e8m0fnu", True),
    ("p3109_k8p3", True), ("p3109_k8p1", True), ("e5m2_sat", True), ("e4m3_sat_ftz", True),
    ("fp16", False), ("tf32", False), ("e8m8", False), ("e5m8", False), ("fp32", False),
    ("e8m7b100", False),  # bias 100: values up to 2^155, beyond bf16
    ("fixed4.4", False),
]


@pytest.mark.parametrize("name,want", EMBEDDING)
def test_which_formats_embed_in_bf16(name, want):
    assert tensor_core.embeds_in_bf16(formats.as_format(name)) is want


def test_qualifying_cases_cover_the_embedding_table():
    listed = {formats.as_format(n) for n in tensor_core_cases.QUALIFYING}
    embedding = {formats.as_format(n) for n, ok in EMBEDDING if ok} - {formats.as_format("e8m0fnu")}
    missing = {str(f) for f in embedding - listed
               if str(f) not in ("e8m7", "p3109_k8p1", "e4m3_sat_ftz")}  # aliases / variants
    assert not missing


def test_runtime_width_formats_take_the_carrier_path():
    assert not tensor_core.embeds_in_bf16(RuntimeMantissa(slot=0))


def _eqns(jaxpr):
    """Every equation, also inside sub-jaxprs (custom_jvp_call, pjit, ...)."""
    for e in jaxpr.eqns:
        yield e
        for value in e.params.values():
            for sub in value if isinstance(value, tuple | list) else (value,):
                if hasattr(sub, "jaxpr") and hasattr(sub.jaxpr, "eqns"):
                    yield from _eqns(sub.jaxpr)
                elif hasattr(sub, "eqns"):
                    yield from _eqns(sub)


def _dots(policy):
    x = jnp.ones((4, 32), jnp.float32)
    jaxpr = jax.make_jaxpr(simulate(lambda a, b: jnp.tanh(a @ b), policy))(x, x.T)
    return [e for e in _eqns(jaxpr.jaxpr) if e.primitive.name == "dot_general"]


@pytest.mark.parametrize("policy,bf16", [
    (Policy("bf16", tensor_core_dot="on"), True),
    (Policy("e4m3fn", tensor_core_dot="on"), True),
    (Policy("bf16", tensor_core_dot="off"), False),
    (Policy("bf16"), jax.default_backend() != "cpu"),  # "auto": accelerators only
    (Policy("fp16", tensor_core_dot="on"), False),  # M = 10: not a bf16 value
    (Policy("bf16", accumulation="sequential", tensor_core_dot="on"), False),
    (Policy("bf16", accumulation="chunked:4", tensor_core_dot="on"), False),
    (Policy("bf16", matmul_block="mxfp8_e4m3", tensor_core_dot="on"), False),
])
def test_the_path_taken(policy, bf16):
    dots = _dots(policy)  # sequential / pairwise contract without dot_general
    assert dots or policy.accumulation in ("sequential", "pairwise")
    dtypes = {str(v.aval.dtype) for e in dots for v in e.invars}
    assert dtypes == {"bfloat16"} if bf16 else dtypes <= {"float32"}
    assert all(str(e.outvars[0].aval.dtype) == "float32" for e in dots)


def test_bad_flag_is_named():
    with pytest.raises(ValueError, match="tensor_core_dot 'yes'"):
        Policy("bf16", tensor_core_dot="yes")


def test_exact_partial_sums_agree_under_any_backend_order():
    """Integer-valued bf16 inputs whose float32 partial sums are all exact (|sum| < 2^24) and
    cancel: the sum is independent of the order, so the two paths agree on every backend,
    including XLA:CPU's default kernels (whose bf16 and float32 orders differ)."""
    rng = np.random.default_rng(0)
    x = rng.integers(-15, 16, (64, 512)).astype(np.float32)
    w = rng.integers(-15, 16, (512, 48)).astype(np.float32)
    w[256:] = -w[:256][::-1] + rng.integers(-1, 2, (256, 48))  # near-total cancellation
    for compute in ("bf16", "e4m3fn", "e5m2"):
        outs = [jax.jit(simulate(lambda a, b: a @ b, Policy(compute, tensor_core_dot=mode)))(x, w)
                for mode in ("on", "off")]
        np.testing.assert_array_equal(np.asarray(outs[0]).view(np.uint32),
                                      np.asarray(outs[1]).view(np.uint32))


def _cases(names):
    env = dict(os.environ, XLA_FLAGS="--xla_cpu_experimental_ynn_fusion_type=", PYTHONPATH=ROOT,
               JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "tensor_core_cases.py"),
                          *names], env=env, cwd=ROOT, capture_output=True, text=True,
                         timeout=600, check=True).stdout
    rows = [json.loads(line) for line in out.splitlines()]
    assert len(rows) == 9 * len(names)  # 3 input kinds x 3 functions per format
    return rows


def test_bit_identical_bf16_random_cancelling_special_jit_and_grad():
    """On XLA:CPU without YNNPACK fusions (both dtypes then use one float32 kernel)."""
    rows = _cases(["bf16"])
    assert all(r["mismatches"] == 0 for r in rows), [r for r in rows if r["mismatches"]]
    assert all(r["finite_outputs"] > 0 for r in rows if r["inputs"] != "special")


@pytest.mark.slow
def test_bit_identical_every_qualifying_format():
    names = [n for n in tensor_core_cases.QUALIFYING if n != "bf16"]
    rows = _cases(names)
    assert all(r["mismatches"] == 0 for r in rows), [r for r in rows if r["mismatches"]]
    no_finite = [r for r in rows if r["inputs"] != "special" and not r["finite_outputs"]]
    assert not no_finite
