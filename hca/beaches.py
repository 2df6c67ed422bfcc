"""Beaches: energy crossing between regions (DESIGN section 6).

A beach joins a block of cells of one region to an equal block of another, cell to
cell in row-major order (``config.Beach``). On the beach's ticks each joined cell
sends ``floor(free * diffusion)`` of its free energy to its partner, computed from
the same snapshot as the diffusion along the regions' own axes, so every quantum
that leaves one region arrives in the other on the same tick. Each region counts
what came in and went out through its beaches, per tile, and its ledger reads
``total = total(0) + injected - dissipated + beach_in - beach_out``; the world's, the
sum over regions, has no flow terms. The world also counts what each beach carried,
each way.

Organisms cross the beaches that join two regions with organisms (whose brains are
the same, so a genome runs on both sides). A cell on such a beach has one more
direction slot, the *beach slot* (after its axes' slots), whose partner is the paired
cell: on the beach's ticks the cell senses its partner through it, and may move or
give birth across it. A claim across a beach competes for the empty partner cell with
the claims along that region's axes, by the same bid (energy, then a hash of seed,
tick, region and cell); crossing costs like crossing an axis of the beach's stretch
(or of its ``cost``).
What an organism's body carries across counts as beach flow in both regions' ledgers
and in what the beach carried; the beach also counts the organisms that crossed.

Everything is a gather from static index tables (no scatter), so the flows are the
same on any number of devices.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from hca import geometry
from hca.config import WorldConfig, quantize_rate
from hca.energy import fraction


@dataclass(frozen=True)
class Shoreline:
    """A region's cells on beaches whose other side has organisms (static)."""

    on: np.ndarray  # (*S,) bool: the cell has a partner its organisms can cross to
    stretch: np.ndarray  # (*S,) int32: the stretch of the cell's beach (1 elsewhere)
    cost: np.ndarray  # (*S,) int32: the stretch its crossing costs as (Beach.crossing_stretch)
    beach: np.ndarray  # (*S,) int32: the number of the cell's beach (0 elsewhere; see on)


def shorelines(config: WorldConfig) -> list[Shoreline | None]:
    """Per region (world-file order), its shoreline, or None where none of its cells
    can be crossed from or to."""
    regions = list(config.regions.values())
    names = list(config.regions)
    on = [np.zeros(region.shape, bool) for region in regions]
    stretch = [np.ones(region.shape, np.int32) for region in regions]
    cost = [np.ones(region.shape, np.int32) for region in regions]
    number = [np.zeros(region.shape, np.int32) for region in regions]
    for k, beach in enumerate(config.beaches):
        if not _living(config, beach):
            continue
        for shore in beach.shores:
            index = names.index(shore.region)
            cells = np.asarray(shore.cells(regions[index]), np.int64)
            on[index].reshape(-1)[cells] = True
            stretch[index].reshape(-1)[cells] = beach.stretch
            cost[index].reshape(-1)[cells] = beach.crossing_stretch
            number[index].reshape(-1)[cells] = k
    return [Shoreline(*tables) if tables[0].any() else None for tables in zip(on, stretch, cost, number)]


def _living(config: WorldConfig, beach) -> bool:
    """Whether organisms cross ``beach``: both its regions have organisms."""
    return all(config.regions[shore.region].organisms is not None for shore in beach.shores)


@dataclass(frozen=True)
class Join:
    """One beach, as index tables."""

    regions: tuple[int, int]  # the two regions' indices
    cells: tuple[np.ndarray, np.ndarray]  # (n,) int32 each: the joined cells, pair by pair
    places: tuple[np.ndarray, np.ndarray]  # (cells of the region,) int32: a cell's place in the beach
    on: tuple[np.ndarray, np.ndarray]  # (cells of the region,) bool: the cell is on this beach
    rate: int  # fixed-point fraction sent across per beach tick
    living: bool  # organisms cross it


class Beaches:
    """The beaches of a world, built once from its config."""

    def __init__(self, config: WorldConfig):
        names = list(config.regions)
        regions = list(config.regions.values())
        self.names = config.beach_names()
        self.shapes = [region.shape for region in regions]
        self.tilings = [geometry.Tiling.of(region) for region in regions]
        self.joins = []
        for beach in config.beaches:
            indices, cells, places, on = [], [], [], []
            for shore in beach.shores:
                index = names.index(shore.region)
                block = np.asarray(shore.cells(regions[index]), np.int32)
                place = np.zeros(regions[index].cells, np.int32)
                place[block] = np.arange(block.size, dtype=np.int32)
                mask = np.zeros(regions[index].cells, bool)
                mask[block] = True
                indices.append(index)
                cells.append(block)
                places.append(place)
                on.append(mask)
            self.joins.append(Join(tuple(indices), tuple(cells), tuple(places), tuple(on),
                                   quantize_rate(beach.diffusion), _living(config, beach)))
        self.touching = sorted({index for join in self.joins for index in join.regions})
        self.crossing = any(join.living for join in self.joins)  # organisms cross some beach

    def __len__(self) -> int:
        return len(self.joins)

    def flow(self, frees: list[jax.Array], ticking: tuple[int, ...]):
        """What the beaches in ``ticking`` carry, from the snapshot ``frees`` (one lattice
        per region). Returns (deltas, inflow, outflow, carried): per region a lattice to
        add to its free energy (None for regions off every beach), and per-tile counts of
        what came in and went out (zeros where nothing ticks); and (B, 2) int64, what
        each beach carried from its first shore to its second and back."""
        deltas: list[jax.Array | None] = [None] * len(frees)
        inflow: list[jax.Array | None] = [None] * len(frees)
        outflow: list[jax.Array | None] = [None] * len(frees)
        for index in self.touching:
            deltas[index] = jnp.zeros(self.shapes[index], jnp.int32)
            inflow[index] = self.tilings[index].counter()
            outflow[index] = self.tilings[index].counter()
        carried = []
        for number, join in enumerate(self.joins):
            if number not in ticking:
                carried.append(jnp.zeros(2, jnp.int64))
                continue
            sent = [fraction(frees[index].reshape(-1)[cells], join.rate)
                    for index, cells in zip(join.regions, join.cells)]
            carried.append(jnp.stack([sent[0].sum(dtype=jnp.int64), sent[1].sum(dtype=jnp.int64)]))
            for side, index in enumerate(join.regions):
                on, place = jnp.asarray(join.on[side]), jnp.asarray(join.places[side])
                given = jnp.where(on, sent[side][place], 0).reshape(self.shapes[index])
                taken = jnp.where(on, sent[1 - side][place], 0).reshape(self.shapes[index])
                deltas[index] = deltas[index] + taken - given
                inflow[index] = inflow[index] + self.tilings[index].total(taken)
                outflow[index] = outflow[index] + self.tilings[index].total(given)
        return deltas, inflow, outflow, jnp.stack(carried) if carried else None

    # -- organisms across ----------------------------------------------------------------

    def _partners(self, ticking: tuple[int, ...]):
        """(join, side, region, other region) for each side of the ticking beaches that
        organisms cross."""
        for number, join in enumerate(self.joins):
            if join.living and number in ticking:
                for side in (0, 1):
                    yield join, side, join.regions[side], join.regions[1 - side]

    def across(self, values: list, ticking: tuple[int, ...], base: list) -> list:
        """Per region, ``values`` (a lattice (*S, ...) per region, None for regions off
        the living beaches) as seen from each cell's partner across the ticking living
        beaches: ``base`` (per region, shaped the same) with the partner's value at the
        cells on those beaches."""
        out = list(base)
        for join, side, index, other in self._partners(ticking):
            source = values[other]
            flat = source.reshape((-1, *source.shape[len(self.shapes[other]):]))[join.cells[1 - side]]
            seen = flat[jnp.asarray(join.places[side])].reshape((*self.shapes[index], *flat.shape[1:]))
            on = jnp.asarray(join.on[side]).reshape(self.shapes[index] + (1,) * (flat.ndim - 1))
            out[index] = jnp.where(on, seen, out[index])
        return out

    def rows_across(self, lives, rows: list, targets: list, ticking: tuple[int, ...], pack) -> list:
        """Per region with a shoreline, the packed rows (*tiles, K, W) uint32 that arrive
        at its ``targets`` (*tiles, K) in-tile indices from their partners across the
        ticking living beaches (zeros where none): ``rows`` per region as lattice-shaped
        trees, ``pack(tree)`` (n, ...) -> (n, W)."""
        out: list = [None] * len(rows)
        for join, side, index, other in self._partners(ticking):
            life = lives[index]
            sent = pack(jax.tree.map(lambda x: x.reshape((-1, *x.shape[len(self.shapes[other]):]))[join.cells[1 - side]],
                                     rows[other]))  # (n, W)
            tiling = life.tiling
            cell = geometry.cell_index(tiling.tiles)[..., None] * tiling.cells + jnp.minimum(targets[index], tiling.cells - 1)
            place = jnp.asarray(join.places[side])[cell]
            on = jnp.asarray(join.on[side])[cell] & (targets[index] < tiling.cells)
            got = jnp.where(on[..., None], sent[place], 0)
            out[index] = got if out[index] is None else jnp.where(on[..., None], got, out[index])
        return out

    def crossings(self, lives, energy: list, went: list, ticking: tuple[int, ...]):
        """What crossed the ticking beaches this tick, read at the claimants: ``energy``
        per region (*S,) what each claimant carries, ``went`` (*S,) bool the claimants
        that won across their beach slot (None for regions without one). Returns per
        region with a shoreline the body energy that left by its beach slot, per tile;
        and per beach (B, 2) the organisms and (B, 2) the body energy that crossed from
        its first shore and from its second (zeros for the beaches that do not tick)."""
        leaving: list = [None if life is None or life.beach_slot is None else life.tiling.counter() for life in lives]
        organisms = [jnp.zeros(2, jnp.int64) for _ in self.joins]
        bodies = [jnp.zeros(2, jnp.int64) for _ in self.joins]
        for number, join in enumerate(self.joins):
            if not (join.living and number in ticking):
                continue
            counts, energies = [], []
            for side in (0, 1):
                index = join.regions[side]
                life = lives[index]
                here = went[index] & jnp.asarray(join.on[side]).reshape(life.shape)
                carried = jnp.where(here, energy[index], 0)
                counts.append(here.sum(dtype=jnp.int64))
                energies.append(carried.sum(dtype=jnp.int64))
                leaving[index] = leaving[index] + life.tiling.total(carried)
            organisms[number], bodies[number] = jnp.stack(counts), jnp.stack(energies)
        return leaving, jnp.stack(organisms), jnp.stack(bodies)
