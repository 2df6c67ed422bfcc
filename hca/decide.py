"""Decide: what every organism does on its own in a tick.

- ``think``: the organism's own brain maps what it senses to outputs;
- learn: its plastic weights take a reward-modulated Hebbian step (``post_synaptic``,
  ``brain.hebbian``);
- ``act``: it absorbs free energy, pays its metabolism, dies if starved or old, and
  states an intent: stay, or move or reproduce toward one direction slot of an axis
  that ticks now.

Every cell on its own: ``decide`` works tile by tile (mapped over the placed axes), so
that a lattice spread over devices is never reshaped across them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from hca import brain, tasks
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


@struct.dataclass
class Decision:
    """What a region's organisms did on their own this tick."""

    state: LifeState
    free: jax.Array  # (*S,) int32, free energy after absorption and deaths
    intent: Intent
    heat: jax.Array  # (*tiles,) int64, metabolism paid
    earned: jax.Array | None  # (*tiles,) int64, paid by tasks (None without tasks)
    task_counts: jax.Array | None  # (*tiles, T, 4) int64, see tasks.grade
    answer: jax.Array | None  # (*S,) float32, tanh of each ANSWER (None unless people ask)


def decide(
    life: Life,
    state: LifeState,
    free: jax.Array,  # (*S,) int32
    phase_bits: jax.Array,  # (MAX_AXES,) float32: which axes tick now
    slot_ticks: jax.Array,  # (2D,) bool: whether each slot's axis ticks now
    questions: tasks.Questions | None,  # what the region's tasks pose now
    tick: jax.Array,  # () int32, the tick being stepped
    asked: tuple[jax.Array, jax.Array] | None = None,  # people's questions: open (*S,), inputs (*S, I)
    beach_open: jax.Array | None = None,  # (*S,) bool: the cell's beach ticks now (with a beach slot)
    scored: tuple | None = None,  # (slot sets, which) scored now, see ``brain.think``
    graded: jax.Array | None = None,  # () bool: a task's question is open now (``Tasks.open_at``)
) -> Decision:
    """Think, learn, answer the tasks and people's questions, and act. Where a person's
    question is open it is what the organism is shown, in place of a task's."""
    tiling = life.tiling

    def per_tile(cells, exists, features, questions, asked):
        ticks = jnp.broadcast_to(slot_ticks, (exists.shape[0], slot_ticks.shape[0]))
        if life.beach_slot is not None:
            ticks = jnp.concatenate([ticks, cells["beach_open"][:, None]], axis=1)
        shown = None if questions is None else questions.inputs
        if asked is not None:
            open_, inputs = asked
            shown = jnp.where(open_[:, None], inputs, 0.0 if shown is None else shown)
        # What the brain computed, made once: every decision and payment reads the same
        # floats. XLA GPU recomputes cheap producers inside each consumer, and two such
        # computations can differ in the last bit (XLA CPU removes the barrier before it
        # fuses: the same program there).
        thought = think(life, cells, exists, features, phase_bits, shown, scored)
        thought = jax.lax.optimization_barrier(thought)
        pay = counts = None
        if questions is not None:
            # A group's later cells are graded on what they pass on, their signal 0.
            said = thought.squashed[:, life.layout.signals + brain.ANSWER]
            answer = jnp.where(questions.said, thought.squashed[:, 0], said)
            room = life.config.max_energy - cells["energy"]
            pay, counts = tasks.grade(questions, answer, cells["occupied"], room, life.tasks.budgets, graded)
        out = _made_once(act(life, cells, thought, exists, ticks, pay), tick)
        if life.config.learning:
            out["learning"] = (thought.hidden, post_synaptic(life, cells, thought))
        out["task_counts"] = counts
        if asked is not None:
            out["answer"] = thought.squashed[:, life.layout.signals + brain.ANSWER]
        return out

    for _ in range(life.placed):
        per_tile = jax.vmap(per_tile)
    exists = life.slot_exists()  # (*S, slots)
    features = life.features()
    cells = {name: tiling.split(getattr(state, name)) for name in _FIELDS}
    if life.beach_slot is not None:
        cells["beach_open"] = tiling.split(beach_open)
        cells["beach_costs"] = jax.tree.map(tiling.split, life.beach_costs())
    cells["genome"] = {name: tiling.split(tensor) for name, tensor in state.genome.items()}
    cells["free"] = tiling.split(free)
    questions = jax.tree.map(tiling.split, questions)
    asked = jax.tree.map(tiling.split, asked)
    out = per_tile(cells, tiling.split(exists), tiling.split(features), questions, asked)
    counts = out.pop("task_counts")
    out = jax.tree.map(tiling.join, out)
    if "learning" in out:
        # On the lattice's axes, the shape of the old weights: written in place.
        out["plastic"] = brain.hebbian(state.plastic, *out.pop("learning"))
    intent = Intent(slot=out.pop("slot"), birth=out.pop("birth"), endowment=out.pop("endowment"))
    free, dead, paid, earned = out.pop("free"), out.pop("dead"), out.pop("paid"), out.pop("earned")
    answer = out.pop("answer", None)
    journal = record_deaths(life, state, dead, tick)
    state = state.replace(**out, **journal, deaths=state.deaths + tiling.total(dead))
    return Decision(
        state=state,
        free=free,
        intent=intent,
        heat=tiling.total(paid),
        earned=None if earned is None else tiling.total(earned),
        task_counts=counts,
        answer=answer,
    )


def _made_once(tree, tick: jax.Array):
    """``tree`` as it is, handed on by a conditional that is always taken (ticks count
    from 0), so that its arrays are made once, in memory, for all their readers. XLA CPU
    otherwise computes cheap arithmetic again inside each kernel that reads it: the
    decision's (what an organism earns, absorbs and pays, whether it dies) in 9 to 13
    kernels of a tick, three of them (the death journal's rows) on one thread. Elsewhere
    ``tree`` is returned as it is: on a GPU such kernels run in parallel, and a
    conditional costs a read on the host."""
    if jax.default_backend() != "cpu":
        return tree
    return jax.lax.cond(tick >= 0, lambda tree: tree, lambda tree: jax.tree.map(jnp.zeros_like, tree), tree)


def record_deaths(life: Life, state: LifeState, dead: jax.Array, tick: jax.Array) -> dict[str, jax.Array]:
    """The death journal with this tick's row written: who died in each cell (their id,
    parent and generation; 0 where nobody did). One contiguous row per tile."""
    row = tick % life.journal
    out = {}
    for name, field in (("died", "organism_id"), ("died_parent", "parent_id"), ("died_generation", "generation")):
        value = jnp.where(dead, getattr(state, field), 0)
        value = life.tiling.split(value)[..., None, :]
        out[name] = jax.lax.dynamic_update_slice_in_dim(getattr(state, name), value, row, axis=life.placed)
    return out


def think(
    life: Life,
    cells: dict,
    exists: jax.Array,
    features: jax.Array,
    phase_bits: jax.Array,
    shown: jax.Array | None,
    scored: tuple | None = None,
) -> brain.Thought:
    """Every organism of a tile runs its own brain on what it senses: its own signals,
    hidden state and energy, its cell's free energy, the task inputs, which axes tick
    now, and each direction slot (the halo, whether the slot exists, the axis' features).

    ``cells`` holds the tile's fields with its N cells in front; ``exists`` is (N, 2D);
    ``shown`` (N, TASK_INPUTS) is the question each is shown (None: none anywhere).
    """
    energy, free = cells["energy"], cells["free"]
    n = energy.shape[0]
    task_inputs = jnp.zeros((n, brain.TASK_INPUTS), jnp.float32) if shown is None else shown
    self_inputs = jnp.concatenate(
        [
            cells["signal"],
            cells["hidden"],
            jnp.log1p(energy.astype(jnp.float32))[:, None] / 8.0,
            jnp.log1p(free.astype(jnp.float32))[:, None] / 8.0,
            task_inputs,
            jnp.broadcast_to(phase_bits, (n, MAX_AXES)),
        ],
        axis=1,
    )
    # Converted as ``brain.think`` converts it for the pooling, then given its axis: the
    # same float table then serves both. XLA makes it once a run, out of the loop of
    # ticks; converted after the axis was added it made a second table (and a copy of it
    # in another layout), 9 ms more a run and 7 MB more read a tick on 131,072 cells.
    slot_inputs = jnp.concatenate([cells["halo"], exists.astype(jnp.float32)[..., None], features], axis=-1)
    return brain.think(
        life.layout, cells["genome"], self_inputs, slot_inputs, exists, cells["plastic"], scored
    )


def post_synaptic(life: Life, cells: dict, thought: brain.Thought) -> jax.Array:
    """(N, outputs): the Hebbian step's factor per output (``brain.post_synaptic``),
    modulated by the energy change since the last tick. Empty cells' plastic weights
    are stale and never read: a child starts from zero."""
    change = (cells["energy"] - cells["last_energy"]).astype(jnp.float32)
    modulator = jnp.tanh(change / life.config.modulator_scale)
    return brain.post_synaptic(thought, modulator)


def act(
    life: Life,
    cells: dict,
    thought: brain.Thought,
    exists: jax.Array,  # (N, slots) bool
    ticks: jax.Array,  # (N, slots) bool, whether each slot ticks now
    pay: jax.Array | None,  # (N,) int32, what the tasks pay each organism now
) -> dict[str, jax.Array]:
    """Earn from the tasks, emit signals, absorb free energy, pay the metabolism, die if
    starved or old, and state an intent. Returns the tile's new fields and what it
    decided."""
    config, layout = life.config, life.layout
    occupied, energy, free = cells["occupied"], cells["energy"], cells["free"]
    n = occupied.shape[0]
    if pay is not None:
        energy = energy + pay  # graded answers; never beyond max_energy
    outputs = thought.outputs
    signal = jnp.where(occupied[:, None], thought.squashed[:, : layout.signals], 0.0)
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
    alive = and_not(occupied, dead)

    # Intent: the best direction slot on a ticking axis, unless staying scores higher.
    valid = exists & ticks
    best, best_score = first_best(jnp.where(valid, thought.slot_scores, -jnp.inf))
    goes = alive & (best_score > actions[:, brain.STAY])
    birth = actions[:, brain.REPRODUCE] >= actions[:, brain.MOVE]
    eager = jnp.where(birth, actions[:, brain.REPRODUCE], actions[:, brain.MOVE]) > 0.0
    claims = goes & eager & (energy > life.price(birth, best, cells.get("beach_costs")))
    return {
        "occupied": alive,
        "energy": energy,
        "hidden": hidden,
        "signal": signal,
        "age": age,
        "free": free,
        "dead": dead,
        "paid": paid,
        "earned": pay,
        "slot": jnp.where(claims, best, NO_SLOT),
        "birth": birth,
        "endowment": jnp.minimum(_to_rate(actions[:, brain.ENDOW]), RATE_ONE - 1),
    }


def and_not(a: jax.Array, b: jax.Array) -> jax.Array:
    """``a & ~b`` of two bool arrays, computed as ``a > b`` on bytes: the same values.
    Written on bools, XLA CPU compiled two of the tick's kernels of this form (an
    operand in the lattice's shape against one in the tiles', in a kernel of its own)
    to code that handles the bools one at a time: 34 and 18 us a tick on the default
    world, against 9 and 1 on bytes."""
    return a.astype(jnp.uint8) > b.astype(jnp.uint8)


def first_best(scores: jax.Array) -> tuple[jax.Array, jax.Array]:
    """((N,) int32, (N,) float32): the first slot of the highest score in each row of
    ``scores`` (N, S), S < 256, and that score (-0.0 and 0.0 equal; slot 0 where all are
    -inf).

    One integer max over keys that order as the scores do, the slot in the low bits: a
    plain reduction, which XLA makes once (where it would recompute a chain of selects
    inside each consumer, and argmax's paired reduction is slow on CPU). The slot and
    the score come from the same key: a maximum compared for equality with the scores
    can miss them all where XLA computed the two apart (on GPU it did, in the last bit,
    and the intent named a slot the region does not have)."""
    def flip(bits):  # float bits <-> ints ordered as the floats are (its own inverse)
        return jnp.where(bits < 0, bits ^ 0x7FFFFFFF, bits)

    slots = scores.shape[-1]
    folded = jnp.where(scores == 0.0, 0.0, scores)  # -0.0 as 0.0
    order = flip(jax.lax.bitcast_convert_type(folded, jnp.int32))
    index = jnp.arange(slots - 1, -1, -1, dtype=jnp.int64)[None, :]  # the first slot wins a tie
    key = ((order.astype(jnp.int64) << 8) | index).max(axis=-1)
    best = jax.lax.bitcast_convert_type(flip((key >> 8).astype(jnp.int32)), jnp.float32)
    return (slots - 1 - (key & 0xFF)).astype(jnp.int32), best


def _to_rate(x: jax.Array) -> jax.Array:
    """Sigmoid of a brain output as a fixed-point fraction in [0, RATE_ONE]."""
    return jnp.floor(jax.nn.sigmoid(x) * RATE_ONE).astype(jnp.int32)
