"""MUL_p(n, l) at logarithmic precision: 4 + R layers, width O(n^2 p) (Theorem 5.3 made concrete).

Layout (one digit per token; under T_c read "digit" as "token", a base-p^c digit, with n and l
divided by c: see blocks.check_spec): BOS a * b = s_{l-1} ... s_0 EOS, operands padded to n
digits, the answer is the l least significant digits of a b, most significant first;
E = 2n + 2 is the position of '=' and the answer digit of significance i is predicted at
Q(i) = E + l - 1 - i. Every query computes the whole product in its own residual stream (so
the construction needs no causal bookkeeping), then reads out its own digit.

Arithmetic, on exact integers only. Column sums S_j = sum_{u+v=j} a_u b_v (j < l; the answer
is the product mod p^l, so higher columns never matter) are at most n (p - 1)^2. A *reduction*
replaces every column value X_j by its base-p digits and re-adds them one column up per digit:
X'_j = sum_d digit_d(X_{j-d}); the number sum_j X_j p^j is unchanged (mod p^l), and the column
bound shrinks from M to about (p - 1) log_p M. R reductions (R = `num_reductions(p, n, l)`) bring
every column to at most 2p - 2; then the carry into each column is one bit f_j, and
f_J = 1 iff some j < J generates (s_j >= p) and every column in (j, J) propagates (s = p - 1):
at most one j qualifies, so f_J = sum_j [g_j + sum_{x in (j, J)} pr_x = J - j] is one layer of
single threshold units. The answer digit of column J is s_J + f_J - p f_{J+1} (the carry out of
J is f_{J+1}). Nothing is grouped into a base larger than p, and every quantity after layer 0
is an integer of magnitude at most n (p - 1)^2 (plus the constant gate `big`), so the bits
needed grow like log2(n p^2) (earlier versions grouped columns into base B >= n (p - 1) and took
4x-margin steps on sums up to ~n p^3: 12 bits at base 10, n = 2, against 7-8 here).

Layers (`Construction.explain` names every coordinate):
  0 attn  2n heads; head h copies digit h (fixed position, pointer in the query bias): a_u, b_v
  0 mlp   ta_{u,m} = [a_u >= m], tb_{v,m} = [b_v >= m], m = 1..p-1 (clean 4x-margin steps: the
          gathered digits are near-integers; from here on everything is an exact integer)
  1 mlp   S_j = sum_{u+v=j} sum_m relu(sum_m' tb_{v,m'} + (p-1) ta_{u,m} - (p-1)) = sum a_u b_v
  2..R+1  reduction r: x_{r,j} = X_j (one unit) and q_{r,j,d} = floor(X_j / p^d) for d >= 1
          (`blocks.int_step`, integer thresholds s p^d); the next X'_j is linear in them:
          sum_d (q_{j-d,d} - p q_{j-d,d+1}) with q_{j,0} = x_{r,j}
  R+2 mlp s_j (copied), g_j = [s_j >= p], pr_j = [s_j = p - 1] (integer steps)
  R+3 mlp answer = s_J + f_J - p f_{J+1} for the query's own column J: units gated off by the
          table's flag off_J (1 except at Q(J)), which only ever subtracts (`blocks.int_step`)
  unembed logit_d = A (2 d answer - d^2).

Width (exact counts in `widths`; the bounds are tested for every base 2..36, n = 1..64 and
every l <= 2n): 2n heads of dimension 4; d_model <= 2n (p + 15) + 4 and
d_ff <= 4 n^2 (p - 1) + 2n (2n + 1), i.e. O(n^2 p) (the products and the first reduction's
~(2n - 1) n (p - 1) integer steps); 4 + R layers with R <= 3 for n <= 64 (R grows like log* n).
Precision: layer 0's gathers are angle matches (score margins suggest up to 2 log2(sequence
length) + 6 mantissa bits, but their outputs only need to land within 1/4 of a digit, which the
4x-margin steps then clean; measured, they are not what sets the base-10 frontier); after
that every value is an integer of magnitude at most n (p - 1)^2 (or the gate constant
`big` <= 4p), and e8mM holds every integer up to 2^(M+1) exactly, so
M = ceil(log2(n (p - 1)^2 + 1)) - 1 bits keep them exact: 7, 8, 9, 10 for base 10 at
n = 2, 4, 8, 16, which is the measured frontier (results/frontier/mul_b10). The carrier sums
each fc2 output exactly while its partial sums stay below its exact-integer range (fp32: 2^24);
they are at most about q S <= (n (p - 1)^2)^2 / p (2.7e6 at base 10, n = 64; exactness at fp32
is tested up to n = 16).
"""

from __future__ import annotations

import math

from arith_precision import model as model_lib
from arith_precision import tasks
from constructions.craft import blocks
from constructions.craft.builder import ParamBuilder
from constructions.craft.construction import Construction
from constructions.craft.residual import Residual

HEAD_DIM = 4
LOGIT_SCALE = 8.0


def _pairs(j: int, n: int) -> list[tuple[int, int]]:
    return [(u, j - u) for u in range(n) if 0 <= j - u < n]


def _num_pairs(j: int, n: int) -> int:
    """len(_pairs(j, n)): the products in column j."""
    return max(0, min(j, 2 * n - 2 - j) + 1)


def _num_digits(m: int, p: int) -> int:
    """Base-p digits of m >= 0 (1 for m < p)."""
    d = 1
    while m >= p ** d:
        d += 1
    return d


def reduction_plan(p: int, n: int, l: int) -> list[list[int]]:
    """Column bounds [M^(0), ..., M^(R)]: M^(0)_j = (p - 1)^2 #{u + v = j}, and each reduction
    M'_j = sum_d min(p - 1, floor(M_{j-d} / p^d)) (digit d of a value <= M is at most both),
    until every column is <= 2p - 2."""
    bounds = [[(p - 1) ** 2 * _num_pairs(j, n) for j in range(l)]]
    while max(bounds[-1]) > 2 * p - 2:
        if len(bounds) > 16:  # cannot happen: each reduction maps M to O(p log_p M)
            raise AssertionError(f"reductions do not converge: {bounds[-1]}")
        m = bounds[-1]
        top = _num_digits(max(m), p)  # no column has a digit d >= top
        bounds.append([sum(min(p - 1, m[j - d] // p ** d)
                           for d in range(min(j + 1, top)) if m[j - d] >= p ** d)
                       for j in range(l)])
    return bounds


def num_reductions(p: int, n: int, l: int) -> int:
    return len(reduction_plan(p, n, l)) - 1


def widths(p: int, n: int, l: int) -> dict[str, int]:
    """{'d_model', 'd_ff', 'heads', 'layers'} of MUL base p (token base under T_c), n operand
    tokens, l answer tokens: exact (`build_mul` asserts it)."""
    plan = reduction_plan(p, n, l)
    reductions = plan[:-1]
    d_model = 4 + 2 * n + 2 * n * (p - 1) + l + 3 * l + l + 1
    layer_units = [4 * n * (p - 1), (p - 1) * sum(_num_pairs(j, n) for j in range(l))]
    for m in reductions:
        d_model += sum(1 + _num_digits(mj, p) - 1 for mj in m)
        layer_units.append(sum(1 + 2 * sum(mj // p ** d for d in range(1, _num_digits(mj, p)))
                               for mj in m))
    layer_units.append(5 * l)
    layer_units.append(l * (l + 1))
    return {"d_model": d_model, "d_ff": max(layer_units), "heads": 2 * n,
            "layers": len(layer_units)}


def build_mul(spec: tasks.TaskSpec) -> Construction:
    blocks.check_spec(spec, ("mul",))
    # Token level: p = p^c, n = operand tokens, l = answer tokens (p, n, l when chunk = 1).
    p, n, l = spec.token_base, spec.operand_tokens, spec.answer_tokens
    plan = reduction_plan(p, n, l)
    num_red = len(plan) - 1
    w = widths(p, n, l)
    ndig = [[_num_digits(mj, p) for mj in m] for m in plan[:-1]]  # digits of each column value

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
            r.add(f"ta{u}_{m}", "layer_0/mlp", f"[a{u} >= {m}]")
    for v in range(n):
        for m in range(1, p):
            r.add(f"tb{v}_{m}", "layer_0/mlp", f"[b{v} >= {m}]")
    for j in range(l):
        r.add(f"S{j}", "layer_1/mlp", f"column sum sum_(u+v={j}) a_u b_v")
    for k in range(num_red):
        for j in range(l):
            r.add(f"x{k}_{j}", f"layer_{k + 2}/mlp", f"column {j} before reduction {k}")
            for d in range(1, ndig[k][j]):
                r.add(f"q{k}_{j}_{d}", f"layer_{k + 2}/mlp", f"floor(x{k}_{j} / p^{d})")
    last = num_red + 2  # the generate / propagate layer
    for j in range(l):
        r.add(f"s{j}", f"layer_{last}/mlp", f"column {j} after the reductions (<= 2p - 2)")
        r.add(f"g{j}", f"layer_{last}/mlp", f"column {j} generates: s_{j} >= p")
        r.add(f"pr{j}", f"layer_{last}/mlp", f"column {j} propagates: s_{j} = p - 1")
    for j in range(l):
        r.add(f"off{j}", "table", f"1 except on Q({j}), where digit {j} is predicted")
    r.add("answer", f"layer_{last + 1}/mlp", "the answer digit predicted at Q(i)")
    assert r.size == w["d_model"], (r.size, w)

    max_len = spec.sequence_length
    config = model_lib.TransformerConfig(
        vocab_size=spec.vocab_size, max_len=max_len, num_layers=w["layers"], d_model=r.size,
        num_heads=2 * n, head_dim=HEAD_DIM, d_ff=w["d_ff"], activation="relu", norm="none",
        pos="table", tied_embedding=False, use_bias=True)
    b = ParamBuilder(config, r)
    for d in range(p):
        b.embed(d, "digit", d)
    b.embed(spec.bos_id, "bos", 1.0)
    for t in range(max_len):
        blocks.write_angle(b, t, "pos", t, max_len)
    eq = 2 * n + 2
    for j in range(l):
        for t in range(max_len):
            if t != eq + l - 1 - j:
                b.table(t, f"off{j}", 1.0)

    # ---- layer 0: gather every digit; clean thresholds of a and b ------------------------------
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
            blocks.step(b, 0, {f"a{u}": 1.0}, m, {f"ta{u}_{m}": 1.0})
    for v in range(n):
        for m in range(1, p):
            blocks.step(b, 0, {f"b{v}": 1.0}, m, {f"tb{v}_{m}": 1.0})

    # ---- layer 1: exact products summed into column sums ----------------------------------------
    for j in range(l):
        for u, v in _pairs(j, n):
            b_clean = {f"tb{v}_{m}": 1.0 for m in range(1, p)}  # b_v, an exact integer
            for m in range(1, p):  # relu(b + (p-1)[a >= m] - (p-1)) = b [a >= m]
                b.relu_unit(1, {**b_clean, f"ta{u}_{m}": float(p - 1)}, -float(p - 1),
                            {f"S{j}": 1.0})

    # ---- layers 2..R+1: reductions X_j -> sum_d digit_d(X_{j-d}) --------------------------------
    column = {j: {f"S{j}": 1.0} for j in range(l)}  # X_j as a linear form of residual coordinates
    for k in range(num_red):
        layer = k + 2
        for j in range(l):
            b.relu_unit(layer, column[j], 0.0, {f"x{k}_{j}": 1.0})  # X_j >= 0
            for d in range(1, ndig[k][j]):
                for s_ in range(1, plan[k][j] // p ** d + 1):
                    blocks.int_step(b, layer, column[j], s_ * p ** d, {f"q{k}_{j}_{d}": 1.0})

        def quotient(j: int, d: int, k: int = k) -> dict[str, float]:
            if d == 0:
                return {f"x{k}_{j}": 1.0}
            return {f"q{k}_{j}_{d}": 1.0} if d < ndig[k][j] else {}

        new = {}
        for j in range(l):  # X'_j = sum_d (q_{j-d,d} - p q_{j-d,d+1}): digit d of X_{j-d}
            form: dict[str, float] = {}
            for d in range(j + 1):
                if d >= ndig[k][j - d]:
                    continue
                for name, wt in quotient(j - d, d).items():
                    form[name] = form.get(name, 0.0) + wt
                for name, wt in quotient(j - d, d + 1).items():
                    form[name] = form.get(name, 0.0) - p * wt
            new[j] = form
        column = new

    # ---- layer R+2: s_j, generate and propagate -------------------------------------------------
    for j in range(l):
        b.relu_unit(last, column[j], 0.0, {f"s{j}": 1.0})
        blocks.int_step(b, last, column[j], p - 1, {f"pr{j}": 1.0})
        blocks.int_step(b, last, column[j], p, {f"g{j}": 1.0, f"pr{j}": -1.0})

    # ---- layer R+3: answer = s_J + f_J - p f_{J+1} for the query's column J ---------------------
    big = float(2 ** math.ceil(math.log2(2 * p)))  # > s_J and > any lookahead sum - threshold
    for J in range(l):
        off = {f"off{J}": -big}
        b.relu_unit(last + 1, {f"s{J}": 1.0, **off}, 0.0, {"answer": 1.0})
        for into, weight in ((J, 1.0), (J + 1, -float(p))):  # f_J, then f_{J+1} (carry out)
            for src in range(into):  # [g_src + pr_(src, into) = into - src]: at most one fires
                terms = {f"g{src}": 1.0, **{f"pr{x}": 1.0 for x in range(src + 1, into)}, **off}
                b.relu_unit(last + 1, terms, 1.0 - (into - src), {"answer": weight})

    blocks.digit_readout(b, spec, "answer", LOGIT_SCALE)

    assert max(b.units_used()) == w["d_ff"], (b.units_used(), w)  # widths() is the real count
    notes = (f"layers={w['layers']} ({num_red} reductions); column bounds "
             f"{[max(m) for m in plan]}; d_model={r.size}; heads={2 * n}x{HEAD_DIM}; "
             f"d_ff={w['d_ff']}; MLP units used per layer {b.units_used()}")
    return Construction(spec=spec, config=config, params=b.params(), residual=r, notes=notes)
