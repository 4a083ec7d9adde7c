"""ADD_p(n) and IterADD_p(n, k) at logarithmic precision: 5 layers, width independent of n.

Layout (one digit per token; under T_c read "digit" as "token", a base-p^c digit, and n as
ceil(n / c): see blocks.check_spec): BOS a_1 + ... + a_k = s_{W-1} ... s_0, operands padded to n
digits, the answer to W = n + ceil(log_p k) digits, most significant first. E = k (n + 1) is the
position of '='; the digit of significance j of the LAST operand sits at E - 1 - j, and the answer
digit of significance i is predicted at Q(i) = E + W - 1 - i.

Columns. Digits are grouped L at a time into base-B columns, B = p^L, with L = 1 when k <= p and
L = ceil(log_p k) otherwise, so that k <= B (L + 1 digits would be the safe choice; L suffices).
Column J holds significances L J .. L J + L - 1; its anchor (holder) is the last operand's digit
of significance L J, the latest position of the column.

Arithmetic. In base B the column sums are S_J = B q_J + r_J (0 <= r_J < B). Because k <= B
every carry c_J is at most k - 1 < B, so c_{J+1} = q_J + f_J with a single "step fired" bit
f_J = [r_J + c_J >= B] = [u_J + f_{J-1} >= B], where u_J = r_J + q_{J-1} is local (columns J and
J - 1) and f_{-1} = 0. So f is an ADD-style carry chain on u: column J *generates* if u_J >= B,
*propagates* if u_J = B - 1, *kills* otherwise, and f_{J-1} is the generate bit of the nearest
non-propagating column below J. Column 0 never propagates (f_0 = [r_0 >= B] = 0). The answer
column is T_J = u_J + f_{J-1} <= 2B - 1 and the answer digit of significance i = L J + m is digit
m of (T_J mod B). For ADD (k = 2, L = 1) this is the usual generate/propagate chain.

Finding "the nearest non-propagating column below J" exactly, with attention scores bilinear in
small features, is done by counting: N[t] = number of non-propagating column
holders at positions <= t. Holders are ordered from high to low significance, so the wanted holder
is the unique non-propagating one with N = N[holder of J] + 1, found by a quadratic-match head.

Layers (residual coordinates named in `_residual`; `Construction.explain` prints them):
  0 attn  L heads: head m averages the k digits of significance L J + m (angle match) -> S_J
          = sum_m p^m (k x mean) at anchors; every other position reads BOS (S = 0)
  0 mlp   q = floor(S / B), r = S - B q (clean steps)
  1 attn  COPY r of the column above -> r_next (so anchor J holds u_{J+1} = r_{J+1} + q_J, and
          '=' holds u_0 = r_0)
  1 mlp   g = [u >= B], npm = [holder is non-propagating] (u != B - 1; '=' always; the first
          answer position is a sentinel "column -1" that never generates)
  2 attn  SUM of npm over earlier positions (BOS sink) -> N
  2 mlp   y = npm (2N - 1) (a bit times an integer, exact)
  3 attn  SUM of y -> N2 = N^2 at holders; COPY (u, N) of the holder of column J to Q(i)
  4 attn  quadratic match N_k = N_q + 1 with npm_k = 1 -> c = g of that holder = f_{J-1}
  4 mlp   answer = digit (i mod L) of ((u_q + c) mod B); the unembedding turns it into logits
          2 d answer - d^2.

Width (exact counts in `widths`): d_model = 26 + 3L (+ L query flags when L > 1) and max(2, L)
heads of dimension 4: for fixed (p, k) it does not depend on n. Dependence on k: through
L = ceil(log_p k) only, for the residual and the heads; the MLP width d_ff grows linearly in k
(floor(S / B) takes up to k - 1 steps, and for L > 1 the digit extraction has O(B) = O(p k)
steps): d_ff <= max(6, 2k - 1) for k <= p and d_ff <= 8 p k for k > p. Theorem 5.2 claims width
independent of k; this construction's residual width grows like log k and its MLP like k.
Precision: the angle matches need about 2 log2(sequence length) + 6 mantissa bits and the counts
about 2 log2(n) + 8; see the precision frontier for measured numbers.
"""

from __future__ import annotations

import math

from arith_precision import model as model_lib
from arith_precision import tasks
from constructions.craft import blocks, carry
from constructions.craft.builder import ParamBuilder
from constructions.craft.construction import Construction
from constructions.craft.residual import Residual

NUM_LAYERS = 5
HEAD_DIM = 4
NUM_HEADS = 2
LOGIT_SCALE = 8.0


def _residual(group: int) -> Residual:
    r = Residual()
    r.add("digit", "embed", "value of a digit token (0 for specials)")
    r.add("bos", "embed", "1 on BOS: the key of the summing sink")
    for axis in ("cos", "sin"):
        r.add(f"pos_{axis}", "table", "angle of the position (key side of COPY heads)")
    for axis in ("cos", "sin"):
        r.add(f"col_{axis}", "table", "angle of the significance j on operand digits (else 0)")
    for m in range(group):
        for axis in ("cos", "sin"):
            r.add(f"sub{m}_{axis}", "table",
                  f"at anchor J: angle of the significance L J + {m} (column-sum head {m})")
        r.add(f"sub{m}_on", "table", f"1 where column-sum head {m} has digits to read")
    if group > 1:
        for m in range(group):
            r.add(f"qm{m}", "table", f"1 on queries Q(i) with i mod L = {m}")
    carry.declare_tables(r, prev="pointer to position t-1 on column holders (else 0)",
                         fetch="pointer from Q(i) to the holder of column i (else 0)",
                         holder="1 on column holders: anchors and '='")
    r.add("S", "layer_0/attn", "column sum S_J in base B = p^L at anchors, else 0")
    r.add("q", "layer_0/mlp", "floor(S / B)")
    r.add("r", "layer_0/mlp", "S mod B")
    r.add("r_next", "layer_1/attn", "r of the previous position: r_{j+1} at P(j), r_0 at '='")
    carry.declare(r, 1, u_meaning="u_i = r_i + q_{i-1}")
    r.add("answer", "layer_4/mlp", "the answer digit predicted at Q(i)")
    return r


def build_column_add(spec: tasks.TaskSpec) -> Construction:
    """The ADD / IterADD construction for `spec` (any base and k; T_c as in blocks.check_spec)."""
    blocks.check_spec(spec, ("add", "iter_add"))
    # Token level: p = p^c digit values per token, n = operand tokens (p, n when chunk = 1).
    p, n, k = spec.token_base, spec.operand_tokens, spec.num_operands
    group = blocks.column_group(k, p)  # L digits per column, base B = p^L >= k
    base = p ** group
    width = spec.answer_tokens
    assert width == n + group, (spec, width)
    num_cols = -(-n // group)  # super columns holding operand digits

    residual = _residual(group)
    max_len = spec.sequence_length
    q_steps = (k * (base - 1)) // base  # floor(S / B) <= q_steps
    w = widths(p, k)
    d_ff = w["d_ff"]
    assert residual.size == w["d_model"], (residual.size, w)
    config = model_lib.TransformerConfig(
        vocab_size=spec.vocab_size, max_len=max_len, num_layers=NUM_LAYERS,
        d_model=residual.size, num_heads=w["heads"], head_dim=HEAD_DIM, d_ff=d_ff,
        activation="relu", norm="none", pos="table", tied_embedding=False, use_bias=True)
    b = ParamBuilder(config, residual)

    # ---- embeddings and the positional table ---------------------------------------------------
    for d in range(p):
        b.embed(d, "digit", d)
    b.embed(spec.bos_id, "bos", 1.0)
    eq = k * (n + 1)  # E: position of '='
    # holder[J]: anchor of super column J (the last operand's digit of significance L J), which
    # holds super column J + 1; holder[-1] = '=' holds super column 0.
    holder = {J: eq - 1 - group * J for J in range(num_cols)}
    holder[-1] = eq
    query = {i: eq + width - 1 - i for i in range(width)}  # Q(i)
    pos_period = max_len
    col_period = n + group + 1
    total = max_len + 1.0  # C of the SUM heads
    for t in range(max_len):
        blocks.write_angle(b, t, "pos", t, pos_period)
    for r_ in range(k):
        for j in range(n):
            blocks.write_angle(b, 1 + r_ * (n + 1) + (n - 1 - j), "col", j, col_period)
    for J in range(num_cols):
        for m in range(group):
            if group * J + m < n:
                blocks.write_angle(b, holder[J], f"sub{m}", group * J + m, col_period)
                b.table(holder[J], f"sub{m}_on", 1.0)
    for J in range(-1, num_cols):  # copy r of the super column above (BOS's r = 0 at the top)
        above = holder[J + 1] if J + 1 < num_cols else 0
        blocks.write_angle(b, holder[J], "prev", above, pos_period)
        b.table(holder[J], "holder", 1.0)
    b.table(eq, "eq", 1.0)
    for i in range(width):
        blocks.write_angle(b, query[i], "fetch", holder[i // group - 1], pos_period)
        if group > 1:
            b.table(query[i], f"qm{i % group}", 1.0)
    blocks.write_sink(b, "sink", total)
    b.table(eq, "npm", 1.0)  # '=' holds column 0, which never propagates
    b.table(eq + 1, "npm", 1.0)  # sentinel "column -1" (g = 0) for the last answer column
    for J in range(num_cols):
        b.table(holder[J], "npm", 1.0)  # minus [u == B - 1], from layer 1's MLP

    # The gates need big > 2 max N + 1 (y) and > 8 B + 3 (digit lookups): a power of two.
    big = float(2 ** math.ceil(math.log2(max(2 * max_len + 4, 8 * base + 4))))

    # ---- layer 0: column sums S_J = sum_m p^m S_{LJ+m}; q = floor(S / B), r = S - B q --------
    # Head m averages the k digits of significance L J + m (x k, x p^m). Off the anchors (and for
    # missing digits of a partial top column) heads read BOS, so S = 0 there: no gating needed.
    for m in range(group):
        blocks.match_head(b, 0, f"sub{m}", "col", col_period,
                          [({"digit": float(k * p ** m)}, "S")], idle=(f"sub{m}_on", "bos"))
    b.relu_unit(0, {"S": 1.0}, 0.0, {"r": 1.0})
    for m in range(1, q_steps + 1):
        blocks.step(b, 0, {"S": 1.0}, m * base, {"q": 1.0, "r": -float(base)})

    # ---- layer 1: u = r_next + q; layers 1-4: the carry chain (`craft.carry`) -----------------
    blocks.match_head(b, 1, "prev", "pos", pos_period, [({"r": 1.0}, "r_next")],
                      idle=("holder", "bos"))
    u = {"r_next": 1.0, "q": 1.0}
    carry.write(b, 1, u, base=base, total=total, big=big, fetch_key="pos",
                fetch_period=pos_period)

    # ---- layer 4: the answer digit from u_q and the carry c ------------------------------------
    total_digit = {"u_q": 1.0, "c": 1.0}  # T = u + f in [0, 2B - 1]
    if group == 1:  # answer = T mod p
        b.relu_unit(4, total_digit, 0.0, {"answer": 1.0})
        blocks.step(b, 4, total_digit, p, {"answer": -float(p)})
    else:  # answer = digit m of (T mod B), m = i mod L, selected by the query's flag
        for m in range(group):
            blocks.lookup(b, 4, total_digit, {t: _digit(t, m, p, base) for t in range(2 * base)},
                          "answer", gate=f"qm{m}", big=big)

    # ---- unembedding: logit_d = A (2 d answer - d^2); specials far below ------------------------
    blocks.digit_readout(b, spec, "answer", LOGIT_SCALE)

    assert max(b.units_used()) == d_ff, (b.units_used(), d_ff)  # widths() is the real count
    notes = (f"layers={NUM_LAYERS}; digits per column L={group} (base {base}); "
             f"d_model={residual.size} (independent of n: 26 + 3L, + L more when L > 1); "
             f"heads={config.num_heads}x{HEAD_DIM}; d_ff={d_ff}; "
             f"MLP units used per layer {b.units_used()}")
    return Construction(spec=spec, config=config, params=b.params(), residual=residual,
                        notes=notes)


def widths(p: int, k: int) -> dict[str, int]:
    """{'d_model', 'd_ff', 'heads', 'layers'} of the construction for base p (token base p^c
    under T_c) and k operands: exact, the same for every n (`build_column_add` asserts it).

    With L = `blocks.column_group(k, p)` and B = p^L:
      d_model = 26 + 3L, plus L when L > 1;   heads = max(2, L);   layers = 5;
      d_ff = max(6, 2 floor(k (B - 1) / B) + 1, U) with U = 3 for L = 1 and, for L > 1,
             U = 2 sum_{m < L} floor((2B - 1) / p^m) (the digit lookups).
    Bounds (tested for every base 2..36 and k = 2..1000): L = 1 (k <= p): d_model = 29 and
    d_ff = max(6, 2k - 1) at most; L > 1: d_model = 26 + 4L and d_ff <= 8 p k.
    """
    group = blocks.column_group(k, p)
    base = p ** group
    q_steps = (k * (base - 1)) // base
    answer_units = 3 if group == 1 else 2 * sum((2 * base - 1) // p ** m for m in range(group))
    return {"d_model": 26 + 3 * group + (group if group > 1 else 0),
            "d_ff": max(6, 2 * q_steps + 1, answer_units),
            "heads": max(NUM_HEADS, group), "layers": NUM_LAYERS}


def _digit(t: int, m: int, p: int, base: int) -> int:
    """Digit m (base p) of t mod B."""
    return ((t % base) // p ** m) % p


def column_add_bits_hint(spec: tasks.TaskSpec) -> float:
    """Rough mantissa bits the angle matches need: 2 log2(sequence length) + 6."""
    return 2 * math.log2(spec.sequence_length) + 6
