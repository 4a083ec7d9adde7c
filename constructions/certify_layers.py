"""The sub-layers of the certificate's analysis: embedding, attention, MLP, residual, readout.

Each function maps `Vals` of all positions to the next ones and records `Claim`s on the
`Analysis` (certify_engine.py states the numerical model and the argument of each step).
"""

from __future__ import annotations

import math

import numpy as np

from constructions.certify_engine import SIGNIFICANT, Analysis, snap, token_sets
from constructions.certify_rounding import fl, round_err
from constructions.certify_values import NONE, Vals, combine_steps, lattice_gap, scaled_step

TINY = 2.0 ** -50  # relative slack for float64 evaluation of exp and of sums done here


def embed(an: Analysis) -> Vals:
    spec = an.c.spec
    sets = token_sets(spec)
    E, P = an.W["embed"], an.W["pos_embedding"]
    Er, Pr = an.Wr["embed"], an.Wr["pos_embedding"]
    t, d = len(sets), E.shape[1]
    lo, hi, off = np.zeros((t, d)), np.zeros((t, d)), np.zeros((t, d))
    step, err = np.zeros((t, d), np.int64), np.zeros((t, d))
    fixed = np.full((t, d), np.nan)
    for i, toks in enumerate(sets):
        ideal = E[toks] + P[i]  # tokens x D
        comp = fl(Er[toks] + Pr[i], an.fmt)
        lo[i], hi[i] = ideal.min(0), ideal.max(0)
        off[i] = ideal[0]
        err[i] = np.abs(comp - ideal).max(0)
        same = np.all(ideal == ideal[0], axis=0)
        fixed[i, same & np.all(comp == comp[0], axis=0)] = comp[0][same & np.all(comp == comp[0],
                                                                              axis=0)]
        for j in np.flatnonzero(~same):
            diffs = np.unique(np.abs(ideal[:, j] - ideal[0, j]))
            ints = [int(v) for v in diffs if float(v).is_integer()]
            step[i, j] = np.gcd.reduce(ints) if len(ints) == len(diffs) else NONE
    an.fixed = fixed
    an.written = np.zeros(d, bool)
    an.note_mag(hi + err, -lo + err)
    an.claim("embed", "token and table entries", True,
             f"max rounding error of x_0 {err.max():.3g} (exact where 0)")
    return Vals(lo, hi, step, off, err)


def _positional_rows(an: Analysis, rows) -> bool:
    return all(not an.written[d] and np.all(np.isfinite(an.fixed[:, d])) for d in rows)


def _exact_proj(an: Analysis, key: str, h: int, s: int) -> tuple[np.ndarray, np.ndarray]:
    """Interval of the computed projection (query/key) slot s of head h at every position, from
    the position-fixed computed inputs, by the format's own rounding."""
    f = an.fmt
    Wr = an.Wr[f"{key}/kernel"][:, h, s]
    br = float(an.Wr[f"{key}/bias"][h, s])
    rows = np.flatnonzero(an.W[f"{key}/kernel"][:, h, s])
    x = an.fixed
    terms = [fl(x[:, d] * Wr[d], f) for d in rows]
    lo, hi = _sum_interval(an, [(tm, tm) for tm in terms], x.shape[0])
    if br != 0.0:
        lo, hi = fl(lo + br - TINY * np.abs(lo + br), f), fl(hi + br + TINY * np.abs(hi + br), f)
    return lo, hi


def _sum_interval(an: Analysis, terms, shape):
    """Interval of the computed sum of terms given as (lo, hi) intervals, per accumulation."""
    f = an.fmt
    if not terms:
        return np.zeros(shape), np.zeros(shape)
    if len(terms) == 1:
        return terms[0]
    if an.acc == "once":
        slo = np.sum([t[0] for t in terms], axis=0)
        shi = np.sum([t[1] for t in terms], axis=0)
        absum = np.sum([np.maximum(np.abs(t[0]), np.abs(t[1])) for t in terms], axis=0)
        c = len(terms) * (f.carrier_unit + TINY) * absum
        return fl(slo - c, f), fl(shi + c, f)
    lo, hi = terms[0]
    for tlo, thi in terms[1:]:
        a, b = lo + tlo, hi + thi
        lo, hi = fl(a - TINY * np.abs(a), f), fl(b + TINY * np.abs(b), f)
    return lo, hi


def _mul_interval(alo, ahi, blo, bhi, f):
    cands = [alo * blo, alo * bhi, ahi * blo, ahi * bhi]
    return fl(np.minimum.reduce(cands), f), fl(np.maximum.reduce(cands), f)


def attention(an: Analysis, layer: int, x: Vals) -> Vals:
    cfg = an.c.config
    f = an.fmt
    pre = f"layer_{layer}/attn"
    dh, heads = cfg.effective_head_dim, cfg.num_heads
    t = x.lo.shape[0]
    ctx = [[None] * dh for _ in range(heads)]
    scale = float(fl(1.0 / math.sqrt(dh), f))
    visible = np.tril(np.ones((t, t), bool))
    for h in range(heads):
        vals = [an.affine(x, f"{pre}/value/kernel", (h, s), f"{pre}/value/bias", (h, s))
                for s in range(dh)]
        qrows = set(np.flatnonzero(an.W[f"{pre}/query/kernel"][:, h, :].any(1)))
        krows = set(np.flatnonzero(an.W[f"{pre}/key/kernel"][:, h, :].any(1)))
        if not (qrows or krows) and not an.W[f"{pre}/query/bias"][h].any():
            if not any(an.W[f"{pre}/out/kernel"][h].any(1)):
                continue  # unused head
        where = f"layer {layer} head {h}"
        if (layer, h) in an.dynamic:
            out = an.dynamic[(layer, h)](an, layer, h, x, vals, where)
        elif _positional_rows(an, qrows | krows):
            out = _positional_head(an, layer, h, x, vals, scale, visible, where)
        else:
            an.claim(where, "scores", False, "input-dependent scores and no margin lemma")
        for s in range(dh):
            ctx[h][s] = out[s]
    # out projection over (head, slot) -> D, then the residual add
    flat = [c for hh in ctx for c in hh]
    zero = Vals.const(np.zeros(t))
    cols = [c if c is not None else zero for c in flat]
    ctx_vals = Vals(*(np.stack([getattr(c, a) for c in cols], 1)
                      for a in ("lo", "hi", "step", "off", "err")))
    an.W[f"{pre}/out/kernel2"] = an.W[f"{pre}/out/kernel"].reshape(heads * dh, -1)
    an.Wr[f"{pre}/out/kernel2"] = an.Wr[f"{pre}/out/kernel"].reshape(heads * dh, -1)
    return _residual(an, x, ctx_vals, f"{pre}/out/kernel2", f"{pre}/out/bias")


def _positional_head(an, layer, h, x, vals, scale, visible, where):
    f = an.fmt
    pre = f"layer_{layer}/attn"
    dh = an.c.config.effective_head_dim
    t = x.lo.shape[0]
    # ideal scores from the ideal (real) position-fixed inputs
    ideal_x = x.off  # constants: off is the value
    q = ideal_x @ an.W[f"{pre}/query/kernel"][:, h, :] + an.W[f"{pre}/query/bias"][h]
    k = ideal_x @ an.W[f"{pre}/key/kernel"][:, h, :] + an.W[f"{pre}/key/bias"][h]
    s_ideal = (q @ k.T) / math.sqrt(dh)
    # computed scores, as exact intervals
    qi = [_exact_proj(an, f"{pre}/query", h, s) for s in range(dh)]
    ki = [_exact_proj(an, f"{pre}/key", h, s) for s in range(dh)]
    terms = []
    for s in range(dh):
        if not (np.any(qi[s][0]) or np.any(qi[s][1])) or not (np.any(ki[s][0])
                                                               or np.any(ki[s][1])):
            continue
        terms.append(_mul_interval(qi[s][0][:, None], qi[s][1][:, None], ki[s][0][None, :],
                                   ki[s][1][None, :], f))
    slo, shi = _sum_interval(an, terms, (t, t))
    slo, shi = fl(slo * scale, f), fl(shi * scale, f)
    an.note_mag(np.abs(slo[visible]), np.abs(shi[visible]))
    if np.isnan(slo[visible]).any() or np.isnan(shi[visible]).any():
        an.claim(where, "scores", False, "a score is NaN (an overflowed weight or table value)")
    neg = -np.inf
    slo, shi = np.where(visible, slo, neg), np.where(visible, shi, neg)
    s_ideal = np.where(visible, s_ideal, neg)
    best = s_ideal.max(1, keepdims=True)
    sig = visible & (s_ideal >= best - SIGNIFICANT)
    w_ideal = np.where(sig, np.exp(s_ideal - best), 0.0)
    w_ideal = w_ideal / w_ideal.sum(1, keepdims=True)
    wsnap = np.zeros((t, t))
    fracs = {}
    for i, j in zip(*np.nonzero(sig), strict=True):
        fr = snap(float(w_ideal[i, j]))
        if fr is None:
            an.claim(where, "intended weights", False,
                     f"query {i}: weight {w_ideal[i, j]!r} of key {j} is no simple rational")
        fracs[i, j] = fr
        wsnap[i, j] = float(fr)
    # computed softmax: m = max score, d = fl(s - m), e = fl(exp(d)), Z = sum e, w = fl(e / Z)
    mlo, mhi = slo.max(1, keepdims=True), shi.max(1, keepdims=True)
    dlo = np.minimum(fl(slo - mhi, f), 0.0)
    dhi = np.minimum(fl(shi - mlo, f), 0.0)
    # Keys whose key-side inputs are identical table rows have identical computed keys, hence
    # identical computed scores (the same operations on the same values). When the keys of the
    # best ideal score share one row and their scores lie above every other key's, their
    # computed score is the maximum m itself: d = 0 and e = 1 exactly.
    krows = np.flatnonzero(an.W[f"{pre}/key/kernel"][:, h, :].any(1))
    sig_rows = an.fixed[:, krows] if len(krows) else np.zeros((t, 0))
    top = visible & (s_ideal >= best - 1e-6 * np.maximum(1.0, np.abs(best)))
    for i in range(t):
        keys = np.flatnonzero(top[i])
        rows = sig_rows[keys]
        if not np.all(rows == rows[0]):
            continue
        rest = visible[i] & ~top[i]
        w_lo, w_hi = slo[i, keys[0]], shi[i, keys[0]]
        if rest.any() and not w_lo > shi[i, rest].max():
            continue
        dlo[i, keys], dhi[i, keys] = 0.0, 0.0
        dlo[i, rest] = np.minimum(fl(slo[i, rest] - w_hi, f), 0.0)
        dhi[i, rest] = np.minimum(fl(shi[i, rest] - w_lo, f), 0.0)
    with np.errstate(invalid="ignore"):
        elo = np.where(visible, fl(np.exp(dlo) * (1 - TINY), f), 0.0)
        ehi = np.where(visible, np.minimum(fl(np.exp(dhi) * (1 + TINY), f), 1.0), 0.0)
    zlo, zhi = _sum_keys(an, elo, ehi, visible)
    wlo = fl(elo / zhi * (1 - TINY), f)
    whi = np.where(visible, fl(ehi / zlo * (1 + TINY), f), 0.0)
    dev = np.maximum(np.abs(whi - wsnap), np.abs(wsnap - wlo)) * visible
    leak_max = float(np.max(np.where(sig, 0.0, whi)))
    an.claim(where, "positional attention", True,
             f"max |w^ - w| on intended keys {np.max(np.where(sig, dev, 0)):.3g}, max leaked "
             f"weight {leak_max:.3g} (score intervals computed exactly)")
    out = []
    for s in range(dh):
        v = vals[s]
        if not np.any(an.W[f"{pre}/out/kernel"][h, s]):
            out.append(None)
            continue
        out.append(_mix(an, v, wsnap, sig, dev, whi, visible, fracs))
    return out


def _sum_keys(an, elo, ehi, visible):
    """Interval of Z = sum over visible keys of e (per query), per accumulation."""
    f = an.fmt
    if an.acc == "once":
        n = visible.sum(1, keepdims=True)
        c = n * (f.carrier_unit + TINY) * ehi.sum(1, keepdims=True)
        return fl(elo.sum(1, keepdims=True) - c, f), fl(ehi.sum(1, keepdims=True) + c, f)
    lo, hi = elo[:, :1], ehi[:, :1]
    for j in range(1, elo.shape[1]):
        a, b = lo + elo[:, j:j + 1], hi + ehi[:, j:j + 1]
        lo, hi = fl(a - TINY * a, f), fl(b + TINY * b, f)
    return lo, hi


def _mix(an, v: Vals, wsnap, sig, dev, whi, visible, fracs) -> Vals:
    """ctx = sum_k w^_k v^_k against the intended sum_k w_k v_k over the intended keys."""
    f = an.fmt
    t = v.lo.shape[0]
    lo = (np.where(wsnap > 0, wsnap * v.lo[None, :], 0)).sum(1)
    hi = (np.where(wsnap > 0, wsnap * v.hi[None, :], 0)).sum(1)
    step = np.zeros(t, np.int64)
    off = (wsnap * v.off[None, :]).sum(1)
    for (i, j), fr in fracs.items():
        if v.step[j] == 0:
            continue
        ws = fr * int(v.step[j]) if v.step[j] > 0 else None
        si = int(ws) if ws is not None and ws.denominator == 1 else NONE
        step[i] = combine_steps(np.array([step[i]]), np.array([si]))[0]
    vmag = v.mag[None, :]
    err = (np.where(sig, dev * vmag + whi * v.err[None, :], 0)
           + np.where(sig | ~visible, 0, whi * (vmag + v.err[None, :]))).sum(1)
    pm = np.where(visible, whi * (v.cmag[None, :]), 0)  # |products|
    nonzero = pm > 0
    err = err + (np.where(nonzero, round_err(pm, f), 0)).sum(1)
    terms = [pm[:, j] * (1 + f.u) + f.eta * nonzero[:, j] for j in range(t)
             if nonzero[:, j].any()]
    total = np.maximum(np.abs(lo), np.abs(hi)) + err
    err = err + an.sum_err(terms, total)
    an.note_mag(total)
    return Vals(lo, hi, step, off, err)


def _residual(an: Analysis, x: Vals, inner: Vals, kernel: str, bias: str) -> Vals:
    """x + (inner W + b) for every coordinate the sub-layer writes; the others pass exactly."""
    f = an.fmt
    out = Vals(*(a.copy() for a in (x.lo, x.hi, x.step, x.off, x.err)))
    W = an.W[kernel]
    for d in range(W.shape[1]):
        if not W[:, d].any() and an.W[bias][d] == 0:
            continue
        upd = an.affine(inner, kernel, d, bias, d)
        an.written[d] = True
        xd = x.column(d)
        lo, hi = xd.lo + upd.lo, xd.hi + upd.hi
        step = combine_steps(xd.step, upd.step)
        off = xd.off + upd.off
        err = xd.err + upd.err
        mag = np.maximum(np.abs(lo), np.abs(hi)) + err
        exact = ((err == 0) & (step >= 0) & (mag <= 2.0 ** (f.mantissa_bits + 1))
                 & np.array([float(o).is_integer() for o in off]))
        zero_x = (xd.step == 0) & (xd.off == 0) & (xd.err == 0)
        err = err + np.where(exact | zero_x, 0.0, round_err(mag, f))
        an.note_mag(mag)
        out.lo[:, d], out.hi[:, d], out.step[:, d], out.off[:, d], out.err[:, d] = \
            lo, hi, step, off, err
    return out


def mlp(an: Analysis, layer: int, x: Vals) -> Vals:
    f = an.fmt
    pre = f"layer_{layer}/mlp"
    W1, b1, W2 = an.W[f"{pre}/fc1/kernel"], an.W[f"{pre}/fc1/bias"], an.W[f"{pre}/fc2/kernel"]
    W2r = an.Wr[f"{pre}/fc2/kernel"]
    t = x.lo.shape[0]
    units = [u for u in range(W1.shape[1]) if W2[u].any()]
    groups, u = [], 0
    used = set(units)
    while u < W1.shape[1]:
        if u not in used:
            u += 1
            continue
        v = u + 1
        if (v in used and np.array_equal(W1[:, u], W1[:, v]) and np.array_equal(W2[u], -W2[v])
                and b1[u] > b1[v]):
            groups.append((u, v))
            u += 2
        else:
            groups.append((u,))
            u += 1
    # contributions of each group to each output coordinate: (ideal lo, hi, step, err, mags)
    contrib = []
    worst_gap = math.inf
    for g in groups:
        if len(g) == 2:
            lower = an.affine(x, f"{pre}/fc1/kernel", g[1], f"{pre}/fc1/bias", g[1])
            pre_err = an.pre_err
            delta = float(b1[g[0]] - b1[g[1]])
            dr = float(an.Wr[f"{pre}/fc1/bias"][g[0]] - an.Wr[f"{pre}/fc1/bias"][g[1]])
            gap = lattice_gap(lower.lo, lower.hi, lower.step, lower.off, -delta, 0.0)
            margin = gap - pre_err - abs(dr - delta)
            if np.isnan(margin).any():
                an.claim(f"layer {layer} mlp units {g}", "clean step", False, "NaN pre-activation")
            # Where the ideal pre-activation is not a clean lattice (a position whose value the
            # construction never uses, e.g. a pointer-less query averaging every key) or its
            # error reaches the ramp, the pair is only known to output some value in [0, delta]
            # (1-Lipschitz in the pre-activation): no claim fails here; any consumer that needs
            # that value exact fails instead (down to the readout).
            dirty = ~(margin > 0)
            clean_gaps = margin[~dirty]
            if clean_gaps.size:
                worst_gap = min(worst_gap, float(np.min(clean_gaps)))
            can_on = lower.hi >= 0
            can_off = lower.lo <= -delta
            amag = np.maximum(np.abs(lower.lo), np.abs(lower.hi)) + pre_err
            h2mag = np.where(can_on, amag, 0.0)
            h1mag = np.where(can_on, amag + abs(dr), 0.0)
            perr = np.where(can_on, abs(dr - delta) + round_err(h1mag, f) + round_err(h2mag, f),
                            0.0)
            lo = np.where(can_off | dirty, 0.0, delta)
            hi = np.where(can_on | dirty, delta, 0.0)
            hstep = np.where(can_on & can_off, int(delta) if delta.is_integer() else NONE, 0)
            hstep = np.where(dirty, NONE, hstep)
            hoff = np.where(can_off, 0.0, delta)
            perr = np.where(dirty, np.minimum(pre_err + abs(dr - delta), delta) + round_err(
                h1mag, f) + round_err(h2mag, f) + np.where(gap == -np.inf, 0.0, 0.0), perr)
            h1mag = np.where(dirty, amag + abs(dr), h1mag)
            h2mag = np.where(dirty, amag, h2mag)
            an.dirty_units = getattr(an, "dirty_units", 0) + int(dirty.sum())
            contrib.append((g, lo, hi, hstep, hoff, perr, h1mag, h2mag))
        else:
            a = an.affine(x, f"{pre}/fc1/kernel", g[0], f"{pre}/fc1/bias", g[0])
            off0 = a.hi + a.err <= 0
            lo, hi = np.maximum(a.lo, 0), np.maximum(a.hi, 0)
            herr = np.where(off0, 0.0, a.err)
            zero_in = (a.step > 0) & (np.mod(a.off, np.maximum(a.step, 1)) == 0)
            hstep = np.where(a.lo >= 0, a.step, np.where(a.hi <= 0, 0,
                                                          np.where(zero_in, a.step, NONE)))
            hoff = np.where(a.lo >= 0, a.off, np.where(a.hi <= 0, 0.0,
                                                       np.where(zero_in, 0.0, a.off)))
            contrib.append((g, lo, hi, hstep, hoff, herr, a.cmag * (~off0), None))
    out = Vals(*(arr.copy() for arr in (x.lo, x.hi, x.step, x.off, x.err)))
    for d in range(W2.shape[1]):
        if not W2[:, d].any() and an.W[f"{pre}/fc2/bias"][d] == 0:
            continue
        lo, hi = np.zeros(t), np.zeros(t)
        step, off, err = np.zeros(t, np.int64), np.zeros(t), np.zeros(t)
        terms, prefixes, done = [], [], np.zeros(t)
        for g, clo, chi, hstep, hoff, cerr, m1, m2 in contrib:
            w, wr = float(W2[g[0], d]), float(W2r[g[0], d])
            if w == 0:
                continue
            a_, b_ = w * clo, w * chi
            lo, hi = lo + np.minimum(a_, b_), hi + np.maximum(a_, b_)
            step = combine_steps(step, scaled_step(hstep.astype(np.int64), w))
            off = off + w * hoff
            cmag = np.maximum(np.abs(a_), np.abs(b_))
            err = err + abs(wr) * cerr + abs(wr - w) * np.maximum(np.abs(clo), np.abs(chi))
            p1 = abs(wr) * m1
            p2 = abs(wr) * m2 if m2 is not None else None
            for pm in (p1, p2):
                if pm is not None:
                    err = err + round_err(pm, f) * (pm > 0)
            if np.any(p1 > 0):
                terms.append(p1 * (1 + f.u) + f.eta)
                prefixes.append(done + p1 if p2 is not None else done + cmag)
            if p2 is not None and np.any(p2 > 0):
                terms.append(p2 * (1 + f.u) + f.eta)
                prefixes.append(done + cmag)
            done = done + cmag
        total = np.maximum(np.abs(lo), np.abs(hi)) + err
        err = err + an.sum_err(terms, total, [pf + err for pf in prefixes])
        bias = float(an.W[f"{pre}/fc2/bias"][d])
        if bias != 0:
            lo, hi, off = lo + bias, hi + bias, off + bias
            err = err + abs(float(an.Wr[f"{pre}/fc2/bias"][d]) - bias) + round_err(
                np.maximum(np.abs(lo), np.abs(hi)) + err, f)
        upd = Vals(lo, hi, step, off, err)
        an.written[d] = True
        xd = x.column(d)
        nlo, nhi = xd.lo + upd.lo, xd.hi + upd.hi
        nstep = combine_steps(xd.step, upd.step)
        noff = xd.off + upd.off
        nerr = xd.err + upd.err
        mag = np.maximum(np.abs(nlo), np.abs(nhi)) + nerr
        zero_x = (xd.step == 0) & (xd.off == 0) & (xd.err == 0)
        exact = ((nerr == 0) & (nstep >= 0) & (mag <= 2.0 ** (f.mantissa_bits + 1))
                 & np.array([float(o).is_integer() for o in noff]))
        nerr = nerr + np.where(exact | zero_x, 0.0, round_err(mag, f))
        an.note_mag(mag)
        out.lo[:, d], out.hi[:, d], out.step[:, d], out.off[:, d], out.err[:, d] = \
            nlo, nhi, nstep, noff, nerr
    an.claim(f"layer {layer} mlp", "clean steps", True,
             f"{sum(len(g) == 2 for g in groups)} step pairs, smallest margin to the ramp "
             f"{worst_gap:.3g}; {sum(len(g) == 1 for g in groups)} single units")
    return out


def quadratic_copy(an: Analysis, layer: int, h: int, x: Vals, vals, where: str):
    """The quadratic-match COPY of column_add layer 4 (`blocks.quadratic_match_head`).

    Lemma (blocks.py): with N2 = N^2 at the keys and T = N_q + 1, the score
    lam (2 T N_k - N2_k) + mu npm_k = lam T^2 - lam (N_k - T)^2 + mu npm_k is largest at the one
    marked key with N_k = T, by at least min(lam, mu) over every other key. lam and mu are read
    from the query biases; the computed scores differ from the ideal ones by at most e_s
    (errors of the query and key slots, of the products and of the sum); the copy is then the
    intended key's value, with weights off by at most the leakage e^-(min(lam, mu) - 2 e_s).
    """
    f = an.fmt
    pre = f"layer_{layer}/attn"
    dh = an.c.config.effective_head_dim
    t = x.lo.shape[0]
    bq = an.W[f"{pre}/query/bias"][h]
    lam, mu = -float(bq[1]) / math.sqrt(dh), float(bq[2]) / math.sqrt(dh)
    margin = min(lam, mu)
    qs = [an.affine(x, f"{pre}/query/kernel", (h, s), f"{pre}/query/bias", (h, s))
          for s in range(dh)]
    ks = [an.affine(x, f"{pre}/key/kernel", (h, s), f"{pre}/key/bias", (h, s))
          for s in range(dh)]
    scale = 1.0 / math.sqrt(dh)
    es, terms, total = 0.0, [], 0.0
    for q, k in zip(qs, ks, strict=True):
        qm, km = float(q.mag.max()), float(k.mag.max())
        qe, ke = float(q.err.max()), float(k.err.max())
        if qm + qe == 0 or km + ke == 0:
            continue
        es += qm * ke + km * qe + qe * ke
        pm = (qm + qe) * (km + ke)
        es += float(round_err(pm, f))
        terms.append(np.array([pm * (1 + f.u) + f.eta]))
        total += qm * km
    es += float(an.sum_err(terms, np.array([total + es]))[0])
    es = es * scale + float(round_err((total + es) * scale, f))  # the 1/sqrt(Dh) product
    an.note_mag(np.array([(total + es) * scale]))
    spare = margin - 2 * es
    if not spare > 0:
        an.claim(where, "quadratic match", False,
                 f"score error {es:.3g} against the margin min(lam, mu) = {margin:.3g}")
    leak = math.exp(-spare * (1 - f.u)) * (1 + TINY)
    zhi = float(fl(1 + (t - 1) * leak * (1 + f.u) * 2, f))
    wdev = 1 - float(fl(1 / zhi * (1 - TINY), f))
    an.claim(where, "quadratic match", True,
             f"margin min(lam, mu) = {margin:.3g}, score error <= {es:.3g}, leaked weight <= "
             f"{leak:.3g} per key")
    out = []
    for s in range(dh):
        v = vals[s]
        if not np.any(an.W[f"{pre}/out/kernel"][h, s]):
            out.append(None)
            continue
        # the intended key can be any earlier position: the union of their ideal values
        lo = np.minimum.accumulate(v.lo)
        hi = np.maximum.accumulate(v.hi)
        vmag = np.maximum.accumulate(v.mag)
        verr = np.maximum.accumulate(v.err)
        cm = np.cumsum(v.cmag)
        err = wdev * vmag + verr + leak * cm
        pm = vmag + verr + leak * cm
        err = err + round_err(pm, f) + round_err(leak * cm, f) * t
        err = err + an.sum_err([pm * (1 + f.u) + f.eta, leak * cm * (1 + f.u) + f.eta],
                               np.maximum(np.abs(lo), np.abs(hi)) + err)
        if an.acc == "sequential":
            err = err + t * round_err(pm + err, f)
        step = np.ones(t, np.int64)
        ok = np.all(((v.step == 1) | (v.step == 0)) & (v.off == np.round(v.off)))
        step = step if ok else np.full(t, NONE, np.int64)
        out.append(Vals(lo, hi, step, np.zeros(t), err))
    return out


def readout(an: Analysis, x: Vals) -> None:
    """The argmax at each answer position is the ideal answer token, with computed logits."""
    f = an.fmt
    spec = an.c.spec
    U, c = an.W["unembed/kernel"], an.W["unembed/bias"]
    Ur, cr = an.Wr["unembed/kernel"], an.Wr["unembed/bias"]
    rows = np.flatnonzero(U.any(1))
    first = spec.input_length - 1
    worst = math.inf
    for i in range(spec.answer_tokens):
        t = first + i
        configs = _readout_configs(x, t, rows)
        for cfg in configs:
            ideal = cfg @ U[rows] + c
            order = np.argsort(ideal)
            want = int(order[-1])
            if ideal[order[-1]] - ideal[order[-2]] <= 0:
                an.claim(f"readout position {t}", "ideal argmax", False, "tie in the ideal logits")
            terms = []
            for r, a in zip(rows, cfg, strict=True):
                e = x.err[t, r]
                terms.append(_mul_interval(np.array(a - e), np.array(a + e), Ur[r], Ur[r], f))
            lo, hi = _sum_interval(an, terms, U.shape[1])
            lo, hi = fl(lo + cr - TINY * np.abs(lo + cr), f), fl(hi + cr + TINY * np.abs(hi + cr),
                                                                  f)
            an.note_mag(np.abs(lo), np.abs(hi))
            others = np.delete(hi, want)
            gap = float(lo[want] - others.max())
            worst = min(worst, gap)
            if not gap > 0:
                an.claim(f"readout position {t}", "argmax", False,
                         f"ideal answer value {cfg.tolist()}: computed logit of token {want} "
                         f">= {lo[want]:.6g} but another reaches {others.max():.6g}")
    an.claim("readout", "argmax", True, f"smallest computed logit margin {worst:.3g}")


def _readout_configs(x: Vals, t: int, rows) -> list[np.ndarray]:
    """Ideal values of the readout coordinates: the lattice points of one coordinate, or, for
    several, the one-hot vectors (the constant-precision ADD readout's ideal state)."""
    if len(rows) == 1:
        r = rows[0]
        s, lo, hi, off = int(x.step[t, r]), x.lo[t, r], x.hi[t, r], x.off[t, r]
        if s == 0:
            return [np.array([off])]
        if s < 0:
            raise ValueError("the readout coordinate has no lattice")
        z0, z1 = math.ceil((lo - off) / s - 1e-9), math.floor((hi - off) / s + 1e-9)
        return [np.array([off + s * z]) for z in range(z0, z1 + 1)]
    return [np.eye(len(rows))[j] for j in range(len(rows))]


def clip(an: Analysis, x: Vals) -> Vals:
    """Intersect ideal intervals with the construction's stated ideal ranges (`ideal_ranges`)."""
    for d, (lo, hi) in getattr(an, "ranges", {}).items():
        x.lo[:, d] = np.clip(x.lo[:, d], lo, hi)
        x.hi[:, d] = np.clip(x.hi[:, d], lo, hi)
    return x
