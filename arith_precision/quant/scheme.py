"""Quantization scheme strings of `arith_precision.quant.quantized`: parsing and nominal bits.

See `quantized.py` for what each scheme does. Block formats (OCP MX and NVFP4, `formats.mx`)
are schemes too: `mxfp8_e4m3`, `mxfp8_e5m2`, `mxfp6_e3m2`, `mxfp6_e2m3`, `mxfp4_e2m1`, `mxint8`,
`nvfp4`, blocked along each kernel's contraction (input) axis, with 8-bit scales (E8M0 / E4M3)
and, for NVFP4, one float32 scale per tensor. An MX scheme may name its shared-scale rule:
`mxfp4_e2m1@ceil` (floor, the OCP rule, by default; `formats.MX_SCALE_RULES`).
"""

from __future__ import annotations

import dataclasses
import functools
import re
from typing import Any

from arith_precision import formats

SCALE_BITS = 32  # scales are float32
DEFAULT_NF4_BLOCK = 64  # bitsandbytes / QLoRA
DEFAULT_SKIP = ("embed", "pos_embedding", "unembed")
SCHEME_FORMS = (
    "int8, int4, intB (per output channel, B in 2..8), intB_gG (groups of G inputs, e.g. "
    "int4_g64, int8_g32), intB_tensor (one scale), nf4 (= nf4_g64), nf4_gG, or a number format "
    "(bf16, fp16, e4m3, e4m3fn, e5m2, fixed8.8, ...), or a block format (mxfp8_e4m3, "
    "mxfp8_e5m2, mxfp6_e3m2, mxfp6_e2m3, mxfp4_e2m1, mxint8, nvfp4; an MX one may add its "
    "scale rule: mxfp4_e2m1@ceil, @even, @floor)"
)
BLOCK_SCALE_BITS = 8  # E8M0 (MX) and E4M3 (NVFP4) block scales

_INT_RE = re.compile(r"int(\d+)(?:_g(\d+)|_(tensor))?")
_NF4_RE = re.compile(r"nf4(?:_g(\d+))?")


# ---- schemes ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Scheme:
    """A parsed quantization scheme.

    Attributes:
        name: the scheme string as given (stripped, lower case).
        kind: "int", "nf4", "format" or "block".
        bits: code width in bits (the format's width for "format").
        group_size: inputs per scale group (int grouped, nf4, block), else None.
        per_tensor: one scale for the tensor ("intB_tensor").
        fmt: the number format ("format") or block format name ("block"), else None.
        scale_rule: a block format's shared-scale rule (`formats.MX_SCALE_RULES`: floor, the
            OCP rule, by default; "mxfp4_e2m1@ceil" picks ceil), else "floor".
    """

    name: str
    kind: str
    bits: int
    group_size: int | None = None
    per_tensor: bool = False
    fmt: Any = None
    scale_rule: str = "floor"


@functools.lru_cache(maxsize=256)
def parse_scheme(scheme: str) -> Scheme:
    """Parse a scheme string (see the module docstring).

    Raises:
        ValueError: naming the value if it is not a scheme, or naming the bad field (bits outside
            2..8, group size < 1) if the form is right but a value is not.
    """
    if not isinstance(scheme, str):
        raise ValueError(f"quantization scheme must be a string, got {scheme!r}")
    s = scheme.strip().lower()
    if match := _INT_RE.fullmatch(s):
        bits = int(match.group(1))
        if not 2 <= bits <= formats.int_quant.MAX_INT_BITS:
            raise ValueError(f"invalid quantization scheme {scheme!r}: bits must be in "
                             f"2..{formats.int_quant.MAX_INT_BITS}, got {bits}")
        group = _group_size(match.group(2), scheme)
        return Scheme(s, "int", bits, group, per_tensor=match.group(3) is not None)
    if match := _NF4_RE.fullmatch(s):
        group = _group_size(match.group(1), scheme)
        return Scheme(s, "nf4", 4, DEFAULT_NF4_BLOCK if group is None else group)
    base, at, rule = s.partition("@")
    if formats.is_block_format(base):
        bf = formats.BLOCK_FORMATS[base]
        rule = rule if at else "floor"
        if rule not in formats.MX_SCALE_RULES or (rule != "floor" and base == "nvfp4"):
            raise ValueError(f"invalid quantization scheme {scheme!r}: scale rule {rule!r}; "
                             f"expected one of {formats.MX_SCALE_RULES} (nvfp4: floor only)")
        return Scheme(s, "block", bf.element_bits, bf.block_size, fmt=bf.name, scale_rule=rule)
    try:
        fmt = formats.as_format(s)
    except ValueError as err:
        raise ValueError(f"unknown quantization scheme {scheme!r}; expected {SCHEME_FORMS} "
                         f"(as a number format: {err})") from None
    return Scheme(s, "format", fmt.total_bits, fmt=fmt)


def _group_size(text: str | None, scheme: str) -> int | None:
    if text is None:
        return None
    if int(text) < 1:
        raise ValueError(f"invalid quantization scheme {scheme!r}: group size must be >= 1, "
                         f"got {int(text)}")
    return int(text)


def bits_per_weight(scheme: str, shape: tuple[int, int]) -> float:
    """Nominal storage bits per weight of an (in, out) kernel under `scheme`.

    (code bits * in * out + 32 * number of float32 scales) / (in * out); see the module docstring.
    """
    sch = parse_scheme(scheme)
    n_in, n_out = (int(d) for d in shape)
    if sch.kind == "block":
        tensor = SCALE_BITS if sch.fmt == "nvfp4" else 0
        return (sch.bits * n_in * n_out + BLOCK_SCALE_BITS * _num_scales(sch, n_in, n_out)
                + tensor) / (n_in * n_out)
    return (sch.bits * n_in * n_out + SCALE_BITS * _num_scales(sch, n_in, n_out)) / (n_in * n_out)


def _num_scales(sch: Scheme, n_in: int, n_out: int) -> int:
    if sch.kind == "format":
        return 0
    if sch.per_tensor:
        return 1
    if sch.group_size is None:
        return n_out
    return n_out * (n_in // sch.group_size)


