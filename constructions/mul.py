"""MUL_p(n, l) at logarithmic precision: 7 layers, width O(n^2) (Theorem 5.3 made concrete).

Layout (one digit per token; under T_c read "digit" as "token", a base-p^c digit, with n and l
divided by c: see blocks.check_spec): BOS a * b = s_{l-1} ... s_0 EOS, operands padded to n
digits, the answer is the l least significant digits of a b, most significant first;
E = 2n + 2 is the position of '=' and the answer digit of significance i is predicted at
Q(i) = E + l - 1 - i. Every query computes the whole product in its own residual stream (so
the construction needs no causal bookkeeping), then reads out its own digit.

Arithmetic. Column sums S_j = sum_{u+v=j} a_u b_v (j < L C). Columns are grouped L digits at a
time into base B = p^L with B >= n (p - 1), so that every carry is < B; with S_J = sum_m p^m
S_{LJ+m} = B q_J + r_J, the carry is c_{J+1} = q_J + f_J with one bit f_J = [u_J + f_{J-1} >= B],
u_J = r_J + q_{J-1} (f_0 = 0), as for IterADD. The bits follow the carry-lookahead rule: f_J = 1
iff some J' <= J generates (u_J' >= B) and every column in (J', J] propagates (u = B - 1); at most
one J' qualifies, so f_J = sum_J' [g_J' + sum_{J'' in (J', J]} pr_J'' >= J - J' + 1] is one layer
of O(C^2) threshold units. The answer digit i = L J + m is digit m of (u_J + f_{J-1}) mod B.

Layers:
  0 attn  2n heads; head h copies digit h (fixed position, pointer in the query bias): a_u, b_v
  0 mlp   t_{u,m} = [a_u >= m] for m = 1..p-1 (clean steps)
  1 mlp   S_j = sum_{u+v=j} sum_m relu(b_v + (p-1) t_{u,m} - (p-1)) = sum a_u b_v: exact products
  2 mlp   h_J = floor(S_J / (K_J B)) (clean steps)            } q_J = floor(S_J / B)
  3 mlp   e_J = floor((S_J - K_J B h_J) / B) (clean steps)   }     = K_J h_J + e_J
  4 mlp   g_J = [u_J >= B], pr_J = [u_J = B - 1] with u_J = S_J - B q_J + q_{J-1} (linear)
  5 mlp   T = u_J + f_{J-1} for the query's own column J (gated by the table's column flag)
  6 mlp   answer = digit (i mod L) of T mod B (lookups gated by the table's digit flag)

Why floor(S_J / B) takes two layers (K_J = floor(sqrt(max q_J)) + 1). One layer of steps
[S_J >= s B], s = 1..max q_J, is exact in real arithmetic, but each step's two units have
pre-activations ~4 S_J that cancel only in the fc2 sum: the sum of their magnitudes is ~4 q_J S_J,
which at base 10, n = 16 (S_J ~ 1.4e5, q_J ~ 143) passes 2^24, and float32's blocked reductions
then round the partial sums (measured: 20 of 625 inputs wrong, batch-shape dependent). Splitting
the quotient into a coarse digit h_J (~sqrt(q) steps on S_J) and a fine one e_J (~sqrt(q) steps
on the remainder, which is < K_J B) brings that to ~sqrt(q) S_J, i.e. from ~S^2 / B to
~S^1.5 / sqrt(B): about 6 bits less at n = 16, base 10.

Width: d_model = 4 + 2n + n(p-1) + 6C + L + 2 with C = ceil(l / L) columns: O(n p); d_ff =
max(n^2 (p-1) products, O(C sqrt(n^2 p)) quotient steps, O(B) lookups): O(n^2 p) for fixed p, so
d_model + d_ff <= c n^2 (tested: d_model <= 30 n^2, d_ff <= 12 p n^2).
Precision: exact integer arithmetic on values up to about n^2 p^2 (log precision) and one angle
match per gather head (about 2 log2(sequence length) + 6 mantissa bits).
"""

from __future__ import annotations

import math

from arith_precision import model as model_lib
from arith_precision import tasks
from constructions import blocks
from constructions.builder import ParamBuilder
from constructions.construction import Construction
from constructions.residual import Residual

NUM_LAYERS = 7
HEAD_DIM = 4
LOGIT_SCALE = 8.0


def _digit(t: int, m: int, p: int, base: int) -> int:
    return ((t % base) // p ** m) % p


def _pairs(j: int, n: int) -> list[tuple[int, int]]:
    return [(u, j - u) for u in range(n) if 0 <= j - u < n]


def build_mul(spec: tasks.TaskSpec) -> Construction:
    blocks.check_spec(spec, ("mul",))
    # Token level: p = p^c, n = operand tokens, l = answer tokens (p, n, l when chunk = 1).
    p, n, l = spec.token_base, spec.operand_tokens, spec.answer_tokens
    group = 1
    while p ** group < n * (p - 1):
        group += 1
    base = p ** group
    ncol = -(-l // group)
    ndig = group * ncol  # column sums S_0 .. S_{ndig-1} (zero beyond 2n - 2)
    max_s = [(p - 1) ** 2 * len(_pairs(j, n)) for j in range(ndig)]
    max_col = [sum(p ** m * max_s[group * J + m] for m in range(group)) for J in range(ncol)]
    q_steps = [mx // base for mx in max_col]  # largest q_J = floor(S_J / B)
    coarse = [math.isqrt(q) + 1 for q in q_steps]  # K_J = floor(sqrt(max q_J)) + 1
    h_steps = [mx // (k * base) for mx, k in zip(max_col, coarse, strict=True)]
    e_steps = [min(k - 1, q) for k, q in zip(coarse, q_steps, strict=True)]

    r = Residual()
    r.add("digit", "embed", "value of a digit token (0 for specials)")
    r.add("bos", "embed", "1 on BOS")
    for axis in ("cos", "sin"):
        r.add(f"pos_{axis}", "table", "angle of the position (key side of the gather heads)")
    for u in range(n):
        r.add(f"a{u}", "layer_0/attn", f"digit {u} of a (significance {u})")
    for v in range(n):
        r.add(f"b{v}", "layer_0/attn", f"digit {v} of b")
    for u in range(n):
        for m in range(1, p):
            r.add(f"t{u}_{m}", "layer_0/mlp", f"[a{u} >= {m}]")
    for j in range(ndig):
        r.add(f"S{j}", "layer_1/mlp", f"column sum sum_(u+v={j}) a_u b_v")
    for J in range(ncol):
        r.add(f"h{J}", "layer_2/mlp", f"floor(S_J / (K B)) of column {J}, K = {coarse[J]}")
    for J in range(ncol):
        r.add(f"e{J}", "layer_3/mlp", f"floor((S_J mod K B) / B) of column {J}")
    for J in range(ncol):
        r.add(f"g{J}", "layer_4/mlp", f"column {J} generates: u_J >= B")
        r.add(f"pr{J}", "layer_4/mlp", f"column {J} propagates: u_J = B - 1")
    for J in range(ncol):
        r.add(f"col{J}", "table", f"1 on queries whose digit lies in column {J}")
    for m in range(group):
        r.add(f"qm{m}", "table", f"1 on queries Q(i) with i mod L = {m}")
    r.add("T", "layer_5/mlp", "u_J + f_{J-1} of the query's column")
    r.add("answer", "layer_6/mlp", "the answer digit predicted at Q(i)")

    # Unit counts (exact), so d_ff is as small as the construction allows.
    prod_units = sum(len(_pairs(j, n)) for j in range(ndig)) * (p - 1)
    lookahead_units = sum(1 + 2 * max(0, J - 1) for J in range(ncol))
    digit_units = sum(2 * sum(1 for t in range(1, 2 * base)
                              if _digit(t, m, p, base) != _digit(t - 1, m, p, base))
                      for m in range(group))
    d_ff = max(2 * n * (p - 1), prod_units, 2 * sum(h_steps), 2 * sum(e_steps), 6 * ncol,
               lookahead_units,
               digit_units, 1)
    max_len = spec.sequence_length
    config = model_lib.TransformerConfig(
        vocab_size=spec.vocab_size, max_len=max_len, num_layers=NUM_LAYERS, d_model=r.size,
        num_heads=2 * n, head_dim=HEAD_DIM, d_ff=d_ff, activation="relu", norm="none",
        pos="table", tied_embedding=False, use_bias=True)
    b = ParamBuilder(config, r)
    for d in range(p):
        b.embed(d, "digit", d)
    b.embed(spec.bos_id, "bos", 1.0)
    for t in range(max_len):
        blocks.write_angle(b, t, "pos", t, max_len)
    eq = 2 * n + 2
    for i in range(l):
        b.table(eq + l - 1 - i, f"col{i // group}", 1.0)
        b.table(eq + l - 1 - i, f"qm{i % group}", 1.0)
    big = float(2 ** math.ceil(math.log2(8 * base + 4 * ncol + 8)))

    # ---- layer 0: gather every digit; thresholds of a ------------------------------------------
    lam = blocks.angle_sharpness(max_len)
    for h in range(2 * n):
        position = 1 + (n - 1 - h) if h < n else n + 2 + (n - 1 - (h - n))
        c, s = blocks.angle(position, max_len)
        head = b.new_head(0)
        head.score_term({}, lam * c, {"pos_cos": 1.0})
        head.score_term({}, lam * s, {"pos_sin": 1.0})
        head.value({"digit": 1.0}, f"a{h}" if h < n else f"b{h - n}")
    for u in range(n):
        for m in range(1, p):
            blocks.step(b, 0, {f"a{u}": 1.0}, m, {f"t{u}_{m}": 1.0})

    # ---- layer 1: exact products summed into column sums ----------------------------------------
    for j in range(ndig):
        for u, v in _pairs(j, n):
            for m in range(1, p):
                b.relu_unit(1, {f"b{v}": 1.0, f"t{u}_{m}": float(p - 1)}, -float(p - 1),
                            {f"S{j}": 1.0})

    def col_sum(J: int) -> dict[str, float]:
        return {f"S{group * J + m}": float(p ** m) for m in range(group)}

    # ---- layers 2-3: q_J = floor(S_J / B) = K_J h_J + e_J (coarse, then fine) -----------------
    for J in range(ncol):
        for s in range(1, h_steps[J] + 1):
            blocks.step(b, 2, col_sum(J), s * coarse[J] * base, {f"h{J}": 1.0})
        rest = {**col_sum(J), f"h{J}": -float(coarse[J] * base)}  # S_J mod K_J B, in [0, K_J B)
        for s in range(1, e_steps[J] + 1):
            blocks.step(b, 3, rest, s * base, {f"e{J}": 1.0})

    def q_of(J: int, w: float) -> dict[str, float]:  # w q_J = w (K_J h_J + e_J)
        return {f"h{J}": w * coarse[J], f"e{J}": w}

    def u_of(J: int) -> dict[str, float]:  # u_J = S_J - B q_J + q_{J-1}
        u = {**col_sum(J), **q_of(J, -float(base))}
        if J > 0:
            u.update(q_of(J - 1, 1.0))
        return u

    # ---- layer 4: generate / propagate ----------------------------------------------------------
    for J in range(1, ncol):
        blocks.step(b, 4, u_of(J), base, {f"g{J}": 1.0})
        blocks.equals(b, 4, u_of(J), base - 1, {f"pr{J}": 1.0})

    # ---- layer 5: T = u_J + f_{J-1} for the query's column (carry lookahead) --------------------
    for J in range(ncol):
        blocks.gated_identity(b, 5, u_of(J), f"col{J}", big, {"T": 1.0})
        for src in range(1, J):  # f_{J-1} = 1 iff src generates and (src, J-1] all propagate
            terms = {f"g{src}": 1.0, **{f"pr{x}": 1.0 for x in range(src + 1, J)}}
            blocks.step(b, 5, terms, J - src, {"T": 1.0}, gate=f"col{J}", big=big)

    # ---- layer 6: the query's digit of T mod B --------------------------------------------------
    for m in range(group):
        blocks.lookup(b, 6, {"T": 1.0}, {t: _digit(t, m, p, base) for t in range(2 * base)},
                      "answer", gate=f"qm{m}", big=big)

    blocks.digit_readout(b, spec, "answer", LOGIT_SCALE)

    notes = (f"layers={NUM_LAYERS}; columns of L={group} digits (base {base}), C={ncol}; "
             f"d_model={r.size}; heads={2 * n}x{HEAD_DIM}; d_ff={d_ff}; "
             f"MLP units used per layer {b.units_used()}")
    return Construction(spec=spec, config=config, params=b.params(), residual=r, notes=notes)
