"""The notebooks in colabs/: each runs top to bottom with SMOKE=1, and git holds them stripped.

Each notebook executes in a fresh kernel of *this* interpreter (a kernelspec written to a
temporary JUPYTER_PATH, so the test does not depend on which `python` a global kernelspec
names), with the working directory a temporary directory and SMOKE=1 in the environment.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import time

import ipykernel  # noqa: F401  (the kernel the notebooks run in; a dev dependency)
import nbclient
import nbformat
import pytest

from tests import repo

ROOT = repo.ROOT
COLABS = ROOT / "colabs"
NOTEBOOKS = sorted(COLABS.glob("*.ipynb"))
KERNEL = "python3"
# No cell may run longer than this (seconds). The slowest SMOKE cell is 02's precision frontier
# (about 15 simulated decoders compiled: 1.5-3.5 minutes on a busy 2-core CPU).
CELL_TIMEOUT = 900


@pytest.fixture(scope="session")
def kernel_path(tmp_path_factory):
    """A JUPYTER_PATH holding a `python3` kernelspec that runs sys.executable."""
    from ipykernel.kernelspec import write_kernel_spec

    data_dir = tmp_path_factory.mktemp("jupyter")
    write_kernel_spec(str(data_dir / "kernels" / KERNEL),
                      overrides={"display_name": "Python 3 (tests)"})
    return str(data_dir)


def test_there_are_notebooks():
    names = [p.name for p in NOTEBOOKS]
    for name in ("01_number_formats.ipynb", "02_constructions.ipynb",
                 "03_precision_training.ipynb", "04_quantization.ipynb"):
        assert name in names


# The training and constructions notebooks take 40-70 s each: slow checks (their APIs have
# their own tests); the formats and quantization notebooks run by default.
SLOW_NOTEBOOKS = ("02_constructions", "03_precision_training")


@pytest.mark.parametrize("path", [
    pytest.param(p, marks=pytest.mark.slow) if p.stem in SLOW_NOTEBOOKS else p
    for p in NOTEBOOKS], ids=lambda p: p.stem)
def test_notebook_runs_in_smoke_mode(path, kernel_path, tmp_path, monkeypatch):
    monkeypatch.setenv("SMOKE", "1")
    monkeypatch.setenv("JUPYTER_PATH", os.pathsep.join(
        [kernel_path, *filter(None, [os.environ.get("JUPYTER_PATH")])]))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the notebooks' tempfile.mkdtemp() work dirs
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name=KERNEL,
                                     resources={"metadata": {"path": str(tmp_path)}})
    start = time.time()
    client.execute()  # raises CellExecutionError on the first failing cell
    elapsed = time.time() - start
    print(f"{path.name}: {elapsed:.1f}s")
    errors = [out for cell in nb.cells if cell.cell_type == "code"
              for out in cell.get("outputs", []) if out.get("output_type") == "error"]
    assert not errors, errors
    assert all(cell.get("execution_count") for cell in nb.cells if cell.cell_type == "code")


def _tracked_notebooks() -> list[pathlib.Path]:
    """Notebooks git tracks (or, outside a git checkout, every notebook in colabs/)."""
    try:
        out = subprocess.run(["git", "ls-files", "--", "colabs/*.ipynb"], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return NOTEBOOKS
    tracked = [ROOT / line for line in out.splitlines() if line.strip()]
    return tracked or NOTEBOOKS


def test_notebooks_are_stripped():
    for path in _tracked_notebooks():
        nb = json.loads(path.read_text())
        for i, cell in enumerate(nb["cells"]):
            if cell["cell_type"] != "code":
                continue
            assert cell.get("outputs") == [], f"{path.name} cell {i} has outputs"
            assert cell.get("execution_count") is None, f"{path.name} cell {i} was executed"


def test_notebooks_match_their_percent_format_sources():
    sources = sorted(COLABS.glob("[0-9][0-9]_*.py"))
    assert [p.stem for p in sources] == [p.stem for p in NOTEBOOKS]
    result = subprocess.run([sys.executable, str(COLABS / "sync_notebooks.py"), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_sync_check_sees_an_edited_source(tmp_path):
    import shutil

    for path in [COLABS / "sync_notebooks.py", *COLABS.glob("01_*")]:
        shutil.copy(path, tmp_path / path.name)
    edited = tmp_path / "01_number_formats.py"
    edited.write_text(edited.read_text() + "\n# %%\nprint('a new cell')\n")
    check = [sys.executable, str(tmp_path / "sync_notebooks.py"), "--check"]
    stale = subprocess.run(check, capture_output=True, text=True)
    assert stale.returncode == 1 and "01_number_formats.ipynb" in stale.stdout
    subprocess.run(check[:-1], check=True, capture_output=True)
    assert subprocess.run(check, capture_output=True).returncode == 0
    cells = json.loads((tmp_path / "01_number_formats.ipynb").read_text())["cells"]
    assert "".join(cells[-1]["source"]) == "print('a new cell')"
    assert cells[-1]["id"].startswith("01-")
