"""Lattice geometry: neighbours along open and curled axes, and the stretch schedule.

Everything here is decided when a step is built: whether an axis wraps, which axes
tick on which phase of the super-step. The step itself never branches on geometry.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from hca.config import Axis, Region, WorldConfig


def slot_wraps(axis: Axis) -> bool:
    """Whether the direction slots of ``axis`` wrap around its ends."""
    return axis.curled and axis.size >= 2


def link_wraps(axis: Axis) -> bool:
    """Whether a distinct link joins the last cell to the first.

    On a curled axis of size 2 both slots reach the same neighbour through one link,
    so energy flows across it once, as on an open axis of size 2.
    """
    return axis.curled and axis.size >= 3


def neighbour_table(axis: Axis) -> np.ndarray:
    """(2, size) int array: the neighbour index of each cell in slot -1 (row 0) and +1
    (row 1), or -1 where there is none (past an open end, or along a size-1 axis)."""
    index = np.arange(axis.size)
    table = np.stack([index - 1, index + 1])
    if slot_wraps(axis):
        return table % axis.size
    return np.where((table >= 0) & (table < axis.size), table, -1)


def link_table(axis: Axis) -> np.ndarray:
    """(2, size) bool array: whether each cell has a distinct energy link toward -1 and +1."""
    index = np.arange(axis.size)
    if link_wraps(axis):
        return np.ones((2, axis.size), dtype=bool)
    return np.stack([index > 0, index < axis.size - 1])


def shift(values: jax.Array, axis: int, step: int, wrap: bool, fill: int | float = 0) -> jax.Array:
    """``out[..., i, ...] = values[..., i + step, ...]`` along ``axis`` (step is +1 or -1).

    With ``wrap`` the axis is a ring; without it, positions past the end read ``fill``.
    Both are a roll, so that along an axis spread over devices each device exchanges
    only its boundary slice with one neighbour.
    """
    rolled = jnp.roll(values, -step, axis=axis)
    if wrap:
        return rolled
    size = values.shape[axis]
    position = jax.lax.broadcasted_iota(jnp.int32, (size,) + (1,) * (values.ndim - axis - 1), 0)
    past_end = position == (size - 1 if step > 0 else 0)
    return jnp.where(past_end, jnp.asarray(fill, values.dtype), rolled)


def coordinate(shape: Sequence[int], axis: int) -> jax.Array:
    """int32 array of ``shape`` holding each cell's coordinate along ``axis``."""
    return jax.lax.broadcasted_iota(jnp.int32, tuple(shape), axis)


def cell_index(shape: Sequence[int]) -> jax.Array:
    """int32 array of ``shape`` holding each cell's row-major index in its region."""
    return jnp.arange(math.prod(shape), dtype=jnp.int32).reshape(tuple(shape))


@dataclass(frozen=True)
class Tiling:
    """A region cut into tiles: a tile is the cells that share one coordinate on every
    placed axis (the placed axes lead the region's axes), the whole region when nothing
    is placed.

    A tile never spans two devices and its contents do not depend on how many devices
    there are, so whatever is decided tile by tile (the transfers a tick accepts, the
    ledger's counters) is the same on one device or many, and needs no communication.
    """

    shape: tuple[int, ...]  # the region's lattice shape
    placed: int  # how many leading axes are placed

    @staticmethod
    def of(region: Region) -> Tiling:
        return Tiling(region.shape, len(region.placement))

    @property
    def tiles(self) -> tuple[int, ...]:
        """The tile grid: the sizes of the placed axes."""
        return self.shape[: self.placed]

    @property
    def cells(self) -> int:
        """Cells in one tile."""
        return math.prod(self.shape[self.placed :])

    def split(self, x: jax.Array) -> jax.Array:
        """(*shape, ...) -> (*tiles, cells, ...): the same memory, seen tile by tile."""
        return x.reshape((*self.tiles, self.cells, *x.shape[len(self.shape) :]))

    def join(self, x: jax.Array) -> jax.Array:
        """(*tiles, cells, ...) -> (*shape, ...)."""
        return x.reshape((*self.shape, *x.shape[self.placed + 1 :]))

    def flat_rows(self, x: jax.Array) -> jax.Array:
        """(*shape, ...) -> (*shape, size): each cell's row flat (the same memory)."""
        return x.reshape((*self.shape, -1))

    def counter(self) -> jax.Array:
        """A zero int64 counter per tile."""
        return jnp.zeros(self.tiles, jnp.int64)

    def total(self, x: jax.Array) -> jax.Array:
        """Per-tile int64 sum of a per-cell array, lattice-shaped (*shape) or flat (N,)."""
        return x.reshape((*self.tiles, self.cells)).sum(axis=-1, dtype=jnp.int64)

    def first(self, mask: jax.Array, count: int) -> jax.Array:
        """(*tiles, ..., cells) bool -> (*tiles, ..., count) int32: the in-tile indices of
        each tile's first ``count`` set cells in cell order, then ``cells`` (no cell).

        The k-th set cell is where the running count first reaches k: counted directly
        for small tiles, found by a binary search by gathers within each tile otherwise.
        """
        cells = self.cells
        running = jnp.cumsum(mask, axis=-1, dtype=jnp.int32)
        if count * cells <= 1 << 16:
            # Cells before the k-th set one: those whose running count is below k.
            wanted = jnp.arange(1, count + 1, dtype=jnp.int32).reshape((1,) * (mask.ndim - 1) + (count, 1))
            below = running[..., None, :] < wanted
            return below.sum(axis=-1, dtype=jnp.int32)
        want = jnp.broadcast_to(jnp.arange(1, count + 1, dtype=jnp.int32), (*mask.shape[:-1], count))

        def halve(_, bounds):
            low, high = bounds
            middle = (low + high) // 2
            reached = jnp.take_along_axis(running, jnp.minimum(middle, cells - 1), axis=-1) >= want
            return jnp.where(reached, low, middle + 1), jnp.where(reached, middle, high)

        bounds = (jnp.zeros_like(want), jnp.full_like(want, cells))
        return jax.lax.fori_loop(0, cells.bit_length(), halve, bounds)[0]

    def take(self, tree, index: jax.Array):
        """Rows ``index`` (*tiles, K) of every lattice-shaped leaf of ``tree``, tile by
        tile: leaves (*shape, ...) -> (*tiles, K, ...). Indices past the tile read its last
        cell (mask them); none is negative. Clipped here, they are promised in range to
        the gather, which then checks no bounds for each entry of a row."""
        index = jnp.minimum(index, self.cells - 1)

        def one(x):
            tiled = self.split(x)
            return jnp.take_along_axis(
                tiled, index.reshape(index.shape + (1,) * (tiled.ndim - index.ndim)), axis=self.placed,
                mode="promise_in_bounds",
            )

        return jax.tree.map(one, tree)

    def gather(self, tree, index: jax.Array):
        """Rows ``index`` (*tiles, K) of every lattice-shaped leaf of ``tree``, indexed
        across the whole lattice (tile * cells + in-tile index, in range): leaves
        (*shape, ...) -> (*tiles, K, ...)."""

        def one(x):
            rows = x.reshape((-1, *x.shape[len(self.shape) :]))
            return rows.at[index].get(mode="promise_in_bounds")

        return jax.tree.map(one, tree)

    def put_rows(self, x: jax.Array, index: jax.Array, tile: jax.Array, rows: jax.Array) -> jax.Array:
        """``x`` (*shape, ...) with rows (K, ...) written at the in-tile indices ``index``
        (K,) of the tiles ``tile`` (K,) (flat tile indices), distinct; indices ``cells``
        are dropped. Only those rows are written."""
        flat = x.reshape((-1, *x.shape[len(self.shape) :]))
        where = jnp.where(index < self.cells, tile * self.cells + index, flat.shape[0])
        return flat.at[where].set(rows, mode="drop").reshape(x.shape)


@dataclass(frozen=True)
class Schedule:
    """The static stretch schedule of a world.

    The world repeats every ``period`` = lcm(stretches) ticks (of axes and beaches). On
    phase ``p`` the axes and beaches with ``p % stretch == 0`` tick. Phases with the
    same ticking axes and beaches share one compiled branch: ``branch_of_phase[p]``
    indexes ``ticking``, whose entries list, per region, the indices of the axes that
    tick, and ``beaches``, whose entries list the beaches that tick.
    """

    period: int
    branch_of_phase: tuple[int, ...]
    ticking: tuple[tuple[tuple[int, ...], ...], ...]
    beaches: tuple[tuple[int, ...], ...] = ()  # per branch: the beaches that tick

    @staticmethod
    def of(world: WorldConfig) -> Schedule:
        stretches = [axis.stretch for region in world.regions.values() for axis in region.axes]
        period = math.lcm(*stretches, *(beach.stretch for beach in world.beaches))
        branches: list[tuple] = []
        branch_of_phase = []
        for phase in range(period):
            subset = tuple(
                tuple(i for i, axis in enumerate(region.axes) if phase % axis.stretch == 0)
                for region in world.regions.values()
            )
            beaches = tuple(k for k, beach in enumerate(world.beaches) if phase % beach.stretch == 0)
            if (subset, beaches) not in branches:
                branches.append((subset, beaches))
            branch_of_phase.append(branches.index((subset, beaches)))
        return Schedule(period, tuple(branch_of_phase), tuple(b[0] for b in branches), tuple(b[1] for b in branches))


def ticks_per_thousand(axis: Axis) -> int:
    """How many of ticks 0..999 the axis ticks on."""
    return -(-1000 // axis.stretch)

