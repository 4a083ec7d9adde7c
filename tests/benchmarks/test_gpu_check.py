"""`benchmarks/gpu_check.py --cpu-smoke` end to end, and its JSON priced by `--estimate`."""

import os
import subprocess
import sys

import pytest

from experiments import sweep as sweep_lib
from experiments.configs import paper_fig2
from experiments.sweep import cost as cost_estimate
from tests import repo

ROOT = str(repo.ROOT)


@pytest.mark.slow
def test_cpu_smoke_writes_a_json_the_estimate_reads(tmp_path):
    out = tmp_path / "check.json"
    env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
    subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "gpu_check.py"),
                    "--cpu-smoke", "--budget-s=3000", f"--out={out}"], env=env, cwd=ROOT,
                   check=True, timeout=3600)
    data = cost_estimate.load_measurement(str(out))
    assert data["platform"] == "cpu" and data["cpu_smoke"]
    arms = {(r["arm"], r["replicas"]) for r in data["steps_per_sec"]}
    assert arms == {(a, r) for a in cost_estimate.ARMS for r in (1, 2)}
    assert all(r["steps_per_sec"] > 0 for r in data["steps_per_sec"])
    assert data["mini_grid"]["cells"] == 4
    assert set(data["mini_grid"]["statuses"].values()) == {"completed"}
    cells = sweep_lib.expand(paper_fig2.get_config("smoke"))
    result = cost_estimate.estimate(cells, data)
    assert result["hours"][1] is not None
    text = cost_estimate.render("paper_fig2_smoke", result, data, None)
    assert "CPU measurement" in text
