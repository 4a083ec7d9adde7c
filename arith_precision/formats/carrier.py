"""Carriers: which floating dtype holds the values of a format, and the no-double-rounding rule.

`quantize` stores a rounded value in an ordinary float array, the *carrier* (float32 or float64).
A simulation computes each operation in the carrier and rounds the result to the format. That is
the same as rounding the exact result once iff the intermediate carrier rounding is innocuous:
by Figueroa ("When is double rounding innocuous?", 1995) rounding to a carrier with p' significant
bits and then to a format with p bits equals one direct rounding for + - * / sqrt when
p' >= 2p + 2. So a format fits a carrier iff

  * every value of the format is a carrier value (max <= carrier max, smallest positive >=
    carrier smallest subnormal), and
  * in every binade the carrier keeps at least p + 2 bits below the format's quantum, where p is
    the format's precision: p = M + 1 for floats (worst case: the format's normal binades), and
    p = I + F for fixed point (its top binade); below the carrier's normal range the carrier
    loses bits, which is charged against the same budget.

For float32 (p' = 24) that is M <= 10 with E <= 8 (fp16, bf16, tf32, every fp8/fp6/fp4) and
I + F <= 11; for float64 (p' = 53), M <= 24 (so fp32 itself, e11m20, e5m20) and I + F <= 25.
A format that *is* the carrier's own (e8m23 on float32, e11m52 on float64) fits trivially:
rounding to it is the identity. Anything else raises instead of silently double rounding.
"""

from __future__ import annotations

import dataclasses
from fractions import Fraction

import jax
import numpy as np

from arith_precision.formats.fixed_format import FixedFormat
from arith_precision.formats.float_format import FloatFormat


@dataclasses.dataclass(frozen=True)
class Carrier:
    """The bit layout of an IEEE binary carrier dtype (float32 or float64)."""

    dtype: np.dtype
    uint_dtype: np.dtype
    width: int
    exponent_bits: int
    mantissa_bits: int

    @property
    def bias(self) -> int:
        return 2 ** (self.exponent_bits - 1) - 1

    @property
    def emin(self) -> int:
        """Exponent of the smallest normal binade."""
        return 1 - self.bias

    @property
    def max_exact(self) -> Fraction:
        return (2 - Fraction(1, 2**self.mantissa_bits)) * Fraction(2) ** self.bias

    @property
    def min_positive_exact(self) -> Fraction:
        return Fraction(2) ** (self.emin - self.mantissa_bits)

    def bits_of(self, value: Fraction) -> int:
        """The bit pattern of a non-negative carrier value, computed exactly; raises if the value
        is not representable (which would mean a format was admitted to a carrier it misfits)."""
        as_float = self.dtype.type(float(value))
        if Fraction(float(as_float)) != value:
            raise AssertionError(f"{value} is not exactly representable in {self.dtype}")
        return int(np.asarray(as_float).view(self.uint_dtype))


FLOAT32 = Carrier(np.dtype(np.float32), np.dtype(np.uint32), 32, 8, 23)
FLOAT64 = Carrier(np.dtype(np.float64), np.dtype(np.uint64), 64, 11, 52)
CARRIERS = {FLOAT32.dtype: FLOAT32, FLOAT64.dtype: FLOAT64}


def _is_carrier_itself(fmt, carrier: Carrier) -> bool:
    return (
        isinstance(fmt, FloatFormat)
        and fmt.variant == "ieee"
        and (fmt.exponent_bits, fmt.mantissa_bits, fmt.bias)
        == (carrier.exponent_bits, carrier.mantissa_bits, carrier.bias)
    )


def fits(fmt, carrier: Carrier) -> bool:
    """Whether `carrier` holds `fmt` without double rounding (see the module docstring)."""
    if _is_carrier_itself(fmt, carrier):
        return True
    if isinstance(fmt, FixedFormat):
        precision = fmt.int_bits + fmt.frac_bits
        in_range = fmt.max_exact <= carrier.max_exact and -fmt.min_exact <= carrier.max_exact
        # The grid 2^-F must be a normal carrier number, so every nonzero value keeps full
        # carrier precision below it.
        in_range = in_range and fmt.frac_bits <= carrier.bias - 1
        return in_range and carrier.mantissa_bits + 1 >= 2 * precision + 2
    if fmt.max_exact > carrier.max_exact or fmt.min_positive_exact < carrier.min_positive_exact:
        return False
    precision = fmt.mantissa_bits + 1
    # Bits the carrier keeps below the format's quantum, minimised over binades: Mc - M in the
    # normal binades, fewer where the format's binades lie below the carrier's normal range.
    emin_format = (1 - fmt.bias) if fmt.variant != "fnu" else -fmt.bias
    spare = carrier.mantissa_bits - fmt.mantissa_bits - max(0, carrier.emin - emin_format)
    return spare >= precision + 2


def carrier_dtype(fmt) -> np.dtype:
    """The narrowest carrier dtype (float32, else float64) that holds `fmt` exactly.

    float64 arrays need `jax_enable_x64`; this function only reports the requirement.

    Raises:
        ValueError: if not even float64 holds the format.
    """
    from arith_precision.formats.parsing import as_format

    fmt = as_format(fmt)
    for carrier in (FLOAT32, FLOAT64):
        if fits(fmt, carrier):
            return carrier.dtype
    raise ValueError(
        f"format {fmt} does not fit a float64 carrier without double rounding "
        f"(needs precision <= 25 bits and a range inside float64's)"
    )


def holds_values(fmt, carrier: Carrier) -> bool:
    """Whether every value of `fmt` is a carrier value: enough to round a carrier *value* to
    `fmt` exactly (what `fits` adds is that a carrier *operation* followed by that rounding
    equals one rounding of the exact result)."""
    if isinstance(fmt, FixedFormat):
        return fits(fmt, carrier)
    return (fmt.mantissa_bits <= carrier.mantissa_bits and fmt.max_exact <= carrier.max_exact
            and fmt.min_positive_exact >= carrier.min_positive_exact)


def carrier_for(fmt, dtype, values_only: bool = False) -> Carrier:
    """The `Carrier` for an input of `dtype`, checking that it holds `fmt` (with `values_only`,
    only that it holds the format's values: `holds_values`).

    Raises:
        ValueError: if `dtype` is not float32/float64, or does not hold `fmt` (naming both and
            the carrier the format needs).
    """
    dtype = np.dtype(dtype)
    if dtype not in CARRIERS:
        raise ValueError(
            f"quantize needs a float32 or float64 input (the carrier), got dtype {dtype}"
        )
    carrier = CARRIERS[dtype]
    if fits(fmt, carrier) or (values_only and holds_values(fmt, carrier)):
        return carrier
    try:
        need = carrier_dtype(fmt)
    except ValueError as err:
        raise ValueError(f"cannot quantize to {fmt}: {err}") from None
    hint = ""
    if need == np.float64 and not jax.config.jax_enable_x64:
        hint = " (enable it with jax.config.update('jax_enable_x64', True) or jax.enable_x64())"
    raise ValueError(
        f"format {fmt} does not fit a {dtype} carrier without double rounding; it needs a "
        f"{need} input{hint}"
    )
