"""The per-GPU exactness table (`experiments.gpu_numerics`): which tensor-core models each format
gets, the table's cells, and one real row of each kind."""

import pytest

from experiments import gpu_numerics


@pytest.mark.parametrize("fmt, gpus", [
    ("bf16", ["a100", "h100", "b200"]),  # V100 has no bf16 tensor cores
    ("fp16", ["v100", "a100", "h100", "b200"]),
    ("e4m3fn", ["h100"]),  # A100 has no fp8; B200 fp8 has no bit-exact model
    ("e5m2", ["h100"]),
])
def test_gpus_for_each_format(fmt, gpus):
    assert gpu_numerics.gpus_for(fmt, gpu_numerics.GPUS) == gpus


def test_parse_constructions():
    got = gpu_numerics.parse_constructions("add:10:4;8,iter_add:2:4:5")
    assert got == [{"task": "add", "base": 10, "ns": [4, 8], "k": 2},
                   {"task": "iter_add", "base": 2, "ns": [4], "k": 5}]
    for bad in ("add:10", "mul:x:4", "iter_add:2:4:1", "", "sub:10:4"):
        with pytest.raises(ValueError):
            gpu_numerics.parse_constructions(bad)


def _row(what, fmt, acc, failures=0, kind="construction", **kw):
    return dict(kind=kind, what=what, format=fmt, accumulation=acc, failures=failures,
                exact_match=1.0 - failures / 10, checked=10, **kw)


def test_table_marks_exact_cells_and_leaves_missing_gpus_out():
    rows = [_row("ADD, base 10, n = 4", "e4m3fn", "once"),
            _row("ADD, base 10, n = 4", "e4m3fn", "tensor_core:h100", failures=3),
            _row("m", "e4m3fn", "once", kind="trained", fp32_exact_match=0.9),
            _row("m", "e4m3fn", "tensor_core:h100", failures=5, kind="trained",
                 fp32_exact_match=0.9)]
    text = gpu_numerics.to_markdown(rows, ["e4m3fn"], ["a100", "h100"])
    lines = text.splitlines()
    header = next(line for line in lines if line.startswith("| model"))
    assert "e4m3fn once" in header and "e4m3fn h100" in header and "a100" not in header
    assert "| ADD, base 10, n = 4 | 10 | exact | 0.700 |" in lines
    assert "| m [0.900] | 10 | 1.000 | 0.500 |" in lines


@pytest.mark.slow  # two construction checks under the tensor-core model: ~1 CPU-minute
def test_a_construction_row_under_a_tensor_core_model():
    items = gpu_numerics.parse_constructions("add:2:2")
    rows = gpu_numerics.construction_rows(items, ["bf16"], ["a100"], num_random=0,
                                          log=lambda line: None)
    assert [r["accumulation"] for r in rows] == ["once", "tensor_core:a100"]
    for r in rows:
        assert r["checked"] > 0 and r["failures"] == 0  # bf16 is enough at n = 2 (frontier)
        assert r["what"] == "ADD, base 2, n = 2"


def test_finished_rows_are_reused_and_each_new_row_is_handed_on(monkeypatch):
    from constructions import verify

    calls = []

    def fake_verify(spec, fmt, acc, num_random):
        calls.append((spec.n, fmt, acc))
        return {"exact_match": 1.0, "checked": 7, "failures": 0}

    monkeypatch.setattr(verify, "verify", fake_verify)
    items = gpu_numerics.parse_constructions("add:2:2;3")
    seen = []
    first = gpu_numerics.construction_rows(items, ["e4m3fn"], ["h100"], 0, log=lambda s: None,
                                           on_row=lambda rows: seen.append(len(rows)))
    assert len(first) == 4 and seen == [1, 2, 3, 4] and len(calls) == 4
    calls.clear()
    again = gpu_numerics.construction_rows(items, ["e4m3fn"], ["h100"], 0, log=lambda s: None,
                                           done=first[:3])
    assert calls == [(3, "e4m3fn", "tensor_core:h100")]
    assert again[:3] == first[:3]  # the very rows given
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in again] == \
        [{k: v for k, v in r.items() if k != "seconds"} for r in first]
    calls.clear()
    gpu_numerics.construction_rows(items, ["e4m3fn"], ["h100"], 5, log=lambda s: None,
                                   done=first)
    assert len(calls) == 4  # another --random: another verification set, nothing reused
