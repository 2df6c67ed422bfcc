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
class Join:
    """One beach, as index tables."""

    regions: tuple[int, int]  # the two regions' indices
    cells: tuple[np.ndarray, np.ndarray]  # (n,) int32 each: the joined cells, pair by pair
    places: tuple[np.ndarray, np.ndarray]  # (cells of the region,) int32: a cell's place in the beach
    on: tuple[np.ndarray, np.ndarray]  # (cells of the region,) bool: the cell is on this beach
    rate: int  # fixed-point fraction sent across per beach tick


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
                                   quantize_rate(beach.diffusion)))
        self.touching = sorted({index for join in self.joins for index in join.regions})

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
