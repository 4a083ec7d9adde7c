"""Precision certificates: a float format under which a construction is guaranteed exact, from
its weights and the task layout alone (no input is run).

    from constructions import build, certify
    result = certify.certify(build("add", base=10, n=8))     # {"certified_mantissa_bits", ...}
    python -m constructions.certify --task=add --base=10 --n=8 --explain

    certificate.py  the certificate over every width e{E}m0..24 (`certify`, `analyse`, `explain`)
    engine.py       the numerical model and the argument: interval values with worst-case errors
    values.py       interval arithmetic on values with bounded rounding error
    rounding.py     the float format of the analysis and exact roundings of known values
    layers.py       embedding, attention, clipping and readout, sub-layer by sub-layer
    mlp.py          the MLP sub-layer
    match.py        margin lemmas for attention heads whose scores depend on the input
    points.py       every committed frontier point against its certificate
                    (`python -m constructions.certify.points`)
    __main__.py     the command line
"""

from constructions.certify.certificate import (
    ACCUMULATIONS,
    MAX_MANTISSA,
    analyse,
    certify,
    dynamic_heads,
    explain,
    ideal_ranges,
)

__all__ = ["ACCUMULATIONS", "MAX_MANTISSA", "analyse", "certify", "dynamic_heads", "explain",
           "ideal_ranges"]
