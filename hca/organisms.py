"""The organisms of one region: the rules fixed when a world is built, and the founders.

``Life`` holds what never changes during a run (the genome layout, which slots have
neighbours, the prices of living, how many transfers a tile accepts) and draws the
founders at tick 0. What organisms do in a tick lives in one module per phase:

- ``hca.sense``: each cell's halo refreshed along the axes that tick now;
- ``hca.decide``: every organism thinks, learns, and acts on its own;
- ``hca.claims``: claims on empty cells settled by neighbour gathers;
- ``hca.transfer``: winners pay, and their rows travel to the cells they won;
- ``hca.reproduction``: a child's genome, mutated by its parent's inherited scales.
"""

from __future__ import annotations

import copy
import functools
import math
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np

from hca import brain, geometry, rng
from hca.config import PhylogenySettings, Region, WorldConfig, quantize_rate
from hca.state import LifeState
from hca.tasks import Tasks

# Arriving rows a pass of hca.transfer.arrive writes on a device (all its tiles' targets
# listed one after the other), by the platform JAX runs on: fewer passes of more rows
# where the per-pass cost of launching its kernels would show, but not so many that a
# pass gathers and mutates far more rows than arrive (the default world takes 57-290
# rows a tick over its 64 tiles between ticks 20 and 220, 900 late in a run). On a
# 2-core Intel Xeon a pass of 128 rows was 3-7% faster on the default world than one of
# 512, early and late in a run, and 2.5% faster than one of 256 (64: as fast early, 7%
# slower late); the 131,072-cell world, and both worlds on an AMD EPYC, within the
# noise. On a GPU a pass also costs a read of its loop's condition on the host: on an
# H200 the 2 M-cell world ran 96-97 ticks/s with 256 rows a pass, 109 with 1,024 and
# 112 with 4,096 (rows then taken a few per tile). Other accelerators take the GPU's
# value. The rows written are the same whatever the passes (a target is never a source).
ARRIVAL_ROWS = {"cpu": 128, "gpu": 4096}
# Births a pass mutates at a time, where a pass's births come first: a
# pass of more rows than this mutates about the births it writes, this many at a time
# in a loop, not all its rows. Where it equals the pass's rows, a pass mutates all of
# them at once and keeps its births' children: on the CPU, passes of 128 rows mutated
# 64 at a time were slower (1.02 and 1.17 of the tick's time early and late in a
# default run; skipping the mutation of passes without births by a conditional, 1.04
# and 1.13). On a GPU each step of a loop is a read of its condition on the host.
MUTATION_ROWS = {"cpu": 128, "gpu": 4096}

if TYPE_CHECKING:
    from hca.beaches import Shoreline


def genome_entries(entries: np.ndarray, lead: int) -> jax.Array:
    """A tensor's genome entry numbers (``GenomeLayout.entries``, in any shape) with
    ``lead`` leading unit axes: distinct words for the counter-based draws of each entry."""
    return jnp.asarray(entries).reshape((1,) * lead + entries.shape)


def id_offsets(config: WorldConfig) -> tuple[dict[int, int], int]:
    """Where each living region's cells start in the world's numbering of living cells,
    by region index, and how many living cells the world has: organism ids and
    lineages are unique in the world, so organisms can cross beaches."""
    offsets, start = {}, 0
    for index, region in enumerate(config.regions.values()):
        if region.organisms is not None:
            offsets[index] = start
            start += region.cells
    return offsets, start


def world_places(config: WorldConfig, numbers) -> tuple[np.ndarray, np.ndarray]:
    """The region (its index) and cell of each number among the world's living cells
    (a ``founder``, or an organism id's ``(id - 1) % W``)."""
    offsets = id_offsets(config)[0]
    indices, starts = np.asarray(list(offsets)), np.asarray(list(offsets.values()), np.int64)
    numbers = np.asarray(numbers, np.int64)
    k = np.searchsorted(starts, numbers, side="right") - 1
    return indices[k], numbers - starts[k]


class Life:
    """The organism physics of one region, built once from its config.

    ``offset`` is where the region's cells start among the world's ``world_cells``
    living cells (``id_offsets``); ``shoreline`` the region's cells on beaches that
    organisms cross (``hca.beaches.shorelines``), which get one more direction slot.
    """

    def __init__(
        self,
        region: Region,
        region_index: int,
        journal: int = PhylogenySettings().drain_every,
        offset: int = 0,
        world_cells: int | None = None,
        shoreline: Shoreline | None = None,
    ):
        assert region.organisms is not None
        self.journal = journal  # ticks of deaths the state keeps (PhylogenySettings.drain_every)
        self.region = region
        self.index = region_index
        self.config = life = region.organisms
        self.layout = brain.GenomeLayout.of(life.brain)
        self.shape = region.shape
        self.cells = region.cells
        self.offset = offset
        self.world_cells = region.cells if world_cells is None else world_cells
        self.ndim = len(region.axes)
        self.shoreline = shoreline
        # The beach slot, after the axes' slots, where the region has a shore to cross.
        self.beach_slot = None if shoreline is None else 2 * self.ndim
        self.slots = 2 * self.ndim + (shoreline is not None)
        self.tiling = geometry.Tiling.of(region)
        self.placed = self.tiling.placed
        tile_cells = self.tiling.cells
        # Transfers accepted into one tile per tick, and through one side of a placed axis.
        self.capacity = min(life.max_transfers or max(16, tile_cells // 8), tile_cells)
        self.crossing = min(life.max_crossings or max(1, self.capacity // 4), self.capacity)

        tables = [geometry.neighbour_table(axis) for axis in region.axes]
        # (S, tile cells) int32: in-tile index of each slot's neighbour along the axes
        # inside a tile (own index along placed axes, and where there is none); (S, tiles)
        # int32: the tile of each slot's neighbour along the placed axes (own tile along
        # the axes inside a tile, and where there is none).
        inner = range(self.placed, self.ndim)
        self.local_neighbour = _neighbours(tables, self.slots, inner, self.shape)
        self.tile_neighbour = _neighbours(tables, self.slots, range(self.placed), self.shape)
        # (S,) bool: the slots through which rows come sent from another device (on a
        # device's block of a mesh, ``on_block``; none on one device).
        self.sent = np.zeros(self.slots, bool)
        # (2D, 3): log2(stretch) / 8, curled, sign of each axis slot. The beach slot's are
        # (log2(the beach's stretch) / 8, -1, 0): a brain can tell a beach from an axis.
        features = []
        for axis in region.axes:
            for sign in (-1.0, 1.0):
                features.append([math.log2(axis.stretch) / 8.0, float(axis.curled), sign])
        self.slot_features = np.asarray(features, dtype=np.float32)
        size = self.layout.size
        # Integer costs per axis: crossing an axis costs in proportion to its stretch.
        self.birth_cost, self.move_cost = self.costs([axis.stretch for axis in region.axes])
        if shoreline is not None:
            # Crossing a beach costs like crossing an axis of the beach's stretch (or of
            # its `cost`), per cell.
            self.beach_birth_cost, self.beach_move_cost = self.costs(shoreline.cost)
        self.upkeep = life.metabolism.base + math.floor(size * life.metabolism.per_parameter)
        self.unit_cost = quantize_rate(life.metabolism.per_active_unit)
        self.tasks = Tasks(region, region_index) if region.tasks else None

    def on_block(self, mesh) -> Life:
        """This region's physics on one device's block of ``mesh`` (inside ``shard_map``):
        the same but for the tiling, whose tiles are the device's."""
        local = copy.copy(self)
        split = [k < self.placed and mesh.shape.get(axis.name, 1) > 1 for k, axis in enumerate(self.region.axes)]
        axes = [
            axis.model_copy(update={"size": axis.size // mesh.shape[axis.name]}) if cut else axis
            for axis, cut in zip(self.region.axes, split)
        ]
        shape = tuple(axis.size for axis in axes)
        local.tiling = geometry.Tiling(shape, self.placed)
        # Neighbouring tiles within the block; across a split axis the rows are sent
        # (``hca.transfer.send``), and the table there only stays in range.
        tables = [geometry.neighbour_table(axis) for axis in axes]
        local.tile_neighbour = _neighbours(tables, self.slots, range(self.placed), shape)
        local.sent = np.zeros(self.slots, bool)
        local.sent[[2 * k + sign for k, cut in enumerate(split) if cut for sign in (0, 1)]] = True
        return local

    @functools.cached_property
    def arrival_rows(self) -> int:
        """Arriving rows written a pass on a device, all its tiles' targets listed one
        after the other (``hca.transfer.arrive``): ARRIVAL_ROWS of JAX's platform. Looked
        up when first read (as the step is traced), not when a Life is made."""
        return ARRIVAL_ROWS.get(jax.default_backend(), ARRIVAL_ROWS["gpu"])

    @functools.cached_property
    def mutation_rows(self) -> int:
        """Births mutated at a time in a pass of ``arrival_rows`` (``hca.transfer.arrive``):
        MUTATION_ROWS of JAX's platform."""
        return MUTATION_ROWS.get(jax.default_backend(), MUTATION_ROWS["gpu"])

    def init(self, seed: jax.Array) -> LifeState:
        """The founders: cells drawn with ``density``, genomes drawn from the seed."""
        from hca.sense import emitted, sense

        life, layout = self.config, self.layout
        cells = geometry.cell_index(self.shape)
        occupied = rng.bernoulli(life.density, seed, rng.FOUNDERS, self.index, cells, xp=jnp)
        genome = {}
        for name, shape in layout.tensors:
            if name == "log_learning_rate":
                value = jnp.full((*self.shape, *shape), math.log(life.learning_rate), jnp.float32)
            elif name == "log_mutation":
                value = jnp.full((*self.shape, *shape), math.log(life.mutation.initial_scale), jnp.float32)
            else:
                cell = cells.reshape(self.shape + (1,) * len(shape))
                entries = genome_entries(layout.entries(name), self.ndim)
                value = life.brain.init_scale * rng.normal(
                    seed, rng.GENOME, self.index, cell, entries, xp=jnp
                )
            genome[name] = value
        energy = jnp.where(occupied, jnp.int32(life.initial_energy), jnp.int32(0))
        c, h = layout.signals, layout.hidden

        def zeros(*trailing: int) -> jax.Array:
            return jnp.zeros((*self.shape, *trailing), jnp.float32)

        state = LifeState(
            occupied=occupied,
            energy=energy,
            last_energy=energy,
            hidden=zeros(h),
            signal=zeros(c),
            halo=zeros(self.slots, c + 1),
            plastic=zeros(layout.outputs, h),
            age=jnp.zeros(self.shape, jnp.int32),
            organism_id=jnp.where(occupied, cells.astype(jnp.int64) + self.offset + 1, jnp.int64(0)),
            parent_id=jnp.zeros(self.shape, jnp.int64),
            birth_tick=jnp.zeros(self.shape, jnp.int32),
            generation=jnp.zeros(self.shape, jnp.int32),
            founder=cells + self.offset,
            genome=genome,
            births=self.tiling.counter(),
            deaths=self.tiling.counter(),
            moves=self.tiling.counter(),
            refused=self.tiling.counter(),
            died=jnp.zeros((*self.tiling.tiles, self.journal, self.tiling.cells), jnp.int64),
            died_parent=jnp.zeros((*self.tiling.tiles, self.journal, self.tiling.cells), jnp.int64),
            died_generation=jnp.zeros((*self.tiling.tiles, self.journal, self.tiling.cells), jnp.int32),
        )
        return state.replace(halo=sense(self, emitted(state.signal, occupied), state.halo, tuple(range(self.ndim))))

    def costs(self, stretch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """int32 (birth, move) costs of crossing links of ``stretch``."""
        life, size = self.config, self.layout.size
        stretch = np.asarray(stretch)
        return (life.birth_cost * stretch).astype(np.int32), np.ceil(size * life.move_cost * stretch).astype(np.int32)

    def price(self, birth: jax.Array, slot: jax.Array, beach: tuple[jax.Array, jax.Array] | None = None) -> jax.Array:
        """Energy a claim toward ``slot`` costs: a birth or a move across its axis, or
        across the cell's beach (``beach``: its birth and move costs, shaped like
        ``slot``; ``beach_costs``)."""
        # A select per axis (a slot's axis is slot // 2): a table lookup would be a
        # gather, many times slower on CPU.
        price = jnp.zeros(jnp.shape(slot), jnp.int32)
        for axis in range(self.ndim):
            cost = jnp.where(birth, self.birth_cost[axis], self.move_cost[axis])
            price = jnp.where(slot >> 1 == axis, cost, price)
        if self.beach_slot is None:
            return price
        across = jnp.where(birth, beach[0], beach[1])
        return jnp.where(slot == self.beach_slot, across, price)

    def beach_costs(self) -> tuple[jax.Array, jax.Array] | None:
        """(*S,) int32 birth and move costs across each cell's beach (None: no shore)."""
        if self.shoreline is None:
            return None
        return jnp.asarray(self.beach_birth_cost), jnp.asarray(self.beach_move_cost)

    def slot_exists(self) -> jax.Array:
        """(*S, slots) bool: whether each slot of each cell has a neighbour (past an open
        end or along a size-1 axis it has none), or a partner across the beach. Computed
        from the cells' coordinates in the step, where XLA fuses it into its readers: a
        table would be a constant of the lattice's size, read from memory every tick."""
        columns = []
        for number, axis in enumerate(self.region.axes):
            if geometry.slot_wraps(axis):
                columns += [jnp.ones(self.shape, bool)] * 2
            else:
                coordinate = geometry.coordinate(self.shape, number)
                columns += [coordinate > 0, coordinate < axis.size - 1]
        if self.shoreline is not None:
            columns.append(jnp.asarray(self.shoreline.on))
        return jnp.stack(columns, axis=-1)

    def features(self) -> jax.Array:
        """(*S, slots, 3) float32: the features of each cell's direction slots. A
        broadcast in the step, which XLA fuses into its readers (a NumPy broadcast became
        a constant of the full shape, read from memory every tick)."""
        if self.shoreline is None:
            return jnp.broadcast_to(jnp.asarray(self.slot_features), (*self.shape, self.slots, 3))
        axes = jnp.broadcast_to(jnp.asarray(self.slot_features[: 2 * self.ndim]), (*self.shape, 2 * self.ndim, 3))
        stretch = jnp.log2(jnp.asarray(self.shoreline.stretch, jnp.float32)) / 8.0
        beach = jnp.stack([stretch, jnp.full(self.shape, -1.0, jnp.float32), jnp.zeros(self.shape, jnp.float32)], axis=-1)
        return jnp.concatenate([axes, beach[..., None, :]], axis=-2)

    def faces(self, ticking: tuple[int, ...]) -> list[int]:
        """The slots of the ticking placed axes: the sides through which a tile's cells
        receive from the neighbouring tile (a target's winning slot)."""
        return [2 * axis + sign for axis in ticking if axis < self.placed for sign in (0, 1)]


def _neighbours(
    tables: list[np.ndarray], slots: int, axes: range, shape: tuple[int, ...]
) -> np.ndarray:
    """(slots, cells of ``axes``) int32: for the lattice of ``shape[axes]``, the index of
    each slot's neighbour along ``axes``, each cell's own index for the other slots and
    where there is no neighbour. ``tables`` are the axes' ``neighbour_table``s."""
    sizes = tuple(shape[axis] for axis in axes)
    cells = math.prod(sizes)
    out = np.tile(np.arange(cells, dtype=np.int32), (slots, 1))
    coordinates = np.indices(sizes).reshape(len(sizes), cells)
    for position, axis in enumerate(axes):
        for sign in (0, 1):
            moved = coordinates.copy()
            target = tables[axis][sign][coordinates[position]]
            moved[position] = np.where(target >= 0, target, moved[position])
            out[2 * axis + sign] = np.ravel_multi_index(tuple(moved), sizes)
    return out
