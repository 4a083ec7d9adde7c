"""`FloatFormat`: a binary floating-point format with any exponent / mantissa width.

A format with E exponent bits, M mantissa (trailing significand) bits and exponent bias b has

    normal numbers     (1 + m / 2^M) * 2^(f - b)      exponent field f >= 1, 0 <= m < 2^M
    subnormal numbers  (m / 2^M) * 2^(1 - b)          exponent field f = 0 (m = 0 is zero)

so every finite value is an integer multiple of the *quantum* 2^(max(e, 1 - b) - M) of its
binade e = floor(log2|v|); rounding (see `quantize.py`) rounds to that grid. Which codes are
finite, NaN or infinite is the `variant`, following the naming of ml_dtypes / LLVM APFloat:

  "ieee"  IEEE 754-like: the top exponent field is reserved for +-inf (m = 0) and NaN; overflow
          gives +-inf. Default bias 2^(E-1) - 1. `e5m2`, `e8m7` (bf16), `e5m10` (fp16), ...
  "fn"    finite: no infinities. For formats of 8 bits or more (1 + E + M >= 8) the all-ones
          code S.1..1.1..1 is NaN and overflow gives NaN (float8_e4m3fn). Narrower formats have
          no NaN at all and overflow saturates to +-max (the OCP MX element types float6_e3m2fn,
          float6_e2m3fn, float4_e2m1fn), exactly as ml_dtypes does; there a NaN *input* becomes
          a zero of the opposite sign (ml_dtypes' quiet_NaN() of these types is the -0 code and
          the input's sign is then applied to it). Default bias 2^(E-1) - 1.
  "fnuz"  finite, unsigned zero: no infinities, no -0; the -0 code is the only NaN. Every other
          code is finite, so the top binade is usable; overflow gives NaN; a negative value that
          rounds to zero gives +0. Default bias 2^(E-1) (one more than IEEE): float8_e4m3fnuz,
          float8_e5m2fnuz, and with bias 11 float8_e4m3b11fnuz.
  "fnu"   finite, unsigned, no zero (float8_e8m0fnu, the MX scale type): requires M = 0; values
          2^(f - b) for exponent fields 0 .. 2^E - 2, the all-ones code is NaN. Zero, negative
          numbers, NaN and infinities give NaN. ml_dtypes rounds as if exponent field 0 were a
          subnormal binade and then reads code 0 as 2^-b, so under round-to-nearest every value
          in (2^-b, 2^(1-b)) becomes 2^(1-b), everything in (0, 2^-b] becomes 2^-b, and ties
          between larger powers of two round up (with M = 0 the last kept bit is the implicit
          leading 1). `quantize` reproduces this bit for bit; toward-zero and stochastic
          rounding use the true grid {2^-b, 2^(1-b), ...} instead. Default bias 2^(E-1) - 1.

  "p3109" IEEE P3109 (interim report v3; gfloat's `format_info_p3109(k, P)`, signed, extended
          domain): no -0, its code 0x80.. is the single NaN, the top code of each sign is +-inf,
          every other code finite, subnormals as IEEE. Default bias 2^(E-1) (= 2^(k-P-1)).
          Overflow gives +-inf. With M = 0 (P = 1) nearest-even ties between powers of two go
          to the even exponent field. Canonical string `p3109_k{k}p{P}` (E = k - P,
          M = P - 1), e.g. `p3109_k8p3` is e5m2 with bias 16.

Options (ignored where they cannot matter):
  saturate          one rule for every `_sat` format (OCP's): finite values that overflow and
                    +-inf inputs become +-max; NaN stays NaN.
  flush_subnormals  results that are subnormal (0 < |r| < 2^(1-b)) after rounding become zero
                    of the same sign (+0 in "fnuz"); the rounding itself is done on the full grid
                    with gradual underflow, as flush-to-zero hardware does on its output.

Canonical string (`str(fmt)`, parsed back to an equal object by `parse`):
    e{E}m{M}[b{bias}][fn|fnuz|fnu][_sat][_ftz]
with `b{bias}` only when the bias is not the variant's default, e.g. `e5m2`, `e4m3fn`,
`e4m3b11fnuz`, `e8m0fnu`, `e5m2_sat`, `e4m3_sat_ftz`. The aliases fp32/bf16/fp16/tf32/fp64 are
parsed to the canonical object, so `str(parse("bf16")) == "e8m7"`.
"""

from __future__ import annotations

import dataclasses
from fractions import Fraction

VARIANTS = ("ieee", "fn", "fnuz", "fnu", "p3109")
# The widest carrier is float64 (11 exponent bits, 52 mantissa bits); a wider format could be
# described but never simulated, so we reject it up front with a clear message.
MAX_EXPONENT_BITS = 11
MAX_MANTISSA_BITS = 52


def check_int(name: str, value, lo: int, hi: int | None = None) -> None:
    """Raise ValueError naming `name` and `value` unless it is an int (not bool) in [lo, hi]."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < lo:
        raise ValueError(f"{name} must be >= {lo}, got {value}")
    if hi is not None and value > hi:
        raise ValueError(f"{name} must be <= {hi}, got {value}")


def default_bias(exponent_bits: int, variant: str) -> int:
    """IEEE bias 2^(E-1) - 1, or 2^(E-1) for "fnuz" (ml_dtypes' shifted-by-one bias)."""
    if variant in ("fnuz", "p3109"):
        return 2 ** (exponent_bits - 1)
    return 2 ** (exponent_bits - 1) - 1


@dataclasses.dataclass(frozen=True)
class FloatFormat:
    """A binary floating-point format (see the module docstring for the exact semantics).

    Attributes:
        exponent_bits: E, 1 <= E <= 11.
        mantissa_bits: M, 0 <= M <= 52 (trailing significand bits, without the implicit 1).
        bias: exponent bias; None means the variant's default (2^(E-1) - 1, or 2^(E-1) for
            "fnuz"). Stored resolved, so `FloatFormat(5, 2) == FloatFormat(5, 2, bias=15)`.
        variant: "ieee", "fn", "fnuz" or "fnu": which codes are infinite / NaN / finite.
        saturate: overflow clamps to +-max instead of giving inf / NaN.
        flush_subnormals: subnormal results become (signed) zero.
    """

    exponent_bits: int
    mantissa_bits: int
    bias: int | None = None
    variant: str = "ieee"
    saturate: bool = False
    flush_subnormals: bool = False

    def __post_init__(self):
        check_int("exponent_bits", self.exponent_bits, 1, MAX_EXPONENT_BITS)
        check_int("mantissa_bits", self.mantissa_bits, 0, MAX_MANTISSA_BITS)
        if self.variant not in VARIANTS:
            raise ValueError(f"unknown float variant {self.variant!r}; expected one of {VARIANTS}")
        if self.bias is None:
            object.__setattr__(self, "bias", default_bias(self.exponent_bits, self.variant))
        check_int("bias", self.bias, -(2**20), 2**20)
        for name in ("saturate", "flush_subnormals"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be a bool, got {getattr(self, name)!r}")
        if self.variant == "fnu" and self.mantissa_bits != 0:
            raise ValueError(
                f"variant 'fnu' (unsigned, no zero) needs mantissa_bits == 0, got "
                f"{self.mantissa_bits}"
            )
        if self.max_code_magnitude < (0 if self.variant == "fnu" else 1):
            raise ValueError(f"format {self} has no positive finite value")

    # ---- encoding -------------------------------------------------------------------------

    @property
    def total_bits(self) -> int:
        """Storage width: sign bit (none for "fnu") + E + M."""
        return self.exponent_bits + self.mantissa_bits + (0 if self.variant == "fnu" else 1)

    @property
    def has_inf(self) -> bool:
        """Only "ieee" and "p3109" formats encode infinities."""
        return self.variant in ("ieee", "p3109")

    @property
    def has_nan(self) -> bool:
        """Every variant has a NaN except the sub-byte "fn" (OCP MX FP4 / FP6) formats."""
        return not (self.variant == "fn" and self.total_bits < 8)

    @property
    def has_negative_zero(self) -> bool:
        return self.variant in ("ieee", "fn")

    @property
    def max_code_magnitude(self) -> int:
        """The largest code (sign bit cleared) that encodes a finite number."""
        e, m = self.exponent_bits, self.mantissa_bits
        all_ones = 2 ** (e + m) - 1
        if self.variant == "ieee":
            return ((2**e - 1) << m) - 1  # top exponent field reserved for inf/NaN
        if self.variant == "fn" and self.has_nan:
            return all_ones - 1  # only S.1..1.1..1 is NaN
        if self.variant in ("fnu", "p3109"):
            return all_ones - 1  # 0xff is NaN ("fnu"); 0x7f is +inf ("p3109")
        return all_ones  # "fnuz" (NaN is the -0 code) and sub-byte "fn" (no NaN)

    def code_value(self, code_magnitude: int) -> Fraction:
        """The exact value of a code with its sign bit cleared (finite codes only)."""
        check_int("code_magnitude", code_magnitude, 0, self.max_code_magnitude)
        m = self.mantissa_bits
        field, frac = code_magnitude >> m, code_magnitude & (2**m - 1)
        if self.variant == "fnu":
            return Fraction(2) ** (field - self.bias)
        if field == 0:
            return Fraction(frac, 2**m) * Fraction(2) ** (1 - self.bias)
        return (1 + Fraction(frac, 2**m)) * Fraction(2) ** (field - self.bias)

    # ---- range (exact Fractions; floats below) --------------------------------------------

    @property
    def max_exact(self) -> Fraction:
        return self.code_value(self.max_code_magnitude)

    @property
    def min_normal_exact(self) -> Fraction:
        """2^(1-b): the smallest normal number; for "fnu" (no subnormals) its smallest value 2^-b,
        as ml_dtypes.finfo reports it."""
        if self.variant == "fnu":
            return Fraction(2) ** (-self.bias)
        return Fraction(2) ** (1 - self.bias)

    @property
    def min_positive_exact(self) -> Fraction:
        """The smallest positive value: 2^(1-b-M), or 2^-b for "fnu"."""
        if self.variant == "fnu":
            return Fraction(2) ** (-self.bias)
        return Fraction(2) ** (1 - self.bias - self.mantissa_bits)

    @property
    def max_value(self) -> float:
        """Largest finite value (as a Python float; exact for every supported format)."""
        return float(self.max_exact)

    @property
    def min_normal(self) -> float:
        return float(self.min_normal_exact)

    @property
    def min_positive(self) -> float:
        """Smallest positive value (the smallest subnormal when M >= 1)."""
        return float(self.min_positive_exact)

    @property
    def eps(self) -> float:
        """2^-M: the distance from 1 to the next larger number of a format with a 1.0 binade."""
        return 2.0**-self.mantissa_bits

    # ---- naming ---------------------------------------------------------------------------

    def __str__(self) -> str:
        if self.variant == "p3109" and self.bias == default_bias(self.exponent_bits, "p3109"):
            s = f"p3109_k{self.total_bits}p{self.mantissa_bits + 1}"
            return s + ("_sat" if self.saturate else "") + ("_ftz" if self.flush_subnormals else "")
        s = f"e{self.exponent_bits}m{self.mantissa_bits}"
        if self.bias != default_bias(self.exponent_bits, self.variant):
            s += f"b{self.bias}"
        if self.variant != "ieee":
            s += self.variant
        if self.saturate:
            s += "_sat"
        if self.flush_subnormals:
            s += "_ftz"
        return s
