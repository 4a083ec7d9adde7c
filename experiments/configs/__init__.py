"""Config files (`--config=experiments/configs/<file>.py[:ARGS]`): `train.py` one run (the schema
is `arith_precision.training.config`), `paper_fig2.py` and `formats.py` sweeps, `modes.py` and
`long_study.py` the reproduction's modes."""

__all__: list[str] = []
