"""arith-precision: numerical precision decides whether a Transformer can do arithmetic.

Submodules (imported lazily so that `import arith_precision` stays cheap):
  tasks      -- ADD / IterADD / MUL generators, the T_c tokenizer, scoring.
  formats    -- number formats and exact rounding (`quantize`).
  simulate   -- run any JAX function with every float intermediate rounded.
  model      -- the Flax decoder-only Transformer used by training and constructions.
"""

__version__ = "0.1.0"
