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

import math

import jax
import jax.numpy as jnp
import numpy as np

from hca import brain, geometry, rng
from hca.config import PhylogenySettings, Region, quantize_rate
from hca.state import LifeState
from hca.tasks import Tasks


def genome_entries(start: int, shape: tuple[int, ...], lead: int) -> jax.Array:
    """Global genome entry numbers of a tensor starting at ``start``, with ``lead``
    leading unit axes: distinct words for the counter-based draws of each entry."""
    count = math.prod(shape)
    entries = jnp.arange(start, start + count, dtype=jnp.int32).reshape(shape)
    return entries.reshape((1,) * lead + shape)


class Life:
    """The organism physics of one region, built once from its config."""

    def __init__(self, region: Region, region_index: int, journal: int = PhylogenySettings().drain_every):
        assert region.organisms is not None
        self.journal = journal  # ticks of deaths the state keeps (PhylogenySettings.drain_every)
        self.region = region
        self.index = region_index
        self.config = life = region.organisms
        self.layout = brain.GenomeLayout.of(life.brain)
        self.shape = region.shape
        self.cells = region.cells
        self.ndim = len(region.axes)
        self.slots = 2 * self.ndim
        self.tiling = geometry.Tiling.of(region)
        self.placed = self.tiling.placed
        tile_cells = self.tiling.cells
        # Transfers accepted into one tile per tick, and through one side of a placed axis.
        self.capacity = min(life.max_transfers or max(16, tile_cells // 8), tile_cells)
        self.crossing = min(life.max_crossings or max(1, self.capacity // 4), self.capacity)

        tables = [geometry.neighbour_table(axis) for axis in region.axes]
        # (S, *shape) bool: whether each slot of each cell has a neighbour.
        exists = np.zeros((self.slots, *self.shape), dtype=bool)
        coordinates = np.indices(self.shape).reshape(self.ndim, -1)
        for axis, table in enumerate(tables):
            for sign in (0, 1):
                exists[2 * axis + sign] = (table[sign][coordinates[axis]] >= 0).reshape(self.shape)
        self.exists = exists
        # (S, tile cells) int32: in-tile index of each slot's neighbour along the axes
        # inside a tile (own index along placed axes, and where there is none).
        inner = self.shape[self.placed :]
        local = np.indices(inner).reshape(len(inner), tile_cells)
        self.local_neighbour = np.tile(np.arange(tile_cells, dtype=np.int32), (self.slots, 1))
        for axis in range(self.placed, self.ndim):
            for sign in (0, 1):
                moved = local.copy()
                target = tables[axis][sign][local[axis - self.placed]]
                moved[axis - self.placed] = np.where(target >= 0, target, moved[axis - self.placed])
                self.local_neighbour[2 * axis + sign] = np.ravel_multi_index(tuple(moved), inner)
        # (S, 3): log2(stretch) / 8, curled, sign of each slot.
        features = []
        for axis in region.axes:
            for sign in (-1.0, 1.0):
                features.append([math.log2(axis.stretch) / 8.0, float(axis.curled), sign])
        self.slot_features = np.asarray(features, dtype=np.float32)
        stretch = np.repeat([axis.stretch for axis in region.axes], 2)
        size = self.layout.size
        # Integer costs per slot: crossing an axis costs in proportion to its stretch.
        self.birth_cost = (life.birth_cost * stretch).astype(np.int32)
        self.move_cost = np.ceil(size * life.move_cost * stretch).astype(np.int32)
        self.upkeep = life.metabolism.base + math.floor(size * life.metabolism.per_parameter)
        self.unit_cost = quantize_rate(life.metabolism.per_active_unit)
        self.tasks = Tasks(region, region_index) if region.tasks else None

    def init(self, seed: jax.Array) -> LifeState:
        """The founders: cells drawn with ``density``, genomes drawn from the seed."""
        from hca.sense import sense

        life, layout = self.config, self.layout
        cells = geometry.cell_index(self.shape)
        occupied = rng.bernoulli(life.density, seed, rng.FOUNDERS, self.index, cells, xp=jnp)
        genome = {}
        for name, (start, _) in layout.offsets().items():
            shape = layout.shapes()[name]
            if name == "log_learning_rate":
                value = jnp.full((*self.shape, *shape), math.log(life.learning_rate), jnp.float32)
            elif name == "log_mutation":
                value = jnp.full((*self.shape, *shape), math.log(life.mutation.initial_scale), jnp.float32)
            else:
                cell = cells.reshape(self.shape + (1,) * len(shape))
                entries = genome_entries(start, shape, self.ndim)
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
            plastic=zeros(h, layout.outputs),
            age=jnp.zeros(self.shape, jnp.int32),
            organism_id=jnp.where(occupied, cells.astype(jnp.int64) + 1, jnp.int64(0)),
            parent_id=jnp.zeros(self.shape, jnp.int64),
            birth_tick=jnp.zeros(self.shape, jnp.int32),
            generation=jnp.zeros(self.shape, jnp.int32),
            founder=cells,
            genome=genome,
            births=self.tiling.counter(),
            deaths=self.tiling.counter(),
            moves=self.tiling.counter(),
            refused=self.tiling.counter(),
            died=jnp.zeros((*self.tiling.tiles, self.journal, self.tiling.cells), jnp.int64),
            died_parent=jnp.zeros((*self.tiling.tiles, self.journal, self.tiling.cells), jnp.int64),
            died_generation=jnp.zeros((*self.tiling.tiles, self.journal, self.tiling.cells), jnp.int32),
        )
        return state.replace(halo=sense(self, state.signal, occupied, state.halo, tuple(range(self.ndim))))

    def price(self, birth: jax.Array, slot: jax.Array) -> jax.Array:
        """Energy a claim toward ``slot`` costs: a birth or a move across its axis."""
        return jnp.where(birth, jnp.asarray(self.birth_cost)[slot], jnp.asarray(self.move_cost)[slot])

    def faces(self, ticking: tuple[int, ...]) -> list[int]:
        """The slots of the ticking placed axes: the sides through which a tile's cells
        receive from the neighbouring tile (a target's winning slot)."""
        return [2 * axis + sign for axis in ticking if axis < self.placed for sign in (0, 1)]
