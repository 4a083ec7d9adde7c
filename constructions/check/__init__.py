"""Checking constructions exactly: inputs, simulated decoding against Python integers, sizes,
resumable verdicts, and the task-spec flags of every constructions command.

    inputs.py      exhaustive, adversarial (long carry chains, all digits p-1, ...) and random
                   operand lists
    run.py         `predict` / `check`: decode at any format and accumulation, compare with the
                   exact answers
    sizes.py       widths and memory estimates (bad sizes are rejected before any work)
    log.py         `CheckLog`: each verdict kept on disk, keyed by digests of weights and inputs
    spec_flags.py  --task --base --n --k --l --chunk --variant, parsed and checked once
"""

from constructions.check import inputs, log, run, sizes, spec_flags

__all__ = ["inputs", "log", "run", "sizes", "spec_flags"]
