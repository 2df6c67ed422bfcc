"""A slow, obvious NumPy implementation of the substrate tick, for agreement tests.

It walks cells and their links one by one with plain Python integers, sharing nothing
with the jitted step but the definition of the counter-based hash.
"""

from __future__ import annotations

import itertools

import numpy as np

from hca import rng
from hca.config import RATE_ONE, WorldConfig, quantize_rate


def _floor_fraction(value: int, rate: float) -> int:
    return (value * quantize_rate(rate)) // RATE_ONE


def _neighbours_by_link(shape, axis, curled):
    """Yield (cell, neighbour) for each distinct link along `axis`, once per direction."""
    size = shape[axis]
    links = set()
    for i in range(size):
        j = i + 1
        if j == size:
            if not curled or size < 3:
                continue
            j = 0
        links.add((i, j))
    for cell in itertools.product(*(range(n) for n in shape)):
        for i, j in links:
            if cell[axis] == i:
                other = list(cell)
                other[axis] = j
                yield cell, tuple(other)
            if cell[axis] == j:
                other = list(cell)
                other[axis] = i
                yield cell, tuple(other)


class Reference:
    def __init__(self, world: WorldConfig, seed: int | None = None):
        self.world = world
        self.seed = world.seed if seed is None else seed
        self.tick = 0
        self.free = []
        self.injected = []
        self.dissipated = []
        for index, region in enumerate(world.regions.values()):
            initial = region.energy.initial
            cells = np.arange(region.cells).reshape(region.shape)
            span = 2 * initial.jitter + 1
            offsets = rng.hash_u32(self.seed, rng.INITIAL_ENERGY, index, cells, xp=np) % np.uint32(span)
            self.free.append(offsets.astype(np.int64) + initial.mean - initial.jitter)
            self.injected.append(0)
            self.dissipated.append(0)

    def _offers(self, index, region):
        shape = region.shape
        cells = np.arange(region.cells).reshape(shape)
        offered = np.zeros(shape, dtype=np.int64)
        for number, source in enumerate(region.energy.sources):
            if self.tick % source.every:
                continue
            if source.kind == "uniform":
                where = np.ones(shape, dtype=bool)
            elif source.kind == "spots" and source.at is not None:
                where = np.zeros(shape, dtype=bool)
                for coordinate in source.at:
                    where[tuple(coordinate)] = True
            elif source.kind == "spots":
                h = rng.hash_u32(self.seed, rng.SPOTS, index, number, cells, xp=np)
                where = (h >> np.uint32(8)) < round(source.fraction * (1 << 24))
            elif source.kind == "band":
                axis = [a.name for a in region.axes].index(source.axis)
                position = np.indices(shape)[axis]
                where = (position >= source.start) & (position < source.stop)
            else:
                h = rng.hash_u32(self.seed, rng.RAIN, index, number, self.tick, cells, xp=np)
                where = (h >> np.uint32(8)) < round(source.probability * (1 << 24))
            offered = np.minimum(offered + np.where(where, source.amount, 0), region.energy.capacity)
        return offered

    def step(self) -> None:
        for index, region in enumerate(self.world.regions.values()):
            free = self.free[index]
            capacity = region.energy.capacity
            added = np.minimum(self._offers(index, region), np.maximum(capacity - free, 0))
            free = free + added
            self.injected[index] += int(added.sum())

            before = free.copy()
            after = free.copy()
            for axis, spec in enumerate(region.axes):
                if self.tick % spec.stretch:
                    continue
                rate = region.energy.diffusion if spec.diffusion is None else spec.diffusion
                for cell, other in _neighbours_by_link(region.shape, axis, spec.curled):
                    amount = _floor_fraction(int(before[cell]), rate)
                    after[cell] -= amount
                    after[other] += amount
            free = after

            lost = np.array([_floor_fraction(int(v), region.energy.decay) for v in free.ravel()])
            free = free - lost.reshape(free.shape)
            self.dissipated[index] += int(lost.sum())
            self.free[index] = free
        self.tick += 1
