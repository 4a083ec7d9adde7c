"""arith-precision: numerical precision decides whether a Transformer can do arithmetic.

Subpackages and modules (imported on use, so that `import arith_precision` stays cheap), from
the bottom floor up (each imports only those above it in this list):

  common     -- atomic writes, markdown tables, CLI errors, key=value args, the width scan.
  tasks      -- ADD / IterADD / MUL generators, the T_c tokenizer, scoring, the test protocols.
  formats    -- number formats and exact rounding (`quantize`, `quantize_mx`).
  simulate   -- run any JAX function with every float intermediate rounded; precision by region.
  model      -- the Flax decoder-only Transformer used by training and constructions.
  decode, evaluate -- greedy decoding with a KV cache; exact match under both test protocols.
  training   -- `train_and_evaluate`: config schema, step, loop, early stopping, resume.
  quant      -- post-training quantization, LoRA and QLoRA as implicit arrays.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
