"""The certificate's analysis of a built construction, layer by layer, from its weights alone.

No input is ever run: every position's possible tokens come from the task layout (a digit slot
holds any digit 0..p-1, a special token is fixed), embeddings and the positional table are read
from the parameter tree, and each sub-layer maps the abstract values (`certify_values.Vals`) of
all positions to the next ones. The numerical model is that of `arith_precision.simulate` (every
parameter rounded once; every product rounded; sums rounded once (`once`) or after every addition
in index order (`sequential`); every elementwise op rounded), with the error constants of
`certify_rounding`. Steps of the argument (each a `Claim`, printed by --explain):

  embed      x_0 = fl(fl(E[tok]) + fl(P[t])): table entries are rounded exactly (computed here).
  affine     y = fl(fl(sum_d x_d W_d) + b): errors of the inputs, of the rounded weights and of
             the accumulation (once: the products are exact in the carrier, the carrier sum is
             rounded once, plus the carrier's own error; sequential: every product and every
             partial sum rounded). A rounding whose ideal values are all representable and whose
             error is below half a spacing returns the ideal value ("snapping": exact integer
             arithmetic is recognised as exact); likewise a carrier sum of lattice summands
             whose errors stay below half the carrier spacing at 2^-j is its ideal (sum_terms).
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
             are single ReLUs (1-Lipschitz). Vectorized over units: mlp.py.
  readout    the computed logit of the ideal answer token exceeds every other computed logit
             (intervals from the exact rounding of the readout, per ideal answer value).

Looseness (stated, not hidden): ideal intervals lose correlations between coordinates (the
construction's own ranges, `certify.ideal_ranges`, restore the ones its theorem states, e.g.
r in [0, B - 1]); error bounds are worst cases over all positions and inputs, charged
independently at every key; a rounding is only known exact when every ideal value it may see is
representable with a margin. Together they put the certificate 1 to 12 bits above the measured
frontier (docs/certificates.md).
"""

from __future__ import annotations

import dataclasses
import math
from fractions import Fraction

import numpy as np

from arith_precision import tasks
from constructions.certify.rounding import Fmt, fl, fl_interval, round_err
from constructions.certify.values import (
    NONE,
    Vals,
    combine_steps,
    frac_bits,
    lattice_gap,
    nearest_nonzero,
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
        self.W = dict(_ideal_weights(construction.params))  # ideal weights (a copy: extended)
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

    # ---- rounding with snapping --------------------------------------------------------------

    def rounded(self, lo, hi, step, off, e_pre, cap=None) -> np.ndarray:
        """Error after rounding a value whose ideal lies in the lattice (lo, hi, step, off) and
        whose pre-rounding computed value is within e_pre of it.

        Snapping: when every nonzero ideal value is representable (integers up to 2^(M+1), or
        a representable constant) and e_pre is below half the float spacing at the smallest
        of them, rounding returns the ideal value itself (error 0; an ideal 0 keeps a computed
        |x| <= e_pre (1 + u) + eta). Otherwise the standard bound e_pre + u |x| + eta.
        """
        f = self.fmt
        lo, hi = np.asarray(lo, float), np.asarray(hi, float)
        step, off = np.asarray(step), np.asarray(off, float)
        e_pre = np.broadcast_to(np.asarray(e_pre, float), lo.shape)
        mag = np.maximum(np.abs(lo), np.abs(hi))
        generic = e_pre + round_err(mag + e_pre, f)
        if cap is not None:
            generic = np.minimum(generic, e_pre + cap)
        vmin, zero_in = nearest_nonzero(lo, hi, step, off)
        # off + s z with s, off multiples of 2^-j: representable up to 2^(M+1-j) in magnitude
        j = np.maximum(frac_bits(np.where(step > 0, step, 0.0)), frac_bits(off))
        ints = (step > 0) & (mag * np.ldexp(1.0, j) <= 2.0 ** (f.mantissa_bits + 1))
        consts = (step == 0) & (fl(off, f) == off)
        repr_ = ints | consts
        with np.errstate(divide="ignore", invalid="ignore"):
            m, ex = np.frexp(np.where(np.isfinite(vmin) & (vmin > 0), vmin, 1.0))
            binade = np.maximum(ex - 1, f.emin)
            half = np.ldexp(1.0, binade - f.mantissa_bits - 1)
            half = np.where((m == 0.5) & (ex - 1 > f.emin), half / 2, half)
        half = np.where(np.isfinite(vmin), half, np.inf)
        snapped = repr_ & (e_pre < half)
        at_zero = np.where(e_pre == 0, 0.0, e_pre * (1 + f.u) + f.eta)
        return np.where(snapped, np.where(zero_in, at_zero, 0.0), generic)

    def sum_terms(self, terms: list[tuple], bias: float = 0.0, bias_r: float = 0.0,
                  min_value=None):
        """Round-aware sum of terms (lo, hi, step, off, err) (each already rounded), in order.

        Returns (lo, hi, step, off, err, pre_err): once -- one rounding of the carrier sum
        (its own error K c sum|terms| added); sequential -- one rounding per partial sum; then
        the bias add (one rounding) when there is a bias. pre_err is the error before it.
        `min_value`: bound the error only for ideal results (after the bias) >= min_value (the
        final roundings see the clipped ideal set); the caller covers the values below.
        """
        f = self.fmt
        if not terms:
            raise ValueError("empty sum")
        # A 6-tuple term carries, as t[5] = (lo, hi, step, off, its own error as a lone term),
        # the ideal of itself plus the
        # term before it, and as t[4] the error of that pair (the second unit of a clean-step
        # pair: h1 - h2 is 0 or delta, and the input errors of the two units cancel); partial
        # sums after it use both. The partial sum between the two is rounded on its own.
        lo, hi, step, off, err = (np.array(a, dtype=float) for a in terms[0][:5])
        if self.acc == "once":
            # the carrier's summands: a pair's two products are two (own error t[5][4])
            leaves = [(*t[:4], t[5][4]) if len(t) == 6 else t[:5] for t in terms]
            merged = []
            for t in terms:
                if len(t) == 6:
                    merged.pop()
                    merged.append((*t[5][:4], t[4]))
                else:
                    merged.append(t[:5])
            absum_all = np.sum([np.maximum(np.abs(t[0]), np.abs(t[1])) + t[4] for t in terms], 0)
            k_all = len(terms)
            terms = merged
            lo, hi, step, off, err = (np.array(a, dtype=float) for a in terms[0])
        if len(terms) > 1 and self.acc == "once":
            absum = np.sum([np.maximum(np.abs(t[0]), np.abs(t[1])) + t[4] for t in terms], 0)
            # the carrier sum is exact when every term is an exact lattice value (error 0) whose
            # multiples of 2^-j stay below 2^(carrier bits - j)
            exact = np.ones(lo.shape, bool)
            js = np.zeros(lo.shape)
            for t in terms:
                exact &= (t[4] == 0) & (t[2] >= 0)
                js = np.maximum(js, np.maximum(frac_bits(np.maximum(t[2], 0)), frac_bits(t[3])))
            lattice, jl = np.ones(lo.shape, bool), np.zeros(lo.shape, np.int64)
            for t in leaves:
                lattice &= t[2] >= 0
                jl = np.maximum(jl, np.maximum(frac_bits(np.maximum(t[2], 0)), frac_bits(t[3])))
            js = np.maximum(js, jl)  # the summands' own fractional bits count too
            fits = np.maximum(absum, absum_all) < np.ldexp(1.0, f.carrier_bits - js.astype(int))
            exact &= fits
            # otherwise: each carrier addition errs by at most cu |result| and by at most its
            # smaller operand, so besides K cu sum|terms| the error is at most (K - 1) times
            # the terms other than the largest (tiny leakage added to one exact value)
            k = k_all  # the carrier adds every product, a pair's two as well
            absum = np.maximum(absum, absum_all)
            largest = np.max([np.maximum(np.abs(t[0]), np.abs(t[1])) + t[4] for t in terms], 0)
            # (k + 1) cu: gamma_k = k cu / (1 - k cu) of a carrier dot whose products may be
            # rounded too (float32 itself, M = 23), with room to spare
            carrier = np.minimum((k + 1) * f.carrier_unit * absum,
                                 (k - 1) * (absum - largest) * (1 + (k + 1) * f.carrier_unit))
            e = np.sum([t[4] for t in terms], 0) + np.where(exact, 0.0, carrier)
            # Lattice summands with small errors (exact values plus tiny leakage): every
            # subset sum of their ideals is a multiple of 2^-j that the carrier holds, and a
            # partial sum whose ideal s != 0 is computed as s itself when the errors below it
            # stay under h = 2^(-j - p - 1) (half the carrier spacing next to |s| >= 2^-j; by
            # induction over the summation tree, as in certify_layers._dominated_sum); a
            # partial sum of ideal 0 keeps its errors times (1 + cu). So the carrier sum is
            # within L (1 + (k + 1) cu) of the ideal, L the sum of the summands' errors. Where
            # the carrier rounds the products themselves (e8m23 on float32: 48 significand
            # bits), a product p within err of its ideal (a carrier value) rounds to within
            # 2 err of it: L counts each error twice.
            twice = 2.0 if 2 * (f.mantissa_bits + 1) > f.carrier_bits else 1.0
            lsum = twice * np.sum([t[4] for t in leaves], 0) * (1 + (k + 1) * f.carrier_unit)
            h = np.ldexp(1.0, -js.astype(int) - f.carrier_bits - 1)
            e = np.where(lattice & fits & (lsum < h), np.minimum(e, lsum), e)
            for t in terms[1:]:
                lo, hi, off = lo + t[0], hi + t[1], off + t[3]
                step = combine_steps(step, t[2])
            # Products are not rounded under `once`, so the largest term need not be
            # representable: no cap on the final rounding here.
            if min_value is not None:
                lo = np.maximum(lo, min_value - bias)
            err = self.rounded(lo, hi, step, off, e)
        elif self.acc == "once":  # one term: the contraction's one rounding of that product
            if min_value is not None:
                lo = np.maximum(lo, min_value - bias)
            err = self.rounded(lo, hi, step, off, err)
        elif len(terms) > 1:
            if self.acc != "sequential":
                raise ValueError(f"the certificate covers once and sequential, not {self.acc!r}")
            zero = np.zeros(lo.shape)
            before = (zero, zero, zero, zero)  # the partial sum before the previous term
            err_before = zero
            if len(terms[0]) == 6:
                raise ValueError("a pair's second term cannot come first")
            for i, t in enumerate(terms[1:], 2):
                prev = np.maximum(np.abs(lo), np.abs(hi)) + err  # |partial sum so far|
                current, err_current = (lo, hi, step, off), err
                if len(t) == 6:
                    blo, bhi, bstep, boff = before
                    plo, phi, pstep, poff, own = t[5]
                    lo, hi, off = blo + plo, bhi + phi, boff + poff
                    step = combine_steps(bstep, pstep)
                    # error in: before the pair + the pair's own + the rounding between them
                    # (charged in full: u |that partial sum| + eta), or, as for any term, the
                    # partial sum's error so far + this product's own error
                    e_in = np.minimum(err_before + round_err(prev, f) + t[4], err + own)
                    t = (*t[:4], e_in - err, t[5])
                else:
                    lo, hi, off = lo + t[0], hi + t[1], off + t[3]
                    step = combine_steps(step, t[2])
                before, err_before = current, err_current
                if min_value is not None and i == len(terms):  # the full sum: clipped
                    lo = np.maximum(lo, min_value - bias)
                cap = None if len(t) == 6 else np.minimum(
                    prev, np.maximum(np.abs(t[0]), np.abs(t[1])) + t[4])
                err = self.rounded(lo, hi, step, off, err + t[4], cap=cap)
        bias, bias_r = np.asarray(bias, float), np.asarray(bias_r, float)
        pre = err + np.abs(bias_r - bias)
        has = (bias != 0.0) | (bias_r != 0.0)  # per column: a zero bias adds nothing
        if np.any(has):
            blo, bhi, boff = lo + bias, hi + bias, off + bias
            berr = self.rounded(blo, bhi, step, boff, pre)
            lo, hi, off = np.where(has, blo, lo), np.where(has, bhi, hi), np.where(has, boff, off)
            err = np.where(has, berr, err)
        return lo, hi, step, off, err, pre

    # ---- affine maps ---------------------------------------------------------------------------

    def affine(self, x: Vals, key: str, col, bias_key: str | None, bias_idx=None,
               min_value=None) -> Vals:
        """y = fl(fl(sum_d fl(x_d W_d)) + b) at all positions (one output coordinate)."""
        W = self.W[key][(slice(None),) + col] if isinstance(col, tuple) else self.W[key][:, col]
        Wr = self.Wr[key][(slice(None),) + col] if isinstance(col, tuple) else self.Wr[key][:, col]
        b = 0.0 if bias_key is None else float(self.W[bias_key][bias_idx])
        br = 0.0 if bias_key is None else float(self.Wr[bias_key][bias_idx])
        t = x.lo.shape[0]
        terms = [self.product(x.column(d), float(W[d]), float(Wr[d])) for d in np.flatnonzero(W)]
        if not terms:
            terms = [(np.zeros(t), np.zeros(t), np.zeros(t), np.zeros(t), np.zeros(t))]
        lo, hi, step, off, err, pre = self.sum_terms(terms, b, br, min_value)
        self.pre_err = pre
        self.note_mag(np.maximum(np.abs(lo), np.abs(hi)) + err)
        return Vals(lo, hi, step, off, err)

    def affine_cols(self, x: Vals, W: np.ndarray, Wr: np.ndarray, b, br,
                    min_value=None) -> tuple[Vals, np.ndarray]:
        """`affine` for every column c of W (D x C) at once: (Vals T x C, pre_err T x C).

        Columns are batched by their number of nonzero weights; the i-th term of each column
        is its i-th nonzero row (index order, as `affine` sums them), so every array element
        goes through exactly the arithmetic `affine` does for its column alone."""
        t, cols = x.lo.shape[0], W.shape[1]
        b = np.broadcast_to(np.asarray(b, float), (cols,))
        br = np.broadcast_to(np.asarray(br, float), (cols,))
        out = [np.empty((t, cols)) for _ in range(6)]
        nz = W != 0
        counts = nz.sum(0)
        for k in np.unique(counts):
            cs = np.flatnonzero(counts == k)
            if k == 0:
                zero = np.zeros((t, cs.size))
                terms = [(zero, zero, zero, zero, zero)]
            else:
                rows = np.nonzero(nz[:, cs].T)[1].reshape(cs.size, k)  # per column, ascending
                terms = []
                for i in range(k):
                    r = rows[:, i]
                    xd = Vals(*(a[:, r] for a in (x.lo, x.hi, x.step, x.off, x.err)))
                    terms.append(self.product(xd, W[r, cs], Wr[r, cs]))
            res = self.sum_terms(terms, b[cs], br[cs], min_value)
            for o, a in zip(out, res, strict=True):
                o[:, cs] = a
        lo, hi, step, off, err, pre = out
        self.note_cols(np.maximum(np.abs(lo), np.abs(hi)) + err)
        return Vals(lo, hi, step, off, err), pre

    def note_cols(self, mags: np.ndarray) -> None:
        """note_mag of each column of a T x C array in turn (the failure names the running
        maximum at the first column that overflows, as C separate calls would)."""
        if not mags.size:
            return
        per = np.max(mags, axis=0)
        per = np.where(np.isnan(per), np.inf, per)
        run = np.maximum.accumulate(np.maximum(per, self.max_mag))
        bad = np.flatnonzero(~(run < self.fmt.max_finite))
        self.note_mag(run[bad[0]] if bad.size else run[-1])

    def product(self, xd: Vals, w: float, wr) -> tuple:
        """The product x^ w^ of a contraction (rounded unless `products_exact`) against the
        ideal x w: (lo, hi, step, off, err)."""
        a, b = w * xd.lo, w * xd.hi
        lo, hi = np.minimum(a, b), np.maximum(a, b)
        step = scaled_step(xd.step, w)
        off = w * xd.off
        e_pre = np.abs(wr) * xd.err + xd.mag * np.abs(wr - w)
        if self.products_exact:
            return lo, hi, step, off, e_pre
        return lo, hi, step, off, self.rounded(lo, hi, step, off, e_pre)

    @property
    def products_exact(self) -> bool:
        """Under `once` a contraction is one carrier dot product: its products are not rounded
        (exact in the carrier: two M-bit significands need 2M + 2 <= carrier bits) and only the
        carrier sum is (accumulate.dot_general). Under `sequential` each product is rounded."""
        return self.acc == "once"


_WEIGHTS: dict[int, tuple] = {}


def _ideal_weights(params) -> dict[str, np.ndarray]:
    """The parameters as float64 arrays by path, converted once per construction (a
    certificate analyses the same weights at 25 widths)."""
    hit = _WEIGHTS.get(id(params))
    if hit is None or hit[0] is not params:
        if len(_WEIGHTS) >= 4:
            _WEIGHTS.clear()
        hit = _WEIGHTS[id(params)] = (params, {k: np.asarray(v, np.float64)
                                               for k, v in _flatten(params).items()})
    return hit[1]


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
