"""The certificate's analysis of a built construction, layer by layer, from its weights alone.

No input is ever run: every position's possible tokens come from the task layout (a digit slot
holds any digit 0..p-1, a special token is fixed), embeddings and the positional table are read
from the parameter tree, and each sub-layer maps the abstract values (`certify_values.Vals`) of
all positions to the next ones. The numerical model is that of `arith_precision.simulate` (every
parameter rounded once; every product rounded; sums rounded once (`once`) or after every addition
in index order (`sequential`); every elementwise op rounded), with the error constants of
`certify_rounding`. Steps of the argument (each a `Claim`, printed by --explain):

  embed      x_0 = fl(fl(E[tok]) + fl(P[t])): table entries are rounded exactly (computed here).
  affine     y = fl(fl(sum_d fl(x_d W_d)) + b): errors of the inputs, of the rounded weights, of
             the products and of the accumulation (once: one rounding plus the carrier's error;
             sequential: one rounding per partial sum, bounded by the partial sums' magnitudes).
  attention  heads whose queries and keys read only position-fixed coordinates ("positional")
             get their computed scores as exact intervals (the rounded arithmetic done here on the
             table values); the intended keys are those of maximal ideal score (significant: within
             `SIGNIFICANT` nats), their intended weights the exact softmax among them; every other
             key is leakage. A head with input-dependent scores needs a margin lemma from the
             construction (`dynamic`: the quadratic match of column_add, blocks.py).
  mlp        consecutive units with equal fc1 columns and opposite fc2 rows are one clean step
             (`blocks.step`, `int_step`): certified when the pre-activation's error is below the
             distance of its ideal lattice to the ramp between the units; then the pair's output
             error is the rounding of its two units only (the input error cancels). Other units
             are single ReLUs (1-Lipschitz).
  readout    the computed logit of the ideal answer token exceeds every other computed logit
             (intervals from the exact rounding of the readout, per ideal answer value).

Looseness (stated, not hidden): ideal intervals lose correlations between coordinates (e.g.
r = S - B q is bounded by [-B max q, max S], not [0, B - 1]), error bounds are worst cases over
all positions and inputs, and the sequential bound charges every partial sum its largest
possible magnitude. Each inflates the certified width by a fraction of a bit to a few bits.
"""

from __future__ import annotations

import dataclasses
import math
from fractions import Fraction

import numpy as np

from arith_precision import tasks
from constructions.certify_rounding import Fmt, fl, fl_interval, representable, round_err
from constructions.certify_values import (
    NONE,
    Vals,
    affine_ideal,
    combine_steps,
    lattice_gap,
    scaled_step,
)

SIGNIFICANT = 30.0  # nats: keys this far below the best ideal score are leakage (weight e^-30)


@dataclasses.dataclass
class Claim:
    where: str
    what: str
    ok: bool
    detail: str


class Failed(Exception):
    pass


def token_sets(spec: tasks.TaskSpec) -> list[list[int]]:
    """The possible tokens at every position the decoder reads (prompt + fed-back answer)."""
    ex = tasks.make_example(spec, [0] * spec.num_operands)
    seq = list(ex.input_tokens) + list(ex.answer_tokens)[:-1]
    digits = list(range(spec.token_base))
    return [digits if t < spec.token_base else [t] for t in seq]


class Analysis:
    def __init__(self, construction, fmt: Fmt, accumulation: str, dynamic=None):
        self.c = construction
        self.fmt = fmt
        self.acc = accumulation
        self.dynamic = dynamic or {}
        self.claims: list[Claim] = []
        self.max_mag = 0.0
        p = construction.params
        self.p = {k: v for k, v in _flatten(p).items()}
        self.W = {k: np.asarray(v, np.float64) for k, v in self.p.items()}  # ideal weights
        self.Wr = {k: fl(v, fmt) for k, v in self.W.items()}  # the weights the format holds
        self.fixed: np.ndarray | None = None  # T x D: computed x_0 value when position-fixed

    # ---- bookkeeping ---------------------------------------------------------------------------

    def claim(self, where, what, ok, detail):
        self.claims.append(Claim(where, what, bool(ok), detail))
        if not ok:
            raise Failed(f"{where}: {what}: {detail}")

    def note_mag(self, *mags):
        for m in mags:
            m = float(np.max(m)) if np.size(m) else 0.0
            m = math.inf if math.isnan(m) else m
            self.max_mag = max(self.max_mag, m)
        if not self.max_mag < self.fmt.max_finite:  # NaN fails too
            raise Failed(f"a value of magnitude {self.max_mag:.3g} overflows {self.fmt}")

    # ---- sums ----------------------------------------------------------------------------------

    def sum_err(self, term_mags: list[np.ndarray], total_mag: np.ndarray,
                prefix_mags: list[np.ndarray] | None = None) -> np.ndarray:
        """Rounding error of summing already-rounded terms (T each), per accumulation mode.

        once: one rounding of the carrier sum (u |total| + eta + carrier error K c sum|terms|).
        sequential: one rounding per partial sum j >= 2, each at most u |partial_j| + eta; the
        partial sums are bounded by `prefix_mags` when given, else by the running sum of
        |terms|. A zero term adds exactly, so only terms that can be nonzero count.
        """
        f = self.fmt
        k = len(term_mags)
        if k == 0:
            return np.zeros_like(total_mag)
        absum = np.sum(term_mags, axis=0)
        if self.acc == "once":
            if k == 1:
                return np.zeros_like(total_mag)  # one rounded term: the sum is that term
            carrier = k * f.carrier_unit * absum
            return round_err(np.minimum(total_mag + carrier, absum), f) + carrier
        if self.acc != "sequential":
            raise ValueError(f"the certificate covers once and sequential, not {self.acc!r}")
        err = np.zeros_like(total_mag)
        running = np.zeros_like(total_mag)
        for j in range(k):
            running = running + term_mags[j]
            if j == 0:
                continue
            bound = running if prefix_mags is None else np.minimum(running, prefix_mags[j])
            err = err + round_err(bound + err, f)
        return err

    # ---- affine maps ---------------------------------------------------------------------------

    def affine(self, x: Vals, key: str, col, bias_key: str | None, bias_idx=None,
               extra_bias: float = 0.0) -> Vals:
        """y = x W[:, col] + b over all positions (one output coordinate), with its error."""
        f = self.fmt
        W = self.W[key][(slice(None),) + col] if isinstance(col, tuple) else self.W[key][:, col]
        Wr = self.Wr[key][(slice(None),) + col] if isinstance(col, tuple) else self.Wr[key][:, col]
        b = 0.0 if bias_key is None else float(self.W[bias_key][bias_idx])
        br = 0.0 if bias_key is None else float(self.Wr[bias_key][bias_idx])
        lo, hi, step, off = affine_ideal(x, W, b)
        rows = np.flatnonzero(W)
        terms, err = [], np.zeros(x.lo.shape[0])
        for d in rows:
            xd = x.column(d)
            err = err + abs(Wr[d]) * xd.err + xd.mag * abs(Wr[d] - W[d])
            pmag = xd.cmag * abs(Wr[d])
            exact = (xd.err == 0) & (xd.step >= 0) & _exact_products(xd, Wr[d], f)
            err = err + np.where(exact, 0.0, round_err(pmag, f))
            terms.append(pmag * (1 + f.u) + f.eta)
        dot_mag = np.maximum(np.abs(lo - b), np.abs(hi - b)) + err
        err = err + self.sum_err(terms, dot_mag)
        self.pre_err = err + abs(br - b)  # |D^ + b^ - (D + b)| before the bias add's rounding
        if b != 0.0 or br != 0.0:
            err = err + abs(br - b)
            y_mag = np.maximum(np.abs(lo), np.abs(hi)) + err
            exact = (err == 0) & (step >= 1) & _exact_lattice(lo, hi, step, off, f)
            err = err + np.where(exact, 0.0, round_err(y_mag, f))
        self.note_mag(np.maximum(np.abs(lo), np.abs(hi)) + err)
        return Vals(lo, hi, step, off, err)


def _exact_products(xd: Vals, w: float, f: Fmt) -> np.ndarray:
    """Products x w that are exact in the format: x integer-valued (or a constant) with |x w| a
    representable integer for every ideal value."""
    if not float(w).is_integer():
        return np.zeros(xd.lo.shape, bool)
    limit = 2.0 ** (f.mantissa_bits + 1)
    ints = (xd.step >= 1) & np.array([float(o).is_integer() for o in xd.off])
    consts = (xd.step == 0) & representable(xd.off * w, f)
    return (ints & (xd.mag * abs(w) <= limit)) | consts


def _exact_lattice(lo, hi, step, off, f: Fmt) -> np.ndarray:
    limit = 2.0 ** (f.mantissa_bits + 1)
    ints = np.array([float(o).is_integer() for o in off])
    return ints & (np.maximum(np.abs(lo), np.abs(hi)) <= limit) & (step >= 1)


def _flatten(tree, prefix=""):
    out = {}
    for k, v in tree.items():
        name = f"{prefix}/{k}" if prefix else k
        if isinstance(v, dict):
            out.update(_flatten(v, name))
        else:
            out[name] = v
    return out


def snap(w: float) -> Fraction | None:
    """The simple rational an ideal weight stands for (1/3, (C - q)/C, ...), or None."""
    fr = Fraction(w).limit_denominator(1 << 16)
    return fr if abs(float(fr) - w) <= 1e-5 * max(abs(w), 1e-300) else None


__all__ = ["Analysis", "Claim", "Failed", "NONE", "SIGNIFICANT", "Vals", "combine_steps",
           "fl_interval", "lattice_gap", "math", "scaled_step", "snap", "token_sets"]
