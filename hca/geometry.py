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

from hca.config import Axis, WorldConfig


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


def shift(values: jax.Array, axis: int, step: int, wrap: bool) -> jax.Array:
    """``out[..., i, ...] = values[..., i + step, ...]`` along ``axis`` (step is +1 or -1).

    With ``wrap`` the axis is a ring; without it, positions past the end read zero.
    """
    if wrap:
        return jnp.roll(values, -step, axis=axis)
    size = values.shape[axis]
    if size == 1:
        return jnp.zeros_like(values)
    zeros = jnp.zeros_like(jax.lax.slice_in_dim(values, 0, 1, axis=axis))
    if step > 0:
        return jnp.concatenate([jax.lax.slice_in_dim(values, 1, size, axis=axis), zeros], axis=axis)
    return jnp.concatenate([zeros, jax.lax.slice_in_dim(values, 0, size - 1, axis=axis)], axis=axis)


def coordinate(shape: Sequence[int], axis: int) -> jax.Array:
    """int32 array of ``shape`` holding each cell's coordinate along ``axis``."""
    return jax.lax.broadcasted_iota(jnp.int32, tuple(shape), axis)


def cell_index(shape: Sequence[int]) -> jax.Array:
    """int32 array of ``shape`` holding each cell's row-major index in its region."""
    return jnp.arange(math.prod(shape), dtype=jnp.int32).reshape(tuple(shape))


@dataclass(frozen=True)
class Schedule:
    """The static stretch schedule of a world.

    The world repeats every ``period`` = lcm(stretches) ticks. On phase ``p`` the axes
    with ``p % stretch == 0`` tick. Phases with the same ticking axes share one
    compiled branch: ``branch_of_phase[p]`` indexes ``ticking``, whose entries list,
    per region, the indices of the axes that tick.
    """

    period: int
    branch_of_phase: tuple[int, ...]
    ticking: tuple[tuple[tuple[int, ...], ...], ...]

    @staticmethod
    def of(world: WorldConfig) -> Schedule:
        stretches = [axis.stretch for region in world.regions.values() for axis in region.axes]
        period = math.lcm(*stretches)
        ticking: list[tuple[tuple[int, ...], ...]] = []
        branch_of_phase = []
        for phase in range(period):
            subset = tuple(
                tuple(i for i, axis in enumerate(region.axes) if phase % axis.stretch == 0)
                for region in world.regions.values()
            )
            if subset not in ticking:
                ticking.append(subset)
            branch_of_phase.append(ticking.index(subset))
        return Schedule(period, tuple(branch_of_phase), tuple(ticking))


def ticks_per_thousand(axis: Axis) -> int:
    """How many of ticks 0..999 the axis ticks on."""
    return -(-1000 // axis.stretch)

