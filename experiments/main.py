"""Launch one training run.

    python -m experiments.main --config=experiments/configs/train.py:task=add,base=10,n=8 \
        --workdir=/tmp/add_b10_n8 [--config.train.steps=500]

Writes DIR/metrics.jsonl, DIR/summary.json and DIR/checkpoints/; re-running the same command
resumes from the latest checkpoint (and, once finished, re-evaluates and rewrites the summary).
"""

from __future__ import annotations

import sys

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Path to a config file, optionally with :ARGS.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics, summary.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from arith_precision import train
    from experiments.configs.train import validate

    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # orbax logs every checkpoint step at INFO
    config = _CONFIG.value
    try:
        validate(config)  # also catches bad --config.x.y overrides
    except ValueError as e:
        logging.error("bad config: %s", e)
        print(f"error: bad config: {e}", file=sys.stderr)
        sys.exit(2)
    summary = train.train_and_evaluate(config, _WORKDIR.value)
    print(f"status={summary['status']} exact_match={summary['exact_match']} "
          f"params_sha256={summary['params_sha256']}")


if __name__ == "__main__":
    app.run(main)
