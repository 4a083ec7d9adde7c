"""Where the repository is, for tests at any depth of tests/ (they run commands and read files
by path)."""

import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]
