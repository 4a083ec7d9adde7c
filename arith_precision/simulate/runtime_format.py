"""e8mM with M a runtime value: one compiled program for every mantissa width.

A simulated function is traced (and compiled) once per format, because formats are static. A
search over mantissa widths (the precision probe) would compile once per width; with
`RuntimeMantissa` it compiles once:

    fmt = RuntimeMantissa(slot=0)
    f = jax.jit(lambda x, bits_S: with_mantissa_bits(bits_S, simulate(g, fmt), x))
    f(x, jnp.array([7]))       # == simulate(g, "e8m7")(x), bit for bit
    f(x, jnp.array([3]))       # == simulate(g, "e8m3")(x), same compiled program

A policy can use several slots (`RuntimeMantissa(slot=i)`), e.g. one per region of a
`RegionPolicy`; `bits_S[i]` is slot i's mantissa width, 0..23 (23 leaves float32 unchanged).

Rounding (float32 carrier, nearest-even, IEEE-like e8mM: subnormals, overflow to inf, NaN stays
NaN as the canonical quiet NaN): with s = 23 - M, the magnitude bits are rounded to a multiple of
2^s, ties to even; because e8mM shares float32's exponent range, this one integer operation is
exact for normal and subnormal values alike, and a carry out of the largest finite value gives
the infinity pattern. `quantize(x, "e8mM")` computes the same bits (tested bit for bit).

`RuntimeMantissa64(slot=i)` is the same on a float64 carrier (needs `jax_enable_x64`), for the
widths float32 cannot simulate without double rounding: 11..24 (the carrier rule of
`formats/carrier.py`; the rounding itself is exact for 0..51). e8mM's binades are float64 normal
binades, so the rounding is not one shift of the float64 bits: with e = the value's binade
clamped to [-126, 127] (-126 for e8mM's subnormals), |x| 2^(M - e) is rounded to an integer, ties
to even (exact: below 2^53, and the scaling is by a power of two), and scaled back; a result of
2^128 or more (a carry out of the largest finite value, or a value beyond it) is infinity, a NaN
the canonical quiet NaN with its sign. Equal, bit for bit, to `quantize(x, "e8mM",
values_only=True)` on float64 (tested for every M in 0..51).
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp
from jax import lax

from arith_precision.formats.float_format import FloatFormat

MAX_RUNTIME_BITS = 23
MAX_RUNTIME_BITS_64 = 51  # the float64 rounding's widest width (simulations: <= 24)

_BITS: contextvars.ContextVar = contextvars.ContextVar("runtime_mantissa_bits", default=None)


@dataclasses.dataclass(frozen=True)
class RuntimeMantissa(FloatFormat):
    """e8mM whose M is slot `slot` of the bits set by `with_mantissa_bits` (see module doc).

    As a FloatFormat it describes its widest instance (e8m10, what the float32 carrier rule
    allows), so format checks treat it like e8m10; only the simulation layer rounds with it.
    """

    exponent_bits: int = 8
    mantissa_bits: int = 10
    slot: int = 0

    WIDEST: ClassVar[int] = 10  # the widest e8mM its carrier simulates without double rounding

    def __post_init__(self):
        FloatFormat.__post_init__(self)
        name = type(self).__name__
        if (self.exponent_bits, self.mantissa_bits, self.variant) != (8, self.WIDEST, "ieee") \
                or self.saturate or self.flush_subnormals:
            raise ValueError(f"{name} is e8mM (IEEE-like) only")
        if isinstance(self.slot, bool) or not isinstance(self.slot, int) or self.slot < 0:
            raise ValueError(f"{name} slot must be an integer >= 0, got {self.slot!r}")

    def __str__(self) -> str:
        return f"e8m<runtime slot {self.slot}>"


@dataclasses.dataclass(frozen=True)
class RuntimeMantissa64(RuntimeMantissa):
    """`RuntimeMantissa` on a float64 carrier: as a FloatFormat it describes e8m24, the widest e8mM
    a float64 carrier simulates without double rounding (see the module doc)."""

    mantissa_bits: int = 24
    WIDEST: ClassVar[int] = 24

    def __str__(self) -> str:
        return f"e8m<runtime slot {self.slot}, float64>"


@contextlib.contextmanager
def mantissa_bits(bits_S):
    """While tracing: slot i of every RuntimeMantissa rounds to bits_S[i] mantissa bits."""
    token = _BITS.set(jnp.asarray(bits_S, jnp.int32))
    try:
        yield
    finally:
        _BITS.reset(token)


def with_mantissa_bits(bits_S, fn, *args, **kwargs):
    """`fn(*args, **kwargs)` traced with `mantissa_bits(bits_S)` active."""
    with mantissa_bits(bits_S):
        return fn(*args, **kwargs)


def current_bits():
    """The widths set by the innermost `mantissa_bits` (None outside one)."""
    return _BITS.get()


def round_runtime(x: jax.Array, fmt: RuntimeMantissa, bits_S=None) -> jax.Array:
    """Round a float32 array to e8m{bits_S[fmt.slot]}, nearest-even; straight-through gradient.

    `bits_S` defaults to the widths set by `mantissa_bits` (the simulation layer passes the ones
    its arrays carry, so that loop bodies see them as operands).
    """
    bits_S = _BITS.get() if bits_S is None else bits_S
    if bits_S is None:
        raise ValueError(f"{fmt} used outside `runtime_format.mantissa_bits(...)`: its width is "
                         f"unknown")
    want = jnp.float64 if isinstance(fmt, RuntimeMantissa64) else jnp.float32
    if x.dtype != want:
        raise ValueError(f"{fmt} rounds {jnp.dtype(want).name} carriers only, got {x.dtype}")
    if fmt.slot >= bits_S.shape[0]:
        raise ValueError(f"{fmt}: the bits vector has only {bits_S.shape[0]} slot(s)")
    return _round_st(x, bits_S[fmt.slot])


@jax.custom_jvp
def _round_st(x, bits):
    return _round_bits64(x, bits) if x.dtype == jnp.float64 else _round_bits(x, bits)


@_round_st.defjvp
def _round_st_jvp(primals, tangents):
    x, bits = primals
    return _round_st(x, bits), tangents[0]


def _round_bits(x, bits):
    m = jnp.clip(bits, 0, MAX_RUNTIME_BITS).astype(jnp.uint32)
    shift = jnp.uint32(MAX_RUNTIME_BITS) - m
    b = lax.bitcast_convert_type(x, jnp.uint32)
    sign, mag = b & jnp.uint32(0x80000000), b & jnp.uint32(0x7FFFFFFF)
    one = jnp.uint32(1)
    lsb = (mag >> shift) & one
    # half - 1 + lsb: ties go to the even multiple; nothing to add when shift == 0.
    bias = jnp.where(shift > 0, (one << (shift - one)) - one + lsb, jnp.uint32(0))
    rounded = (mag + bias) & ~((one << shift) - one)
    rounded = jnp.where(mag > jnp.uint32(0x7F800000), jnp.uint32(0x7FC00000), rounded)  # NaN
    return lax.bitcast_convert_type(sign | rounded, jnp.float32)


def _round_bits64(x, bits):
    """float64 -> e8m{bits} values, nearest-even (see the module doc)."""
    m = jnp.clip(bits, 0, MAX_RUNTIME_BITS_64).astype(jnp.int64)
    b = lax.bitcast_convert_type(x, jnp.uint64)
    sign = b & jnp.uint64(0x8000000000000000)
    biased = ((b >> jnp.uint64(52)) & jnp.uint64(0x7FF)).astype(jnp.int64)
    e = jnp.clip(biased - 1023, -126, 127)  # the binade of e8mM (its subnormals: -126)

    def power_of_two(k):  # 2^k as float64, exactly (|k| <= 178)
        return lax.bitcast_convert_type((k + 1023).astype(jnp.uint64) << jnp.uint64(52),
                                        jnp.float64)

    scaled = jnp.abs(x) * power_of_two(m - e)  # < 2^53 for every finite e8mM binade
    rounded = lax.round(scaled, lax.RoundingMethod.TO_NEAREST_EVEN) * power_of_two(e - m)
    rounded = jnp.where(rounded >= 2.0**128, jnp.inf, rounded)  # overflow (and inf) -> inf
    mag = lax.bitcast_convert_type(rounded, jnp.uint64)
    mag = jnp.where(jnp.isnan(x), jnp.uint64(0x7FF8000000000000), mag)  # canonical quiet NaN
    return lax.bitcast_convert_type(sign | mag, jnp.float64)
