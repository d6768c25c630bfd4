"""The device mesh: axes (`member`, `data`) over every device of the job (docs/design.md#devices-and-scale).

Members are sharded over `member` where the member count allows, batches over `data`. The same
code runs on 1 CPU, 8 fake CPU devices, a GPU node and a TPU pod (all processes' devices).
"""

from __future__ import annotations

import math
from typing import Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from somojax import constants as C
from somojax.errors import ConfigError


def mesh_shape(n_members: int, n_devices: int, member_size: int = 0) -> tuple[int, int]:
    """(member, data) sizes of the mesh.

    With `member_size=0` the member axis is the largest divisor of `n_devices` that also divides
    `n_members` (5 members on 8 devices: (1, 8); 4 members on 8 devices: (4, 2)).
    """
    if member_size:
        if n_devices % member_size or n_members % member_size:
            raise ConfigError(
                f"layout.mesh_member_size={member_size} must divide both the device count ({n_devices}) "
                f"and the member count ({n_members})"
            )
        return member_size, n_devices // member_size
    m = math.gcd(n_members, n_devices)
    return m, n_devices // m


def make_mesh(n_members: int, member_size: int = 0, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A (`member`, `data`) mesh with Auto axis types over `devices` (default: all devices)."""
    devices = list(jax.devices() if devices is None else devices)
    shape = mesh_shape(n_members, len(devices), member_size)
    arr = np.asarray(devices, dtype=object).reshape(shape)
    return Mesh(arr, C.MESH_AXES, axis_types=(jax.sharding.AxisType.Auto,) * 2)


def batch_sharding(mesh: Mesh, per_member: bool) -> NamedSharding:
    """Batches: [member, batch, ...] over (`member`, `data`), or a shared [batch, ...] over `data`."""
    return NamedSharding(mesh, P(C.MEMBER_AXIS, C.DATA_AXIS) if per_member else P(C.DATA_AXIS))
