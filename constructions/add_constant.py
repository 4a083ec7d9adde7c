"""ADD_p(n) at constant precision: 3 layers, width O(n^2) (Theorem 4.1 made concrete).

Where `column_add` keeps the width constant and pays with O(log n) bits (angle matches, counts),
this construction pays with width so that *no value grows with n*: every weight, bias,
activation and partial sum is an integer of magnitude O(p), or the attention constant 2^7. A
fixed number of bits (depending on p only) is then enough at every n; the precision frontier of
this construction is flat, against the log n growth of `column_add` (docs/frontier.md).

Layout as in `column_add` (k = 2): BOS a + b = s_n ... s_0, the digit of significance x of a at
position 1 + (n - 1 - x), of b at n + 2 + (n - 1 - x); '=' at E = 2n + 2; the answer digit of
significance i is predicted at Q(i) = E + n - i; the table flag off_i is 1 at every position
except Q(i) (it switches off the units of answer digit i elsewhere).

Layers (residual coordinates named; `Construction.explain` prints them):
  0 attn  2n heads: head x copies digit a_x (b_x) to every position by hard attention on a
          one-hot positional code (`blocks.onehot_copy_head`: weights exactly 1 and 0)
  0 mlp   g_x = [a_x + b_x >= p] (column x generates), z_x = [a_x + b_x != p - 1] (it does not
          propagate)
  1 mlp   c_i = sum_{j < i} relu(g_j - sum_{j < x < i} z_x), the carry into column i: the unit
          (i, j) is 1 iff j generates and every column strictly between propagates; at most one
          j qualifies (a nearer generating j' would be a non-propagating column between). The
          pre-activation is an integer in [-(n - 1), 1]; rounded at any precision a negative
          integer stays <= -1 (rounding is monotone and -1 is representable), so the unit is
          exact whatever the accumulation order (`once` or `sequential`).
  2 mlp   one-hot answer: ans_d = sum_i [not off_i] ([X_i >= d] - [X_i >= d + 1]) with the
          digit X_i = a_i + b_i + c_i - p c_{i+1} (X_n = c_n): gated integer steps
          (`blocks.int_step`), where the gate adds nothing to the sum of an active unit
  unembed logit_d = 8 ans_d (specials: -8).

Width: d_model = 8n + p + 2 (one-hot positions, flags and per-column values), 2n heads of width 4,
d_ff = max(4n, n (n + 1) / 2 carry units, 2 (n + 1)(p + 1) answer units) <= (n + 1)(n + 2p + 2)
= O(n^2 + n p) (exact counts in `widths`; tested for every base 2..36).
Precision: exact integers up to about 2p (the digits' sums and the answer steps) and an exponent
range that holds 2^7 (the attention constant; see `blocks.onehot_copy_head`).
"""

from __future__ import annotations

import math

from arith_precision import model as model_lib
from arith_precision import tasks
from constructions.craft import blocks
from constructions.craft.builder import ParamBuilder
from constructions.craft.construction import Construction
from constructions.craft.residual import Residual

NUM_LAYERS = 3
HEAD_DIM = 4
LOGIT_SCALE = 8.0


def widths(p: int, n: int) -> dict[str, int]:
    """{'d_model', 'd_ff', 'heads', 'layers'} for base p and n operand digits (token base and
    operand tokens under T_c), exact (`build_add_constant` asserts it): d_model = 8n + p + 2,
    d_ff = max(4n, n (n + 1) / 2, 2 (n + 1)(p + 1)) <= (n + 1)(n + 2p + 2), 2n heads, 3 layers."""
    return {"d_model": 8 * n + p + 2, "d_ff": max(4 * n, n * (n + 1) // 2, 2 * (n + 1) * (p + 1)),
            "heads": 2 * n, "layers": NUM_LAYERS}


def build_add_constant(spec: tasks.TaskSpec) -> Construction:
    blocks.check_spec(spec, ("add",))
    p, n = spec.token_base, spec.operand_tokens  # token level (p, n when chunk = 1)
    eq = 2 * n + 2
    pos_a = {x: 1 + (n - 1 - x) for x in range(n)}
    pos_b = {x: n + 2 + (n - 1 - x) for x in range(n)}
    query = {i: eq + n - i for i in range(n + 1)}

    r = Residual()
    r.add("digit", "embed", "value of a digit token (0 for specials)")
    for x in range(n):
        r.add(f"at_a{x}", "table", f"1 at the position of a's digit {x} (one-hot code)")
        r.add(f"at_b{x}", "table", f"1 at the position of b's digit {x}")
    for i in range(n + 1):
        r.add(f"off{i}", "table", f"1 everywhere except Q({i}), where digit {i} is predicted")
    # The carries come before the digits: a sum is accumulated in coordinate order, and
    # c_i - p c_{i+1} + a_i + b_i then keeps every partial sum in [-p, p - 1] (with the digits
    # first, a_i + b_i + c_i reaches 2p - 1: one bit more under `sequential` accumulation).
    for i in range(1, n + 1):
        r.add(f"c{i}", "layer_1/mlp", f"carry into column {i}")
    for x in range(n):
        r.add(f"a{x}", "layer_0/attn", f"digit {x} of a (significance {x})")
        r.add(f"b{x}", "layer_0/attn", f"digit {x} of b")
    for x in range(n):
        r.add(f"g{x}", "layer_0/mlp", f"column {x} generates: a{x} + b{x} >= p")
        r.add(f"z{x}", "layer_0/mlp", f"column {x} does not propagate: a{x} + b{x} != p - 1")
    for d in range(p):
        r.add(f"ans{d}", "layer_2/mlp", f"1 iff the query's answer digit is {d}")

    w = widths(p, n)
    d_ff = w["d_ff"]
    assert r.size == w["d_model"], (r.size, w)
    config = model_lib.TransformerConfig(
        vocab_size=spec.vocab_size, max_len=spec.sequence_length, num_layers=NUM_LAYERS,
        d_model=r.size, num_heads=2 * n, head_dim=HEAD_DIM, d_ff=d_ff, activation="relu",
        norm="none", pos="table", tied_embedding=False, use_bias=True)
    b = ParamBuilder(config, r)
    for d in range(p):
        b.embed(d, "digit", d)
    for x in range(n):
        b.table(pos_a[x], f"at_a{x}", 1.0)
        b.table(pos_b[x], f"at_b{x}", 1.0)
    for i in range(n + 1):
        for t in range(spec.sequence_length):
            if t != query[i]:
                b.table(t, f"off{i}", 1.0)

    # ---- layer 0: copy every digit everywhere; generate / non-propagate bits ------------------
    for x in range(n):
        blocks.onehot_copy_head(b, 0, f"at_a{x}", {"digit": 1.0}, f"a{x}")
        blocks.onehot_copy_head(b, 0, f"at_b{x}", {"digit": 1.0}, f"b{x}")
    for x in range(n):
        s = {f"a{x}": 1.0, f"b{x}": 1.0}
        blocks.int_step(b, 0, s, p, {f"g{x}": 1.0, f"z{x}": 1.0})  # s >= p: generates
        # [s <= p - 2] = relu(p - 1 - s) - relu(p - 2 - s): kills (z = kill + generate)
        neg = {f"a{x}": -1.0, f"b{x}": -1.0}
        blocks.int_step(b, 0, neg, 2 - p, {f"z{x}": 1.0})

    # ---- layer 1: carries, one unit per (column i, source j) ----------------------------------
    for i in range(1, n + 1):
        for j in range(i):
            terms = {f"g{j}": 1.0, **{f"z{x}": -1.0 for x in range(j + 1, i)}}
            b.relu_unit(1, terms, 0.0, {f"c{i}": 1.0})

    # ---- layer 2: the query's digit, one-hot -----------------------------------------------
    big = float(2 ** math.ceil(math.log2(2 * p + 1)))  # >= max(X - th + 1): off exactly
    for i in range(n + 1):
        if i < n:
            digit = {f"a{i}": 1.0, f"b{i}": 1.0, f"c{i + 1}": -float(p)}
            if i > 0:
                digit[f"c{i}"] = 1.0
        else:
            digit = {f"c{n}": 1.0}
        for th in range(p + 1):  # [X >= th] adds to ans_th and removes from ans_{th-1}
            out = {}
            if th < p:
                out[f"ans{th}"] = 1.0
            if th > 0:
                out[f"ans{th - 1}"] = -1.0
            blocks.int_step(b, 2, digit, th, out, off=f"off{i}", big=big)

    for d in range(p):
        b.unembed(f"ans{d}", d, LOGIT_SCALE)
    for tok in range(p, spec.vocab_size):
        b.unembed_bias(tok, -LOGIT_SCALE)

    assert max(b.units_used()) == d_ff, (b.units_used(), d_ff)  # widths() is the real count
    notes = (f"layers={NUM_LAYERS}; constant precision (every value O(p)); d_model={r.size}; "
             f"heads={2 * n}x{HEAD_DIM}; d_ff={d_ff}; MLP units used per layer {b.units_used()}")
    return Construction(spec=spec, config=config, params=b.params(), residual=r, notes=notes)
