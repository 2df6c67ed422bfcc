"""The world's state: a frozen pytree, one entry per region."""

from __future__ import annotations

import jax
from flax import struct


@struct.dataclass
class RegionState:
    """One region's lattice and its ledger counters."""

    free_energy: jax.Array  # (*shape,) int32, quanta lying free in each cell
    injected: jax.Array  # () int64, quanta that entered the region since tick 0
    dissipated: jax.Array  # () int64, quanta that left the region as heat since tick 0
    initial_total: jax.Array  # () int64, the region's total energy at tick 0


@struct.dataclass
class WorldState:
    """Everything that evolves; with the world config it is all a run needs to continue."""

    tick: jax.Array  # () int32, ticks completed; the next tick is number `tick`
    seed: jax.Array  # () uint32, the world's seed; every random draw hashes it
    regions: tuple[RegionState, ...]  # in world-file order
