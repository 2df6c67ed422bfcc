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


def bids(life: Life, energy: jax.Array, tick: jax.Array, seed: jax.Array) -> jax.Array:
    """(*S,) int64: what each cell's claim bids: its energy, ties broken by a hash of
    (seed, tick, region, cell), so bids from two regions compare too."""
    tie = rng.hash_u32(seed, rng.TIE_BREAK, life.index, tick, geometry.cell_index(life.shape), xp=jnp)
    return (energy.astype(jnp.int64) << 32) | tie.astype(jnp.int64)


def settle_claims(
    life: Life,
    occupied: jax.Array,  # (*S,) bool
    bid: jax.Array,  # (*S,) int64, see bids
    intent: Intent,
    ticking: tuple[int, ...],
    offer: jax.Array | None = None,  # (*S,) int64: the bid across the beach slot, -1 none
) -> Claims:
    """Settle claims along the ticking axes, and across the beach slot where ``offer``
    says a partner claims the cell, by neighbour gathers only. Claimants across a beach
    look back in ``hca.beaches``."""
    shape, tiling = life.shape, life.tiling
    slots = [(axis, sign) for axis in ticking for sign in (0, 1)]

    # Each empty cell picks the highest bid among the claims pointed at it.
    best_bid = jnp.full(shape, -1, jnp.int64)
    winner = jnp.full(shape, NO_SLOT, jnp.int32)
    for axis, sign in slots:
        wrap = geometry.slot_wraps(life.region.axes[axis])
        step = 1 if sign else -1
        back = 2 * axis + (1 - sign)  # the claimant's slot that points at this cell
        # The neighbour's bid where its claim points here, else -1 (and past an open
        # end): one shift per slot, of the claim and its bid together.
        offered = jnp.where(intent.slot == back, bid, -1)
        candidate = jnp.where(occupied, -1, geometry.shift(offered, axis, step, wrap, fill=-1))
        better = candidate > best_bid
        best_bid = jnp.where(better, candidate, best_bid)
        winner = jnp.where(better, 2 * axis + sign, winner)
    if offer is not None:
        better = jnp.where(~occupied, offer, -1) > best_bid
        winner = jnp.where(better, life.beach_slot, winner)

    # A tile accepts the first `capacity` of the claims it won, in cell order, less
    # those beyond the first `crossing` through one side of a placed axis.
    # One running count for all of them (few large scans, not one per face: on GPU each
    # scan is several kernels).
    faces = life.faces(ticking)
    split = tiling.split(winner)
    won = split != NO_SLOT
    counted = jnp.stack([won] + [split == face for face in faces], axis=-2)  # (*tiles, 1 + F, cells)
    running = jnp.cumsum(counted, axis=-1, dtype=jnp.int32)
    limits = jnp.asarray([life.capacity] + [life.crossing] * len(faces), jnp.int32)
    limits = limits.reshape((1,) * len(tiling.tiles) + (-1, 1))
    accepted = won & (~counted | (running <= limits)).all(axis=-2)
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
