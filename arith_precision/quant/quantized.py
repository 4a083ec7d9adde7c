"""Post-training weight quantization as quax implicit arrays (weight-only, "W-bit A32").

    params_q = quantize_params(params, "int4_g64")             # kernels -> QuantizedArray
    logits = apply_quantized(params_q, cfg, tokens_BxL)         # the unchanged Transformer
    metrics = evaluate_quantized(params_q, cfg, spec, num_examples=512, batch_size=256,
                                 data_seed=0)
    memory_report(params_q)["bits_per_quantized_weight"]

A `QuantizedArray` stores a weight W as codes + scales (+ the scheme name, static) and behaves as
the dense array Wq = dequantize(codes, scales) under `quax.quaxify`: every primitive that touches
it (`dot_general` in a Dense layer, `gather` in the embedding, ...) first materialises Wq, then
runs unchanged. So `model.Transformer` needs no change, the arithmetic after dequantization is
ordinary float32, and the result equals `Transformer.apply` on `dequantize_params(params_q)` bit
for bit when both run the same way: eagerly, or with the dequantization inside one compiled
program (`jax.jit(lambda q: apply(dequantize_params(q)))`). A compiled program that receives Wq
as an input instead is a different XLA program and may differ in the last bits (as jit and eager
float32 already do). A `QuantizedArray` is a pytree (codes and scales are leaves, the layout
static), so quantized trees pass through `jax.jit`; compiled code dequantizes inside the program.

Schemes (strings; `parse_scheme`). Each kernel is quantized in its *matrix view* (see
`matrix_layout`): an (in, out) matrix whose rows run along the contraction ("input") axis:

  int8, int4, intB       symmetric per-output-channel integers, B in 2..8:
                         s_j = max_i |W_ij| / qmax, c_ij = round_half_even(W_ij / s_j) in
                         [-qmax, qmax], qmax = 2^(B-1) - 1; Wq_ij = c_ij * s_j
  intB_gG                grouped: one scale per G consecutive inputs of each output channel
                         (int4_g64, int8_g32; G must divide the input length)
  intB_tensor            one scale for the whole tensor
  nf4, nf4_gG            NF4 (QLoRA's 4-bit NormalFloat) with blocks of G (default 64) inputs per
                         output channel: Wq = levels[c] * absmax(block)
  any number format      `arith_precision.formats` strings (bf16, fp16, e4m3, e4m3fn, e5m2,
                         fixed8.8, ...): Wq = quantize(W, fmt), round-to-nearest-even with the
                         format's own range, no scale
  block formats          mxfp8_e4m3, mxfp8_e5m2, mxfp6_e3m2, mxfp6_e2m3, mxfp4_e2m1, mxint8
                         (OCP MX: 32 inputs share an E8M0 scale) and nvfp4 (16 inputs share an
                         E4M3 scale, one float32 scale per tensor): Wq = formats.quantize_mx(W,
                         fmt, axis=input axis), stored packed (`formats.MXPacked`);
                         `<mx format>@floor|ceil|even` picks the shared-scale rule

Numerical assumptions: weights are finite float32; scales are float32 (the weight's dtype); the
integer and NF4 error bounds are those of `formats.int_quant` / `formats.nf4` (|W - Wq| <= s/2
up to two float32 roundings for integers). Scales are not themselves quantized (no QLoRA
"double quantization").

Memory (`bits_per_weight`): nominal bits a packed storage would use, per weight of an (in, out)
kernel with float32 scales: intB per channel B + 32/in; intB_gG B + 32/G; intB_tensor
B + 32/(in*out); nf4_gG 4 + 32/G (nf4 = 4.5); a float format its width (bf16 16, e4m3 8); a
block format element bits + 8/block (mxfp4_e2m1 4.25, mxfp6 6.25, mxfp8 8.25, nvfp4 4.5 plus
32/(in*out)). In this
simulation int codes are *stored* as int8 (4-bit codes are not packed) and float-format values
in their float32 carrier; `memory_report` gives both the nominal and the stored figure.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import quax

from arith_precision import evaluate as evaluate_lib
from arith_precision import formats, tasks
from arith_precision import model as model_lib
from arith_precision.quant.scheme import DEFAULT_SKIP, SCALE_BITS, parse_scheme

# ---- the implicit array -------------------------------------------------------------------------


def matrix_layout(path: str, shape: tuple[int, ...]) -> tuple[int, int]:
    """(split, contract_axis) of a parameter's matrix view.

    The matrix view is `w.reshape(prod(shape[:split]), prod(shape[split:]))`; `contract_axis` is
    the axis of the view that a layer contracts over (the "input" axis, along which scale groups
    run; scales are per index of the other axis, the "output channel"):

      .../kernel (in, out)           Dense (fc1, fc2, unembed): split 1, contract 0
      .../query|key|value/kernel     (D, H, Dh) -> (D, H*Dh): split 1, contract 0
      .../out/kernel                 (H, Dh, D) -> (H*Dh, D): split 2, contract 0
      embed (V, D), pos_embedding    rows are tokens / positions: split 1, contract 1 (one scale
                                     per row, which is also the output channel of the tied
                                     unembedding x @ E^T)

    Raises:
        ValueError: a parameter that is not one of these kernels (biases, LayerNorm params, ...).
    """
    name = path.rsplit("/", 1)[-1]
    parent = path.rsplit("/", 2)[-2] if path.count("/") >= 1 else ""
    if name in ("embed", "pos_embedding") and len(shape) == 2:
        return 1, 1
    if name == "kernel" and len(shape) == 2:
        return 1, 0
    if name == "kernel" and len(shape) == 3 and parent in ("query", "key", "value"):
        return 1, 0
    if name == "kernel" and len(shape) == 3 and parent == "out":
        return 2, 0
    raise ValueError(f"{path!r} with shape {tuple(shape)} is not a quantizable kernel (expected "
                     f"a 2-D kernel, a 3-D attention kernel, embed or pos_embedding)")


class QuantizedArray(quax.ArrayValue):
    """A weight stored as codes + scales; materialises to the dequantized float array.

    Attributes:
        codes: the matrix view's codes: int8 integer codes ("int"), int8 NF4 level indices
            ("nf4"), or the rounded values in their float32 carrier ("format").
        scales: float32 scales (`IntQuantized.scales` / `NF4Quantized.absmax` layout for the
            matrix view), or None for number formats.
        scheme: the scheme string (static).
        weight_shape: the original weight's shape (static).
        contract_axis: 0 or 1, the view's input axis (static; see `matrix_layout`).
        weight_dtype: dtype of the materialised weight (static; the original weight's dtype).
    """

    codes: jax.Array
    scales: jax.Array | None
    scheme: str = eqx.field(static=True)
    weight_shape: tuple[int, ...] = eqx.field(static=True)
    contract_axis: int = eqx.field(static=True)
    weight_dtype: Any = eqx.field(static=True)

    def aval(self):
        return jax.core.ShapedArray(self.weight_shape, self.weight_dtype)

    def materialise(self):
        """Wq in the weight's shape and dtype (the same function as `dequantize_array`)."""
        return dequantize_array(self)

    @property
    def nominal_bits(self) -> int:
        """Bits of a packed storage: code bits per weight plus 32 per scale (8 per block scale
        and 32 per tensor scale for block formats)."""
        sch = parse_scheme(self.scheme)
        if sch.kind == "block":
            return formats.MXPacked(self.codes, self.scales[0], self.scales[1], sch.fmt,
                                    self.contract_axis).storage_bits
        num_scales = 0 if self.scales is None else int(np.prod(self.scales.shape))
        return sch.bits * int(np.prod(self.weight_shape)) + SCALE_BITS * num_scales

    @property
    def stored_bits(self) -> int:
        """Bits actually held here (int8 codes, float32 carrier values and scales)."""
        leaves = jax.tree.leaves((self.codes, self.scales))
        return sum(8 * int(np.prod(x.shape)) * jnp.dtype(x.dtype).itemsize for x in leaves)


def quantize_array(w, scheme: str, *, split: int = 1, contract_axis: int = 0) -> QuantizedArray:
    """Quantize one weight in its matrix view (`matrix_layout` gives split / contract_axis).

    Raises:
        ValueError: unknown scheme, a non-floating or 1-D weight, a bad view, or a group size
            that does not divide the input length (named with both numbers).
    """
    sch = parse_scheme(scheme)
    w = jnp.asarray(w)
    if not jnp.issubdtype(w.dtype, jnp.floating):
        raise ValueError(f"quantize_array needs a floating weight, got dtype {w.dtype}")
    if w.ndim < 2 or not 1 <= split < w.ndim or contract_axis not in (0, 1):
        raise ValueError(f"bad matrix view split={split}, contract_axis={contract_axis} for a "
                         f"weight of shape {w.shape}")
    rows = int(np.prod(w.shape[:split]))
    w_RxC = w.reshape(rows, -1)
    n_in = w_RxC.shape[contract_axis]
    if sch.group_size is not None and n_in % sch.group_size:
        raise ValueError(f"scheme {scheme!r}: group size {sch.group_size} does not divide the "
                         f"input length {n_in} of a weight of shape {tuple(w.shape)}")
    if sch.kind == "int":
        axis = None if sch.per_tensor else contract_axis
        q = formats.quantize_int(w_RxC, sch.bits, axis=axis, group_size=sch.group_size)
        codes, scales = q.codes, q.scales
    elif sch.kind == "nf4":
        q = formats.quantize_nf4(w_RxC, block_size=sch.group_size, axis=contract_axis)
        codes, scales = q.codes, q.absmax
    elif sch.kind == "block":
        packed = formats.pack_mx(w_RxC.astype(jnp.float32), sch.fmt, axis=contract_axis,
                                 scale_rule=sch.scale_rule)
        codes, scales = packed.codes, (packed.scales, packed.tensor_scale)
    else:
        codes, scales = formats.quantize(w_RxC, sch.fmt), None
    return QuantizedArray(codes, scales, sch.name, tuple(w.shape), contract_axis,
                          jnp.dtype(w.dtype))


def dequantize_array(q: QuantizedArray):
    """The dense weight Wq = dequantize(codes, scales), reshaped to `q.weight_shape`."""
    sch = parse_scheme(q.scheme)
    if sch.kind == "int":
        axis = None if sch.per_tensor else (q.contract_axis,)
        w_RxC = formats.dequantize_int(
            formats.IntQuantized(q.codes, q.scales, sch.bits, axis, sch.group_size))
    elif sch.kind == "nf4":
        w_RxC = formats.dequantize_nf4(
            formats.NF4Quantized(q.codes, q.scales, sch.group_size, q.contract_axis))
    elif sch.kind == "block":
        w_RxC = formats.dequantize_mx(
            formats.MXPacked(q.codes, q.scales[0], q.scales[1], sch.fmt, q.contract_axis))
    else:
        w_RxC = q.codes
    return w_RxC.reshape(q.weight_shape).astype(q.weight_dtype)


def is_implicit(x) -> bool:
    """True for quax values (QuantizedArray, lora.LoraArray, ...)."""
    return isinstance(x, quax.Value)


# ---- parameter trees ----------------------------------------------------------------------------


def path_str(path) -> str:
    """A jax key path as "layer_0/attn/query/kernel"."""
    return "/".join(str(getattr(k, "key", getattr(k, "name", k))) for k in path)


def matches(path: str, patterns: Iterable[str]) -> bool:
    """Whether a pattern equals the path, one of its components, or fnmatch-matches it."""
    parts = path.split("/")
    return any(s == path or s in parts or fnmatch.fnmatchcase(path, s) for s in patterns)


def is_kernel_path(path: str, shape) -> bool:
    """Whether a parameter is a kernel quantize_params / LoRA can target (see matrix_layout)."""
    try:
        matrix_layout(path, tuple(shape))
    except ValueError:
        return False
    return True


def quantize_params(params: Mapping[str, Any], scheme: str, *, min_size: int = 0,
                    skip: Iterable[str] = DEFAULT_SKIP) -> dict[str, Any]:
    """Replace the model's kernels by `QuantizedArray`s; everything else stays as it is.

    Targets: every attention kernel (query/key/value/out), MLP kernel (fc1/fc2), the unembedding
    kernel and the embedding tables (`embed`, `pos_embedding`), minus `skip`, minus those with
    fewer than `min_size` elements. Biases and LayerNorm parameters always stay float32.

    Args:
        params: the model's parameter tree (`model.py` documents it).
        scheme: a scheme string (`parse_scheme`).
        min_size: kernels with fewer elements stay float32.
        skip: patterns; a parameter is kept float32 if a pattern equals its path
            ("layer_0/mlp/fc1/kernel"), one of its path components ("embed", "unembed",
            "layer_0", "attn", "fc2", ...) or fnmatch-matches the path ("layer_*/attn/*"). The
            default keeps the embeddings and the unembedding in float32 (as bitsandbytes / QLoRA
            keep the embedding and LM head); pass `skip=()` to quantize them too.

    Raises:
        ValueError: unknown scheme, bad min_size, an already-quantized leaf, or a kernel whose
            input length the group size does not divide (named by path).
    """
    sch = parse_scheme(scheme)
    if isinstance(min_size, bool) or not isinstance(min_size, int) or min_size < 0:
        raise ValueError(f"min_size must be an integer >= 0, got {min_size!r}")
    if isinstance(skip, str):
        skip = (skip,)
    skip = tuple(skip)
    if not isinstance(params, Mapping):
        raise ValueError(f"params must be a dict tree, got {type(params).__name__}")

    def convert(path, leaf):
        p = path_str(path)
        if is_implicit(leaf):
            raise ValueError(f"{p!r} is already an implicit array ({type(leaf).__name__})")
        shape = tuple(np.shape(leaf))
        if not is_kernel_path(p, shape) or matches(p, skip) or int(np.prod(shape)) < min_size:
            return leaf
        split, contract_axis = matrix_layout(p, shape)
        try:
            return quantize_array(leaf, sch.name, split=split, contract_axis=contract_axis)
        except ValueError as err:
            raise ValueError(f"cannot quantize {p!r}: {err}") from None

    return jax.tree_util.tree_map_with_path(convert, dict(params), is_leaf=is_implicit)


def dequantize_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """Every implicit leaf materialised to a dense array (the explicit reference tree)."""
    return jax.tree_util.tree_map(
        lambda x: type(x).materialise(x) if is_implicit(x) else x, dict(params),
        is_leaf=is_implicit)


def memory_report(params: Mapping[str, Any]) -> dict[str, Any]:
    """Parameter memory of a (possibly quantized) tree.

    Returns a dict: num_params, num_quantized (weights held in QuantizedArrays), nominal_bits
    (packed codes + float32 scales + dense leaves at their dtype), stored_bits (what this
    simulation holds: int8 codes, carriers), fp32_bits (everything dense float32),
    bits_per_quantized_weight (nominal, over quantized weights only; None if there are none),
    bits_per_param (nominal, over all), compression (fp32_bits / nominal_bits), and schemes
    (path -> scheme).
    """
    num = num_q = nominal = stored = nominal_q = 0
    schemes = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(dict(params), is_leaf=is_implicit)[0]:
        size = int(np.prod(leaf.shape))
        num += size
        if isinstance(leaf, QuantizedArray):
            num_q += size
            nominal += leaf.nominal_bits
            nominal_q += leaf.nominal_bits
            stored += leaf.stored_bits
            schemes[path_str(path)] = leaf.scheme
        else:
            bits = 8 * size * jnp.dtype(leaf.dtype).itemsize
            nominal += bits
            stored += bits
    return {
        "num_params": num, "num_quantized": num_q, "nominal_bits": nominal,
        "stored_bits": stored, "fp32_bits": 32 * num,
        "bits_per_quantized_weight": nominal_q / num_q if num_q else None,
        "bits_per_param": nominal / num if num else None,
        "compression": 32 * num / nominal if nominal else None, "schemes": schemes,
    }


# ---- apply and evaluate -------------------------------------------------------------------------


def apply_quantized(params, config: model_lib.TransformerConfig, tokens_BxL, **kwargs):
    """`Transformer(config).apply({"params": params}, tokens_BxL, **kwargs)` under quax.

    `params` may hold any quax implicit arrays (QuantizedArray, lora.LoraArray); plain trees work
    too. Wrap in `jax.jit` (config static) for speed.
    """

    def forward(p, tokens):
        return model_lib.Transformer(config).apply({"params": p}, tokens, **kwargs)

    return quax.quaxify(forward)(params, tokens_BxL)


def evaluate_quantized(params, config: model_lib.TransformerConfig, spec: tasks.TaskSpec, *,
                       num_examples: int, batch_size: int, data_seed: int,
                       policy=None) -> dict[str, float]:
    """`evaluate.evaluate` for trees holding implicit arrays: the same examples and metrics.

    `evaluate.evaluate` jits its decoder without `quax.quaxify`, so it cannot take implicit
    arrays; this is the same loop with `evaluate.decoder(..., implicit=True)`. With a
    simulation `policy` (e.g. "bf16" activations on top of int4 weights) the tree is
    dequantized first and handed to `evaluate.evaluate` (the simulation then rounds the
    dequantized weights to the policy's parameter format on entry).
    """
    if policy is not None:
        return evaluate_lib.evaluate(dequantize_params(params), config, spec,
                                     num_examples=num_examples, batch_size=batch_size,
                                     data_seed=data_seed, policy=policy)
    return evaluate_lib.evaluate(params, config, spec, num_examples=num_examples,
                                 batch_size=batch_size, data_seed=data_seed,
                                 decode=evaluate_lib.decoder(config, spec.answer_tokens,
                                                             implicit=True))
