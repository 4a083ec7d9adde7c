"""The weight-writing toolkit of the constructions (as tracr's `craft`): named residual subspaces,
a parameter builder for the project's own Transformer, and blocks whose docstrings state their
math and their numerical needs.

    residual.py      `Residual`: every coordinate of the residual stream declared once, by name
    builder.py       `ParamBuilder`: writes embeddings, attention heads and MLP units into the
                     parameter tree of `arith_precision.model`
    blocks.py        COPY / MEAN / SUM heads, quadratic matches, exact integer MLP steps and
                     lookups, the digit readout
    carry.py         the carry chain of the addition constructions (generate / propagate)
    construction.py  `Construction`: spec, model config, parameters, residual, and `explain`
"""

from constructions.craft import blocks, carry
from constructions.craft.builder import Head, ParamBuilder
from constructions.craft.construction import Construction
from constructions.craft.residual import Coordinate, Residual

__all__ = ["Construction", "Coordinate", "Head", "ParamBuilder", "Residual", "blocks", "carry"]
