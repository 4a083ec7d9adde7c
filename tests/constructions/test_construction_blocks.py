"""Each building block, alone in a one-layer model, computes exactly what its docstring says."""

from __future__ import annotations

import numpy as np
import pytest

from arith_precision import model as model_lib
from constructions.craft import blocks
from constructions.craft.builder import ParamBuilder
from constructions.craft.residual import Residual

VOCAB = 12  # token t has x_val = t; token 11 is "BOS" (x_bos = 1, x_val = 0)
BOS = 11
LEN = 10


def _builder(extra: list[str], heads: int = 1, d_ff: int = 40) -> ParamBuilder:
    r = Residual()
    for name in ["val", "bos", "flag", "pos_cos", "pos_sin", "ptr_cos", "ptr_sin", "sink",
                 *extra]:
        r.add(name, "embed", name)
    cfg = model_lib.TransformerConfig(
        vocab_size=VOCAB, max_len=LEN, num_layers=1, d_model=r.size, num_heads=heads,
        head_dim=4, d_ff=d_ff, activation="relu", norm="none", pos="table")
    b = ParamBuilder(cfg, r)
    for t in range(BOS):
        b.embed(t, "val", float(t))
    b.embed(BOS, "bos", 1.0)
    return b


def _run(b: ParamBuilder, tokens, stage="layer_0/mlp"):
    _, res = model_lib.Transformer(b.config).apply(
        {"params": b.params()}, np.asarray([tokens], np.int32), return_residuals=True)
    return lambda name: np.asarray(res[stage][0, :, b.idx(name)], np.float64)


@pytest.mark.parametrize("threshold", [0, 3, 7])
def test_step_is_clean_on_near_integers(threshold):
    b = _builder(["out"])
    blocks.step(b, 0, {"val": 1.0}, threshold, {"out": 1.0})
    # Perturb the input by up to 1/5 through the table: the step must still be exactly 0/1.
    for t in range(LEN):
        b.table(t, "val", [0.0, 0.2, -0.2, 0.1, -0.15, 0.0, 0.05, -0.05, 0.2, -0.2][t])
    tokens = list(range(LEN))
    out = _run(b, tokens)("out")
    np.testing.assert_array_equal(out, [float(t >= threshold) for t in tokens])


def test_gated_step_and_gated_identity():
    b = _builder(["out", "ident"])
    blocks.step(b, 0, {"val": 1.0}, 4, {"out": 1.0}, gate="flag", big=64.0)
    blocks.gated_identity(b, 0, {"val": 1.0}, "flag", 64.0, {"ident": 1.0})
    for t in range(0, LEN, 2):
        b.table(t, "flag", 1.0)
    tokens = [9, 9, 5, 5, 3, 3, 0, 8, 4, 4]
    get = _run(b, tokens)
    flag = np.arange(LEN) % 2 == 0
    np.testing.assert_array_equal(get("out"), [float(f and t >= 4)
                                               for f, t in zip(flag, tokens, strict=True)])
    np.testing.assert_array_equal(get("ident"), [float(t) if f else 0.0
                                                 for f, t in zip(flag, tokens, strict=True)])


def test_equals_and_lookup():
    b = _builder(["eq", "f"])
    blocks.equals(b, 0, {"val": 1.0}, 5, {"eq": 1.0})
    table = {x: (x * x) % 7 for x in range(0, 11)}
    blocks.lookup(b, 0, {"val": 1.0}, table, "f")
    tokens = [0, 1, 2, 3, 4, 5, 6, 7, 10, 5]
    get = _run(b, tokens)
    np.testing.assert_array_equal(get("eq"), [float(t == 5) for t in tokens])
    np.testing.assert_array_equal(get("f"), [float(table[t]) for t in tokens])


def test_match_head_copies_the_pointed_position():
    b = _builder(["copied"])
    for t in range(LEN):
        blocks.write_angle(b, t, "pos", t, LEN)
        if t >= 3:
            blocks.write_angle(b, t, "ptr", t - 3, LEN)  # copy the token three back
    blocks.match_head(b, 0, "ptr", "pos", LEN, [({"val": 1.0}, "copied")])
    tokens = [BOS, 4, 7, 1, 9, 2, 8, 8, 3, 5]
    copied = _run(b, tokens, "layer_0/attn")("copied")
    vals = [0 if t == BOS else t for t in tokens]
    np.testing.assert_allclose(copied[3:], vals[:-3], atol=1e-9)


def test_match_head_means_over_matching_keys_and_idles_on_bos():
    b = _builder(["mean"])
    for t in range(1, LEN):
        blocks.write_angle(b, t, "pos", t % 3, 4)  # keys grouped by t mod 3
    for t in (7, 8, 9):
        blocks.write_angle(b, t, "ptr", t % 3, 4)
        b.table(t, "flag", 1.0)
    blocks.match_head(b, 0, "ptr", "pos", 4, [({"val": 1.0}, "mean")], idle=("flag", "bos"))
    tokens = [BOS, 1, 2, 3, 4, 5, 6, 7, 8, 9]
    mean = _run(b, tokens, "layer_0/attn")("mean")
    for t in (7, 8, 9):
        group = [tokens[j] for j in range(1, t + 1) if j % 3 == t % 3]
        assert mean[t] == pytest.approx(np.mean(group), abs=1e-9)
    np.testing.assert_allclose(mean[1:7], 0.0, atol=1e-9)  # idle queries read BOS's 0


def test_sum_head_sums_the_prefix():
    b = _builder(["total"])
    blocks.write_sink(b, "sink", LEN + 1.0)
    blocks.sum_head(b, 0, "sink", "bos", LEN + 1.0, [({"val": 1.0}, "total")])
    tokens = [BOS, 3, 9, 0, 7, 7, 1, 10, 2, 6]
    total = _run(b, tokens, "layer_0/attn")("total")
    np.testing.assert_allclose(total[1:], np.cumsum(tokens[1:]), rtol=1e-6)


def test_quadratic_match_head_finds_the_marked_key_with_the_target_count():
    b = _builder(["N", "N2", "mark", "target", "got"])
    counts = [0, 1, 1, 2, 2, 2, 3, 4, 4, 0]
    marks = [0, 1, 0, 1, 0, 0, 1, 1, 0, 0]
    for t in range(LEN):
        b.table(t, "N", counts[t])
        b.table(t, "N2", counts[t] ** 2)
        b.table(t, "mark", marks[t])
    b.table(9, "target", 2.0)  # the query at position 9 looks for N = 2 + 1 = 3, marked
    blocks.quadratic_match_head(b, 0, {"target": 1.0}, 1.0, "N", "N2", "mark",
                                [({"val": 1.0}, "got")])
    tokens = [BOS, 1, 2, 3, 4, 5, 6, 7, 8, 9]
    got = _run(b, tokens, "layer_0/attn")("got")
    assert got[9] == pytest.approx(6.0, abs=1e-9)  # position 6: N = 3 and marked


def test_builder_rejects_overfull_heads_and_mlps():
    b = _builder(["out"], heads=1, d_ff=2)
    blocks.step(b, 0, {"val": 1.0}, 1, {"out": 1.0})
    with pytest.raises(ValueError, match="MLP is full"):
        blocks.step(b, 0, {"val": 1.0}, 2, {"out": 1.0})
    b.new_head(0)
    with pytest.raises(ValueError, match="no free attention head"):
        b.new_head(0)
    with pytest.raises(KeyError, match="no residual coordinate named 'nope'"):
        b.idx("nope")
