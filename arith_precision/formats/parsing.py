"""Format names: `parse(str) -> format`, `as_format(str | format | dtype)`, and the aliases.

Accepted strings (case-insensitive, surrounding whitespace ignored):
  aliases        fp32 (e8m23), bf16 (e8m7), fp16 (e5m10), tf32 (e8m10), fp64 (e11m52), also
                 with the option suffixes below (bf16_ftz == e8m7_ftz)
  IEEE-like      eEmM, e.g. e5m2, e4m3, e3m4, e11m20
  variants       eEmM[b<bias>][fn|fnuz|fnu][_sat][_ftz], e.g. e4m3fn, e5m2fnuz, e4m3b11fnuz,
                 e3m2fn, e2m1fn, e8m0fnu, e5m2_sat, e4m3_ftz, e4m3fn_sat_ftz
  dtype names    float32, float16, bfloat16, float64 and the ml_dtypes names with the width
                 prefix, e.g. float8_e4m3fn, float6_e3m2fn, float4_e2m1fn (the width is checked)
  P3109          p3109_k{k}p{P}[_sat][_ftz], e.g. p3109_k8p1 .. p3109_k8p7 (IEEE P3109 binary8:
                 signed, extended domain; E = k - P exponent bits, M = P - 1, bias 2^(k-P-1))
  fixed point    fixedI.F, e.g. fixed8.8

Aliases are synonyms: they parse to the canonical object, whose `str` is the canonical eEmM
spelling (`str(parse("bf16")) == "e8m7"`), so `parse(str(f)) == f` holds for every format.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np

from arith_precision.formats.fixed_format import FixedFormat
from arith_precision.formats.float_format import FloatFormat

Format = FloatFormat | FixedFormat

ALIASES: dict[str, FloatFormat] = {
    "fp32": FloatFormat(8, 23),
    "fp16": FloatFormat(5, 10),
    "bf16": FloatFormat(8, 7),
    "tf32": FloatFormat(8, 10),
    "fp64": FloatFormat(11, 52),
    # NumPy / JAX dtype names, so that as_format(np.float32) etc. work.
    "float32": FloatFormat(8, 23),
    "float16": FloatFormat(5, 10),
    "bfloat16": FloatFormat(8, 7),
    "float64": FloatFormat(11, 52),
}

# Signs are admitted by the patterns so that e.g. "e4m-1" or "fixed-1.3" reach the dataclass
# validation and get an error naming the bad field, rather than a generic "unknown format".
_FLOAT_RE = re.compile(r"e(-?\d+)m(-?\d+)(?:b(-?\d+))?(fnuz|fnu|fn|p3109)?(_sat)?(_ftz)?")
_P3109_RE = re.compile(r"p3109_k(-?\d+)p(-?\d+)(_sat)?(_ftz)?")
_DTYPE_NAME_RE = re.compile(r"float(\d+)_(e\d+m\d+.*)")
_FIXED_RE = re.compile(r"fixed(-?\d+)\.(-?\d+)")
_ALIAS_OPTIONS_RE = re.compile(r"([a-z0-9]+?)(_sat)?(_ftz)?")

VALID_FORMS = (
    "fp32, bf16, fp16, tf32, fp64 (optionally with _sat / _ftz); eEmM (e.g. e5m2, e8m7); "
    "eEmM[b<bias>][fn|fnuz|fnu][_sat][_ftz] "
    "(e.g. e4m3fn, e5m2fnuz, e4m3b11fnuz, e2m1fn, e8m0fnu, e5m2_sat, e4m3_ftz); "
    "p3109_k8p1 .. p3109_k8p7 (IEEE P3109 binary8); dtype names "
    "(float32, bfloat16, float8_e4m3fn, float4_e2m1fn, ...); fixedI.F (e.g. fixed8.8)"
)


def _parse_float(match: re.Match, text: str) -> FloatFormat:
    e, m, bias, variant, sat, ftz = match.groups()
    try:
        return FloatFormat(
            int(e),
            int(m),
            bias=None if bias is None else int(bias),
            variant=variant or "ieee",
            saturate=sat is not None,
            flush_subnormals=ftz is not None,
        )
    except ValueError as err:
        raise ValueError(f"invalid number format {text!r}: {err}") from None


def parse(text: str) -> Format:
    """Parse a format string (see the module docstring for the grammar).

    Raises:
        ValueError: naming `text` and listing the valid forms if it is not a format, or naming
            the bad field (e.g. exponent_bits=0) if the form is right but a value is not.
    """
    if not isinstance(text, str):
        raise ValueError(f"format must be a string, got {text!r}")
    s = text.strip().lower()
    if s in ALIASES:
        return ALIASES[s]
    if (match := _ALIAS_OPTIONS_RE.fullmatch(s)) and match.group(1) in ALIASES:
        return dataclasses.replace(
            ALIASES[match.group(1)],
            saturate=match.group(2) is not None,
            flush_subnormals=match.group(3) is not None,
        )
    if match := _FLOAT_RE.fullmatch(s):
        return _parse_float(match, text)
    if match := _P3109_RE.fullmatch(s):
        k, p, sat, ftz = match.groups()
        k, p = int(k), int(p)
        if not 1 <= p < k:
            raise ValueError(
                f"invalid number format {text!r}: P3109 precision P must satisfy 1 <= P < k "
                f"(at least one exponent bit), got k={k}, P={p}")
        try:
            return FloatFormat(k - p, p - 1, variant="p3109", saturate=sat is not None,
                               flush_subnormals=ftz is not None)
        except ValueError as err:
            raise ValueError(f"invalid number format {text!r}: {err}") from None
    if match := _DTYPE_NAME_RE.fullmatch(s):
        width, rest = int(match.group(1)), match.group(2)
        inner = _FLOAT_RE.fullmatch(rest)
        if inner is not None:
            fmt = _parse_float(inner, text)
            if fmt.total_bits != width:
                raise ValueError(
                    f"invalid number format {text!r}: {rest} is {fmt.total_bits} bits wide, "
                    f"not {width}"
                )
            return fmt
    if match := _FIXED_RE.fullmatch(s):
        try:
            return FixedFormat(int(match.group(1)), int(match.group(2)))
        except ValueError as err:
            raise ValueError(f"invalid number format {text!r}: {err}") from None
    raise ValueError(f"unknown number format {text!r}; valid forms: {VALID_FORMS}")


def as_format(fmt) -> Format:
    """A format object from a format object, a format string, or a NumPy / ml_dtypes dtype."""
    if isinstance(fmt, FloatFormat | FixedFormat):
        return fmt
    if isinstance(fmt, str):
        return parse(fmt)
    if fmt is not None:  # np.dtype(None) would silently mean float64
        try:
            dtype = np.dtype(fmt)
        except TypeError:
            dtype = None
        # ml_dtypes' types have kind "V"; their names (float8_e4m3fn, ...) parse like strings.
        if dtype is not None and dtype.kind in "fV":
            return parse(dtype.name)
    raise ValueError(f"cannot interpret {fmt!r} as a number format; valid forms: {VALID_FORMS}")
