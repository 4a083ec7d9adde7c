"""arith_precision.common.atomic: a reader sees the old file or the whole new one, never a part."""

import os

import pytest

from arith_precision.common import atomic


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = str(tmp_path / "summary.json")
    atomic.write_json(path, {"status": "completed"})
    with pytest.raises(TypeError):
        atomic.write_json(path, {"status": object()})  # not JSON: fails half-way
    with open(path) as f:
        assert f.read() == '{"status": "completed"}'
    assert os.listdir(tmp_path) == ["summary.json"]


def test_the_temporary_keeps_the_extension_and_replaces_the_target(tmp_path):
    path = str(tmp_path / "plot.png")
    with atomic.replacing(path) as tmp:
        assert tmp.endswith(".png") and os.path.dirname(tmp) == str(tmp_path)
        assert str(os.getpid()) in tmp  # shards writing the same file do not collide
        with open(tmp, "w") as f:
            f.write("new")
        assert not os.path.exists(path)  # nothing at the target until the write is complete
    with open(path) as f:
        assert f.read() == "new"


def test_csv_writes_missing_and_none_as_empty(tmp_path):
    path = str(tmp_path / "rows.csv")
    atomic.write_csv(path, ("a", "b"), [{"a": 1, "b": None}, {"a": 0.5, "extra": 3}])
    with open(path) as f:
        assert f.read().splitlines() == ["a,b", "1,", "0.5,"]
