"""Post-training quantization and LoRA / QLoRA fine-tuning of the unchanged Transformer.

Both are quax implicit arrays: a quantized kernel (`QuantizedArray`: codes, scales) or an
adapted one (`LoraArray`: W + (alpha / r) A @ B) materialises wherever the model uses it, so the
model code never changes and never names a format.

    scheme.py      quantization scheme strings (int8 / int4 per-tensor, per-channel, grouped;
                   NF4; number formats; MX / NVFP4 block formats) and their bits per weight
    quantized.py   `quantize_params`, `dequantize_params`, `memory_report`, `evaluate_quantized`
    lora.py        `init_adapters`, `finetune` (LoRA on an fp32 base, QLoRA on a quantized one)
"""

from arith_precision.quant.lora import FinetuneResult, LoraArray, finetune, init_adapters
from arith_precision.quant.quantized import (
    QuantizedArray,
    dequantize_params,
    evaluate_quantized,
    memory_report,
    quantize_params,
)
from arith_precision.quant.scheme import Scheme, bits_per_weight, parse_scheme

__all__ = [
    "FinetuneResult", "LoraArray", "QuantizedArray", "Scheme", "bits_per_weight",
    "dequantize_params", "evaluate_quantized", "finetune", "init_adapters", "memory_report",
    "parse_scheme", "quantize_params",
]
