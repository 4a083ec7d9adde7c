"""What a kill right after a checkpoint leaves of a finished run: a copy without the later
checkpoints and without its summary (the files written after the kill are the test's to drop)."""

import os
import shutil


def killed_copy(workdir: str, dest: str, after_step: int) -> str:
    """Copy `workdir` to `dest`, keeping checkpoints up to `after_step` and no summary.json."""
    shutil.copytree(workdir, dest)
    checkpoints = os.path.join(dest, "checkpoints")
    for name in os.listdir(checkpoints):
        if name.isdigit() and int(name) > after_step:
            shutil.rmtree(os.path.join(checkpoints, name))
    os.remove(os.path.join(dest, "summary.json"))
    return dest
