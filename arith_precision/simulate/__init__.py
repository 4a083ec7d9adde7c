"""The dtype-simulation layer: run an unmodified JAX function at any number format.

    from arith_precision.simulate import simulate, Policy
    y = simulate(f, "bf16")(x)                                   # every op rounded to bf16
    y = simulate(f, "e4m3", accumulation="sequential")(x)        # and sums rounded per addition
    y = simulate(f, "e4m3fn", accumulation="tensor_core:h100")(x)  # matmuls as an H100 does
    y = simulate(f, Policy("bf16", accum="fp32", grad="e5m2"))(x)
    y = simulate(model.apply, RegionPolicy.of("bf16", {"attention_scores": "fp32"}))(p, x)

See `simulate.py` (the wrapper), `sim_array.py` (the rounding rules), `accumulate.py` (summation
orders), `tensor_core_models.py` (GPU tensor-core inner products), `policy.py` (what gets which
format) and `regions.py` (a policy per region).
"""

from arith_precision.simulate.accumulate import cumsum, dot_general, reduce_sum, sum_leading
from arith_precision.simulate.policy import (
    ACCUMULATION_FORMS,
    ACCUMULATIONS,
    TENSOR_CORE_ACCUMULATIONS,
    Policy,
    as_policy,
    is_accumulation,
    native_dtype,
)
from arith_precision.simulate.regions import REGIONS, RegionPolicy
from arith_precision.simulate.sim_array import SimArray, round_array
from arith_precision.simulate.simulate import simulate

__all__ = [
    "ACCUMULATIONS", "ACCUMULATION_FORMS", "Policy", "REGIONS", "RegionPolicy", "SimArray",
    "TENSOR_CORE_ACCUMULATIONS",
    "as_policy", "cumsum", "dot_general", "is_accumulation", "native_dtype", "reduce_sum",
    "round_array", "simulate", "sum_leading",
]
