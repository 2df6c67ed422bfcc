"""Decide: what every organism does on its own in a tick.

- ``think``: the organism's own brain maps what it senses to outputs;
- ``learn``: its plastic weights take a reward-modulated Hebbian step;
- ``act``: it absorbs free energy, pays its metabolism, dies if starved or old, and
  states an intent: stay, or move or reproduce toward one direction slot of an axis
  that ticks now.

Every cell on its own: ``decide`` works tile by tile (mapped over the placed axes), so
that a lattice spread over devices is never reshaped across them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from hca import brain
from hca.energy import fraction_dynamic
from hca.config import MAX_AXES, RATE_ONE
from hca.organisms import Life
from hca.state import LifeState

NO_SLOT = -1

# The per-cell fields a tile's decision reads.
_FIELDS = ("occupied", "energy", "last_energy", "signal", "hidden", "halo", "plastic", "age")


@struct.dataclass
class Intent:
    """What each organism wants this tick (lattice-shaped)."""

    slot: jax.Array  # (*S,) int32, direction slot claimed, or NO_SLOT
    birth: jax.Array  # (*S,) bool, the claim is for a child (else a move)
    endowment: jax.Array  # (*S,) int32, fixed-point fraction of energy given to a child


def decide(
    life: Life,
    state: LifeState,
    free: jax.Array,  # (*S,) int32
    phase_bits: jax.Array,  # (MAX_AXES,) float32: which axes tick now
    slot_ticks: jax.Array,  # (2D,) bool: whether each slot's axis ticks now
) -> tuple[LifeState, jax.Array, Intent, jax.Array]:
    """Think, learn and act; returns (state, free, intent, heat per tile)."""
    tiling = life.tiling

    def per_tile(cells, exists, features):
        thought = think(life, cells, exists, features, phase_bits)
        return act(life, cells, thought, learn(life, cells, thought), exists, slot_ticks)

    for _ in range(life.placed):
        per_tile = jax.vmap(per_tile)
    exists = jnp.asarray(np.moveaxis(life.exists, 0, -1))  # (*S, 2D)
    features = np.broadcast_to(life.slot_features, (*life.shape, life.slots, 3))
    cells = {name: tiling.split(getattr(state, name)) for name in _FIELDS}
    cells["genome"] = {name: tiling.split(tensor) for name, tensor in state.genome.items()}
    cells["free"] = tiling.split(free)
    out = jax.tree.map(tiling.join, per_tile(cells, tiling.split(exists), tiling.split(features)))
    intent = Intent(slot=out.pop("slot"), birth=out.pop("birth"), endowment=out.pop("endowment"))
    free, dead, paid = out.pop("free"), out.pop("dead"), out.pop("paid")
    state = state.replace(**out, deaths=state.deaths + tiling.total(dead))
    return state, free, intent, tiling.total(paid)


def think(life: Life, cells: dict, exists: jax.Array, features: jax.Array, phase_bits: jax.Array) -> brain.Thought:
    """Every organism of a tile runs its own brain on what it senses: its own signals,
    hidden state and energy, its cell's free energy, the task inputs, which axes tick
    now, and each direction slot (the halo, whether the slot exists, the axis' features).

    ``cells`` holds the tile's fields with its N cells in front; ``exists`` is (N, 2D).
    """
    energy, free = cells["energy"], cells["free"]
    n = energy.shape[0]
    self_inputs = jnp.concatenate(
        [
            cells["signal"],
            cells["hidden"],
            jnp.log1p(energy.astype(jnp.float32))[:, None] / 8.0,
            jnp.log1p(free.astype(jnp.float32))[:, None] / 8.0,
            jnp.zeros((n, brain.TASK_INPUTS), jnp.float32),
            jnp.broadcast_to(phase_bits, (n, MAX_AXES)),
        ],
        axis=1,
    )
    slot_inputs = jnp.concatenate([cells["halo"], exists[..., None].astype(jnp.float32), features], axis=-1)
    return brain.think(life.layout, cells["genome"], self_inputs, slot_inputs, exists, cells["plastic"])


def learn(life: Life, cells: dict, thought: brain.Thought) -> jax.Array:
    """The plastic weights after a Hebbian step modulated by the energy change since
    the last tick. Empty cells' plastic weights are stale and never read: a child
    starts from zero."""
    change = (cells["energy"] - cells["last_energy"]).astype(jnp.float32)
    modulator = jnp.tanh(change / life.config.modulator_scale)
    return brain.hebbian(cells["plastic"], thought, modulator)


def act(
    life: Life,
    cells: dict,
    thought: brain.Thought,
    plastic: jax.Array,  # (N, H, outputs) float32, after learning
    exists: jax.Array,  # (N, 2D) bool
    slot_ticks: jax.Array,  # (2D,) bool
) -> dict[str, jax.Array]:
    """Emit signals, absorb free energy, pay the metabolism, die if starved or old, and
    state an intent. Returns the tile's new fields and what it decided."""
    config, layout = life.config, life.layout
    occupied, energy, free = cells["occupied"], cells["energy"], cells["free"]
    n = occupied.shape[0]
    outputs = thought.outputs
    signal = jnp.where(occupied[:, None], jnp.tanh(outputs[:, : layout.signals]), 0.0)
    hidden = jnp.where(occupied[:, None], thought.hidden, 0.0)
    actions = outputs[:, layout.signals :]

    # Absorb free energy from the cell.
    want = fraction_dynamic(jnp.full((n,), config.absorb, jnp.int32), _to_rate(actions[:, brain.ABSORB]))
    take = jnp.minimum(jnp.minimum(want, free), config.max_energy - energy)
    take = jnp.where(occupied, take, 0)
    energy = energy + take
    free = free - take

    # Metabolism: upkeep of the stored genome plus the computation switched on.
    cost = life.upkeep + ((thought.active_units * life.unit_cost) >> 16)
    paid = jnp.where(occupied, jnp.minimum(cost, energy), 0)
    energy = energy - paid
    age = cells["age"] + occupied.astype(jnp.int32)

    # Death: the body's remaining energy returns to the cell.
    dead = occupied & (energy == 0)
    if config.max_age is not None:
        dead = dead | (occupied & (age > config.max_age))
    free = free + jnp.where(dead, energy, 0)
    energy = jnp.where(dead, 0, energy)
    alive = occupied & ~dead

    # Intent: the best direction slot on a ticking axis, unless staying scores higher.
    valid = exists & slot_ticks[None, :]
    # The first best slot, by a pass over the few slots (cheaper than argmax on CPU).
    best_score = jnp.full((n,), -jnp.inf, jnp.float32)
    best = jnp.zeros((n,), jnp.int32)
    for slot in range(life.slots):
        score = jnp.where(valid[:, slot], thought.slot_scores[:, slot], -jnp.inf)
        better = score > best_score
        best_score = jnp.where(better, score, best_score)
        best = jnp.where(better, slot, best)
    goes = alive & (best_score > actions[:, brain.STAY])
    birth = actions[:, brain.REPRODUCE] >= actions[:, brain.MOVE]
    eager = jnp.where(birth, actions[:, brain.REPRODUCE], actions[:, brain.MOVE]) > 0.0
    claims = goes & eager & (energy > life.price(birth, best))
    return {
        "occupied": alive,
        "energy": energy,
        "hidden": hidden,
        "signal": signal,
        "plastic": plastic,
        "age": age,
        "free": free,
        "dead": dead,
        "paid": paid,
        "slot": jnp.where(claims, best, NO_SLOT),
        "birth": birth,
        "endowment": jnp.minimum(_to_rate(actions[:, brain.ENDOW]), RATE_ONE - 1),
    }


def _to_rate(x: jax.Array) -> jax.Array:
    """Sigmoid of a brain output as a fixed-point fraction in [0, RATE_ONE]."""
    return jnp.floor(jax.nn.sigmoid(x) * RATE_ONE).astype(jnp.int32)
