"""A damaged newest checkpoint never stops a run: it is moved aside, the run resumes from the
previous one and ends with the same params_sha256 as a run that was never damaged."""

import glob
import os
import shutil
import subprocess
import sys

import orbax.checkpoint as ocp
import pytest

from arith_precision import training as train
from arith_precision.common.cli_errors import UsageError
from arith_precision.training import checkpoints
from arith_precision.training import config as train_config
from tests import repo

REPO = str(repo.ROOT)
ARGS = "smoke,task=add,base=3,n=3,steps=30,batch=16"  # checkpoints at steps 10, 20, 30 (keep 2)


def _config():
    c = train_config.get_config(ARGS)
    c.unlock()
    c.train.update(checkpoint_every=10, log_every=10)
    c.lock()
    return c


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """An uninterrupted run: its workdir (left untouched) and summary."""
    workdir = str(tmp_path_factory.mktemp("straight"))
    summary = train.train_and_evaluate(_config(), workdir)
    assert summary["status"] == "completed" and summary["resumed_from_step"] is None
    return workdir, summary


def _copy(straight, tmp_path) -> str:
    """A copy of the finished run without its summary: re-running it resumes at step 30."""
    workdir = str(tmp_path / "run")
    shutil.copytree(straight[0], workdir)
    os.remove(os.path.join(workdir, "summary.json"))
    return workdir


def _delete_metadata(step_dir):
    os.remove(os.path.join(step_dir, "default", "_METADATA"))


def _empty(step_dir):
    shutil.rmtree(step_dir)
    os.makedirs(step_dir)


def _truncate_data_file(step_dir):
    files = glob.glob(os.path.join(step_dir, "default", "ocdbt.process_0", "d", "*"))
    biggest = max(files, key=os.path.getsize)
    size = os.path.getsize(biggest)
    with open(biggest, "r+b") as f:
        f.truncate(size // 2)
    assert os.path.getsize(biggest) == size // 2


def _half_delete(step_dir):
    """What a kill leaves when rmtree had removed the item's data and metadata but not the
    step's own files: orbax 0.12 still lists such a directory as a step."""
    shutil.rmtree(os.path.join(step_dir, "default", "ocdbt.process_0"))
    shutil.rmtree(os.path.join(step_dir, "default", "d"))
    os.remove(os.path.join(step_dir, "default", "_METADATA"))
    assert os.path.exists(os.path.join(step_dir, "_CHECKPOINT_METADATA"))


DAMAGES = {"metadata_deleted": _delete_metadata, "directory_emptied": _empty,
           "data_file_truncated": _truncate_data_file, "half_deleted": _half_delete}


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_damaged_newest_checkpoint_falls_back(straight, tmp_path, capsys, damage):
    workdir = _copy(straight, tmp_path)
    ckpt = os.path.join(workdir, "checkpoints")
    assert sorted(checkpoints.step_dirs(ckpt)) == [20, 30]
    listed = ocp.CheckpointManager(ckpt).all_steps()
    DAMAGES[damage](os.path.join(ckpt, "30"))
    assert 30 in ocp.CheckpointManager(ckpt).all_steps() and 30 in listed  # orbax still lists it
    summary = train.train_and_evaluate(_config(), workdir)
    err = capsys.readouterr().err
    aside = os.path.join(ckpt + ".damaged", "30")
    assert f"warning: checkpoint {os.path.join(ckpt, '30')}" in err and aside in err
    assert os.path.isdir(aside)  # moved, never deleted
    assert summary["resumed_from_step"] == 20
    assert summary["status"] == "completed"
    assert summary["params_sha256"] == straight[1]["params_sha256"]
    assert sorted(checkpoints.step_dirs(ckpt)) == [20, 30]  # step 30 saved again


def test_half_deleted_older_step_is_not_listed(straight, tmp_path, capsys):
    workdir = _copy(straight, tmp_path)
    ckpt = os.path.join(workdir, "checkpoints")
    _half_delete(os.path.join(ckpt, "20"))
    summary = train.train_and_evaluate(_config(), workdir)
    assert "checkpoints/20 is incomplete" in capsys.readouterr().err
    assert summary["resumed_from_step"] == 30
    assert summary["params_sha256"] == straight[1]["params_sha256"]
    assert ocp.CheckpointManager(ckpt).all_steps() == [30]
    assert os.path.isdir(os.path.join(ckpt + ".damaged", "20"))


def test_garbage_collection_is_a_rename_and_leftovers_are_never_listed(straight, tmp_path):
    # The run kept 2 of its 3 checkpoints; step 10 went through .deleted/, purged at the end.
    ckpt = os.path.join(straight[0], "checkpoints")
    assert sorted(os.listdir(ckpt)) == ["20", "30"]
    assert checkpoints.manager_options(max_to_keep=2).todelete_subdir == ".deleted"
    # A kill during the purge leaves part of a step under .deleted/: never a step, purged next.
    workdir = _copy(straight, tmp_path)
    ckpt = os.path.join(workdir, "checkpoints")
    leftover = os.path.join(ckpt, ".deleted", "10")
    shutil.copytree(os.path.join(ckpt, "20"), leftover)
    _half_delete(leftover)
    assert ocp.CheckpointManager(ckpt).all_steps() == [20, 30]
    summary = train.train_and_evaluate(_config(), workdir)
    assert summary["resumed_from_step"] == 30 and not os.path.exists(leftover)


def test_no_checkpoint_restores_is_one_line(straight, tmp_path):
    workdir = _copy(straight, tmp_path)
    ckpt = os.path.join(workdir, "checkpoints")
    _truncate_data_file(os.path.join(ckpt, "30"))
    _delete_metadata(os.path.join(ckpt, "20"))
    with pytest.raises(UsageError, match="no checkpoint restores"):
        train.train_and_evaluate(_config(), workdir)
    assert sorted(os.listdir(ckpt + ".damaged")) == ["20", "30"]
    # The CLI: the same as one line naming the directory, exit 2; the warnings come first.
    shutil.rmtree(workdir)
    workdir = _copy(straight, tmp_path)
    _empty(os.path.join(ckpt, "30"))
    _empty(os.path.join(ckpt, "20"))
    r = subprocess.run([sys.executable, "-m", "experiments.main",
                        f"--config=experiments/configs/train.py:{ARGS}", f"--workdir={workdir}",
                        "--config.train.checkpoint_every=10", "--config.train.log_every=10"],
                       cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Traceback" not in r.stderr + r.stdout
    lines = r.stderr.strip().splitlines()
    assert [ln for ln in lines if ln.startswith("error:")] == [lines[-1]]
    assert lines[-1].startswith(f"error: --workdir: {ckpt}: no checkpoint restores")
    assert sum("is incomplete" in ln for ln in lines) == 2


def test_a_checkpoint_path_that_is_a_file_is_refused_before_orbax_starts(tmp_path):
    # orbax's async save threads would wait forever on a directory they cannot create, keeping
    # the process alive after the run failed: the path is refused before any manager opens.
    path = tmp_path / "checkpoints"
    path.write_text("not a directory")
    opened = []
    with pytest.raises(UsageError, match="exists and is not a directory"):
        checkpoints.restore_newest_good(str(path), lambda: opened.append(1), lambda m, s: None)
    assert opened == []
    assert path.read_text() == "not a directory"  # left as it was
