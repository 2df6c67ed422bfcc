"""The world's state: a frozen pytree, one entry per region."""

from __future__ import annotations

import jax
from flax import struct

from hca.tasks import TaskLedger


@struct.dataclass
class LifeState:
    """The organisms of one region; S is the lattice shape, D its number of axes.

    A cell holds at most one organism (``occupied``). Fields of empty cells are stale
    and never read, except ``energy``, which is zero there so the ledger can sum it.
    """

    occupied: jax.Array  # (*S,) bool
    energy: jax.Array  # (*S,) int32, quanta held by the occupant
    last_energy: jax.Array  # (*S,) int32, energy at the end of the previous tick
    hidden: jax.Array  # (*S, H) float32, recurrent hidden state
    signal: jax.Array  # (*S, C) float32, what the occupant emits for its neighbours
    halo: jax.Array  # (*S, 2D, C + 1) float32, each slot's last received signal and occupancy
    plastic: jax.Array  # (*S, C + 6, H) float32, learned change to the head's weights (head_w)
    age: jax.Array  # (*S,) int32, ticks lived
    organism_id: jax.Array  # (*S,) int64, (birth tick + 1) * W + c + 1; founders c + 1; 0 none
    # (c: the birth cell among the world's W living cells, organisms.id_offsets)
    parent_id: jax.Array  # (*S,) int64, the parent's organism_id (0 for founders)
    birth_tick: jax.Array  # (*S,) int32
    generation: jax.Array  # (*S,) int32, births between the founder and this organism
    founder: jax.Array  # (*S,) int32, the founder's cell at tick 0 among the world's living cells: the lineage
    genome: dict[str, jax.Array]  # {tensor: (*S, *shape) float32}, heritable; brain.GenomeLayout
    # Counters since tick 0, one per tile (geometry.Tiling; shape () when nothing is
    # placed), so that counting never needs communication between devices: sum them.
    births: jax.Array  # (*tiles,) int64
    deaths: jax.Array  # (*tiles,) int64
    moves: jax.Array  # (*tiles,) int64
    refused: jax.Array  # (*tiles,) int64, won claims refused because max_transfers was reached
    # Who died in each cell during each of the last J ticks (row tick % J, J the
    # phylogeny's drain_every; 0: nobody), kept until the run drains them to its
    # phylogeny. Tile-major, so that a tick writes one contiguous row per tile.
    died: jax.Array  # (*tiles, J, cells) int64, organism_id
    died_parent: jax.Array  # (*tiles, J, cells) int64, its parent_id
    died_generation: jax.Array  # (*tiles, J, cells) int32, its generation


@struct.dataclass
class PeopleState:
    """What people have asked and given in an interactive region (``hca.people``)."""

    inputs: jax.Array  # (*S, TASK_INPUTS) float32, a person's question as the brain is shown it
    until: jax.Array  # (*S,) int32, the question is open while tick < until
    answer: jax.Array  # (*S,) float32, the last answer to it (tanh of ANSWER), NaN before any
    answered_by: jax.Array  # (*S,) int64, the organism_id that gave that answer
    paid: jax.Array  # (*tiles,) int64, quanta people paid since tick 0 (also injected)


@struct.dataclass
class RegionState:
    """One region's lattice and its ledger counters.

    The counters are kept per tile (geometry.Tiling): the region's are their sums.
    """

    free_energy: jax.Array  # (*shape,) int32, quanta lying free in each cell
    injected: jax.Array  # (*tiles,) int64, quanta that entered each tile since tick 0
    dissipated: jax.Array  # (*tiles,) int64, quanta that left each tile as heat since tick 0
    initial_total: jax.Array  # () int64, the region's total energy at tick 0
    life: LifeState | None  # None in a region without organisms
    tasks: TaskLedger | None  # what the region's tasks posed and paid; None without tasks
    people: PeopleState | None = None  # interactive regions only
    # Quanta that came in and went out through beaches since tick 0 (None: on no beach).
    beach_in: jax.Array | None = None  # (*tiles,) int64
    beach_out: jax.Array | None = None  # (*tiles,) int64


@struct.dataclass
class WorldState:
    """Everything that evolves; with the world config it is all a run needs to continue."""

    tick: jax.Array  # () int32, ticks completed; the next tick is number `tick`
    seed: jax.Array  # () uint32, the world's seed; every random draw hashes it
    regions: tuple[RegionState, ...]  # in world-file order
    # Per beach, each way (from its first shore, from its second) since tick 0 (None
    # without beaches): the energy it carried, free and in organisms' bodies, and the
    # organisms that crossed it (moves and births).
    carried: jax.Array | None = None  # (B, 2) int64
    crossed: jax.Array | None = None  # (B, 2) int64
