"""The front door and the guides: README.md is short and links every page of docs/, and every
`python -m` command that README.md or docs/ shows runs (`--help` of each, exit status 0)."""

import re
import subprocess
import sys

import pytest

from tests import repo

ROOT = repo.ROOT
PAGES = sorted((ROOT / "docs").glob("*.md"))
COMMAND = re.compile(r"python -m ((?:[a-z_]+\.)*[a-z_]+)")


def _modules() -> list[str]:
    found = set()
    for path in [ROOT / "README.md", *PAGES]:
        found |= set(COMMAND.findall(path.read_text()))
    return sorted(found - {"pytest"})


def test_readme_is_a_front_door():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 250
    linked = set(re.findall(r"\]\((docs/[\w.-]+\.md)\)", text))
    assert {f"docs/{p.name}" for p in PAGES} <= linked, "a docs page the README does not link"
    assert PAGES, "docs/ has no pages"


@pytest.mark.parametrize("path", [ROOT / "README.md", *PAGES], ids=lambda p: p.name)
def test_pages_speak_to_readers(path):
    """Project pages are written for this project's readers: no work-log vocabulary."""
    text = path.read_text()
    for word in (r"\bthis session\b", r"\bsessions?\b", r"\bthe SPEC\b", r"\bSPEC's\b",
                 r"\bthe issue\b", r"\bissue's\b"):
        assert not re.search(word, text), f"{path.name}: {word}"


def test_the_pages_show_every_command_line():
    assert {"experiments.reproduce", "experiments.sweep", "experiments.main",
            "constructions.verify", "constructions.frontier", "constructions.certify"} <= \
        set(_modules())


@pytest.mark.parametrize("module", _modules())
def test_every_documented_command_runs(module):
    proc = subprocess.run([sys.executable, "-m", module, "--help"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "usage" in (proc.stdout + proc.stderr).lower() or module in proc.stdout
