"""The recipe table from trial directories: a finished trial, a stopped one, the CPU time."""

import json

import pytest

from experiments import recipe_search


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _config(batch):
    return {"model": {"d_model": 64, "num_layers": 2, "num_heads": 4, "d_ff": 256},
            "optim": {"learning_rate": 0.003, "warmup_steps": 200, "final_lr_fraction": 1.0},
            "train": {"batch_size": batch}}


def test_rows_of_a_finished_and_a_stopped_trial(tmp_path):
    done, stopped = tmp_path / "A", tmp_path / "B"
    done.mkdir()
    stopped.mkdir()
    history = [{"step": 500, "exact_match": 0.5}, {"step": 1000, "exact_match": 0.96},
               {"step": 1500, "exact_match": 0.97}]
    (done / "summary.json").write_text(json.dumps(
        {"config": _config(128), "steps": 1500, "status": "completed", "validation": history,
         "exact_match": {"8": 0.971}, "wall_time_s": 600.0}))
    (tmp_path / "A.time").write_text("Command terminated by signal 15\nuser 500 sys 100 wall 900\n")
    _write(stopped / "validation.jsonl", [{"step": 500, "exact_match": 0.01}])
    _write(stopped / "metrics.jsonl", [{"step": 700, "loss": 1.0}])
    (stopped / "trial.json").write_text(json.dumps({"config": _config(64), "note": "stopped"}))
    a, b = (recipe_search.trial_row(str(d)) for d in (done, stopped))
    assert (a["steps_to_0.95"], a["best"], a["best_step"], a["final_exact_match"]) == \
        (1000, 0.97, 1500, 0.971)
    assert a["schedule"] == "warmup 200, constant" and a["cpu_min"] == 10.0
    assert a["reading"] == "converged@1500" and a["wall_min"] == 10.0
    assert (b["batch"], b["steps_run"], b["steps_to_0.95"], b["note"]) == (64, 700, None,
                                                                          "stopped")
    text = recipe_search.to_markdown([a, b])
    assert "| A | 64 | 2 | 4 | 256 | 0.003 | warmup 200, constant | 128 | 1500 | 1000 |" in text
    assert "not reached" in text and "B: stopped" in text


def test_bad_runs_flag_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        recipe_search.main([f"--runs={tmp_path}/missing"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --runs: ") and len(err.strip().splitlines()) == 1
