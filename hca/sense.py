"""Sense: each cell receives its neighbours' signals along the axes that tick now.

A cell keeps a *halo*: for each direction slot, the signal and occupancy it last
received. Slots of the axes that tick now are refreshed from the neighbours; the
others keep what they last received, a stale halo, as on a real cluster.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from hca import geometry
from hca.organisms import Life


def sense(
    life: Life,
    outgoing: jax.Array,  # (*S, C + 1) float32, ``emitted``
    halo: jax.Array,  # (*S, 2D, C + 1) float32
    ticking: tuple[int, ...],
) -> jax.Array:
    """The halo with the slots of the ticking axes refreshed from what the neighbours
    show (``outgoing``; the beach slot is written by ``hca.step.Tick.sense``).

    Takes and returns only the small arrays involved, so that a conditional on an axis'
    ticks never carries the genome. What the cells show is made once a tick by the
    caller, not again in each axis' conditional.
    """
    # Only the refreshed slots are written (in place): the others keep their values. An
    # axis' two slots are adjacent, and so are those of consecutive axes: each run of
    # consecutive ticking axes is written in one pass over the halo (a slot or an axis
    # at a time touched each cell's cache lines again).
    runs: list[list[int]] = []
    for axis in sorted(ticking):
        if runs and runs[-1][-1] == axis - 1:
            runs[-1].append(axis)
        else:
            runs.append([axis])
    for run in runs:
        slots = [
            geometry.shift(outgoing, axis, step, geometry.slot_wraps(life.region.axes[axis]))
            for axis in run
            for step in (-1, +1)
        ]
        halo = halo.at[..., 2 * run[0] : 2 * run[-1] + 2, :].set(jnp.stack(slots, axis=-2))
    return halo


def emitted(signal: jax.Array, occupied: jax.Array) -> jax.Array:
    """(*S, C + 1): what each cell shows its neighbours: its signal and occupancy."""
    present = occupied[..., None].astype(jnp.float32)
    return jnp.concatenate([signal * present, present], axis=-1)
