"""The abstract values of the certificate: per position and coordinate, an ideal set and an error.

`Vals` holds, for T positions x D coordinates (numpy arrays):

  lo, hi   the ideal value lies in [lo, hi] for every valid input. "Ideal" is the construction's
           intended semantics: exact real arithmetic with hard attention (the keys a head means to
           read get their intended weights, every other key weight 0). That the ideal model
           answers correctly is the construction's theorem (its module docstring, checked in
           float64 by tests/constructions/test_constructions.py); the certificate bounds the
           distance to it.
  step,off the ideal value is off + step z (z integer) when step >= 1 (an integer step),
           exactly off when step == 0 (a constant of the position), anything when step == -1.
  err      |computed - ideal| <= err under the format and accumulation analysed.

Lattices are what let a clean step (`blocks.step`) be certified: its pre-activation is an
integer combination that never falls on the ramp between its two units, so an error below the
distance to the ramp is removed, not propagated.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

NONE = -1  # step value: no lattice known


@dataclasses.dataclass
class Vals:
    lo: np.ndarray
    hi: np.ndarray
    step: np.ndarray  # float: a dyadic rational > 0, 0 (constant) or NONE
    off: np.ndarray
    err: np.ndarray

    @property
    def mag(self) -> np.ndarray:
        """Bound on |ideal|."""
        return np.maximum(np.abs(self.lo), np.abs(self.hi))

    @property
    def cmag(self) -> np.ndarray:
        """Bound on |computed|."""
        return self.mag + self.err

    @staticmethod
    def const(values: np.ndarray, err: np.ndarray | None = None) -> Vals:
        values = np.asarray(values, np.float64)
        return Vals(values.copy(), values.copy(), np.zeros(values.shape), values.copy(),
                    np.zeros(values.shape) if err is None else err)

    def column(self, d: int) -> Vals:
        return Vals(*(a[:, d] for a in (self.lo, self.hi, self.step, self.off, self.err)))


def _dyadic_exp(x: float) -> int | None:
    """Smallest j >= 0 with x 2^j an integer (x a dyadic rational), else None."""
    if not np.isfinite(x):
        return None
    for j in range(0, 64):
        if float(x * 2.0 ** j).is_integer():
            return j
    return None


def _gcd_dyadic(a: float, b: float) -> float:
    """gcd of two non-negative dyadic rationals (0 is neutral); NONE when one is not dyadic."""
    if a == 0 or b == 0:
        return max(a, b)
    ja, jb = _dyadic_exp(a), _dyadic_exp(b)
    if ja is None or jb is None:
        return NONE
    j = max(ja, jb)
    return math.gcd(int(a * 2.0 ** j), int(b * 2.0 ** j)) / 2.0 ** j


_GCD = np.frompyfunc(lambda a, b: NONE if a < 0 or b < 0 else _gcd_dyadic(a, b), 2, 1)


def scaled_step(step: np.ndarray, w: float) -> np.ndarray:
    """Step of w * x: |w| step when that is dyadic, 0 for constants, else NONE."""
    step = np.asarray(step, float)
    ws = np.abs(w) * step
    ok = np.isfinite(ws) & (frac_bits(np.where(np.isfinite(ws), ws, 0.0)) <= 60)
    return np.where(step == 0, 0.0, np.where((step > 0) & ok & (ws > 0), ws, NONE))


def combine_steps(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Step of x + y for independent x, y: gcd (0 is the neutral constant; NONE absorbs).

    Dyadic gcd, vectorized: both scaled by 2^j (j their larger number of fractional bits) to
    integers, np.gcd, scaled back; NONE when the scaled values do not fit in 62 bits."""
    a, b = np.broadcast_arrays(np.asarray(a, float), np.asarray(b, float))
    if not a.size:
        return a.copy()
    none = (a < 0) | (b < 0)
    pa, pb = np.where(none, 0.0, a), np.where(none, 0.0, b)
    j = np.maximum(frac_bits(pa), frac_bits(pb))
    sa, sb = np.ldexp(pa, j), np.ldexp(pb, j)
    fits = (sa < 2.0 ** 62) & (sb < 2.0 ** 62)
    ia = np.where(fits, sa, 0).astype(np.int64)
    ib = np.where(fits, sb, 0).astype(np.int64)
    g = np.ldexp(np.gcd(ia, ib).astype(float), -j)
    return np.where(none | ~fits, NONE, g)


def joined_with_zero(step: np.ndarray, off: np.ndarray) -> np.ndarray:
    """Step of the set {0} joined to off + step Z: gcd(step, |off|) (dyadic), else NONE."""
    return np.where(np.asarray(step) > 0, combine_steps(step, np.abs(off)), NONE)


def affine_ideal(x: Vals, w_D: np.ndarray, bias: float) -> tuple:
    """Ideal (lo, hi, step, off) of sum_d w_d x_d + bias over T positions."""
    t = x.lo.shape[0]
    lo = np.full(t, bias, np.float64)
    hi = lo.copy()
    off = lo.copy()
    step = np.zeros(t)
    for d in np.flatnonzero(w_D):
        w = float(w_D[d])
        a, b = w * x.lo[:, d], w * x.hi[:, d]
        lo += np.minimum(a, b)
        hi += np.maximum(a, b)
        off += w * x.off[:, d]
        step = combine_steps(step, scaled_step(x.step[:, d], w))
    return lo, hi, step, off


def lattice_gap(lo, hi, step, off, ramp_lo, ramp_hi) -> np.ndarray:
    """Distance from the ideal values (lattice points off + step z in [lo, hi]) to the open
    interval (ramp_lo, ramp_hi); -inf when an ideal value lies inside it; without a lattice the
    distance of the whole interval [lo, hi]. Elementwise (the ramp may differ per element)."""
    lo, hi, step, off = np.broadcast_arrays(*(np.asarray(a, float) for a in (lo, hi, step, off)))
    ramp_lo = np.broadcast_to(np.asarray(ramp_lo, float), lo.shape)
    ramp_hi = np.broadcast_to(np.asarray(ramp_hi, float), lo.shape)
    lat = step > 0
    s = np.where(lat, step, 1.0)
    with np.errstate(invalid="ignore", over="ignore"):
        z0 = np.ceil((lo - off) / s - 1e-9)
        z1 = np.floor((hi - off) / s + 1e-9)
        zr = np.floor((ramp_hi - off) / s)
    # the lattice points nearest the ramp (the last at or below it and the first above) and
    # the ends; a constant's one value
    cands = [(off + s * z0, lat), (off + s * z1, lat)]
    cands += [(off + s * (zr + dz), lat & (z0 <= zr + dz) & (zr + dz <= z1)) for dz in (-1, 0, 1)]
    cands.append((off, step == 0))
    gap = np.full(lo.shape, np.inf)
    inside = np.zeros(lo.shape, bool)
    for v, use in cands:
        use = use & (lo - 1e-9 <= v) & (v <= hi + 1e-9)
        inside |= use & (ramp_lo < v) & (v < ramp_hi)
        gap = np.where(use, np.minimum(gap, np.where(v <= ramp_lo, ramp_lo - v, v - ramp_hi)), gap)
    gap = np.where(inside, -np.inf, gap)
    below, above = hi <= ramp_lo, lo >= ramp_hi
    whole = np.minimum(np.where(below, np.abs(ramp_lo - hi), np.inf),
                       np.where(above, np.abs(lo - ramp_hi), np.inf))
    whole = np.where(below | above, whole, -np.inf)
    return np.where(lat | (step == 0), gap, whole)  # no lattice (NONE, or NaN): the interval


def nearest_nonzero(lo, hi, step, off) -> tuple[np.ndarray, np.ndarray]:
    """(smallest |v| over the nonzero ideal values, whether 0 is an ideal value) per position;
    inf when no nonzero value; for step NONE the interval's (0 inside -> smallest 0)."""
    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    step, off = np.asarray(step), np.asarray(off, float)
    s = np.maximum(step, 1).astype(float)
    with np.errstate(invalid="ignore", over="ignore"):
        pos = off + s * np.ceil((np.maximum(lo, 0.0) - off) / s - 1e-12)
        pos = np.where(pos == 0, pos + s, pos)
        neg = off + s * np.floor((np.minimum(hi, 0.0) - off) / s + 1e-12)
        neg = np.where(neg == 0, neg - s, neg)
        vmin = np.minimum(np.where(pos <= hi + 1e-9, np.abs(pos), np.inf),
                          np.where(neg >= lo - 1e-9, np.abs(neg), np.inf))
        zero_in = (np.abs(np.mod(off, s)) < 1e-9) | (np.abs(np.mod(off, s) - s) < 1e-9)
        zero_in &= (lo <= 0) & (hi >= 0)
    const = step == 0
    vmin = np.where(const, np.where(off == 0, np.inf, np.abs(off)), vmin)
    zero_in = np.where(const, off == 0, zero_in)
    none = step < 0
    vmin = np.where(none, np.where((lo <= 0) & (hi >= 0), 0.0,
                                   np.minimum(np.abs(lo), np.abs(hi))), vmin)
    zero_in = np.where(none, (lo <= 0) & (hi >= 0), zero_in)
    return vmin, zero_in


def frac_bits(x) -> np.ndarray:
    """Number of fractional binary digits of each float (x = odd 2^-j: j; integers 0)."""
    x = np.abs(np.asarray(x, float))
    whole = x == np.floor(x)
    if whole.all():  # the common case: integers (and 0)
        return np.zeros(x.shape, np.int64)
    m, e = np.frexp(np.where(np.isfinite(x), x, 0.0))
    mi = np.ldexp(m, 53).astype(np.int64)
    low = np.where(mi == 0, 1, mi & -mi)
    tz = np.log2(low.astype(float)).astype(np.int64)
    return np.where(whole | (mi == 0), 0, np.maximum(0, 53 - e - tz))


def dyadic_close(x, bits: int = 24) -> np.ndarray:
    """x snapped to a multiple of 2^-bits when within 1e-12 of one (w s products of snapped
    rational weights), else NONE."""
    x = np.asarray(x, float)
    r = np.round(x * 2.0 ** bits) / 2.0 ** bits
    return np.where((np.abs(x - r) <= 1e-12 * np.maximum(1.0, np.abs(x))) & (r > 0), r, NONE)


def carrier_exact(term_values: list[np.ndarray], carrier_bits: int) -> np.ndarray:
    """True where a carrier sum of these (exact, known) terms is exact in any order: every
    term is a multiple of 2^-j and the sum of magnitudes stays below 2^(carrier_bits - j)."""
    if not term_values:
        return np.zeros((), bool)
    j = np.max([frac_bits(v) for v in term_values], axis=0)
    absum = np.sum([np.abs(v) for v in term_values], axis=0)
    return absum < np.ldexp(1.0, carrier_bits - j)
