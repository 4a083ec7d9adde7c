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
           compute format (under `once` that is one rounding of the carrier sum). Must be None
           under `tensor_core:<gpu>`, whose model fixes the accumulator.
  grad     if set, the cotangent flowing back into every rounded operation is rounded to it (for
           `jax.grad` taken *outside* a simulated function). None: straight-through.

`rounding` is the rounding mode of every one of these roundings (any of
`formats.ROUNDING_MODES`; default nearest_even). Under "stochastic" the random bits of each rounding
come from `jax.random.key(seed)` folded with a hash of the bits being rounded: deterministic, fresh
for different values, but two roundings of identical arrays draw identical bits. `random_bits`
(None, or r >= 1 with rounding="stochastic"): r random bits per rounded element, up with
probability floor(f 2^r) / 2^r (`formats.quantize`); None is the exact rule. r must fit one word
of the carrier (32 bits on float32, 64 on float64); a wider r fails when a float32 value is
rounded.

Block formats (mxfp8_e4m3, ..., mxfp4_e2m1, mxint8, nvfp4; `formats.quantize_mx`), applied at
each contraction (`dot_general`) along the operand's contraction axes (several are flattened in
the order the contraction pairs them), as MX hardware blocks matmul inputs:
  matmul_block  both operands of every contraction (weights and activations alike);
  weight_block  the operands that are parameters (`param_argnums` of `simulate`), after `param`
                rounding, also through reshape / transpose / squeeze (Flax Dense and DenseGeneral
                kernels, a transposed embedding table), not after arithmetic on them.
The contraction length must be a multiple of the block size, else a ValueError names the shapes.
`block_scale_rule` ("floor", the OCP rule and default; "ceil"; "even") is the E8M0 scale rule of
both (`formats.quantize_mx`'s `scale_rule`); nvfp4 takes only "floor".

`accumulation`: "once", "sequential", "pairwise", "chunked:C" (`accumulate.py`), or
"tensor_core:<gpu>" (v100, a100, h100 (= h200), b200): contractions computed exactly as that
GPU's tensor cores compute them, with the compute format as the input format
(`tensor_core_models.py`; a format the GPU has no model for is refused; operands in another
format, e.g. `param`, are rounded to it first, as a cast before the GEMM), reductions as `once`;
`accum`, `matmul_block` and `weight_block` must be None.

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
from arith_precision.formats.block_format import block_format, check_scale_rule
from arith_precision.formats.quantize import check_random_bits
from arith_precision.simulate import accumulate, tensor_core, tensor_core_models

ACCUMULATIONS = ("once", "sequential", "pairwise")  # plus "chunked:C", C a positive integer
TENSOR_CORE_ACCUMULATIONS = tuple(tensor_core_models.PREFIX + g for g in tensor_core_models.GPUS)
ACCUMULATION_FORMS = (*ACCUMULATIONS, "chunked:C", *TENSOR_CORE_ACCUMULATIONS)


def is_accumulation(mode) -> bool:
    """Whether `mode` is an accumulation: one of ACCUMULATIONS, chunked:C (C >= 1), or
    tensor_core:<gpu> for a modelled GPU (`tensor_core_models.GPUS`, and h200 = h100)."""
    if not isinstance(mode, str):
        return False
    if mode in ACCUMULATIONS:
        return True
    try:
        return (accumulate.chunk_size(mode) is not None
                or tensor_core_models.gpu_of(mode) is not None)
    except ValueError:
        return False


def check_accumulation(mode) -> None:
    """ValueError naming `mode` unless it is an accumulation (a bad chunk size or an unknown GPU
    gets its own message)."""
    if isinstance(mode, str):
        accumulate.chunk_size(mode)  # names a bad C
        tensor_core_models.gpu_of(mode)  # names an unknown GPU and lists the known ones
    if not is_accumulation(mode):
        raise ValueError(f"unknown accumulation {mode!r}; expected one of {ACCUMULATION_FORMS}")


def reduction_mode(mode: str) -> str:
    """The order of `reduce_sum` / `cumsum` under accumulation `mode`: tensor cores only run
    contractions, so under tensor_core:<gpu> reductions are `once` (fp32 CUDA-core sums)."""
    return "once" if mode.startswith(tensor_core_models.PREFIX) else mode
NATIVE_FORMATS = ("fp32", "bf16", "fp16")
MAX_RANDOM_BITS = 64  # one float64 carrier word; float32 values take at most 32 (checked there)


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
    random_bits: int | None = None
    block_scale_rule: str = "floor"

    def __post_init__(self):
        if self.compute is None:
            raise ValueError("Policy.compute must be a format, got None")
        for name in ("compute", "param", "accum", "grad"):
            object.__setattr__(self, name, _fmt(getattr(self, name)))
        check_accumulation(self.accumulation)
        if tensor_core_models.gpu_of(self.accumulation) is not None:
            tensor_core_models.model_for(self.accumulation, self.compute)  # covers the format?
            if self.accum is not None:
                raise ValueError(
                    f"accumulation {self.accumulation!r} models the GPU's own accumulator; "
                    f"accum must be None, got {self.accum}")
            for name in ("matmul_block", "weight_block"):
                if getattr(self, name) is not None:
                    raise ValueError(
                        f"accumulation {self.accumulation!r} models unscaled MMA inputs; "
                        f"{name}={getattr(self, name)!r} (block-scaled MMA) is not modelled")
        if self.tensor_core_dot not in tensor_core.MODES:
            raise ValueError(f"unknown tensor_core_dot {self.tensor_core_dot!r}; expected one of "
                             f"{tensor_core.MODES}")
        if self.rounding not in formats.ROUNDING_MODES:
            raise ValueError(f"unknown rounding {self.rounding!r}; expected one of "
                             f"{formats.ROUNDING_MODES}")
        check_random_bits(self.random_bits, self.rounding, MAX_RANDOM_BITS, "float64")
        for name in ("matmul_block", "weight_block"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, block_format(getattr(self, name)).name)
        for name in ("", self.matmul_block, self.weight_block):
            if name is not None:
                try:
                    check_scale_rule(self.block_scale_rule, name)
                except ValueError as err:
                    raise ValueError(f"Policy.block_scale_rule: {err}") from None
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
