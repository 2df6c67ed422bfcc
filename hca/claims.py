"""Settle claims: moves and births target empty cells, and each target picks one claimant.

Every empty target cell looks at the claims pointed at it by its neighbours along the
axes that tick now and picks the highest energy bid, ties broken by a hash of (seed,
tick, claimant); each tile accepts at most ``capacity`` of them, in cell order, and of
those at most ``crossing`` through each side of a placed axis; claimants see whether
they won by looking back. Only gathers from neighbours: no scatter collisions, and the
same result on any number of devices.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from hca import geometry, rng
from hca.decide import NO_SLOT, Intent
from hca.organisms import Life


@struct.dataclass
class Claims:
    """How the claims of a tick were settled."""

    winner: jax.Array  # (*S,) int32, the slot each target's accepted claimant came by, or NO_SLOT
    succeeded: jax.Array  # (*S,) bool, the claimants that won
    refused: jax.Array  # (*tiles,) int64, won claims refused for lack of capacity


def settle_claims(
    life: Life,
    occupied: jax.Array,  # (*S,) bool
    energy: jax.Array,  # (*S,) int32
    intent: Intent,
    ticking: tuple[int, ...],
    tick: jax.Array,
    seed: jax.Array,
) -> Claims:
    """Settle claims along the ticking axes, by neighbour gathers only."""
    shape, tiling = life.shape, life.tiling
    cells = geometry.cell_index(shape)
    tie = rng.hash_u32(seed, rng.TIE_BREAK, life.index, tick, cells, xp=jnp)
    bid = (energy.astype(jnp.int64) << 32) | tie.astype(jnp.int64)
    slots = [(axis, sign) for axis in ticking for sign in (0, 1)]

    # Each empty cell picks the highest bid among the claims pointed at it.
    best_bid = jnp.full(shape, -1, jnp.int64)
    winner = jnp.full(shape, NO_SLOT, jnp.int32)
    for axis, sign in slots:
        wrap = geometry.slot_wraps(life.region.axes[axis])
        step = 1 if sign else -1
        back = 2 * axis + (1 - sign)  # the claimant's slot that points at this cell
        claim = geometry.shift(intent.slot == back, axis, step, wrap)
        offer = jnp.where(claim & ~occupied, geometry.shift(bid, axis, step, wrap), -1)
        better = offer > best_bid
        best_bid = jnp.where(better, offer, best_bid)
        winner = jnp.where(better, 2 * axis + sign, winner)

    # A tile accepts the first `capacity` of the claims it won, in cell order, less
    # those beyond the first `crossing` through one side of a placed axis.
    won = tiling.split(winner != NO_SLOT)
    accepted = won & (jnp.cumsum(won, axis=-1, dtype=jnp.int32) <= life.capacity)
    for face in life.faces(ticking):
        through = tiling.split(winner == face)
        accepted = accepted & (~through | (jnp.cumsum(through, axis=-1, dtype=jnp.int32) <= life.crossing))
    refused = (won & ~accepted).sum(axis=-1, dtype=jnp.int64)
    winner = jnp.where(tiling.join(accepted), winner, NO_SLOT)

    # Claimants look back at their target.
    succeeded = jnp.zeros(shape, bool)
    for axis, sign in slots:
        wrap = geometry.slot_wraps(life.region.axes[axis])
        step = 1 if sign else -1
        here = 2 * axis + sign
        back = 2 * axis + (1 - sign)
        seen = geometry.shift(winner == back, axis, step, wrap)
        succeeded = succeeded | ((intent.slot == here) & seen)

    return Claims(winner=winner, succeeded=succeeded, refused=refused)
