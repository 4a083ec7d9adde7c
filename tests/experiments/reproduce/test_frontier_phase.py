"""The reproduction's frontier phase (experiments/reproduce/frontier.py): the full mode keeps its
verdicts in workdir/frontier/checks.json, so a stopped phase resumes within a frontier."""

import dataclasses

from constructions import frontier
from experiments.configs import modes
from experiments.reproduce import frontier as frontier_phase


def test_full_mode_frontier_runs_with_a_check_log_and_caches_its_result(tmp_path, monkeypatch):
    calls = []

    def fake_run_frontier(spec_kwargs, ns, accumulations, num_random, seed, batch_size,
                          progress, **kwargs):
        calls.append(kwargs)
        return {"label": "fake", "spec": spec_kwargs, "ns": ns, "entries": []}

    monkeypatch.setattr(frontier, "run_frontier", fake_run_frontier)
    s = dataclasses.replace(modes.smoke_settings(), frontier_full=True)
    (result,) = frontier_phase.run_frontiers(str(tmp_path), s, log=lambda *a: None)
    assert calls == [{"checks_dir": str(tmp_path / "frontier")}]
    assert result["label"] == "fake"
    (again,) = frontier_phase.run_frontiers(str(tmp_path), s, log=lambda *a: None)
    assert len(calls) == 1 and again["reused"]  # the finished frontier is read back, not rerun
