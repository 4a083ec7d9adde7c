"""Write colabs/*.ipynb from the jupytext percent-format sources colabs/*.py (outputs stripped).

    python colabs/sync_notebooks.py            # (re)write every .ipynb from its .py
    python colabs/sync_notebooks.py --check    # exit 1 if an .ipynb differs from its .py

Edit the `.py` files (ruff lints them like any module), then run this. Cell ids are set from
the notebook's number and the cell index, so regenerating an unchanged source changes nothing.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

import jupytext
import nbformat

HERE = pathlib.Path(__file__).resolve().parent


def sources() -> list[pathlib.Path]:
    return sorted(p for p in HERE.glob("[0-9][0-9]_*.py"))


def notebook(source: pathlib.Path) -> str:
    """The .ipynb text for one percent-format source."""
    nb = jupytext.read(source)
    prefix = source.stem[:2]
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"{prefix}-{i:02d}"
        cell["metadata"] = {}
        if cell.cell_type == "code":
            cell["outputs"], cell["execution_count"] = [], None
    nb.metadata = {"kernelspec": {"display_name": "Python 3", "language": "python",
                                  "name": "python3"},
                   "language_info": {"name": "python"}}
    return nbformat.writes(nb) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only compare; exit 1 when stale")
    args = ap.parse_args(argv)
    stale = []
    for source in sources():
        target, text = source.with_suffix(".ipynb"), notebook(source)
        if target.exists() and target.read_text() == text:
            continue
        stale.append(target.name)
        if not args.check:
            target.write_text(text)
    if args.check and stale:
        print("out of date (run python colabs/sync_notebooks.py):", *stale, sep="\n  ")
        return 1
    if not args.check:
        print(f"wrote {len(stale)} notebook(s)" if stale else "every notebook is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
