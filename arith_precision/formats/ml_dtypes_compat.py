"""Which formats have a native dtype (NumPy / ml_dtypes) with exactly the same values and rounding.

`to_ml_dtype(fmt)` returns that dtype or None. For these formats
`quantize(x, fmt)` equals `x.astype(dtype).astype(x.dtype)` bit for bit (NaN payloads aside);
the test suite checks it for every float type ml_dtypes ships. The table is built from the
ml_dtypes module itself (its `float<N>_<format>` names parse to our formats; a name that does not
parse, e.g. a future type with semantics we do not model, is left out).
"""

from __future__ import annotations

import ml_dtypes
import numpy as np

from arith_precision.formats.parsing import as_format, parse


def _discover() -> dict[str, np.dtype]:
    table = {
        "e8m23": np.dtype(np.float32),
        "e11m52": np.dtype(np.float64),
        "e5m10": np.dtype(np.float16),
        "e8m7": np.dtype(ml_dtypes.bfloat16),
    }
    for name in sorted(dir(ml_dtypes)):
        if not name.startswith("float") or "_e" not in name:
            continue
        try:
            fmt = parse(name)
        except ValueError:
            continue
        table[str(fmt)] = np.dtype(getattr(ml_dtypes, name))
    return table


# Canonical format string -> native dtype.
ML_DTYPE_FORMATS: dict[str, np.dtype] = _discover()


def to_ml_dtype(fmt) -> np.dtype | None:
    """The NumPy / ml_dtypes dtype with exactly `fmt`'s semantics, or None if there is none."""
    return ML_DTYPE_FORMATS.get(str(as_format(fmt)))
