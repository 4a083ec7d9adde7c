"""Format objects: parse / str round trips, aliases, ranges against ml_dtypes.finfo, carriers,
and every bad-input error naming the bad value."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

from arith_precision import formats as F
from arith_precision.formats import FixedFormat, FloatFormat

ROUND_TRIP = [
    "e5m2", "e4m3", "e3m4", "e8m7", "e5m10", "e8m10", "e8m23", "e11m52", "e11m20", "e5m20",
    "e1m3", "e4m0", "e3m3b1", "e3m3b-2", "e4m3fn", "e4m3fnuz", "e5m2fnuz", "e4m3b11fnuz",
    "e3m2fn", "e2m3fn", "e2m1fn", "e8m0fnu", "e5m2_sat", "e4m3_ftz", "e4m3fn_sat_ftz",
    "e5m2fnuz_sat", "e3m3fn", "e4m4fn", "fixed8.8", "fixed0.7", "fixed6.0", "fixed4.4",
]  # fmt: skip


@pytest.mark.parametrize("text", ROUND_TRIP)
def test_str_round_trip(text):
    fmt = F.parse(text)
    assert str(fmt) == text
    assert F.parse(str(fmt)) == fmt
    assert F.as_format(fmt) is fmt
    assert hash(F.parse(text)) == hash(fmt)  # usable as a static jit argument


def test_every_field_combination_round_trips():
    for e in (1, 2, 5, 8, 11):
        for m in (0, 1, 3, 10):
            for variant in ("ieee", "fn", "fnuz", "fnu"):
                for bias in (None, 3):
                    for sat in (False, True):
                        for ftz in (False, True):
                            try:
                                fmt = FloatFormat(e, m, bias, variant, sat, ftz)
                            except ValueError:
                                continue  # e.g. fnu needs M = 0, e1m0 has no positive value
                            assert F.parse(str(fmt)) == fmt, fmt
    for i in (0, 3, 8):
        for f in (0, 5, 8):
            assert F.parse(str(FixedFormat(i, f))) == FixedFormat(i, f)


@pytest.mark.parametrize(
    "alias,canonical",
    [("fp32", "e8m23"), ("bf16", "e8m7"), ("fp16", "e5m10"), ("tf32", "e8m10"),
     ("fp64", "e11m52"), ("float32", "e8m23"), ("bfloat16", "e8m7"), ("float16", "e5m10"),
     ("BF16", "e8m7"), (" fp16 ", "e5m10"), ("float8_e4m3fn", "e4m3fn"),
     ("float4_e2m1fn", "e2m1fn"), ("float8_e8m0fnu", "e8m0fnu")],
)  # fmt: skip
def test_aliases_parse_to_the_canonical_object(alias, canonical):
    fmt = F.parse(alias)
    assert fmt == F.parse(canonical)
    assert str(fmt) == canonical  # documented: str() gives the canonical spelling


def test_as_format_accepts_dtypes():
    assert F.as_format(np.float32) == F.parse("fp32")
    assert F.as_format(np.dtype(np.float16)) == F.parse("fp16")
    assert F.as_format(ml_dtypes.bfloat16) == F.parse("bf16")
    assert F.as_format(ml_dtypes.float8_e4m3b11fnuz) == FloatFormat(4, 3, 11, "fnuz")


def test_defaults_and_equality():
    assert FloatFormat(5, 2) == FloatFormat(5, 2, bias=15) == F.parse("e5m2")
    assert FloatFormat(4, 3, variant="fnuz").bias == 8
    assert F.parse("e4m3fnuz") != F.parse("e4m3fn")
    assert F.parse("e5m2_sat") == FloatFormat(5, 2, saturate=True)
    assert F.parse("e4m3_ftz") == FloatFormat(4, 3, flush_subnormals=True)


ML_FLOAT_TYPES = [
    n for n in dir(ml_dtypes) if n.startswith("float") and isinstance(getattr(ml_dtypes, n), type)
]


@pytest.mark.parametrize("name", ML_FLOAT_TYPES + ["bfloat16"])
def test_ranges_match_ml_dtypes_finfo(name):
    dtype = getattr(ml_dtypes, name)
    fmt = F.as_format(dtype)
    info = ml_dtypes.finfo(dtype)
    assert fmt.total_bits == info.bits
    assert fmt.max_value == float(info.max)
    assert fmt.min_normal == float(info.smallest_normal)
    assert fmt.min_positive == float(info.smallest_subnormal)
    assert fmt.eps == float(info.eps)
    assert fmt.has_inf == bool(np.isinf(np.array(np.inf, np.float32).astype(dtype)))


def test_fixed_format_range():
    fmt = F.parse("fixed8.8")
    assert (fmt.min_value, fmt.max_value, fmt.quantum) == (-256.0, 256.0 - 1 / 256, 1 / 256)
    assert fmt.total_bits == 17


@pytest.mark.parametrize(
    "fmt,dtype",
    [("fp16", np.float32), ("bf16", np.float32), ("tf32", np.float32), ("e4m3fn", np.float32),
     ("e8m0fnu", np.float32), ("fp32", np.float32), ("e8m11", np.float64), ("fp32_ftz", np.float32),
     ("e11m20", np.float64), ("e5m20", np.float64), ("e11m24", np.float64), ("fp64", np.float64),
     ("fixed4.4", np.float32), ("fixed5.6", np.float32), ("fixed6.6", np.float64),
     ("fixed8.8", np.float64), ("fixed12.13", np.float64)],
)  # fmt: skip
def test_carrier_dtype(fmt, dtype):
    assert F.carrier_dtype(fmt) == np.dtype(dtype)


@pytest.mark.parametrize("fmt", ["e11m25", "e11m51", "fixed13.13", "e11m20b2000", "e8m23fn"])
def test_carrier_dtype_rejects_formats_no_carrier_holds(fmt):
    if fmt == "e8m23fn":  # max exceeds float32's, float64 holds it
        assert F.carrier_dtype(fmt) == np.float64
        return
    with pytest.raises(ValueError, match=F.parse(fmt).__str__()):
        F.carrier_dtype(fmt)


@pytest.mark.parametrize(
    "text,needle",
    [("e0m3", "exponent_bits must be >= 1, got 0"),
     ("e4m-1", "mantissa_bits must be >= 0, got -1"),
     ("e12m3", "exponent_bits must be <= 11, got 12"),
     ("fixed-1.3", "int_bits must be >= 0, got -1"),
     ("fixed3.-2", "frac_bits must be >= 0, got -2"),
     ("e4m3fnu", "needs mantissa_bits == 0, got 3"),
     ("e1m0", "no positive finite value"),
     ("float8_e5m3", "e5m3 is 9 bits wide, not 8")],
)  # fmt: skip
def test_bad_fields_name_the_value(text, needle):
    with pytest.raises(ValueError) as err:
        F.parse(text)
    assert needle in str(err.value) and repr(text) in str(err.value)


@pytest.mark.parametrize("text", ["fp8", "e4m3x", "int8", "", "fixed8", "float8", "e5m2_sat_sat"])
def test_unknown_strings_name_the_value_and_list_valid_forms(text):
    with pytest.raises(ValueError) as err:
        F.parse(text)
    assert repr(text) in str(err.value)
    assert "fixedI.F" in str(err.value) and "eEmM" in str(err.value)


@pytest.mark.parametrize("bad", [None, 3, np.int32, object()])
def test_as_format_rejects_non_formats(bad):
    with pytest.raises(ValueError, match="cannot interpret|must be a string"):
        F.as_format(bad)


def test_constructor_errors_name_the_value():
    with pytest.raises(ValueError, match="exponent_bits must be >= 1, got 0"):
        FloatFormat(0, 3)
    with pytest.raises(ValueError, match="mantissa_bits must be >= 0, got -1"):
        FloatFormat(4, -1)
    with pytest.raises(ValueError, match="unknown float variant 'fnx'"):
        FloatFormat(4, 3, variant="fnx")
    with pytest.raises(ValueError, match="saturate must be a bool, got 1"):
        FloatFormat(4, 3, saturate=1)
    with pytest.raises(ValueError, match="exponent_bits must be an integer, got 4.0"):
        FloatFormat(4.0, 3)
    with pytest.raises(ValueError, match="int_bits must be >= 0, got -2"):
        FixedFormat(-2, 3)
    with pytest.raises(ValueError, match="frac_bits must be >= 0, got -1"):
        FixedFormat(2, -1)
