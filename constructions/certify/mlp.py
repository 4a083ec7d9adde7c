"""The certificate's MLP sub-layer and residual add, vectorized over units and coordinates.

The argument is that of engine.py ("mlp"): consecutive units with equal fc1 columns and
opposite fc2 rows are one clean step (`blocks.step`), certified when the pre-activation's error
stays below the distance of its ideal lattice to the ramp between the units (then the pair's
output error is the rounding of its two units only: the input error cancels); other units are
single ReLUs (1-Lipschitz). The O(n^2)-width constructions (constant-precision ADD, MUL) have
hundreds to thousands of units per layer, so every step works on T x units arrays: all fc1
pre-activations in one `Analysis.affine_cols`, the pairs and single units as array columns, and
the fc2 sums batched over output coordinates whose term lists have the same shape. Each array
element goes through exactly the arithmetic of the unit-by-unit analysis (elementwise NumPy),
so the bounds are the same numbers, only computed at once.
"""

from __future__ import annotations

import math

import numpy as np

from constructions.certify.engine import Analysis
from constructions.certify.rounding import round_err
from constructions.certify.values import (
    NONE,
    Vals,
    combine_steps,
    joined_with_zero,
    lattice_gap,
    scaled_step,
)


def _cols(v: Vals, idx) -> Vals:
    return Vals(*(a[:, idx] for a in (v.lo, v.hi, v.step, v.off, v.err)))


def _largest_below_zero(a: Vals) -> np.ndarray:
    """The largest ideal value < 0 (a lattice point), -inf when there is none, +inf (unknown)
    without a lattice."""
    s = np.maximum(a.step, 1.0)
    z = np.ceil(-a.off / s - 1e-12) - 1  # the largest z with off + s z < 0
    pt = a.off + s * z
    pt = np.where(a.step == 0, np.where(a.off < 0, a.off, -np.inf), pt)
    pt = np.where(pt < a.lo - 1e-9, -np.inf, pt)
    return np.where(a.step < 0, np.where(a.lo < 0, np.inf, -np.inf), pt)


def _relu(a: Vals) -> Vals:
    """h = relu(a): exact op; the ideal lattice survives where 0 is in it or a keeps a sign."""
    off0 = a.hi + a.err <= 0  # computed pre-activation <= 0: h = 0 exactly
    lo, hi = np.maximum(a.lo, 0), np.maximum(a.hi, 0)
    # {0} joined to the lattice off + s Z: the lattice gcd(s, |off|) Z
    joined = joined_with_zero(a.step, a.off)
    step = np.where(a.lo >= 0, a.step, np.where(a.hi <= 0, 0.0, joined))
    off = np.where(a.lo >= 0, a.off, 0.0)
    err = np.where(off0, 0.0, a.err)
    return Vals(lo, hi, step, off, err)


def add_updates(an: Analysis, x: Vals, ds, u: Vals) -> Vals:
    """The residual add x[:, ds] + u (T x len(ds)): one rounding; adding to an exact 0 is exact."""
    out = Vals(*(a.copy() for a in (x.lo, x.hi, x.step, x.off, x.err)))
    ds = np.asarray(ds, int)
    if not ds.size:
        return out
    an.written[ds] = True
    xd = _cols(x, ds)
    lo, hi = xd.lo + u.lo, xd.hi + u.hi
    step = combine_steps(xd.step, u.step)
    off = xd.off + u.off
    zero_x = (xd.step == 0) & (xd.off == 0) & (xd.err == 0)
    err = np.where(zero_x, u.err, an.rounded(lo, hi, step, off, xd.err + u.err))
    an.note_cols(np.maximum(np.abs(lo), np.abs(hi)) + err)
    out.lo[:, ds], out.hi[:, ds], out.step[:, ds], out.off[:, ds], out.err[:, ds] = \
        lo, hi, step, off, err
    return out


def _groups(W1, b1, W2) -> list[tuple]:
    used = [u for u in range(W1.shape[1]) if W2[u].any()]
    groups, i = [], 0
    while i < len(used):
        u = used[i]
        v = used[i + 1] if i + 1 < len(used) else None
        if (v == u + 1 and np.array_equal(W1[:, u], W1[:, v]) and np.array_equal(W2[u], -W2[v])
                and b1[u] > b1[v]):
            groups.append((u, v))
            i += 2
        else:
            groups.append((u,))
            i += 1
    return groups


def mlp(an: Analysis, layer: int, x: Vals) -> Vals:
    f = an.fmt
    pre = f"layer_{layer}/mlp"
    W1, b1, W2 = an.W[f"{pre}/fc1/kernel"], an.W[f"{pre}/fc1/bias"], an.W[f"{pre}/fc2/kernel"]
    W1r, b1r, W2r = an.Wr[f"{pre}/fc1/kernel"], an.Wr[f"{pre}/fc1/bias"], an.Wr[f"{pre}/fc2/kernel"]
    groups = _groups(W1, b1, W2)
    used = np.array([u for g in groups for u in g], int)
    col = {int(u): i for i, u in enumerate(used)}
    A, PRE = an.affine_cols(x, W1[:, used], W1r[:, used], b1[used], b1r[used])
    H = _relu(A)

    # Single units. A single ReLU needs its error only where it is active: when every ideal
    # pre-activation below 0 stays below 0 computed (lattice point <= -err), redo the bound for
    # the ideal values >= 0 alone (a gate's big offsets are then out of it).
    singles = np.array([g[0] for g in groups if len(g) == 1], int)
    if singles.size:
        sc = np.array([col[u] for u in singles], int)
        a = _cols(A, sc)
        below = _largest_below_zero(a)
        redo = np.any(np.isfinite(below), axis=0) & np.all(below + a.err <= 0, axis=0)
        if redo.any():
            su, rc = singles[redo], sc[redo]
            a_on, _ = an.affine_cols(x, W1[:, su], W1r[:, su], b1[su], b1r[su], min_value=0.0)
            H.err[:, rc] = np.where(A.hi[:, rc] + A.err[:, rc] <= 0, 0.0,
                                    np.minimum(H.err[:, rc], a_on.err))

    # Step pairs (u, v): h_u - h_v is 0 or delta = b_u - b_v on the ideal lattice.
    pairs = [g for g in groups if len(g) == 2]
    c1 = np.array([col[g[0]] for g in pairs], int)
    c2 = np.array([col[g[1]] for g in pairs], int)
    worst, dirty_count = math.inf, 0
    pair = None
    if pairs:
        a1, a2 = _cols(A, c1), _cols(A, c2)
        pre1, pre2 = PRE[:, c1], PRE[:, c2]
        h1, h2 = _cols(H, c1), _cols(H, c2)
        u1, u2 = np.array([g[0] for g in pairs]), np.array([g[1] for g in pairs])
        delta = b1[u1] - b1[u2]
        dr = b1r[u1] - b1r[u2]
        gap = lattice_gap(a2.lo, a2.hi, a2.step, a2.off, -delta, 0.0)
        margin = gap - pre2 - np.abs(dr - delta)
        nan = np.isnan(margin).any(axis=0)
        if nan.any():
            an.claim(f"layer {layer} mlp units {pairs[int(np.argmax(nan))]}", "clean step",
                     False, "NaN pre-activation")
        # Not clean (an unused position whose ideal is no lattice, or an error reaching the
        # ramp): the pair is only known to give some value in [0, delta]; a consumer that needs
        # it exact fails instead, down to the readout.
        # Where the error may reach the ramp but the ideal lattice avoids it ("near"), the
        # ideal output is still 0 or delta and the computed one is within the pre-activation's
        # error (the pair is 1-Lipschitz in it) plus the roundings; only an ideal value inside
        # the ramp ("dirty") leaves the output unpinned.
        dirty = ~(gap >= 0)
        near = ~(margin > 0) & ~dirty
        dirty_count = int(dirty.sum())
        clean = ~dirty & ~near
        if clean.any():
            worst = float(margin[clean].min())
        can_on = (a2.hi >= 0) | dirty
        can_off = (a2.lo <= -delta) | dirty
        r1 = round_err(np.maximum(np.abs(a1.lo), np.abs(a1.hi)) + pre1, f)
        r2 = round_err(np.maximum(np.abs(a2.lo), np.abs(a2.hi)) + pre2, f)
        cancel = np.abs(dr - delta) + r1 + r2
        perr = np.where(can_on, np.minimum(h1.err + h2.err, cancel), 0.0)
        perr = np.where(near | dirty, np.minimum(h1.err + h2.err, cancel + pre2 + r2), perr)
        lo = np.where(can_off, 0.0, delta)
        hi = np.where(can_on, delta, 0.0)
        pstep = np.where(can_on & can_off, delta, 0.0)
        pstep = np.where(dirty, NONE, pstep)
        poff = np.where(can_off, 0.0, delta)
        pair = Vals(lo, hi, pstep, poff, perr)
    pidx = {g: i for i, g in enumerate(pairs)}

    # fc2: output coordinates batched by the shape of their term lists (single or pair, in
    # unit order); the i-th term of every coordinate in a batch is computed as one array.
    b2, b2r = an.W[f"{pre}/fc2/bias"], an.Wr[f"{pre}/fc2/bias"]
    firsts = np.array([g[0] for g in groups], int)
    outs, batches = [], {}
    for d in range(W2.shape[1]):
        if not W2[:, d].any() and b2[d] == 0:
            continue
        outs.append(d)
        gi = tuple(int(i) for i in np.flatnonzero(W2[firsts, d]))
        batches.setdefault(tuple(len(groups[i]) for i in gi), []).append((d, gi))
    upd = {}
    for shape, members in batches.items():
        ds = np.array([d for d, _ in members], int)
        gis = np.array([gi for _, gi in members], int).reshape(len(members), len(shape))
        terms = []
        for i, kind in enumerate(shape):
            gsel = [groups[g] for g in gis[:, i]]
            u = np.array([g[0] for g in gsel], int)
            w, wr = W2[u, ds], W2r[u, ds]
            if kind == 1:
                terms.append(an.product(_cols(H, [col[v] for v in u]), w, wr))
                continue
            p = np.array([pidx[g] for g in gsel], int)
            ph1, ph2, pv = _cols(H, c1[p]), _cols(H, c2[p]), _cols(pair, p)
            t1, t2 = an.product(ph1, w, wr), an.product(ph2, -w, -wr)
            # computed fl(w^ h1^) + fl(-w^ h2^) against the ideal w (h1 - h2)
            rho = 0.0 if an.products_exact else (round_err(np.abs(wr) * ph1.cmag, f)
                                                 + round_err(np.abs(wr) * ph2.cmag, f))
            cancel = np.abs(wr) * pv.err + np.abs(wr - w) * pv.mag + rho
            a_, b_ = w * pv.lo, w * pv.hi
            lo, hi = np.minimum(a_, b_), np.maximum(a_, b_)
            step, off = scaled_step(pv.step, w), w * pv.off
            # both products enter the sum (the carrier adds them, a sequential sum rounds after
            # h1); the pair's second term carries the pair's ideal {0, w delta}
            terms.append(t1)
            terms.append((*t2[:4], np.minimum(t1[4] + t2[4], cancel),
                          (lo, hi, step, off, t2[4])))
        if not terms:  # a bias alone: the sum of no terms is an exact 0
            zero = np.zeros((x.lo.shape[0], ds.size))
            terms = [(zero, zero, zero, zero, zero)]
        lo, hi, step, off, err, _ = an.sum_terms(terms, b2[ds], b2r[ds])
        for j, d in enumerate(ds):
            upd[int(d)] = (lo[:, j], hi[:, j], step[:, j], off[:, j], err[:, j])
    an.claim(f"layer {layer} mlp", "clean steps", True,
             f"{len(pairs)} step pairs, smallest margin to the ramp "
             f"{worst:.3g}" + (f" ({dirty_count} pair-positions not clean: values no "
                               f"answer needs, or failures caught downstream)"
                               if dirty_count else "")
             + f"; {len(groups) - len(pairs)} single units")
    stacked = Vals(*(np.stack([upd[d][k] for d in outs], 1) if outs
                     else np.zeros((x.lo.shape[0], 0)) for k in range(5)))
    return add_updates(an, x, outs, stacked)
