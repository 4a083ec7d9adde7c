"""The certificate's margin lemma for the one input-dependent attention head of column_add.

`quadratic_copy` is a `dynamic` head of certify.dynamic_heads: the carry's quadratic match
(`blocks.quadratic_match_head`), bounded on score differences against its margin min(lam, mu).
"""

from __future__ import annotations

import math

import numpy as np

from constructions.certify.engine import Analysis
from constructions.certify.layers import TINY, head_outputs
from constructions.certify.rounding import round_err
from constructions.certify.values import NONE, Vals, combine_steps, joined_with_zero


def quadratic_copy(an: Analysis, layer: int, h: int, x: Vals, vals, where: str):
    """The quadratic-match COPY of column_add layer 4 (`blocks.quadratic_match_head`).

    Lemma (blocks.py): with N2 = N^2 at the keys and T = N_q + 1, the score
    lam (2 T N_k - N2_k) + mu npm_k = lam T^2 - lam (N_k - T)^2 + mu npm_k is largest at the one
    marked key with N_k = T, by at least min(lam, mu) over every other key. lam and mu are read
    from the query biases. Per query position, the computed scores differ from the ideal ones
    by at most e_s (errors of the query slots there and of the key slots at every earlier
    position, of the products and of the sum); where 2 e_s < min(lam, mu) the intended key has
    the largest computed score, so its e = 1 exactly and every other key's weight is at most
    e^-(min(lam, mu) - 2 e_s). Elsewhere the output is only known to lie between the values.
    """
    f = an.fmt
    pre = f"layer_{layer}/attn"
    dh = an.c.config.effective_head_dim
    t = x.lo.shape[0]
    bq = an.W[f"{pre}/query/bias"][h]
    lam, mu = -float(bq[1]) / math.sqrt(dh), float(bq[2]) / math.sqrt(dh)
    margin = min(lam, mu)
    # Errors enter the *difference* between the intended key's score and another key's: the
    # query slots' errors e_q multiply the difference of the key slots (slot 0: N_w - N_k, so
    # e_q0 |dN|; slot 1: N2_w - N2_k <= |dN| 2 N_max), the key slots' errors are charged for
    # both keys, and the rounding of both scores (products, sum; the 1/sqrt(Dh) is a power of
    # two here). With ideal difference lam dN^2 (dN != 0) or mu (dN = 0, unmarked key):
    #   spare = min(min_dN (lam dN^2 - b |dN|), mu - e_q2 / 2) - key errors - 2 rounding.
    scale = 1.0 / math.sqrt(dh)
    qs = [an.affine(x, f"{pre}/query/kernel", (h, s), f"{pre}/query/bias", (h, s))
          for s in range(dh)]
    ks = [an.affine(x, f"{pre}/key/kernel", (h, s), f"{pre}/key/bias", (h, s))
          for s in range(dh)]
    nmax = float(np.max(ks[0].hi))
    b_lin = scale * (qs[0].err + 2 * nmax * qs[1].err)
    key_err = np.zeros(t)
    prods = []
    for q, k in zip(qs, ks, strict=True):
        km, ke = np.maximum.accumulate(k.mag), np.maximum.accumulate(k.err)
        key_err = key_err + scale * (q.cmag * 2 * ke)
        prods.append(q.cmag * (km + ke))
    rnd = 0.0 if an.products_exact else sum(round_err(pm, f) * (pm > 0) for pm in prods)
    total = np.sum(prods, axis=0)
    if an.acc == "once":
        rnd = rnd + round_err(total, f)
    else:
        rnd = rnd + (len(prods) - 1) * round_err(total, f)
    rnd = scale * rnd
    dn = np.arange(1, int(nmax) + 2)[None, :]
    quad = np.min(lam * dn ** 2 - b_lin[:, None] * dn, axis=1)
    spare = np.minimum(quad, mu - scale * qs[2].err) - key_err - 2 * rnd
    es = (margin - spare) / 2  # reported as the equivalent score error
    an.note_mag(total * scale)
    clean = spare > 0
    with np.errstate(over="ignore"):
        leak = np.where(clean, np.exp(-np.where(clean, spare, 0) * (1 - f.u)) * (1 + TINY), 1.0)
    # Z = 1 (the intended key) + the leaked e of the other keys <= t leak: when that is below
    # u, every rounding of a partial sum that contains the 1 returns 1, so Z = 1 and the
    # intended weight is exactly 1; otherwise Z <= (1 + t leak)(1 + u)^t.
    ksum = np.arange(1, t + 1) * leak
    zhi = np.where(ksum < f.u, 1.0, (1 + ksum) * (1 + f.u) ** np.arange(1, t + 1))
    zhi = np.where(clean, zhi, np.inf)
    wdev = np.where(clean, np.where(zhi == 1.0, 0.0, 1 - 1 / zhi + f.u), 1.0)
    if clean.any():
        an.claim(where, "quadratic match", True,
                 f"margin min(lam, mu) = {margin:.3g}, score error <= {es[clean].max():.3g}, "
                 f"leaked weight <= {leak[clean].max():.3g} per key"
                 + ("" if clean.all() else f"; {int((~clean).sum())} positions not clean "
                    "(their output is only bounded; the readout decides)"))

    def mix(v):
        # the intended key can be any earlier position: the hull of their ideal values
        lo, hi = np.minimum.accumulate(v.lo), np.maximum.accumulate(v.hi)
        vmag, verr = np.maximum.accumulate(v.mag), np.maximum.accumulate(v.err)
        leaked = leak * np.cumsum(v.cmag)
        cand = np.where(v.step < 0, NONE, joined_with_zero(np.where(v.step == 0, np.abs(v.off) + (
            v.off == 0), v.step), v.off))
        common = cand[0]
        for c_ in cand[1:]:
            common = float(combine_steps(np.array([common]), np.array([c_]))[0])
        step = np.full(t, common)
        e_pre = wdev * vmag + verr + leaked
        err = an.rounded(lo, hi, step, np.zeros(t), e_pre)
        if an.acc == "sequential":  # every partial sum rounded: one generic rounding each
            err = err + np.arange(1, t + 1) * round_err(vmag + e_pre, f)
        err = np.where(clean, err, (hi - lo) + verr + leaked)
        step = np.where(clean, step, NONE)
        an.note_mag(np.maximum(np.abs(lo), np.abs(hi)) + err)
        return Vals(lo, hi, step, np.zeros(t), err)

    return head_outputs(an, pre, h, vals, dh, mix)
