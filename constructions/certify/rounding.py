"""Rounding arithmetic of the certificate: the format eEmM, its error constants, and interval ops.

`Fmt(E, M)` is the IEEE-like format of `formats` (subnormals, nearest-even, overflow to inf).
Error model of one rounding (the standard one): fl(x) = x (1 + d) + h with |d| <= u = 2^-(M+1)
and |h| <= eta = 2^(emin - M - 1) (half the subnormal spacing), emin = 2 - 2^(E-1).

Interval ops compute *computed values* exactly: `fl` rounds float64 arrays to the format
(round-half-even, bit for bit the rule of `formats.quantize`; tested in
tests/constructions/test_certify.py),
and because rounding is monotone, an interval [lo, hi] of exact results rounds to
[fl(lo), fl(hi)]. `CARRIER_SLACK` covers the carrier: under `once` a contraction is summed in
the carrier (float32 for M <= 10 and M = 23, else float64) before its one rounding, so the value
rounded may differ from the exact sum by K 2^-(carrier bits) of the sum of magnitudes.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np


@dataclasses.dataclass(frozen=True)
class Fmt:
    exponent_bits: int
    mantissa_bits: int

    @property
    def u(self) -> float:
        return 2.0 ** -(self.mantissa_bits + 1)

    @property
    def emin(self) -> int:
        return 2 - 2 ** (self.exponent_bits - 1)

    @property
    def eta(self) -> float:
        return 2.0 ** (self.emin - self.mantissa_bits - 1)

    @property
    def max_finite(self) -> float:
        emax = 2 ** (self.exponent_bits - 1) - 1
        return (2.0 - 2.0 ** -self.mantissa_bits) * 2.0 ** emax

    @property
    def carrier_unit(self) -> float:
        """Relative rounding unit of the carrier the simulation sums in
        (constructions/check/run.py)."""
        m = self.mantissa_bits
        return 2.0 ** -24 if (m <= 10 or m == 23) and self.exponent_bits <= 8 else 2.0 ** -53

    @property
    def carrier_bits(self) -> int:
        return 24 if self.carrier_unit == 2.0 ** -24 else 53

    @property
    def exp_slack(self) -> float:
        """Relative error of exp/log evaluated in the carrier (XLA's are not correctly rounded:
        a few carrier ulps; 8 are allowed)."""
        return 8 * self.carrier_unit

    def __str__(self) -> str:
        return f"e{self.exponent_bits}m{self.mantissa_bits}"


def fl(x, fmt: Fmt) -> np.ndarray:
    """Round float64 values to the format (nearest-even; |x| past the top -> inf)."""
    x = np.asarray(x, np.float64)
    m = fmt.mantissa_bits
    with np.errstate(over="ignore", invalid="ignore"):
        _, e = np.frexp(x)  # |x| in [2^(e-1), 2^e)
        e = np.maximum(e - 1, fmt.emin)  # exponent of the spacing's binade (subnormals: emin)
        spacing_exp = e - m
        y = np.ldexp(np.round(np.ldexp(x, -spacing_exp)), spacing_exp)
        # A value that rounds up into the next binade keeps its nearest-even value: exact here.
        y = np.where(np.abs(y) > fmt.max_finite, np.copysign(np.inf, x), y)
    return np.where(np.isfinite(x), y, x)


def representable(x, fmt: Fmt) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return fl(x, fmt) == x


def round_err(mag, fmt: Fmt):
    """Bound on |fl(x) - x| for |x| <= mag."""
    return fmt.u * np.asarray(mag, np.float64) + fmt.eta


def carrier_err(absum, largest, k, fmt: Fmt, slack: float = 0.0):
    """Bound on the error of a carrier sum of k terms, in any order (any binary tree), with
    sum|terms| <= absum and largest the largest upper bound of one |term|.

    Two bounds, the smaller taken: (k + 1) cu absum (gamma_k with room: the products may be
    rounded too, float32 itself at M = 23); and (k - 1) (absum - largest) (1 + (k + 1) cu):
    an addition errs by at most its smaller operand (the larger is a carrier value, a candidate
    of the rounding), and of two disjoint partial sums at most one holds the largest term, so
    the smaller is at most the computed sum of the others (a 1 plus tiny leaked weights is
    then summed exactly). `slack` (k + 1) absum is added: the float64 evaluation here of the
    sums the caller rounds."""
    cu = fmt.carrier_unit
    absum = np.asarray(absum, np.float64)
    rest = np.maximum(absum - largest, 0.0)
    return (np.minimum((k + 1) * cu * absum, np.maximum(k - 1, 0) * rest * (1 + (k + 1) * cu))
            + (k + 1) * slack * absum)


def gamma(k: int, fmt: Fmt) -> float:
    """gamma_k = k u / (1 - k u): the relative error bound of k successive roundings."""
    ku = k * fmt.u
    return math.inf if ku >= 1 else ku / (1 - ku)


def fl_interval(lo, hi, fmt: Fmt, slack=0.0):
    """[fl(lo - slack), fl(hi + slack)]: the computed values of a rounding of any x in [lo, hi]
    computed with an absolute carrier error <= slack."""
    return fl(np.asarray(lo) - slack, fmt), fl(np.asarray(hi) + slack, fmt)
