"""The frontier's mantissa scan: every width checked, the threshold and the narrower widths that
pass (exactness is not monotonic in M), the runtime-width decoder equal to the static formats,
and the report layer (markdown, plot) telling the two apart."""

import dataclasses
import json

import jax
import numpy as np
import pytest

from arith_precision import tasks
from constructions import build, frontier
from constructions.check import inputs, run
from constructions.frontier import report as frontier_report
from constructions.frontier import search as frontier_search


def test_mantissa_scan_quick_stops_at_the_first_failure_from_the_top():
    """ADD base 2, n = 2 shape: e8m2 passes, e8m3 and e8m4 fail, e8m5 and up pass."""
    seen = []

    def passes(m):
        seen.append(m)
        return m == 2 or m >= 5

    got = frontier.mantissa_scan(passes, 0, 8, quick=True)
    assert got["threshold"] == 5 and got["narrower_passing"] is None
    assert seen == [8, 7, 6, 5, 4]  # every width above the threshold, and the failing one below
    assert frontier.mantissa_scan(lambda m: m < 3, 0, 8, quick=True)["threshold"] is None


@pytest.mark.parametrize("passing,lo,hi,threshold,narrower", [
    (set(range(5, 25)), 0, 24, 5, []),
    (set(range(0, 25)), 0, 24, 0, []),
    ({2} | set(range(5, 25)), 0, 24, 5, [2]),          # ADD base 2, n = 2, `once`
    ({0, 3} | set(range(9, 25)) - {12}, 0, 24, 13, [0, 3, 9, 10, 11]),
    (set(range(0, 24)), 0, 24, None, list(range(0, 24))),  # the widest fails: no threshold
    (set(), 1, 24, None, []),
])
def test_mantissa_scan_checks_every_width(passing, lo, hi, threshold, narrower):
    seen = []

    def passes(m):
        seen.append(m)
        return m in passing

    got = frontier.mantissa_scan(passes, lo, hi)
    assert (got["threshold"], got["narrower_passing"]) == (threshold, narrower)
    assert sorted(seen) == list(range(lo, hi + 1))  # nothing assumed: every width checked
    assert got["checked"] == {m: m in passing for m in range(lo, hi + 1)}


@pytest.fixture(scope="module")
def add_b2_n2():
    spec = tasks.TaskSpec("add", base=2, n=2)
    operands, families = inputs.verification_set(spec, num_random=200, seed=0)
    assert families == {"exhaustive": 16}
    run.enable_carrier("e8m24")
    return build(spec), operands


@pytest.mark.slow  # ~35 s: a sweep over every mantissa width
def test_add_base2_n2_is_not_monotonic_in_the_mantissa(add_b2_n2):
    """e8m2 is exact on all 16 inputs, e8m3 and e8m4 are not, every width from 5 to 24 is."""
    construction, operands = add_b2_n2
    failures = {}

    def passes(m):
        failures[m] = run.check(construction, operands, f"e8m{m}", "once", 512,
                                runtime=True)["failures"]
        return failures[m] == 0

    scan = frontier.mantissa_scan(passes)
    assert (scan["threshold"], scan["narrower_passing"]) == (5, [2])
    assert failures[3] > 0 and failures[4] > 0 and failures[2] == 0
    assert len(failures) == 25
    # One compiled program per carrier served all 25 widths.
    compiled = [f._cache_size() for f in _runtime_decoders(construction, "once")]
    assert compiled == [1, 1], compiled


def _runtime_decoders(construction, accumulation):
    import dataclasses

    import jax.numpy as jnp

    out = []
    for wide, dtype in ((False, jnp.float32), (True, jnp.float64)):
        config = dataclasses.replace(construction.config, dtype=jnp.dtype(dtype),
                                     param_dtype=jnp.dtype(dtype))
        out.append(run.runtime_decoder(config, construction.spec.answer_tokens, accumulation,
                                        wide))
    return out


@pytest.mark.parametrize("m", [2, 3, pytest.param(12, marks=pytest.mark.slow)])
def test_runtime_width_decoder_equals_the_static_format(add_b2_n2, m):
    """Answers of the one-compile decoder (float32 for M <= 10, float64 above) equal the static
    e8mM decoder's, token for token, including where they are wrong."""
    construction, operands = add_b2_n2
    got = run.predict(construction, operands, f"e8m{m}", "once", 512, runtime=True)
    want = run.predict(construction, operands, f"e8m{m}", "once", 512)
    np.testing.assert_array_equal(got, want)


def test_runtime_width_decoder_rejects_other_formats(add_b2_n2):
    construction, operands = add_b2_n2
    assert run.runtime_mantissa("e8m7") == 7 and run.runtime_mantissa("bf16") == 7
    assert [run.runtime_mantissa(f) for f in ("fp16", "e4m3", "fixed8.8", "e8m25")] == [None] * 4
    with pytest.raises(ValueError, match="runtime-width decoder"):
        run.predict(construction, operands, "fp16", "once", runtime=True)


def _fake_result(narrower_key=True):
    entries = []
    for n, m, below in ((2, 5, [2]), (4, 6, []), (8, None, [3, 4])):
        e = {"n": n, "checked": 16, "families": {}, "d_model": 9,
             "float_mantissa_bits": {"once": m},
             "fixed": {"once": {"int_bits": 6, "frac_bits": 4}},
             "common": {"once": {f: False for f in frontier.COMMON_FORMATS}}}
        if narrower_key:
            e["float_narrower_passing"] = {"once": below}
        entries.append(e)
    return {"label": "add p=2", "spec": {}, "ns": [2, 4, 8], "accumulations": ["once"],
            "exponent_bits": 8, "mantissa_range": [0, 24], "entries": entries,
            "fits": {"once": frontier.fit_line([2, 4, 8], [5, 6, None])}}


def test_markdown_and_plot_tell_the_threshold_from_narrower_widths(tmp_path):
    md = frontier.to_markdown(_fake_result())
    assert "| threshold: float mantissa bits M (e8mM) | narrower M that also pass |" in md
    assert "| 2 | 1.00 | 5 | 2 | fixed6.4 | 16 |" in md
    assert "| 4 | 2.00 | 6 | none | fixed6.4 | 16 |" in md
    assert "| 8 | 3.00 | > 24 | 3, 4 | fixed6.4 | 16 |" in md
    old = frontier.to_markdown(_fake_result(narrower_key=False))  # results of the binary search
    assert "| 2 | 1.00 | 5 | not checked |" in old
    frontier.plot([_fake_result()], str(tmp_path / "f.png"))
    assert (tmp_path / "f.png").stat().st_size > 1000
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "frontier.json").write_text(json.dumps(_fake_result(name == "a")))
    merged = frontier_report.merge([str(tmp_path / "a"), str(tmp_path / "b")],
                                   str(tmp_path / "out"))
    assert "| 2 | 1.00 | 5 | 2 |" in merged and "not checked" in merged
    float_only = _fake_result()
    for e in float_only["entries"]:
        e["fixed"]["once"], e["common"]["once"] = None, {"bf16": e["n"] <= 4}
    md = frontier.to_markdown(float_only)
    assert "| 2 | 1.00 | 5 | 2 | not searched (--float-only) | 16 |" in md
    assert "| bf16 | 4 (fails from n=8) |" in md and "| fp16 | not checked (--float-only) |" in md


@pytest.mark.slow  # ~2-4 minutes: the fixed-point search and fp16 / e4m3 / e5m2 compile per format
def test_frontier_entry_reports_threshold_and_narrower_widths(tmp_path):
    result = frontier.run_frontier({"task": "add", "base": 2, "k": 2, "l": None}, [2],
                                   ("once", "sequential"), num_random=0, seed=0,
                                   progress=lambda *a: None)
    (e,) = result["entries"]
    assert e["float_mantissa_bits"] == {"once": 5, "sequential": 5}
    assert e["float_narrower_passing"] == {"once": [2], "sequential": []}
    assert e["float_checked"]["once"]["3"] is False and len(e["float_checked"]["once"]) == 25
    assert e["common"]["once"]["bf16"] is True  # e8m7 of the scan
    assert result["mantissa_range"] == [0, 24]


def test_float_only_frontier_of_add_base2_n2(add_b2_n2, tmp_path):
    """run_frontier end to end without the static formats: the JSON keys other code reads."""
    result = frontier.run_frontier({"task": "add", "base": 2, "k": 2, "l": None}, [2], ("once",),
                                   num_random=0, seed=0, progress=lambda *a: None,
                                   float_only=True)
    (e,) = result["entries"]
    assert (e["n"], e["float_mantissa_bits"], e["float_narrower_passing"]) == (
        2, {"once": 5}, {"once": [2]})
    assert e["fixed"] == {"once": None} and e["common"] == {"once": {"bf16": True}}
    assert e["float_checked"]["once"] == {str(m): m == 2 or m >= 5 for m in range(25)}
    assert result["float_only"] and result["mantissa_range"] == [0, 24]
    frontier.plot([result], str(tmp_path / "f.png"))
    json.dumps(result)  # serialisable as written by --out


def test_a_stopped_frontier_run_resumes_from_its_check_log(add_b2_n2, tmp_path, monkeypatch):
    """--out keeps every verdict in checks.json; a second run reuses them without a forward pass,
    and a construction with changed weights gets no old verdict."""
    from constructions.check import log as check_log

    kwargs = dict(num_random=0, seed=0, progress=lambda *a: None, float_only=True)
    spec_kwargs = {"task": "add", "base": 2, "k": 2, "l": None}
    first = frontier.run_frontier(spec_kwargs, [2], ("once",), checks_dir=str(tmp_path), **kwargs)
    log = check_log.CheckLog(str(tmp_path))
    assert log.loaded == 25 and sum(log.verdicts.values()) == 21  # e8m2 and e8m5..e8m24

    frontier_search._CACHE.clear()  # a fresh process: only the file remembers

    def no_forward_pass(*a, **k):
        raise AssertionError("a recorded verdict was checked again")

    monkeypatch.setattr(run, "check", no_forward_pass)
    again = frontier.run_frontier(spec_kwargs, [2], ("once",), checks_dir=str(tmp_path), **kwargs)
    assert again["entries"] == first["entries"]

    construction = build(tasks.TaskSpec(task="add", base=2, n=2, k=2))
    changed = build(tasks.TaskSpec(task="add", base=2, n=2, k=2))
    leaves, tree = jax.tree_util.tree_flatten(changed.params)
    leaves[0] = np.asarray(leaves[0]) + 1
    changed = dataclasses.replace(changed, params=jax.tree_util.tree_unflatten(tree, leaves))
    assert check_log.construction_digest(construction) != check_log.construction_digest(changed)
    assert check_log.construction_digest(construction) == check_log.construction_digest(
        build(tasks.TaskSpec(task="add", base=2, n=2, k=2)))


def test_check_logs_sharing_a_directory_keep_each_others_verdicts(tmp_path):
    from constructions.check import log as check_log

    first, second = check_log.CheckLog(str(tmp_path)), check_log.CheckLog(str(tmp_path))
    first.record("a", True)
    second.record("b", False)  # second never read "a", yet must not drop it
    assert check_log.CheckLog(str(tmp_path)).verdicts == {"a": True, "b": False}


@pytest.mark.parametrize("fit, args, text", [
    ((2.0, -1e-4), (), "2.00 log2 n + 0.00"),  # a rounded zero has no sign
    ((1.4, 3.6), (2, 1), "1.40 log2 n + 3.6"),
    ((2.6, -0.94), (2, 1), "2.60 log2 n - 0.9"),
])
def test_fit_text(fit, args, text):
    assert frontier_report.fit_text(fit, *args) == text
