"""The sub-layers of the certificate's analysis: embedding, attention, MLP, residual, readout.

Each function maps `Vals` of all positions to the next ones and records `Claim`s on the
`Analysis` (engine.py states the numerical model and the argument of each step).
"""

from __future__ import annotations

import math

import numpy as np

from constructions.certify.engine import SIGNIFICANT, Analysis, snap, token_sets
from constructions.certify.mlp import add_updates
from constructions.certify.rounding import carrier_err, fl
from constructions.certify.values import NONE, Vals, carrier_exact, dyadic_close, frac_bits

TINY = 2.0 ** -50  # relative slack for float64 evaluation of exp and of sums done here


def embed(an: Analysis) -> Vals:
    spec = an.c.spec
    sets = token_sets(spec)
    E, P = an.W["embed"], an.W["pos_embedding"]
    Er, Pr = an.Wr["embed"], an.Wr["pos_embedding"]
    t, d = len(sets), E.shape[1]
    lo, hi, off = np.zeros((t, d)), np.zeros((t, d)), np.zeros((t, d))
    step, err = np.zeros((t, d)), np.zeros((t, d))
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
    # Entries no position fixes are NaN (`fixed_values`) and stay NaN here: the attention checks
    # its visible scores for NaN, so the invalid-value warnings of that arithmetic say nothing.
    with np.errstate(invalid="ignore"):
        terms = [_prod(an, x[:, d], Wr[d]) for d in rows]
        lo, hi = _sum_interval(an, [(tm, tm) for tm in terms], x.shape[0])
        if br != 0.0:
            lo = fl(lo + br - TINY * np.abs(lo + br), f)
            hi = fl(hi + br + TINY * np.abs(hi + br), f)
    return lo, hi


def _sum_interval(an: Analysis, terms, shape):
    """Interval of the computed sum of terms given as (lo, hi) intervals, per accumulation."""
    f = an.fmt
    if not terms:
        return np.zeros(shape), np.zeros(shape)
    if len(terms) == 1:  # one product: rounded by the contraction's one rounding under once
        return (fl(terms[0][0], f), fl(terms[0][1], f)) if an.products_exact else terms[0]
    if an.acc == "once":
        slo = np.sum([t[0] for t in terms], axis=0)
        shi = np.sum([t[1] for t in terms], axis=0)
        mags = [np.maximum(np.abs(t[0]), np.abs(t[1])) for t in terms]
        c = carrier_err(np.sum(mags, axis=0), np.max(mags, axis=0), len(terms), f, TINY)
        if f.carrier_bits < 53:  # a float32 carrier's error can straddle a rounding boundary
            exact = np.all([t[0] == t[1] for t in terms], axis=0) & carrier_exact(
                [t[0] for t in terms], f.carrier_bits)
            c = np.where(exact, 0.0, c)
        return fl(slo - c, f), fl(shi + c, f)
    lo, hi = terms[0]
    for tlo, thi in terms[1:]:
        a, b = lo + tlo, hi + thi
        lo, hi = fl(a - TINY * np.abs(a), f), fl(b + TINY * np.abs(b), f)
    return lo, hi


def _mul_interval(alo, ahi, blo, bhi, f, rounded: bool = True):
    """Interval of a product of intervals; rounded to the format unless it is a product inside
    a `once` contraction (exact in the carrier, computed exactly here in float64)."""
    cands = [alo * blo, alo * bhi, ahi * blo, ahi * bhi]
    lo, hi = np.minimum.reduce(cands), np.maximum.reduce(cands)
    return (fl(lo, f), fl(hi, f)) if rounded else (lo, hi)


def _prod(an: Analysis, x, w):
    """A contraction's product: exact under `once`, rounded under `sequential`."""
    return x * w if an.products_exact else fl(x * w, an.fmt)


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
                                   ki[s][1][None, :], f, rounded=not an.products_exact))
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
    values, inverse = np.unique(w_ideal[sig], return_inverse=True)  # few distinct weights
    snapped = [snap(float(v)) for v in values]
    if any(fr is None for fr in snapped):
        bad = values[[fr is None for fr in snapped].index(True)]
        an.claim(where, "intended weights", False, f"weight {bad!r} is no simple rational")
    wsnap[sig] = np.array([float(fr) for fr in snapped])[inverse.ravel()]
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
        elo = np.where(visible, fl(np.exp(dlo) * (1 - f.exp_slack), f), 0.0)
        ehi = np.where(visible, np.minimum(fl(np.exp(dhi) * (1 + f.exp_slack), f), 1.0), 0.0)
        elo = np.where(dlo == 0, 1.0, elo)  # exp(0) = 1 exactly
        ehi = np.where(dhi == 0, 1.0, ehi)
    zlo, zhi = _sum_keys(an, elo, ehi, visible)
    with np.errstate(divide="ignore", invalid="ignore"):  # 0 / 0 only at keys not visible
        wlo = np.where(visible, fl(elo / zhi * (1 - TINY), f), 0.0)
        whi = np.where(visible, fl(ehi / zlo * (1 + TINY), f), 0.0)
    dev = np.maximum(np.abs(whi - wsnap), np.abs(wsnap - wlo)) * visible
    leak_max = float(np.max(np.where(sig, 0.0, whi)))
    an.claim(where, "positional attention", True,
             f"max |w^ - w| on intended keys {np.max(np.where(sig, dev, 0)):.3g}, max leaked "
             f"weight {leak_max:.3g} (score intervals computed exactly)")
    return head_outputs(an, pre, h, vals, dh,
                        lambda v: _mix(an, v, wsnap, sig, dev, wlo, whi, visible))


def head_outputs(an, pre, h, vals, dh, mix):
    """Head h's output per value slot s < dh: `mix(vals[s])`, or None where the output
    projection never reads slot s (its rows of `{pre}/out/kernel` are zero)."""
    return [mix(vals[s]) if np.any(an.W[f"{pre}/out/kernel"][h, s]) else None
            for s in range(dh)]


def _sum_keys(an, elo, ehi, visible):
    """Interval of Z = sum over visible keys of e (per query), per accumulation."""
    f = an.fmt
    if an.acc == "once":
        n = visible.sum(1, keepdims=True)
        c = carrier_err(ehi.sum(1, keepdims=True), ehi.max(1, keepdims=True), n, f, TINY)
        if f.carrier_bits < 53:
            exact = (np.all(elo == ehi, axis=1, keepdims=True)
                     & carrier_exact([ehi[:, j:j + 1] for j in range(ehi.shape[1])],
                                     f.carrier_bits))
            c = np.where(exact, 0.0, c)
        zlo, zhi = fl(elo.sum(1, keepdims=True) - c, f), fl(ehi.sum(1, keepdims=True) + c, f)
        if f.carrier_bits < 53:
            z = _dominated_sum(elo, ehi, n, f)
            zlo, zhi = np.where(np.isnan(z), zlo, z), np.where(np.isnan(z), zhi, z)
        return zlo, zhi
    lo, hi = elo[:, :1], ehi[:, :1]
    for j in range(1, elo.shape[1]):
        a, b = lo + elo[:, j:j + 1], hi + ehi[:, j:j + 1]
        lo, hi = fl(a - TINY * a, f), fl(b + TINY * b, f)
    return lo, hi


def _dominated_sum(elo, ehi, n, f):
    """The computed Z (per query) when a float32 carrier sum of e's (all >= 0) provably
    returns the exact sum E of its exact positive terms (the e = 1 of the intended keys), else
    NaN. Lemma: let every subset sum of the exact terms be a carrier value (carrier_exact) and
    L (1 + (n + 1) cu) < h, with L the sum of the other terms' upper bounds and h = 2^(k - p - 1)
    (p carrier bits, 2^k <= the smallest exact term): half the carrier spacing just below any
    value >= 2^k. In any summation tree, a node holding exact terms computes exactly their sum
    e: its children compute their exact sums (induction) or a partial sum of other terms only
    (at most L (1 + (n + 1) cu) < h), so the rounded value is within h of the carrier value
    e and rounds to it. The leaked weights are then lost in the rounding, as the simulation
    loses them."""
    big = (elo == ehi) & (elo > 0)
    terms = np.where(big, ehi, 0.0)
    exact = carrier_exact([terms[:, j:j + 1] for j in range(terms.shape[1])], f.carrier_bits)
    emin = np.min(np.where(big, ehi, np.inf), axis=1, keepdims=True)
    _, ex = np.frexp(np.where(np.isfinite(emin), emin, 1.0))  # emin in [2^(ex-1), 2^ex)
    h = np.ldexp(1.0, ex - 1 - f.carrier_bits - 1)
    rest = np.where(big, 0.0, ehi).sum(1, keepdims=True) * (1 + (n + 1) * (f.carrier_unit
                                                                          + TINY))
    ok = big.any(1, keepdims=True) & exact & (rest < h)
    return np.where(ok, fl(terms.sum(1, keepdims=True), f), np.nan)


def _mix(an, v: Vals, wsnap, sig, dev, wlo, whi, visible) -> Vals:
    """ctx = sum_k w^_k v^_k against the intended sum_k w_k v_k (intended keys only).

    Arrays are queries x keys; the terms are summed over the keys in order."""
    t = v.lo.shape[0]
    keys = [j for j in range(t) if visible[:, j].any()]
    w = wsnap[:, keys]  # queries x keys
    vlo, vhi, voff = v.lo[keys][None, :], v.hi[keys][None, :], v.off[keys][None, :]
    vstep, vmag, verr = v.step[keys][None, :], v.mag[keys][None, :], v.err[keys][None, :]
    a, b = w * vlo, w * vhi
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    step = np.where(vstep == 0, 0.0, np.where(vstep > 0, dyadic_close(w * np.maximum(vstep, 0)),
                                               NONE))
    step = np.where(w == 0, 0.0, step)
    off = np.where(w == 0, 0.0, w * voff)
    col = visible[:, keys]
    e_pre = np.where(sig[:, keys], dev[:, keys] * vmag + whi[:, keys] * verr,
                     whi[:, keys] * (vmag + verr))
    e_pre = np.where(col, e_pre, 0.0)
    if an.products_exact:  # under once the products are not rounded at all
        err = e_pre
    else:  # w^ a power of two (a copy's weight 1): the product is exact
        pow2 = (wlo[:, keys] == whi[:, keys]) & (np.frexp(whi[:, keys])[0] == 0.5)
        err = np.where(pow2, e_pre, an.rounded(lo, hi, step, off, e_pre))
    for idx, j in enumerate(keys):
        values = _lattice_values(v, j)
        if values is not None:  # exact value, few ideal values: the products computed exactly
            vals = np.array(values)[None, :]  # queries x values
            exact = np.zeros(t)
            for wc in (wlo[:, j], whi[:, j]) if len(values) else ():
                diff = np.abs(_prod(an, wc[:, None], vals) - wsnap[:, j][:, None] * vals)
                exact = np.maximum(exact, diff.max(1))
            err[:, idx] = np.where(col[:, idx], np.minimum(err[:, idx], exact), 0.0)
    terms = [(lo[:, i], hi[:, i], step[:, i], off[:, i], err[:, i]) for i in range(len(keys))]
    lo, hi, step, off, err, _ = an.sum_terms(terms)
    err = np.minimum(err, _counting_err(an, v, wsnap, wlo, whi, visible))
    an.note_mag(np.maximum(np.abs(lo), np.abs(hi)) + err)
    return Vals(lo, hi, step, off, err)


def _counting_err(an, v: Vals, wsnap, wlo, whi, visible) -> np.ndarray:
    """Exact error of a SUM head that counts: every visible key's value is exactly 0 or one
    common c, every computed weight is the same known float for the keys that can hold c,
    so every nonzero product is the same float a = fl(w^ c) and the computed sum of m of
    them is a known float (fl(m a) under once when the carrier holds m a exactly; the
    sequence s_j = fl(s_(j-1) + a) under sequential). Its distance to the intended m w c is
    computed for every m. inf where the pattern does not hold."""
    f = an.fmt
    t = v.lo.shape[0]
    out = np.full(t, np.inf)
    exact = v.err == 0
    zero = exact & (v.step == 0) & (v.off == 0)
    always = exact & (v.step == 0) & (v.off != 0)
    two = exact & (v.step > 0) & (v.lo == 0) & (v.hi == v.step)
    if not np.all(zero | always | two) or not (two | always).any():
        return out
    cs = np.unique(np.concatenate([v.hi[two], v.off[always]]))
    if cs.size != 1:
        return out
    c = float(cs[0])
    for i in range(t):
        keys = np.flatnonzero(visible[i] & (two | always))
        if keys.size == 0:
            out[i] = 0.0
            continue
        wl, wh, ws = wlo[i, keys], whi[i, keys], wsnap[i, keys]
        if not (np.all(wl == wh) and np.all(wl == wl[0]) and np.all(ws == ws[0])):
            continue
        a = float(_prod(an, wl[0], c))
        b = float(ws[0] * c)
        m_min = int(np.sum(always[keys]))
        worst = 0.0
        s_ = 0.0
        for m in range(1, keys.size + 1):
            if an.acc == "once":
                if m * a >= 2.0 ** (f.carrier_bits - frac_bits(np.array(a)).item()):
                    worst = np.inf
                    break
                s_ = float(fl(m * a, f))
            else:
                s_ = float(fl(s_ + a, f))
            if m >= m_min:
                worst = max(worst, abs(s_ - m * b))
        out[i] = worst
    return out


def _lattice_values(v: Vals, j: int, limit: int = 64):
    """The ideal values of v at position j when it is computed exactly (error 0) and takes at
    most `limit` values (a constant, or a short lattice), else None."""
    if v.err[j] != 0:
        return None
    if v.step[j] == 0:
        return [float(v.off[j])]
    if v.step[j] < 0:
        return None
    s, off = float(v.step[j]), float(v.off[j])
    z0, z1 = math.ceil((v.lo[j] - off) / s - 1e-9), math.floor((v.hi[j] - off) / s + 1e-9)
    if z1 - z0 + 1 > limit:
        return None
    return [off + s * z for z in range(z0, z1 + 1)]


def _residual(an: Analysis, x: Vals, inner: Vals, kernel: str, bias: str) -> Vals:
    """x + (inner W + b) for every coordinate the sub-layer writes; the others pass exactly."""
    W, b = an.W[kernel], an.W[bias]
    ds = np.flatnonzero(W.any(0) | (b != 0))
    upd, _ = an.affine_cols(inner, W[:, ds], an.Wr[kernel][:, ds], b[ds], an.Wr[bias][ds])
    return add_updates(an, x, ds, upd)


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
        if not configs:
            an.claim(f"readout position {t}", "ideal answer", False,
                     f"the answer coordinate's ideal value is not pinned to integers "
                     f"(interval [{x.lo[t, rows[0]]:.3g}, {x.hi[t, rows[0]]:.3g}], error "
                     f"{x.err[t, rows[0]]:.3g})")
        for cfg in configs:
            ideal = cfg @ U[rows] + c
            order = np.argsort(ideal)
            want = int(order[-1])
            if ideal[order[-1]] - ideal[order[-2]] <= 0:
                an.claim(f"readout position {t}", "ideal argmax", False, "tie in the ideal logits")
            err = x.err[t, rows]
            for piece_lo, piece_hi in _readout_pieces(cfg - err, cfg + err):
                terms = [_mul_interval(np.array(plo), np.array(phi), Ur[r], Ur[r], f,
                                       rounded=not an.products_exact)
                         for r, plo, phi in zip(rows, piece_lo, piece_hi, strict=True)]
                lo, hi = _sum_interval(an, terms, U.shape[1])
                lo = fl(lo + cr - TINY * np.abs(lo + cr), f)
                hi = fl(hi + cr + TINY * np.abs(hi + cr), f)
                an.note_mag(np.abs(lo), np.abs(hi))
                others = np.delete(hi, want)
                gap = float(lo[want] - others.max())
                worst = min(worst, gap)
                if not gap > 0:
                    an.claim(f"readout position {t}", "argmax", False,
                             f"ideal answer value {cfg.tolist()}: computed logit of token {want} "
                             f">= {lo[want]:.6g} but another reaches {others.max():.6g} (readout "
                             f"value in [{piece_lo[0]:.6g}, {piece_hi[0]:.6g}])")
    an.claim("readout", "argmax", True, f"smallest computed logit margin {worst:.3g}")


READOUT_PIECES = 64  # sub-intervals of one readout coordinate's computed range


def _readout_pieces(lo: np.ndarray, hi: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """[lo, hi] cut into READOUT_PIECES sub-intervals when there is one readout coordinate.

    Each logit is computed from the same readout value x. Bounding every logit over the whole
    range of x separately charges the other token's logit at one end of the range and the
    answer's at the other: a loss of err (|U_answer| + |U_other|), where the true margin
    depends on err |U_answer - U_other| (both logits move with the same x). On a sub-interval
    the loss shrinks with its width, and the pieces together still cover every value x can
    take, so the claim holds for every x when it holds on every piece. Several coordinates
    (the one-hot readout) and unbounded errors keep the one interval.
    """
    if len(lo) != 1 or not np.isfinite(hi[0] - lo[0]) or not hi[0] > lo[0]:
        return [(lo, hi)]
    edges = np.linspace(lo[0], hi[0], READOUT_PIECES + 1)
    edges[0], edges[-1] = lo[0], hi[0]
    return [(edges[i:i + 1], edges[i + 1:i + 2]) for i in range(READOUT_PIECES)]


def _readout_configs(x: Vals, t: int, rows) -> list[np.ndarray]:
    """Ideal values of the readout coordinates: the lattice points of one coordinate, or, for
    several, the one-hot vectors (the constant-precision ADD readout's ideal state)."""
    if len(rows) == 1:
        r = rows[0]
        s, lo, hi, off = float(x.step[t, r]), x.lo[t, r], x.hi[t, r], x.off[t, r]
        if s == 0:
            return [np.array([off])]
        if s < 0:
            return []  # no lattice: the caller fails the claim
        z0, z1 = math.ceil((lo - off) / s - 1e-9), math.floor((hi - off) / s + 1e-9)
        return [np.array([off + s * z]) for z in range(z0, z1 + 1)]
    return [np.eye(len(rows))[j] for j in range(len(rows))]


def clip(an: Analysis, x: Vals) -> Vals:
    """Intersect ideal intervals with the construction's stated ideal ranges (`ideal_ranges`)."""
    for d, (lo, hi) in getattr(an, "ranges", {}).items():
        x.lo[:, d] = np.clip(x.lo[:, d], lo, hi)
        x.hi[:, d] = np.clip(x.hi[:, d], lo, hi)
    return x
