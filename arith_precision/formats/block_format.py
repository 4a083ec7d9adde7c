"""Block-scaled formats (`BlockFormat`, the table `BLOCK_FORMATS`) and the rules for their
shared scales; the arithmetic lives in `mx.py`, whose docstring defines the formats and the
scale rules ("floor", "ceil", "even") exactly.
"""

from __future__ import annotations

import dataclasses
import math
from fractions import Fraction

from arith_precision.formats.fixed_format import FixedFormat
from arith_precision.formats.float_format import FloatFormat

MX_SCALE_RULES = ("floor", "ceil", "even")


@dataclasses.dataclass(frozen=True)
class BlockFormat:
    """A block-scaled format: `block_size` elements of `element` share one `scale` value."""

    name: str
    element: FloatFormat | FixedFormat
    block_size: int
    scale: FloatFormat

    @property
    def emax_element(self) -> int:
        """floor(log2(largest element value)): OCP's emax_elem."""
        return math.floor(math.log2(self.element.max_value))

    @property
    def element_fraction_bits(self) -> int:
        """M_elem: fraction bits of the element grid in its top binade (scale rule "even")."""
        e = self.element
        if isinstance(e, FloatFormat):
            return e.mantissa_bits
        return e.frac_bits + self.emax_element

    @property
    def max_significand(self) -> int:
        """Mx * 2^23: the largest element value's significand as a 24-bit integer."""
        value = Fraction(self.element.max_exact) / Fraction(2) ** self.emax_element
        scaled = value * 2**23
        assert scaled.denominator == 1 and 2**23 <= scaled < 2**24
        return int(scaled)

    @property
    def element_bits(self) -> int:
        e = self.element
        return e.total_bits if isinstance(e, FloatFormat) else 1 + e.int_bits + e.frac_bits


_E8M0 = FloatFormat(8, 0, variant="fnu")
_E4M3 = FloatFormat(4, 3, variant="fn")
BLOCK_FORMATS: dict[str, BlockFormat] = {
    "mxfp8_e4m3": BlockFormat("mxfp8_e4m3", FloatFormat(4, 3, variant="fn"), 32, _E8M0),
    "mxfp8_e5m2": BlockFormat("mxfp8_e5m2", FloatFormat(5, 2), 32, _E8M0),
    "mxfp6_e3m2": BlockFormat("mxfp6_e3m2", FloatFormat(3, 2, variant="fn"), 32, _E8M0),
    "mxfp6_e2m3": BlockFormat("mxfp6_e2m3", FloatFormat(2, 3, variant="fn"), 32, _E8M0),
    "mxfp4_e2m1": BlockFormat("mxfp4_e2m1", FloatFormat(2, 1, variant="fn"), 32, _E8M0),
    "mxint8": BlockFormat("mxint8", FixedFormat(1, 6), 32, _E8M0),
    "nvfp4": BlockFormat("nvfp4", FloatFormat(2, 1, variant="fn"), 16, _E4M3),
}
NVFP4_TENSOR_RANGE = 6.0 * 448.0  # largest E2M1 value times largest E4M3 value


def block_format(fmt) -> BlockFormat:
    """The `BlockFormat` named `fmt` (or `fmt` itself); a ValueError lists the valid names."""
    if isinstance(fmt, BlockFormat):
        return fmt
    if isinstance(fmt, str) and fmt.strip().lower() in BLOCK_FORMATS:
        return BLOCK_FORMATS[fmt.strip().lower()]
    raise ValueError(f"unknown block format {fmt!r}; expected one of {tuple(BLOCK_FORMATS)}")


def is_block_format(fmt) -> bool:
    return isinstance(fmt, BlockFormat) or (
        isinstance(fmt, str) and fmt.strip().lower() in BLOCK_FORMATS)


def check_scale_rule(scale_rule, fmt_name: str) -> None:
    """ValueError naming `scale_rule` unless it is one of MX_SCALE_RULES that `fmt_name` takes."""
    if scale_rule not in MX_SCALE_RULES:
        raise ValueError(f"unknown scale_rule {scale_rule!r}; expected one of {MX_SCALE_RULES}")
    if fmt_name == "nvfp4" and scale_rule != "floor":
        raise ValueError(f"scale_rule={scale_rule!r} does not apply to nvfp4: its E4M3 block "
                         "scale is amax / 6 rounded to nearest, not a power of two (use 'floor')")
