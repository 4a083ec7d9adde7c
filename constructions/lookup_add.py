"""ADD_p(n) and IterADD_p(n, k) with width independent of n AND k: 9 layers (Theorem 5.2).

`column_add` takes floor(S / B) of a column sum by O(k) clean MLP steps and the answer digits by
O(p k) more, and gives each of the L = ceil(log_p k) digits of a column its own head. Here every
floor is an attention *lookup* (a quadratic match against a table of integers written on
positions), and a column is summed by one head whose values carry per-position weights, so
d_model, d_ff, the heads and the layers depend on p only.

Layout and arithmetic as in `column_add` (read its docstring first): operands padded to n digits,
E = k (n + 1) is the position of '=', A(j) = E - 1 - j holds the last operand's digit of
significance j (the digit's *anchor*), the answer digit of significance i is predicted at
Q(i) = E + W - 1 - i, W = n + L. Columns of L digits in base B = p^L >= k, column J's holder is
A(L J) ('=' holds column 0's data as in `column_add`); S_J = B q_J + r_J, u_J = r_J + q_{J-1},
the carry bit f of the generate / propagate chain on u, and the answer column T_J = u_J + f_{J-1}
< 2B.

Floor lookups (`floor_lookup_head`). Positions t = 0 .. K-1 carry the table entries lk = t and
lk2 = t^2 (0 elsewhere, so every other position acts as t = 0, whose value is 0). A query with an
integer X >= 0 and a divisor D (a table entry at the query) scores key t with

    lam0 (2 t (X - (D - 1) / 2) - D t^2) = lam0 D (c^2 - (t - c)^2),  c = (X - (D - 1) / 2) / D,

bilinear in (X, D, 1) and (lk, lk2). With X = D t* + rho, 0 <= rho < D, |t* - c| <= (D - 1) / 2D,
so t* = floor(X / D) wins by lam0 D (1 - 2 |t* - c|) >= lam0 over every other t, and the
head returns t*. Off the queries D = 1 and X = 0, so t = 0 wins and the output is 0.
Precision: the competing scores are about lam0 X^2 / D; rounding them must stay well below the
margin lam0, so a lookup needs about log2(3 X^2 / D) + 2 mantissa bits.

Keeping X^2 / D small. floor(S_J / B) directly has X^2 / D up to k^2 B (< k^3 p): 34 bits at p = 10,
k = 1000. Instead each digit anchor looks up fl_j = floor(s_j / D_j), D_j = p^(L - m + 1) for the
digit m = j mod L of its column (s_j = the sum of the k digits of significance j), so that
S_J = p B F_J + P_J with F_J = sum_m fl_(LJ+m) and P_J = sum_m (s_m mod D_m) p^m < min(k, L p) B;
then h_J = floor(P_J / B) by one more lookup, q_J = p F_J + h_J and r_J = P_J - B h_J. The answer
digit m of T_J mod B is floor(T / p^m) - p floor(T / p^(m+1)) (two lookups; T itself for m = 0).
The largest X^2 / D is R = max(k^2 (p-1)^2 / p^2, min(k, L p)^2 B, 4 B^2 / p) (`lookup_ratio`;
R <= 4 p k^2 + L^2 p^3 k, tested for every base 2..36 and k = 2..1000): about 2 log2 k + log2 p
bits for fixed p. The table needs K = max(k, floor((2B - 1) / p) + 1) <= 2k positions, all before
'=' (E = k (n + 1) >= 2k).

Layers (residual coordinates named in `_residual`; `Construction.explain` prints them):
  0 attn  s_j at each digit anchor A(j): k x the mean of the k digits of significance j
  0 mlp   dw = digit x w at every operand digit, w = p^m k len_J (m = j mod L, len_J the digits
          of column J): p - 1 units relu(w - big lt_d), lt_d = [digit < d] from the embedding
  1 attn  S_J at holders: mean of dw over column J's k len_J digits; fl_j = floor(s_j / D_j)
  2 attn  F_J = L x mean of fl over column J's L anchors (a partial top column is padded with
          positions whose fl is 0)
  3 attn  h_J = floor(P_J / B), P_J = S_J - p B F_J
  4 attn  COPY r = S - p B F - B h of the column above (holder J + 1; BOS above the top)
  4 mlp   u = r_next + p F + h; g = [u >= B]; npm = [not u = B - 1] as in `column_add`
  5 attn  N = number of non-propagating holders so far;  mlp y = npm (2N - 1)
  6 attn  N2 = N^2; COPY (u, N) of the holder of column floor(i / L) - 1 to Q(i)
  7 attn  quadratic match N_k = N_q + 1 -> c = f, the carry bit into the column
  8 attn  answer = floor(T / p^m) - p floor(T / p^(m+1)), T = u_q + c (two lookups; for m = 0
          the first is replaced by T itself, gated in the MLP:  mlp answer += [m = 0] T)
Pointers between holders match angles of the column index (period ceil(n / L) + 3), not of the
position, so no angle match needs the bits of the sequence length (the SUM heads that count
N still see every position, as in `column_add`).

Width (`widths`): d_model = 44 + p, d_ff = max(6, p - 1), 2 heads of dimension 4, 9 layers: the
same for every n and k (tested: k = 2, 17, 1000 at n = 8, n = 8 against 128; every base 2..36).
Precision: the lookups need about log2(3 R) + 2 mantissa bits (R above), the column-angle
matches about 2 log2(n / L) + 6, the counts N about 2 log2(n) + 8 as in `column_add`, and the
column sum S_J (up to k (B - 1)) must come out of a mean of k len_J values within 1/4: about
log2(k B) + 4 bits. These are estimates; the precision frontier (docs/frontier.md) has measured
numbers, against `column_add`'s on the same input sets.
"""

from __future__ import annotations

import math

from arith_precision import model as model_lib
from arith_precision import tasks
from constructions.craft import blocks, carry
from constructions.craft.builder import Head, ParamBuilder
from constructions.craft.construction import Construction
from constructions.craft.residual import Residual

NUM_LAYERS = 9
HEAD_DIM = 4
NUM_HEADS = 2
LOGIT_SCALE = 8.0
_FIXED = 45  # coordinates that do not depend on p (d_model = 45 + p - 1 = 44 + p)


def widths(p: int) -> dict[str, int]:
    """{'d_model', 'd_ff', 'heads', 'layers'} for token base p: exact (the builder asserts it),
    the same for every n and k. d_model = 44 + p (p - 1 of them the flags [digit < d]),
    d_ff = max(6, p - 1), 2 heads, 9 layers."""
    return {"d_model": _FIXED + p - 1, "d_ff": max(6, p - 1), "heads": NUM_HEADS,
            "layers": NUM_LAYERS}


def lookup_ratio(p: int, k: int) -> int:
    """R: the largest X^2 / D over the lookups (module doc); they need about log2(3 R) + 2
    mantissa bits."""
    group = blocks.column_group(k, p)
    base = p ** group
    fl = (k * (p - 1)) ** 2 // p ** 2
    h = min(k, group * p) ** 2 * base
    answer = 4 * base * base // p
    return max(fl, h, answer, 1)


def _residual(p: int) -> Residual:
    r = Residual()
    r.add("digit", "embed", "value of a digit token (0 for specials)")
    r.add("bos", "embed", "1 on BOS: the idle key of the heads")
    for d in range(1, p):
        r.add(f"lt{d}", "embed", f"1 unless the token is a digit >= {d} (dw's off flag)")
    for axis in ("cos", "sin"):
        r.add(f"col_{axis}", "table", "angle of the significance j on operand digits")
    r.add("anc", "table", "1 on digit anchors A(j)")
    for axis in ("cos", "sin"):
        r.add(f"cj_{axis}", "table", "angle of the column J of an operand digit (S keys)")
    for axis in ("cos", "sin"):
        r.add(f"ca_{axis}", "table", "angle of the column J on digit anchors and pads (F keys)")
    for axis in ("cos", "sin"):
        r.add(f"pj_{axis}", "table", "at holder J: angle of J (pointer of the S and F heads)")
    r.add("hold", "table", "1 on the holders A(L J) (not '=')")
    for axis in ("cos", "sin"):
        r.add(f"hc_{axis}", "table", "angle of J + 1 at holder J ('=': J = -1; BOS: top + 1)")
    carry.declare_tables(r, prev="at holder J and '=': pointer to holder J + 1 (or BOS)",
                         fetch="at Q(i): pointer to the holder of column i // L - 1",
                         holder="1 on the holders and '='")
    r.add("w", "table", "p^m k len_J on operand digits (the weight of dw)")
    r.add("lk", "table", "t at positions t < K: the lookup table's keys and values")
    r.add("lk2", "table", "t^2 at positions t < K")
    for name, what in (("Dfl", "D_j = p^(L - m + 1) at A(j)"), ("Dh", "B at holders"),
                       ("Dlo", "p^m at Q(i), m = i mod L (2B for m = 0)"),
                       ("Dhi", "p^(m + 1) at Q(i)")):
        r.add(name, "table", f"divisor of a lookup: {what}; 1 elsewhere")
    r.add("m0", "table", "1 on Q(i) with i mod L = 0")
    r.add("s", "layer_0/attn", "s_j = sum of the k digits of significance j, at A(j)")
    r.add("dw", "layer_0/mlp", "digit x w on operand digits")
    r.add("S", "layer_1/attn", "column sum S_J at holders")
    r.add("fl", "layer_1/attn", "floor(s_j / D_j) at A(j)")
    r.add("F", "layer_2/attn", "F_J = sum of fl over column J, at holders")
    r.add("h", "layer_3/attn", "floor(P_J / B), P_J = S_J - p B F_J, at holders")
    r.add("r_next", "layer_4/attn", "r of the column above (r_0 at '=')")
    carry.declare(r, 4, u_meaning="u of column i")
    r.add("answer", "layer_8/attn+layer_8/mlp", "the answer digit predicted at Q(i)")
    return r


def floor_lookup_head(b: ParamBuilder, layer: int, x: dict[str, float], divisor: str,
                      lam0: float, dest: str, dest_weight: float = 1.0) -> Head:
    """dest += dest_weight floor(X / D) by the quadratic match of the module doc (X = sum_i w_i
    x_i, D = x_divisor, both at the query; keys lk, lk2)."""
    h = b.new_head(layer)
    h.score_term({**{name: 2 * lam0 * w for name, w in x.items()}, divisor: -lam0}, lam0,
                 {"lk": 1.0})
    h.score_term({divisor: -lam0}, 0.0, {"lk2": 1.0})
    h.value({"lk": 1.0}, dest, dest_weight)
    return h


def build_lookup_add(spec: tasks.TaskSpec) -> Construction:
    """The ADD / IterADD construction of width independent of n and k (module doc)."""
    blocks.check_spec(spec, ("add", "iter_add"))
    p, n, k = spec.token_base, spec.operand_tokens, spec.num_operands
    group = blocks.column_group(k, p)
    base = p ** group
    width = spec.answer_tokens
    assert width == n + group, (spec, width)
    num_cols = -(-n // group)
    residual = _residual(p)
    w = widths(p)
    assert residual.size == w["d_model"], (residual.size, w)
    max_len = spec.sequence_length
    config = model_lib.TransformerConfig(
        vocab_size=spec.vocab_size, max_len=max_len, num_layers=NUM_LAYERS,
        d_model=residual.size, num_heads=NUM_HEADS, head_dim=HEAD_DIM, d_ff=w["d_ff"],
        activation="relu", norm="none", pos="table", tied_embedding=False, use_bias=True)
    b = ParamBuilder(config, residual)

    # ---- embeddings ---------------------------------------------------------------------------
    for tok in range(spec.vocab_size):
        for d in range(1, p):
            if not (tok < p and tok >= d):
                b.embed(tok, f"lt{d}", 1.0)
    for d in range(p):
        b.embed(d, "digit", d)
    b.embed(spec.bos_id, "bos", 1.0)

    # ---- positions ----------------------------------------------------------------------------
    eq = k * (n + 1)
    anchor = {j: eq - 1 - j for j in range(n)}
    holder = {J: anchor[group * J] for J in range(num_cols)}
    query = {i: eq + width - 1 - i for i in range(width)}
    col_len = {J: min(group, n - group * J) for J in range(num_cols)}
    col_period = n + 1
    cper = num_cols + 3  # column indices 0 .. num_cols + 1 (hc: J + 1, BOS: num_cols + 1)
    for r_ in range(k):
        for j in range(n):
            pos = 1 + r_ * (n + 1) + (n - 1 - j)
            J, m = divmod(j, group)
            blocks.write_angle(b, pos, "col", j, col_period)
            blocks.write_angle(b, pos, "cj", J, cper)
            b.table(pos, "w", float(p ** m * k * col_len[J]))
    for j in range(n):
        J, m = divmod(j, group)
        b.table(anchor[j], "anc", 1.0)
        blocks.write_angle(b, anchor[j], "ca", J, cper)
        b.table(anchor[j], "Dfl", float(p ** (group - m + 1)))
    top = num_cols - 1
    # Pads of a partial top column: positions 1 .. L - len (operand 0's first digits; not
    # anchors, so their fl is 0), that F is L x a mean over exactly L keys.
    for extra in range(group - col_len[top]):
        blocks.write_angle(b, 1 + extra, "ca", top, cper)
    for J in range(num_cols):
        blocks.write_angle(b, holder[J], "pj", J, cper)
        b.table(holder[J], "hold", 1.0)
        b.table(holder[J], "Dh", float(base))
    holder[-1] = eq
    for J in range(-1, num_cols):
        blocks.write_angle(b, holder[J], "hc", J + 1, cper)
        blocks.write_angle(b, holder[J], "prev", J + 2 if J + 1 < num_cols else num_cols + 1,
                           cper)
        b.table(holder[J], "holder", 1.0)
    blocks.write_angle(b, 0, "hc", num_cols + 1, cper)  # BOS: "the column above the top"
    b.table(eq, "eq", 1.0)
    for i in range(width):
        m = i % group
        blocks.write_angle(b, query[i], "fetch", i // group, cper)  # hc of holder[i//L - 1]
        b.table(query[i], "Dlo", float(p ** m if m else 2 * base))
        b.table(query[i], "Dhi", float(p ** (m + 1)))
        if m == 0:
            b.table(query[i], "m0", 1.0)
    for name in ("Dfl", "Dh", "Dlo", "Dhi"):  # D = 1 off the queries: the lookup returns 0
        for t in range(max_len):
            if b.tree["pos_embedding"][t, b.idx(name)] == 0:
                b.table(t, name, 1.0)
    num_keys = max(k, (2 * base - 1) // p + 1)
    assert num_keys <= eq, (num_keys, eq)
    for t in range(num_keys):
        b.table(t, "lk", float(t))
        b.table(t, "lk2", float(t * t))
    total = max_len + 1.0
    blocks.write_sink(b, "sink", total)
    b.table(eq, "npm", 1.0)
    b.table(eq + 1, "npm", 1.0)  # sentinel "column -1"
    for J in range(num_cols):
        b.table(holder[J], "npm", 1.0)

    # Lookup sharpness: margin lam0 must beat leakage to max_len keys and the rounding of
    # scores (a fraction of lam0 where the format has the bits): 2 (GAP + ln max_len).
    lam0 = float(2 ** math.ceil(math.log2(2 * (blocks.GAP + math.log(max_len)))))
    big_w = float(2 ** math.ceil(math.log2(p ** (group - 1) * k * group + 1)))
    big = float(2 ** math.ceil(math.log2(max(2 * max_len + 4, 8 * base + 4))))

    # ---- layer 0: s_j at anchors; dw = digit x w on operand digits -----------------------------
    blocks.match_head(b, 0, "col", "col", col_period, [({"digit": float(k)}, "s")],
                      idle=("anc", "bos"))
    for d in range(1, p):  # sum_d [digit >= d] w = digit x w
        b.relu_unit(0, {"w": 1.0, f"lt{d}": -big_w}, 0.0, {"dw": 1.0})

    # ---- layer 1: S_J = mean of dw over column J; fl_j = floor(s_j / D_j) ----------------------
    blocks.match_head(b, 1, "pj", "cj", cper, [({"dw": 1.0}, "S")], idle=("hold", "bos"))
    floor_lookup_head(b, 1, {"s": 1.0}, "Dfl", lam0, "fl")

    # ---- layer 2: F_J = sum of fl over the L anchors (and pads) of column J ---------------------
    blocks.match_head(b, 2, "pj", "ca", cper, [({"fl": float(group)}, "F")],
                      idle=("hold", "bos"))

    # ---- layer 3: h_J = floor(P_J / B) ---------------------------------------------------------
    floor_lookup_head(b, 3, {"S": 1.0, "F": -float(p * base)}, "Dh", lam0, "h")

    # ---- layer 4: u = r of the column above + q -------------------------------------------------
    r_value = {"S": 1.0, "F": -float(p * base), "h": -float(base)}
    blocks.match_head(b, 4, "prev", "hc", cper, [(r_value, "r_next")], idle=("holder", "bos"))
    u = {"r_next": 1.0, "F": float(p), "h": 1.0}

    # ---- layers 4-7: the carry chain (`craft.carry`, as in `column_add`) -----------------------
    carry.write(b, 4, u, base=base, total=total, big=big, fetch_key="hc", fetch_period=cper)

    # ---- layer 8: answer digit m of T = u_q + c ------------------------------------------------
    total_digit = {"u_q": 1.0, "c": 1.0}
    floor_lookup_head(b, 8, total_digit, "Dlo", lam0, "answer")
    floor_lookup_head(b, 8, total_digit, "Dhi", lam0, "answer", -float(p))
    blocks.gated_identity(b, 8, total_digit, "m0", big, {"answer": 1.0})

    blocks.digit_readout(b, spec, "answer", LOGIT_SCALE)
    assert max(b.units_used()) <= w["d_ff"], (b.units_used(), w)
    notes = (f"layers={NUM_LAYERS}; digits per column L={group} (base {base}); "
             f"d_model={residual.size}, d_ff={w['d_ff']}, heads={NUM_HEADS}x{HEAD_DIM}: "
             f"independent of n and k; lookup ratio R={lookup_ratio(p, k)}; "
             f"MLP units used per layer {b.units_used()}")
    return Construction(spec=spec, config=config, params=b.params(), residual=residual,
                        notes=notes)
