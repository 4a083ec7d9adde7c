"""Slow: `quantize` against the native casts on all 2^32 float32 bit patterns.

About 45 s per format (5 min for float16, whose NumPy cast is slow) on 2 CPU cores; run with
`pytest -m slow tests/formats/test_formats_exhaustive.py`. The fast suite (test_formats_exact.py)
probes every representable, midpoint and neighbour; this closes the gap to "every input".
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

from arith_precision import formats as F

CHUNK = 1 << 24


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(set(F.ML_DTYPE_FORMATS) - {"e11m52"}))
def test_every_float32_input_matches_the_native_cast(name):
    dtype = F.to_ml_dtype(name)
    fn = jax.jit(lambda x: F.quantize(x, name))
    for start in range(0, 1 << 32, CHUNK):
        x = (np.arange(CHUNK, dtype=np.uint64) + start).astype(np.uint32).view(np.float32)
        with np.errstate(all="ignore"):
            want = x.astype(dtype).astype(np.float32)
        got = np.asarray(fn(x))
        bad = (got.view(np.uint32) != want.view(np.uint32)) & ~(np.isnan(got) & np.isnan(want))
        assert not bad.any(), (name, [hex(v) for v in x.view(np.uint32)[bad][:5]])
