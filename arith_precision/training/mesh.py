"""The one device mesh of training: a 1-D "data" axis over every device.

The batch is split over the devices (`data`), parameters and optimizer state are replicated
(`replicated`), and XLA's partitioner inserts the gradient all-reduce (Auto axes: no
sharding-in-types annotations). Training, resume and `restore_params` all build it here, so a
checkpoint is always restored onto the shardings it was saved from.
"""

from __future__ import annotations

import dataclasses

import jax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P


@dataclasses.dataclass(frozen=True)
class DataMesh:
    """`devices` devices on one "data" axis, with the two shardings training uses."""

    devices: int
    replicated: NamedSharding
    data: NamedSharding

    @classmethod
    def make(cls) -> DataMesh:
        num = jax.device_count()
        mesh = jax.make_mesh((num,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
        return cls(num, NamedSharding(mesh, P()), NamedSharding(mesh, P("data")))
