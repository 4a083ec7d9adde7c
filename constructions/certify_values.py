"""The abstract values of the certificate: per position and coordinate, an ideal set and an error.

`Vals` holds, for T positions x D coordinates (numpy arrays):

  lo, hi   the ideal value lies in [lo, hi] for every valid input. "Ideal" is the construction's
           intended semantics: exact real arithmetic with hard attention (the keys a head means to
           read get their intended weights, every other key weight 0). That the ideal model
           answers correctly is the construction's theorem (its module docstring, checked in
           float64 by tests/test_constructions.py); the certificate bounds the distance to it.
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
    step: np.ndarray  # int64
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
        return Vals(values.copy(), values.copy(), np.zeros(values.shape, np.int64), values.copy(),
                    np.zeros(values.shape) if err is None else err)

    def column(self, d: int) -> Vals:
        return Vals(*(a[:, d] for a in (self.lo, self.hi, self.step, self.off, self.err)))


def _int_or_none(x: float) -> int | None:
    return int(x) if np.isfinite(x) and float(x).is_integer() else None


def scaled_step(step: np.ndarray, w: float) -> np.ndarray:
    """Step of w * x: |w| step when that is an integer, 0 for constants, else NONE."""
    out = np.full(step.shape, NONE, np.int64)
    out[step == 0] = 0
    for s in np.unique(step[step > 0]):
        ws = _int_or_none(abs(w) * float(s))
        out[step == s] = NONE if ws is None or ws == 0 else ws
    return out


def combine_steps(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Step of x + y for independent x, y: gcd (0 is the neutral constant; NONE absorbs)."""
    out = np.gcd(np.maximum(a, 0), np.maximum(b, 0))
    return np.where((a == NONE) | (b == NONE), NONE, out)


def affine_ideal(x: Vals, w_D: np.ndarray, bias: float) -> tuple:
    """Ideal (lo, hi, step, off) of sum_d w_d x_d + bias over T positions."""
    t = x.lo.shape[0]
    lo = np.full(t, bias, np.float64)
    hi = lo.copy()
    off = lo.copy()
    step = np.zeros(t, np.int64)
    for d in np.flatnonzero(w_D):
        w = float(w_D[d])
        a, b = w * x.lo[:, d], w * x.hi[:, d]
        lo += np.minimum(a, b)
        hi += np.maximum(a, b)
        off += w * x.off[:, d]
        step = combine_steps(step, scaled_step(x.step[:, d], w))
    return lo, hi, step, off


def lattice_gap(lo, hi, step, off, ramp_lo: float, ramp_hi: float) -> np.ndarray:
    """Distance from the ideal values (lattice points off + step z in [lo, hi]) to the open
    interval (ramp_lo, ramp_hi); -inf when an ideal value lies inside it; without a lattice the
    distance of the whole interval [lo, hi]."""
    out = np.empty(lo.shape)
    for i in range(lo.size):
        s = int(step[i])
        if s > 0:
            z0 = math.ceil((lo[i] - off[i]) / s - 1e-9)
            z1 = math.floor((hi[i] - off[i]) / s + 1e-9)
            # lattice points nearest the ramp: the last at or below it and the first above
            pts = [off[i] + s * z for z in (z0, z1)]
            zr = math.floor((ramp_hi - off[i]) / s)
            pts += [off[i] + s * z for z in (zr - 1, zr, zr + 1) if z0 <= z <= z1]
            vals = pts
        elif s == 0:
            vals = [off[i]]
        else:
            vals = None
        if vals is None:
            if hi[i] <= ramp_lo or lo[i] >= ramp_hi:
                out[i] = min(abs(ramp_lo - hi[i]) if hi[i] <= ramp_lo else math.inf,
                             abs(lo[i] - ramp_hi) if lo[i] >= ramp_hi else math.inf)
            else:
                out[i] = -math.inf
            continue
        gap = math.inf
        for v in vals:
            if lo[i] - 1e-9 <= v <= hi[i] + 1e-9:
                if ramp_lo < v < ramp_hi:
                    gap = -math.inf
                    break
                gap = min(gap, ramp_lo - v if v <= ramp_lo else v - ramp_hi)
        out[i] = gap
    return out
