"""Launch one training run.

    python -m experiments.main --config=experiments/configs/train.py:task=add,base=10,n=8 \
        --workdir=/tmp/add_b10_n8 [--config.train.steps=500]

Writes DIR/metrics.jsonl, DIR/summary.json and DIR/checkpoints/; re-running the same command
resumes from the latest checkpoint (and, once finished, re-evaluates and rewrites the summary).
A damaged newest checkpoint is moved aside (to DIR/checkpoints.damaged/) and the run resumes from
the previous one.

Exit status: 0 done, 2 bad input (one line `error: <flag or key>: <value>: <why>` on stderr: a
flag, a config-string key, a --config.* override, the config file, the workdir, a size whose
estimated memory is over the limit, or a workdir whose checkpoints all fail to restore),
1 an internal error (with its traceback).
"""

from __future__ import annotations

from absl import app, flags, logging
from ml_collections import config_flags

from arith_precision.common import cli_errors

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Path to a config file, optionally with :ARGS.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics, summary.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    del argv  # parse_absl_flags rejects positional arguments
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # orbax logs every checkpoint step at INFO
    config = _CONFIG.value
    try:
        from arith_precision.training.config import validate

        validate(config)  # also catches bad --config.x.y overrides, before jax starts working
        cli_errors.check_writable_dir("--workdir", _WORKDIR.value)
        from arith_precision import training as train

        summary = train.train_and_evaluate(config, _WORKDIR.value)
    except cli_errors.UsageError as e:
        cli_errors.usage_exit(e)
    print(f"status={summary['status']} exact_match={summary['exact_match']} "
          f"params_sha256={summary['params_sha256']}")


if __name__ == "__main__":
    app.run(main, flags_parser=cli_errors.parse_absl_flags)
