"""Number formats and exact rounding.

Formats (frozen dataclasses, hashable, usable as static jit arguments):
  FloatFormat(exponent_bits, mantissa_bits, bias=None, variant="ieee", saturate=False,
              flush_subnormals=False)   -- IEEE-like eEmM and the ml_dtypes variants
  FixedFormat(int_bits, frac_bits)      -- signed saturating fixed point fixedI.F
  parse(str) / as_format(str | format | dtype), carrier_dtype(fmt), to_ml_dtype(fmt)

Rounding:
  quantize(x, fmt, rounding="nearest_even", key=None, *, random_bits=None) -- exact (integer
      bit arithmetic), jit/vmap-able, straight-through gradient.

  rounding modes: nearest_even, nearest_away, toward_zero, toward_positive, toward_negative,
      to_odd, stochastic (exact probability, or with random_bits=r: r random bits, up with
      probability floor(f 2^r) / 2^r); P3109 binary8 strings p3109_k8p1 .. p3109_k8p7.

Block formats (OCP MX v1.0 and NVFP4; see `mx.py`):
  quantize_mx(x, fmt, axis=-1, rounding="nearest_even", key=None, *, random_bits=None,
              scale_rule="floor") -> dequantized array   (scale rules: MX_SCALE_RULES)
  pack_mx(...) -> MXPacked (codes, scales, tensor scale); dequantize_mx(packed) -> array
      fmt in mxfp8_e4m3 mxfp8_e5m2 mxfp6_e3m2 mxfp6_e2m3 mxfp4_e2m1 mxint8 nvfp4

Weight quantization (pytrees):
  quantize_int(w, bits=8, axis=None, group_size=None) -> IntQuantized
  quantize_nf4(w, block_size=64, axis=-1) -> NF4Quantized
  dequantize(q) -> array
"""

from arith_precision.formats.carrier import carrier_dtype
from arith_precision.formats.fixed_format import FixedFormat
from arith_precision.formats.float_format import FloatFormat
from arith_precision.formats.int_quant import IntQuantized, dequantize_int, quantize_int
from arith_precision.formats.ml_dtypes_compat import ML_DTYPE_FORMATS, to_ml_dtype
from arith_precision.formats.mx import (
    BLOCK_FORMATS,
    MX_SCALE_RULES,
    BlockFormat,
    MXPacked,
    dequantize_mx,
    is_block_format,
    pack_mx,
    quantize_mx,
)
from arith_precision.formats.nf4 import NF4_LEVELS, NF4Quantized, dequantize_nf4, quantize_nf4
from arith_precision.formats.parsing import ALIASES, Format, as_format, parse
from arith_precision.formats.quantize import ROUNDING_MODES, quantize


def dequantize(q):
    """The approximate weight of an `IntQuantized` or `NF4Quantized`."""
    if isinstance(q, IntQuantized):
        return dequantize_int(q)
    if isinstance(q, NF4Quantized):
        return dequantize_nf4(q)
    raise ValueError(f"dequantize expects IntQuantized or NF4Quantized, got {type(q).__name__}")


__all__ = [
    "ALIASES",
    "BLOCK_FORMATS",
    "MX_SCALE_RULES",
    "BlockFormat",
    "MXPacked",
    "dequantize_mx",
    "is_block_format",
    "pack_mx",
    "quantize_mx",
    "ML_DTYPE_FORMATS",
    "NF4_LEVELS",
    "ROUNDING_MODES",
    "FixedFormat",
    "FloatFormat",
    "Format",
    "IntQuantized",
    "NF4Quantized",
    "as_format",
    "carrier_dtype",
    "dequantize",
    "dequantize_int",
    "dequantize_nf4",
    "parse",
    "quantize",
    "quantize_int",
    "quantize_nf4",
    "to_ml_dtype",
]
