"""A precision policy: which number format applies where.

A policy names up to four formats (any format string or object `arith_precision.formats` accepts):

  compute  every floating-point primitive output (the "activations", and under a simulated train
           step also gradients and optimizer arithmetic) is rounded to it.
  param    the arguments listed as parameters (`param_argnums` of `simulate`) are rounded to it on
           entry. None: the compute format.
  accum    partial sums inside reductions and contractions under `sequential` / `pairwise`, the
           chunk accumulator under `chunked:C`, and the accumulator register under `once` (whose
           sum is computed in the carrier, float32 / float64, then rounded to `accum` and to
           `compute`; e.g. accum="e8m13" models a ~14-bit hardware accumulator). None: the
           compute format (under `once` that is one rounding of the carrier sum).
  grad     if set, the cotangent flowing back into every rounded operation is rounded to it (for
           `jax.grad` taken *outside* a simulated function). None: straight-through.

`rounding` is the rounding mode of every one of these roundings (any of
`formats.ROUNDING_MODES`; default nearest_even). Under "stochastic" the random bits of each rounding
come from `jax.random.key(seed)` folded with a hash of the bits being rounded: deterministic, fresh
for different values, but two roundings of identical arrays draw identical bits.

Block formats (mxfp8_e4m3, ..., mxfp4_e2m1, mxint8, nvfp4; `formats.quantize_mx`), applied at
each contraction (`dot_general`) along the operand's contraction axes (several are flattened in
the order the contraction pairs them), as MX hardware blocks matmul inputs:
  matmul_block  both operands of every contraction (weights and activations alike);
  weight_block  the operands that are parameters (`param_argnums` of `simulate`), after `param`
                rounding, also through reshape / transpose / squeeze (Flax Dense and DenseGeneral
                kernels, a transposed embedding table), not after arithmetic on them.
The contraction length must be a multiple of the block size, else a ValueError names the shapes.

`tensor_core_dot` ("auto" | "on" | "off"): under `once`, contract formats whose values are all
bfloat16 values as bf16 x bf16 -> float32 (tensor cores) instead of float32 x float32; "auto" does
so on GPU/TPU backends only (`tensor_core.py`: the semantics and the bit-identity assumption).

`native=True` runs the function on real `jnp.bfloat16` / `jnp.float16` arrays instead of simulating
(fast on accelerators, semantics of the hardware, `compute` must be fp32, bf16 or fp16).

Presets (`Policy.preset(name)`): `fp32`, `bf16` (bf16 compute; fp32 master weights live outside the
simulated step), `pure_bf16` (everything bf16, including parameters and their updates), `fp16`,
and any format string (compute in that format).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from arith_precision import formats
from arith_precision.formats.mx import block_format
from arith_precision.simulate import accumulate, tensor_core

ACCUMULATIONS = ("once", "sequential", "pairwise")  # plus "chunked:C", C a positive integer
ACCUMULATION_FORMS = (*ACCUMULATIONS, "chunked:C")


def is_accumulation(mode) -> bool:
    """Whether `mode` is an accumulation: one of ACCUMULATIONS or chunked:C (C >= 1)."""
    if not isinstance(mode, str):
        return False
    if mode in ACCUMULATIONS:
        return True
    try:
        return accumulate.chunk_size(mode) is not None
    except ValueError:
        return False
NATIVE_FORMATS = ("fp32", "bf16", "fp16")


def _fmt(value):
    return None if value is None else formats.as_format(value)


def native_dtype(fmt):
    """The JAX dtype that natively implements `fmt` (fp32, bf16, fp16), else None."""
    import jax.numpy as jnp

    for name, dtype in (("fp32", jnp.float32), ("bf16", jnp.bfloat16), ("fp16", jnp.float16)):
        if fmt == formats.as_format(name):
            return dtype
    return None


@dataclasses.dataclass(frozen=True)
class Policy:
    """Formats for compute, parameters, accumulation and gradients (see the module docstring)."""

    compute: Any
    param: Any = None
    accum: Any = None
    grad: Any = None
    accumulation: str = "once"
    native: bool = False
    rounding: str = "nearest_even"
    seed: int = 0
    matmul_block: str | None = None
    weight_block: str | None = None
    tensor_core_dot: str = "auto"

    def __post_init__(self):
        if self.compute is None:
            raise ValueError("Policy.compute must be a format, got None")
        for name in ("compute", "param", "accum", "grad"):
            object.__setattr__(self, name, _fmt(getattr(self, name)))
        if isinstance(self.accumulation, str):
            accumulate.chunk_size(self.accumulation)  # names a bad C
        if not is_accumulation(self.accumulation):
            raise ValueError(f"unknown accumulation {self.accumulation!r}; expected one of "
                             f"{ACCUMULATION_FORMS}")
        if self.tensor_core_dot not in tensor_core.MODES:
            raise ValueError(f"unknown tensor_core_dot {self.tensor_core_dot!r}; expected one of "
                             f"{tensor_core.MODES}")
        if self.rounding not in formats.ROUNDING_MODES:
            raise ValueError(f"unknown rounding {self.rounding!r}; expected one of "
                             f"{formats.ROUNDING_MODES}")
        for name in ("matmul_block", "weight_block"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, block_format(getattr(self, name)).name)
        if self.native and (self.rounding != "nearest_even" or self.matmul_block is not None
                            or self.weight_block is not None):
            raise ValueError("native mode rounds as the hardware does: rounding must be "
                             "nearest_even, matmul_block and weight_block None")
        if self.native:
            for name in ("compute", "param"):
                fmt = getattr(self, name)
                if fmt is not None and native_dtype(fmt) is None:
                    raise ValueError(
                        f"native mode needs a hardware dtype for {name}, got {fmt}; "
                        f"expected one of {NATIVE_FORMATS}")
            if self.accumulation != "once":
                raise ValueError(
                    f"native mode accumulates as the hardware does ('once'), got "
                    f"accumulation={self.accumulation!r}")

    @property
    def param_format(self):
        return self.compute if self.param is None else self.param

    @property
    def accum_format(self):
        return self.compute if self.accum is None else self.accum

    def replace(self, **kwargs) -> Policy:
        return dataclasses.replace(self, **kwargs)

    @classmethod
    def preset(cls, name: str, accumulation: str = "once", native: bool = False) -> Policy:
        """`fp32`, `bf16`, `pure_bf16`, `fp16`, or any format string (compute in that format)."""
        if name == "pure_bf16":
            return cls(compute="bf16", param="bf16", accumulation=accumulation, native=native)
        try:
            return cls(compute=name, accumulation=accumulation, native=native)
        except ValueError as e:
            raise ValueError(
                f"unknown precision {name!r}: expected fp32, bf16, pure_bf16, fp16 or a format "
                f"string ({e})") from None


def as_policy(fmt_or_policy, accumulation: str | None = None) -> Policy:
    """A `Policy` from a policy, a format object or a format / preset string."""
    if isinstance(fmt_or_policy, Policy):
        policy = fmt_or_policy
        if accumulation is not None and accumulation != policy.accumulation:
            policy = policy.replace(accumulation=accumulation)
        return policy
    if isinstance(fmt_or_policy, str):
        return Policy.preset(fmt_or_policy, accumulation=accumulation or "once")
    return Policy(compute=fmt_or_policy, accumulation=accumulation or "once")
