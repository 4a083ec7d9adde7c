"""One training run: the run-config schema lives in `arith_precision.training.config`.

    python -m experiments.main --config=experiments/configs/train.py:ARGS --workdir=DIR \
        [--config.train.steps=2000 --config.model.d_model=64 ...]

ARGS is a comma-separated list of key=value (and the bare switch `smoke`); the keys, their
defaults and the main variants (with runtimes) are documented in
`arith_precision/training/config.py`. Unknown keys or values are errors.
"""

from arith_precision.training.config import get_config

__all__ = ["get_config"]
