"""The main job (experiments.reproduce) end to end at smoke size, and the quantization study.

Every phase runs with `--smoke` settings (two frontier sizes, a 2 x 2 sweep of 10-step runs, a
quant study with two schemes and 5-step LoRA / QLoRA): the tests check outputs, resumption and
errors, not what the models learn. About 2-3 minutes on a 2-core CPU, most of it the fixture.
"""

import csv
import json
import os
import re
import subprocess
import sys

import pytest

from experiments import quant_study, reproduce, trained_runs, training_verdict
from experiments.reproduce import claims, document
from tests import repo

REPO = str(repo.ROOT)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("reproduce"))
    lines = []
    out = reproduce.reproduce(workdir, "smoke", log=lines.append)
    return workdir, out, lines


def _csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_smoke_run_writes_report_with_every_section_table_and_plot(smoke):
    workdir, out, lines = smoke
    assert out["report"] == os.path.join(workdir, "REPORT.md")
    with open(out["report"]) as f:
        report = f.read()
    for heading in ("# Reproduction", "| claim | verdict in this run |",
                    "## 1. Constructions: the precision frontier",
                    "## 2. Training: fp32 vs pure_bf16 vs bf16",
                    "## 3. Quantization: int4 / QLoRA vs fp32 / LoRA",
                    "## 4. Precision probe: the bits the trained models need", "## Files"):
        assert heading in report, heading
    # One verdict per claim, in the claim table and as its paragraph, from this run's numbers.
    verdicts = [claims.frontier_claim(out["frontiers"]),
                *claims.training_claims(document.sweep_cells(workdir),
                                        document.eval_examples(workdir)),
                claims.quant_claim(document.quant_rows(workdir), "int4")]
    assert [v.claim for v in verdicts] == [
        "Bits a construction needs grow like log n",
        "bf16 training hurts IterADD / MUL, not ADD (iid protocol)",
        "bf16 training hurts IterADD / MUL, not ADD (unseen protocol)",
        "int4 / QLoRA lose to fp32 / LoRA"]  # the smoke sweep has no pure_bf16 arm
    for v in verdicts:
        assert f"| {v.claim} | {v.status} |" in report
        assert claims.paragraph(v) in report
    frontier_bits = verdicts[0].numbers["tasks"][0]["bits"]
    assert frontier_bits == [[e["n"], e["float_mantissa_bits"]["once"]]
                             for e in out["frontiers"][0]["entries"]]
    assert [(r["n"], r["fp32"]) for r in verdicts[-1].numbers["runs"]] == [(3, pytest.approx(
        float(_csv(os.path.join(workdir, "quant", "quant_results.csv"))[0]["exact_match"])))]
    assert "LoRA (fp32 base)" in report and "QLoRA (int4 base)" in report
    # Tables: frontier, the arms per seed, quantization schemes.
    assert "| n | log2 n | mantissa bits (e8mM) |" in report
    assert "| task | n | layers | distinct unseen inputs | fp32 | bf16 | curve: fp32 |" in report
    assert re.search(r"\| run \| n \| fp32 \(32 b\) \| int8 \([\d.]+ b\) \| int4", report)
    # Every image link is relative and points at a file that exists.
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report)
    assert {"frontier/frontier.png", "sweep/exact_match_iid.png",
            "sweep/exact_match_unseen.png", "quant/quant_exact_match.png",
            "quant/quant_lora.png", "probe/probe.png"} <= set(images)
    for rel in images + ["sweep/report.md"]:
        assert not os.path.isabs(rel)
        assert os.path.getsize(os.path.join(workdir, rel)) > 0, rel
    # Progress lines with elapsed times, one start/done pair per phase.
    for phase in reproduce.PHASES:
        assert any(re.match(rf"\[reproduce\] phase {phase}: done in \d+s", ln) for ln in lines)
    with open(os.path.join(workdir, "phases.json")) as f:
        assert set(json.load(f)) == set(reproduce.PHASES)


def test_probe_phase_probes_every_fp32_cell_per_region_set(smoke):
    workdir, _, _ = smoke
    with open(os.path.join(workdir, "probe", "probe.json")) as f:
        result = json.load(f)
    sets = list(reproduce.SETTINGS["smoke"]().probe["region_sets"])
    assert result["settings"]["region_sets"] == sets
    runs = sorted(trained_runs.sweep_runs(os.path.join(workdir, "sweep")))
    assert sorted({e["run"] for e in result["results"]}) == runs
    for e in result["results"]:
        # The scan is checked where it ends: the threshold passes, the width below it fails
        # (or it is the minimum), and every width above it passed.
        checked = {int(m): ok for m, ok in e["checked"].items()}
        if e["threshold_bits"] is not None:
            assert all(ok for m, ok in checked.items() if m >= e["threshold_bits"])
        assert e["first_failure_bits"] is None or checked[e["first_failure_bits"]] is False
    with open(os.path.join(workdir, "REPORT.md")) as f:
        assert "| run | task | n | fp32 | all | mlp | all_but_attention |" in f.read()


def test_frontier_is_checked_at_both_ends(smoke):
    workdir, out, _ = smoke
    (result,) = out["frontiers"]
    assert [e["n"] for e in result["entries"]] == [2, 3]
    for e in result["entries"]:
        m = e["float_mantissa_bits"]["once"]
        assert e["probes"][str(m)] is True
        assert m == 1 or e["probes"][str(m - 1)] is False
        assert e["families"] == {"exhaustive": 2 ** (2 * e["n"])}
    assert os.path.exists(os.path.join(workdir, "frontier", "add_p2.json"))


def test_smoke_outputs_of_sweep_and_quant_study(smoke):
    workdir, _, _ = smoke
    cells = _csv(os.path.join(workdir, "sweep", "cells.csv"))
    assert sorted((r["task"], r["precision"]) for r in cells) == [
        ("add", "bf16"), ("add", "fp32"), ("iter_add", "bf16"), ("iter_add", "fp32")]
    assert all(r["status"] == "completed" for r in cells)
    rows = _csv(os.path.join(workdir, "quant", "quant_results.csv"))
    assert [(r["stage"], r["scheme"]) for r in rows] == [
        ("ptq", "fp32"), ("ptq", "int8"), ("ptq", "int4"), ("lora", "fp32"), ("qlora", "int4")]
    assert {r["run"] for r in rows} == {"add_b2_n3_fp32_L2_s0"}  # quant_tasks=("add",)


def test_rerun_reuses_every_finished_part(smoke):
    workdir, _, _ = smoke
    lines = []
    out = reproduce.reproduce(workdir, "smoke", log=lines.append)
    text = "\n".join(lines)
    assert "[frontier] add p=2: reusing" in text
    assert "4 cells, 4 already done, 0 to run" in text
    assert "5 rows (5 cached)" in text
    assert os.path.exists(out["report"])
    # The report keeps the wall times measured when the work was done, marked as reused.
    with open(os.path.join(workdir, "phases.json")) as f:
        times = json.load(f)
    assert all(times[p]["reused"] and times[p]["seconds"] > 0
               for p in ("frontier", "sweep", "quant"))
    with open(out["report"]) as f:
        assert "the last run reused it" in f.read()


def test_quant_study_alone_writes_csv_report_and_lora_rows(smoke, tmp_path):
    workdir, _, _ = smoke
    cell = os.path.join(workdir, "sweep", "iter_add_b2_n3_k3_fp32_L2_s0")
    with open(os.path.join(cell, "summary.json")) as f:
        summary = json.load(f)
    out = quant_study.run_quant_study(
        str(tmp_path), base_runs=[cell], schemes=("int4_g16", "nvfp4"), finetune_steps=2,
        lora_rank=2, lora_batch=4, num_examples=32, eval_batch=16, progress=lambda _: None,
        qlora_schemes=("int4", "nvfp4"))
    rows = _csv(out["csv"])
    assert [(r["stage"], r["scheme"], r["finetune_steps"]) for r in rows] == [
        ("ptq", "fp32", "0"), ("ptq", "int4_g16", "0"), ("ptq", "nvfp4", "0"),
        ("lora", "fp32", "2"), ("qlora", "int4", "2"), ("qlora", "nvfp4", "2")]
    assert all(r["task"] == "iter_add" and r["n"] == "3" and r["k"] == "3" for r in rows)
    # The restored fp32 model is the trained one: same examples, same exact match as training's.
    assert float(rows[0]["exact_match"]) == summary["exact_match"]["3"]
    assert 4 < float(rows[1]["bits_per_weight"]) < 8 and float(rows[4]["final_loss"]) > 0
    assert 4.5 <= float(rows[2]["bits_per_weight"]) < 4.6  # nvfp4: 4 + 8/16 + tensor scale
    with open(out["report"]) as f:
        report = f.read()
    assert "| LoRA - QLoRA |" in report and "int4_g16" in report
    assert "QLoRA (nvfp4 base)" in report
    for path in out["plots"]:
        assert os.path.getsize(path) > 0


def test_quant_study_rejects_bad_input_by_name(smoke, tmp_path, capsys):
    workdir, _, _ = smoke
    fp32 = os.path.join(workdir, "sweep", "add_b2_n3_fp32_L2_s0")
    bf16 = os.path.join(workdir, "sweep", "add_b2_n3_bf16_L2_s0")
    with pytest.raises(ValueError, match="int3x"):
        quant_study.run_quant_study(str(tmp_path), base_runs=[fp32], schemes=("int3x",))
    with pytest.raises(ValueError, match="int4_g7"):  # 7 divides no kernel's input length
        quant_study.run_quant_study(str(tmp_path), base_runs=[fp32], schemes=("int4_g7",))
    with pytest.raises(ValueError, match="trained in 'bf16'"):
        quant_study.run_quant_study(str(tmp_path), base_runs=[bf16], schemes=("int8",))
    with pytest.raises(ValueError, match="not a finished training run"):
        quant_study.run_quant_study(str(tmp_path), base_runs=[str(tmp_path)])
    with pytest.raises(ValueError, match="finetune_runs"):
        quant_study.run_quant_study(str(tmp_path), base_runs=[fp32], finetune_runs=["nope"])
    with pytest.raises(ValueError, match="base_runs is empty"):
        quant_study.run_quant_study(str(tmp_path), base_runs=[])
    for argv, flag in (([f"--workdir={tmp_path}", "--runs", fp32, "--schemes=int3x"], "--schemes"),
                       ([f"--workdir={tmp_path}", "--runs=/no/such/run"], "--runs")):
        capsys.readouterr()
        with pytest.raises(SystemExit) as e:
            quant_study.main(argv)
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {flag}: ") and err.count("\n") == 1, err


def test_reproduce_cli_rejects_bad_arguments(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        reproduce.main(["--workdir", str(tmp_path), "--quick", "--smoke"])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        reproduce.main(["--quick"])  # --workdir is required
    assert e.value.code == 2
    capsys.readouterr()
    assert reproduce.main(["--workdir", str(tmp_path), "--smoke", "--workers=0"]) == 2
    assert "--workers must be >= 1, got 0" in capsys.readouterr().err
    assert reproduce.main(["--workdir", str(tmp_path), "--smoke", "--phases=sweep,bogus"]) == 2
    assert "bogus" in capsys.readouterr().err
    a_file = tmp_path / "file"
    a_file.write_text("")
    assert reproduce.main(["--workdir", str(a_file), "--smoke"]) == 2
    assert "is not a directory" in capsys.readouterr().err


def test_help_describes_modes_and_runtime():
    result = subprocess.run([sys.executable, "-m", "experiments.reproduce", "--help"], cwd=REPO,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0
    assert "--quick" in result.stdout and "--workdir" in result.stdout
    assert "Runtime" in result.stdout


def _cells(task, n, fp32, bf16):
    return [dict(task=task, base=2, k=3 if task == "iter_add" else 2, l=0, layers=2, n=n,
                 accumulation="once", precision=p, seed=0, exact_match=em, steps_to_converge=None,
                 convergence=None) for p, em in (("fp32", fp32), ("bf16", bf16))]


def test_training_claims_give_the_verdict_its_numbers_and_the_small_held_out_sets():
    cells = (_cells("add", 8, 0.312, 0.281) + _cells("iter_add", 4, 1.0, 0.973)
             + _cells("mul", 4, 0.695, 0.484))
    iid, v = claims.training_claims(cells, num_examples=256)
    # Cells without the iid columns (rows of an earlier rule) give the iid claim nothing to judge.
    assert (iid.claim, iid.status) == ("bf16 training hurts IterADD / MUL, not ADD (iid protocol)",
                                       "not run")
    assert (v.claim, v.status) == ("bf16 training hurts IterADD / MUL, not ADD (unseen protocol)",
                                   "not shown")
    assert v.rule == training_verdict.RULE.text()
    x = v.numbers
    assert x["arm"] == "bf16" and x["collapses"] == [] and x["matches"] == []
    assert x["control"] == [{"point": "ADD base 2 n=8", "pairs": [[0, 0.312, 0.281]]}]
    assert (x["num_examples"], x["seeds"], x["protocol"]) == (256, 1, "unseen")
    # The unseen verdict leaves out MUL base 2 n=4: 14 distinct held-out inputs (< 200).
    text = claims.paragraph(v)
    assert "fewer than 200 distinct held-out inputs: MUL base 2 n=4 (14)" in text
    assert "up to 0.031 at 256 examples" in text  # 0.5 / sqrt(256)


def _frontier(bits):
    entries = [{"n": n, "float_mantissa_bits": {"once": m}} for n, m in bits]
    return {"label": "add p=10", "accumulations": ["once"], "entries": entries,
            "fits": {"once": (1.0, 5.0)}}


def test_frontier_claim_verdicts_growth_flat_ranges_and_bf16_failures():
    v = claims.frontier_claim([_frontier([(4, 7), (16, 9), (64, 11)])])
    assert (v.claim, v.status) == ("Bits a construction needs grow like log n", "shown")
    assert v.numbers["tasks"] == [{"label": "add p=10", "accumulation": "once",
                                   "bits": [[4, 7], [16, 9], [64, 11]], "fit": [1.0, 5.0]}]
    assert (v.numbers["grew"], v.numbers["flat"]) == (1, 0)
    assert v.numbers["bf16_fails"] == [{"label": "add p=10", "from_n": 16}]  # 9 > 7 bits
    v = claims.frontier_claim([_frontier([(4, 7), (8, 7)])])
    assert v.status == "not shown" and (v.numbers["grew"], v.numbers["flat"]) == (0, 1)
    assert v.numbers["bf16_fails"] == []
    v = claims.frontier_claim([_frontier([(4, 7), (8, None)]), _frontier([(4, 5), (8, 4)])])
    assert v.status == "not shown" and v.numbers["bf16_fails"] == [
        {"label": "add p=10", "from_n": 8}]  # None: more than the widest width checked
    assert claims.frontier_claim([]).status == "not run"


def _quant_rows(run, task, n, fp32, int4, lora=None, qlora=None):
    common = dict(run=run, task=task, base=2, k="", n=n, finetune_steps=0)
    rows = [dict(common, stage="ptq", scheme="fp32", exact_match=fp32),
            dict(common, stage="ptq", scheme="int4", exact_match=int4)]
    if lora is not None:
        rows += [dict(common, stage="lora", scheme="fp32", exact_match=lora, finetune_steps=100),
                 dict(common, stage="qlora", scheme="int4", exact_match=qlora,
                      finetune_steps=100)]
    return rows


def test_quant_claim_verdict_gaps_trends_and_fine_tuning():
    rows = (_quant_rows("a", "iter_add", 4, 0.996, 0.531, 1.0, 0.996)
            + _quant_rows("b", "iter_add", 6, 0.879, 0.508, 0.941, 0.875)
            + _quant_rows("c", "mul", 4, 0.3, 0.1))
    v = claims.quant_claim(rows, "int4")
    assert v.claim == "int4 / QLoRA lose to fp32 / LoRA"
    assert v.status == "int4 below fp32, QLoRA below LoRA"
    x = v.numbers
    assert x["learned"] == 2  # mul n=4 stays below 0.5 in fp32
    assert x["worst"] == {"task": "iter_add", "n": 4, "gap": pytest.approx(0.465)}
    assert x["trends"] == [{"task": "iter_add", "first": [4, pytest.approx(0.465)],
                            "last": [6, pytest.approx(0.371)], "runs": 2, "widens": False}]
    assert x["finetune"]["steps"] == 100
    assert [(c["n"], c["lora"], c["qlora"]) for c in x["finetune"]["runs"]] == [
        (4, 1.0, 0.996), (6, 0.941, 0.875)]
    assert "LoRA ends ahead of QLoRA by up to 0.066" in claims.paragraph(v)
    # Two seeds at one n are not a trend; seeds at the same n are averaged before comparing n.
    seeds = (_quant_rows("s0", "add", 8, 0.987, 0.825) + _quant_rows("s1", "add", 8, 1.0, 0.677))
    assert claims.quant_claim(seeds, "int4").numbers["trends"] == []
    seeds += _quant_rows("s0n6", "add", 6, 0.99, 0.97) + _quant_rows("s1n6", "add", 6, 1.0, 0.96)
    assert claims.quant_claim(seeds, "int4").numbers["trends"] == [
        {"task": "add", "first": [6, pytest.approx(0.03)],
         "last": [8, pytest.approx((0.162 + 0.323) / 2)], "runs": 4, "widens": True}]
    v = claims.quant_claim(_quant_rows("a", "add", 4, 0.2, 0.1), "int4")
    assert v.status == "not tested" and v.numbers["worst"] is None
    assert claims.quant_claim([], "int4").status == "not run"


def test_quant_tables_are_in_a_fixed_order_whatever_the_row_order():
    """Runs at the same n sort by name: the table does not depend on set or file order."""
    from experiments.report import quant as quant_report
    rows = []
    for run, n in [("r_s1", 8), ("r_s0", 8), ("r_s0n6", 6)]:
        rows += [dict(r, bits_per_weight=32.0 if r["scheme"] == "fp32" else 4.38)
                 for r in _quant_rows(run, "add", n, 1.0, 0.5)]
    tables = {quant_report.report_markdown(order, ["fp32", "int4"], [])
              for order in (rows, rows[::-1], rows[2:] + rows[:2])}
    assert len(tables) == 1
    body = tables.pop()
    assert body.index("| r_s0n6 |") < body.index("| r_s0 |") < body.index("| r_s1 |")
