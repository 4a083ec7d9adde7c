"""`FixedFormat`: signed fixed point with I integer and F fraction bits, saturating.

The values are the integer multiples k * 2^-F with -2^(I+F) <= k <= 2^(I+F) - 1, i.e. the grid
of a two's-complement integer of I + F + 1 bits read with F bits after the binary point: the range
is [-2^I, 2^I - 2^-F]. Rounding (nearest-even, toward zero or stochastic) is to that uniform grid;
values outside the range saturate to the nearest end (+-inf included: fixed point has no
infinities). There is a single zero, so results that are zero are +0. NaN stays NaN (a simulation
should see its NaNs rather than a silently invented number).

String form `fixed{I}.{F}`, e.g. `fixed8.8` (17-bit words: range [-256, 256 - 1/256]).
"""

from __future__ import annotations

import dataclasses
from fractions import Fraction

from arith_precision.formats.float_format import check_int

# float64 is the widest carrier and holds at most 53 significant bits; keep the grid inside it.
MAX_FIXED_BITS = 52


@dataclasses.dataclass(frozen=True)
class FixedFormat:
    """Signed, saturating fixed point: I integer bits, F fraction bits (plus a sign bit).

    Attributes:
        int_bits: I >= 0; the range is [-2^I, 2^I - 2^-F].
        frac_bits: F >= 0; the grid spacing is 2^-F.
    """

    int_bits: int
    frac_bits: int

    def __post_init__(self):
        check_int("int_bits", self.int_bits, 0, MAX_FIXED_BITS)
        check_int("frac_bits", self.frac_bits, 0, MAX_FIXED_BITS)
        if self.int_bits + self.frac_bits > MAX_FIXED_BITS:
            raise ValueError(
                f"int_bits + frac_bits must be <= {MAX_FIXED_BITS}, got "
                f"{self.int_bits} + {self.frac_bits}"
            )

    @property
    def total_bits(self) -> int:
        """Word width including the sign bit: I + F + 1."""
        return self.int_bits + self.frac_bits + 1

    @property
    def quantum_exact(self) -> Fraction:
        """Grid spacing 2^-F."""
        return Fraction(1, 2**self.frac_bits)

    @property
    def max_exact(self) -> Fraction:
        """Largest value 2^I - 2^-F."""
        return Fraction(2**self.int_bits) - self.quantum_exact

    @property
    def min_exact(self) -> Fraction:
        """Smallest (most negative) value -2^I."""
        return -Fraction(2**self.int_bits)

    @property
    def max_value(self) -> float:
        return float(self.max_exact)

    @property
    def min_value(self) -> float:
        return float(self.min_exact)

    @property
    def quantum(self) -> float:
        return float(self.quantum_exact)

    def __str__(self) -> str:
        return f"fixed{self.int_bits}.{self.frac_bits}"
