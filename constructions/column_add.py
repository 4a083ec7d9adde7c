"""ADD_p(n) and IterADD_p(n, k) (k <= p) at logarithmic precision: 5 layers, width independent of n.

Layout (tasks' tokenizer, c = 1): BOS a_1 + ... + a_k = s_n ... s_0, operands padded to n digits,
the answer to W = n + 1 digits (k <= p), most significant first. E = k (n + 1) is the position of
'='; the digit of significance j of the LAST operand sits at P(j) = E - 1 - j (so P(-1) = E), and
the answer digit of significance i is predicted at Q(i) = E + n - i.

Arithmetic. Column sums S_j = sum_r a_{r,j} = p q_j + r_j (0 <= r_j < p). Because k <= p every
carry c_j is at most k - 1 < p, so c_{j+1} = q_j + f_j with a single "step fired" bit
f_j = [r_j + c_j >= p] = [u_j + f_{j-1} >= p], where u_j = r_j + q_{j-1} is local (columns j and
j-1) and f_{-1} = 0. So f is an ADD-style carry chain on u: column j *generates* if u_j >= p,
*propagates* if u_j = p - 1, *kills* otherwise, and f_{i-1} is the generate bit of the nearest
non-propagating column below i. Column 0 never propagates (f_0 = [r_0 >= p] = 0). Finally
s_i = (u_i + f_{i-1}) mod p, with u_i + f_{i-1} <= 2p - 1. For ADD (k = 2) this is the usual
generate/propagate chain.

Finding "the nearest non-propagating column below i" exactly, with attention scores bilinear in
small features, is done by counting (the SPEC's hint): N[t] = number of non-propagating column
holders at positions <= t. Holders are ordered from high to low significance, so the wanted holder
is the unique non-propagating one with N = N[holder of i] + 1, found by a quadratic-match head.

Layers (residual coordinates named in `_residual`):
  0 attn  MEAN over the k digits of the query's column (angle match on the significance) x k -> S
  0 mlp   at the last operand's digits: q = floor(S / p), r = S - p q (clean steps)
  1 attn  COPY r from the previous position -> r_next (so P(j) holds column j + 1's u = r_{j+1}
          + q_j; '=' holds u_0 = r_0)
  1 mlp   g = [u >= p], npm = [holder is non-propagating] (u != p - 1; '=' always; the first
          answer position is a sentinel "column -1" that never generates)
  2 attn  SUM of npm over earlier positions (BOS sink) -> N
  2 mlp   y = npm (2N - 1) (a bit times an integer, exact)
  3 attn  SUM of y -> N2 = N^2 at holders; COPY (u, N) of the holder of column i to Q(i)
  4 attn  quadratic match N_k = N_q + 1 with npm_k = 1 -> c = g of that holder = f_{i-1}
  4 mlp   answer = (u_q + c) mod p; the unembedding turns it into logits 2 d answer - d^2.

Width: d_model = 27 and 2 heads of dimension 4 for every n and k; d_ff = max(6, 2 floor(k(p-1)/p)
+ 1) grows with k only through the lookup of floor(S / p) (Theorem 5.2 claims width independent
of k; here the MLP width is linear in k, the residual width constant). Precision: the angle
matches need ~2 log2(S) + 6 mantissa bits (S = sequence length) and the counts ~2 log2(n) + 8;
see the precision frontier for measured numbers.
"""

from __future__ import annotations

import math

from arith_precision import model as model_lib
from arith_precision import tasks
from constructions import blocks
from constructions.builder import ParamBuilder
from constructions.construction import Construction
from constructions.residual import Residual

NUM_LAYERS = 5
HEAD_DIM = 4
NUM_HEADS = 2
LOGIT_SCALE = 8.0


def _residual() -> Residual:
    r = Residual()
    r.add("digit", "embed", "value of a digit token (0 for specials)")
    r.add("bos", "embed", "1 on BOS: the key of the summing sink")
    for axis in ("cos", "sin"):
        r.add(f"pos_{axis}", "table", "angle of the position (key side of COPY heads)")
    for axis in ("cos", "sin"):
        r.add(f"col_{axis}", "table", "angle of the significance j on operand digits (else 0)")
    for axis in ("cos", "sin"):
        r.add(f"prev_{axis}", "table", "pointer to position t-1 on column holders (else 0)")
    for axis in ("cos", "sin"):
        r.add(f"fetch_{axis}", "table", "pointer from Q(i) to the holder of column i (else 0)")
    r.add("anchor", "table", "1 on the last operand's digits P(j), j = 0..n-1")
    r.add("holder", "table", "1 on column holders: anchors and '='")
    r.add("eq", "table", "1 on '='")
    r.add("sink", "table", "log(C - t): score of the BOS sink for SUM heads")
    r.add("S", "layer_0/attn", "column sum S_j (meaningful at anchors)")
    r.add("q", "layer_0/mlp", "floor(S / p) at anchors, else 0")
    r.add("r", "layer_0/mlp", "S mod p at anchors, else 0")
    r.add("r_next", "layer_1/attn", "r of the previous position: r_{j+1} at P(j), r_0 at '='")
    r.add("g", "layer_1/mlp", "generate bit of the held column: [u >= p]")
    r.add("npm", "table+layer_1/mlp", "1 on non-propagating holders ('=' and the sentinel too)")
    r.add("N", "layer_2/attn", "number of non-propagating holders at positions <= t")
    r.add("y", "layer_2/mlp", "npm (2N - 1): summed, gives N^2")
    r.add("N2", "layer_3/attn", "N^2 at holders")
    r.add("u_q", "layer_3/attn", "u_i = r_i + q_{i-1} copied to the query Q(i)")
    r.add("N_q", "layer_3/attn", "N of the holder of column i, copied to Q(i)")
    r.add("c", "layer_4/attn", "f_{i-1}: the carry bit into column i")
    r.add("answer", "layer_4/mlp", "(u_q + c) mod p: the answer digit predicted at Q(i)")
    return r


def build_column_add(spec: tasks.TaskSpec) -> Construction:
    """The ADD / IterADD construction for `spec` (task add or iter_add, chunk 1, k <= base)."""
    if spec.task not in ("add", "iter_add"):
        raise ValueError(f"column_add builds add and iter_add, not {spec.task!r}")
    if spec.chunk != 1:
        raise ValueError(f"the constructions need the one-digit tokenizer (chunk=1), got "
                         f"chunk={spec.chunk}")
    if spec.reverse_answer:
        raise ValueError("the constructions generate the answer most significant digit first; "
                         "reverse_answer=True is not supported")
    p, n, k = spec.base, spec.n, spec.num_operands
    if k > p:
        raise ValueError(f"k={k} > base={p}: carries exceed one digit; this construction needs "
                         f"k <= p (grouping digits into base p^L columns is not implemented)")
    width = spec.answer_tokens
    assert width == n + 1, (spec, width)

    residual = _residual()
    max_len = spec.sequence_length
    q_steps = (k * (p - 1)) // p  # floor(S / p) <= q_steps
    d_ff = max(6, 2 * q_steps + 1)
    config = model_lib.TransformerConfig(
        vocab_size=spec.vocab_size, max_len=max_len, num_layers=NUM_LAYERS,
        d_model=residual.size, num_heads=NUM_HEADS, head_dim=HEAD_DIM, d_ff=d_ff,
        activation="relu", norm="none", pos="table", tied_embedding=False, use_bias=True)
    b = ParamBuilder(config, residual)

    # ---- embeddings and the positional table ---------------------------------------------------
    for d in range(p):
        b.embed(d, "digit", d)
    b.embed(spec.bos_id, "bos", 1.0)
    eq = k * (n + 1)  # E: position of '='
    holder = {j: eq - 1 - j for j in range(-1, n)}  # P(j); holder of column j+1 (and '=' of 0)
    query = {i: eq + n - i for i in range(0, n + 1)}  # Q(i)
    pos_period = max_len
    col_period = n + 1
    total = max_len + 1.0  # C of the SUM heads
    for t in range(max_len):
        blocks.write_angle(b, t, "pos", t, pos_period)
    for r_ in range(k):
        for j in range(n):
            blocks.write_angle(b, 1 + r_ * (n + 1) + (n - 1 - j), "col", j, col_period)
    for j in range(-1, n):  # anchors P(0..n-1) and '=' copy r from the previous position
        blocks.write_angle(b, holder[j], "prev", holder[j] - 1, pos_period)
    for j in range(n):
        b.table(holder[j], "anchor", 1.0)
    for j in range(-1, n):
        b.table(holder[j], "holder", 1.0)
    b.table(eq, "eq", 1.0)
    for i in range(n + 1):
        blocks.write_angle(b, query[i], "fetch", holder[i - 1], pos_period)
    blocks.write_sink(b, "sink", total)
    b.table(eq, "npm", 1.0)  # '=' holds column 0, which never propagates
    b.table(eq + 1, "npm", 1.0)  # sentinel "column -1" (g = 0) for the last answer digit
    for j in range(n):
        b.table(holder[j], "npm", 1.0)  # minus [u == p - 1], from layer 1's MLP

    # The only gate left (y = npm (2N - 1)) needs big > 2 max N + 1: the smallest power of two.
    big = float(2 ** math.ceil(math.log2(2 * max_len + 4)))

    # ---- layer 0: column sums, then q = floor(S / p) and r = S - p q at anchors ----------------
    # Off the anchors the head reads BOS (S = 0 there), so q = r = 0 without gating.
    blocks.match_head(b, 0, "col", "col", col_period, [({"digit": float(k)}, "S")],
                      idle=("anchor", "bos"))
    b.relu_unit(0, {"S": 1.0}, 0.0, {"r": 1.0})
    for m in range(1, q_steps + 1):
        blocks.step(b, 0, {"S": 1.0}, m * p, {"q": 1.0, "r": -float(p)})

    # ---- layer 1: u = r_next + q; generate and propagate ---------------------------------------
    blocks.match_head(b, 1, "prev", "pos", pos_period, [({"r": 1.0}, "r_next")],
                      idle=("holder", "bos"))
    u = {"r_next": 1.0, "q": 1.0}
    # u = 0 off the holders, so g = 0 and [u == p-1] = 0 there. At '=' column 0 never
    # generates or propagates: shift u by -p (for g) and +p (for the propagate test) there.
    blocks.step(b, 1, {**u, "eq": -float(p)}, p, {"g": 1.0})
    blocks.equals(b, 1, {**u, "eq": float(p)}, p - 1, {"npm": -1.0})

    # ---- layer 2: N = number of non-propagating holders so far; y = npm (2N - 1) --------------
    blocks.sum_head(b, 2, "sink", "bos", total, [({"npm": 1.0}, "N")])
    blocks.gated_identity(b, 2, {"N": 2.0}, "npm", big, {"y": 1.0}, bias=-1.0)

    # ---- layer 3: N2 = N^2; fetch (u_i, N) of the holder of column i to Q(i) -------------------
    blocks.sum_head(b, 3, "sink", "bos", total, [({"y": 1.0}, "N2")])
    blocks.match_head(b, 3, "fetch", "pos", pos_period,
                      [(u, "u_q"), ({"N": 1.0}, "N_q")])

    # ---- layer 4: the carry bit, then the answer digit -----------------------------------------
    blocks.quadratic_match_head(b, 4, {"N_q": 1.0}, 1.0, "N", "N2", "npm", [({"g": 1.0}, "c")])
    total_digit = {"u_q": 1.0, "c": 1.0}
    b.relu_unit(4, total_digit, 0.0, {"answer": 1.0})
    blocks.step(b, 4, total_digit, p, {"answer": -float(p)})

    # ---- unembedding: logit_d = A (2 d answer - d^2); specials far below ------------------------
    for d in range(p):
        b.unembed("answer", d, LOGIT_SCALE * 2 * d)
        b.unembed_bias(d, -LOGIT_SCALE * d * d)
    for tok in range(p, spec.vocab_size):
        b.unembed_bias(tok, -LOGIT_SCALE * (4 * p * p + 8))

    notes = (f"layers={NUM_LAYERS}; d_model={residual.size} (independent of n and k); "
             f"heads={NUM_HEADS}x{HEAD_DIM}; d_ff={d_ff} (2*floor(k(p-1)/p)+1 or 6); "
             f"MLP units used per layer {b.units_used()}")
    return Construction(spec=spec, config=config, params=b.params(), residual=residual,
                        notes=notes)


def column_add_bits_hint(spec: tasks.TaskSpec) -> float:
    """Rough mantissa bits the angle matches need: 2 log2(sequence length) + 6."""
    return 2 * math.log2(spec.sequence_length) + 6
