"""Life in a region: sense, think, learn, act, resolve; metabolism, death and birth.

A tick of life has three parts, so that the work that crosses between cells happens
only along the axes that tick now:

1. ``sense`` (per set of ticking axes): each cell receives its neighbours' signals and
   occupancy along the ticking axes into its halo. Other slots keep what they last
   received: a stale halo, as on a real cluster.
2. ``decide`` (the same every tick): every organism runs its own brain, learns,
   absorbs free energy, pays its metabolism, dies if starved or old, and states an
   intent (move or reproduce toward one direction slot of a ticking axis).
3. ``claims`` (per set of ticking axes): every empty target cell looks at the claims
   pointed at it by its neighbours and picks one by the highest energy bid, ties
   broken by a hash of (seed, tick, claimant); claimants see whether they won by
   looking back.
4. ``transfer`` (the same every tick): winners pay, and their genomes and bodies are
   copied as rows: only the rows that change are written, with a fixed capacity of
   transfers per tick.

Every quantum is accounted: absorption moves free energy into bodies, metabolism and
the costs of moving and giving birth are dissipated as heat, a dead body's energy
returns to its cell.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from hca import brain, geometry, rng
from hca.config import MAX_AXES, RATE_ONE, Region, quantize_rate
from hca.state import LifeState

NO_SLOT = -1


@struct.dataclass
class Intent:
    """What each organism wants this tick (lattice-shaped)."""

    slot: jax.Array  # (*S,) int32, direction slot claimed, or NO_SLOT
    birth: jax.Array  # (*S,) bool, the claim is for a child (else a move)
    endowment: jax.Array  # (*S,) int32, fixed-point fraction of energy given to a child


def _entries(start: int, shape: tuple[int, ...], lead: int) -> jax.Array:
    """Global genome entry numbers of a tensor starting at ``start``, with ``lead``
    leading unit axes: distinct words for the counter-based draws of each entry."""
    count = math.prod(shape)
    entries = jnp.arange(start, start + count, dtype=jnp.int32).reshape(shape)
    return entries.reshape((1,) * lead + shape)


def mutate(
    layout: brain.GenomeLayout,
    parents: dict[str, jax.Array],  # {name: (K, *shape)} parent genomes
    children: jax.Array,  # (K,) int32 cell index of each child
    tick: jax.Array,
    seed: jax.Array,
    region_index: int,
    meta_scale: float,
) -> dict[str, jax.Array]:
    """Children's genomes: each tensor moves by the parent's own inherited scale times a
    standard normal; the log-scales themselves move by ``meta_scale``."""
    scales = jnp.exp(parents["log_mutation"])  # (K, tensors)
    offsets = layout.offsets()
    out = {}
    for index, (name, shape) in enumerate(layout.tensors):
        lead = (children.shape[0],) + (1,) * len(shape)
        noise = rng.normal(
            seed,
            rng.MUTATION,
            region_index,
            tick,
            children.reshape(lead),
            _entries(offsets[name][0], shape, 1),
            xp=jnp,
        )
        if name == "log_mutation":
            low, high = brain.LOG_SCALE_RANGE
            out[name] = jnp.clip(parents[name] + meta_scale * noise, low, high)
        else:
            step = scales[:, index].reshape(lead) * noise
            out[name] = jnp.clip(parents[name] + step, -brain.WEIGHT_LIMIT, brain.WEIGHT_LIMIT)
    return out


class Life:
    """The organism physics of one region, built once from its config."""

    def __init__(self, region: Region, region_index: int):
        assert region.organisms is not None
        self.region = region
        self.index = region_index
        self.config = life = region.organisms
        self.layout = brain.GenomeLayout.of(life.brain)
        self.shape = region.shape
        self.cells = region.cells
        self.ndim = len(region.axes)
        self.slots = 2 * self.ndim
        self.capacity = life.max_transfers or max(16, self.cells // 8)
        self.capacity = min(self.capacity, self.cells)

        tables = [geometry.neighbour_table(axis) for axis in region.axes]
        # (S, *shape) bool: whether each slot of each cell has a neighbour.
        exists = np.zeros((self.slots, *self.shape), dtype=bool)
        # (S, cells) int32: flat index of each slot's neighbour (own index where none).
        neighbour = np.zeros((self.slots, self.cells), dtype=np.int32)
        coordinates = np.indices(self.shape).reshape(self.ndim, -1)
        for axis, table in enumerate(tables):
            for sign in (0, 1):
                slot = 2 * axis + sign
                target = table[sign][coordinates[axis]]
                moved = coordinates.copy()
                moved[axis] = np.where(target >= 0, target, coordinates[axis])
                neighbour[slot] = np.ravel_multi_index(tuple(moved), self.shape)
                exists[slot] = (target >= 0).reshape(self.shape)
        self.exists = exists
        self.neighbour = neighbour
        # (S, 3): log2(stretch) / 8, curled, sign of each slot.
        features = []
        for axis in region.axes:
            for sign in (-1.0, 1.0):
                features.append([math.log2(axis.stretch) / 8.0, float(axis.curled), sign])
        self.slot_features = np.asarray(features, dtype=np.float32)
        stretch = np.repeat([axis.stretch for axis in region.axes], 2)
        size = self.layout.size
        # Integer costs per slot: crossing an axis costs in proportion to its stretch.
        self.birth_cost = (life.birth_cost * stretch).astype(np.int32)
        self.move_cost = np.ceil(size * life.move_cost * stretch).astype(np.int32)
        self.upkeep = life.metabolism.base + math.floor(size * life.metabolism.per_parameter)
        self.unit_cost = quantize_rate(life.metabolism.per_active_unit)

    # -- initial population --------------------------------------------------------

    def init(self, seed: jax.Array) -> LifeState:
        life, layout = self.config, self.layout
        cells = geometry.cell_index(self.shape)
        occupied = rng.bernoulli(life.density, seed, rng.FOUNDERS, self.index, cells, xp=jnp)
        genome = {}
        for name, (start, _) in layout.offsets().items():
            shape = layout.shapes()[name]
            if name == "log_learning_rate":
                value = jnp.full((*self.shape, *shape), math.log(life.learning_rate), jnp.float32)
            elif name == "log_mutation":
                value = jnp.full((*self.shape, *shape), math.log(life.mutation.initial_scale), jnp.float32)
            else:
                cell = cells.reshape(self.shape + (1,) * len(shape))
                entries = _entries(start, shape, self.ndim)
                value = life.brain.init_scale * rng.normal(
                    seed, rng.GENOME, self.index, cell, entries, xp=jnp
                )
            genome[name] = value
        energy = jnp.where(occupied, jnp.int32(life.initial_energy), jnp.int32(0))
        c, h = layout.signals, layout.hidden

        def zeros(*trailing: int) -> jax.Array:
            return jnp.zeros((*self.shape, *trailing), jnp.float32)

        state = LifeState(
            occupied=occupied,
            energy=energy,
            last_energy=energy,
            hidden=zeros(h),
            signal=zeros(c),
            halo=zeros(self.slots, c + 1),
            plastic=zeros(h, layout.outputs),
            age=jnp.zeros(self.shape, jnp.int32),
            organism_id=jnp.where(occupied, cells.astype(jnp.int64) + 1, jnp.int64(0)),
            parent_id=jnp.zeros(self.shape, jnp.int64),
            birth_tick=jnp.zeros(self.shape, jnp.int32),
            generation=jnp.zeros(self.shape, jnp.int32),
            founder=cells,
            genome=genome,
            births=jnp.int64(0),
            deaths=jnp.int64(0),
            moves=jnp.int64(0),
            refused=jnp.int64(0),
        )
        return state.replace(halo=self.sense(state.signal, occupied, state.halo, tuple(range(self.ndim))))

    # -- 1. sense ------------------------------------------------------------------

    def sense(self, signal: jax.Array, occupied: jax.Array, halo: jax.Array, ticking: tuple[int, ...]) -> jax.Array:
        """The halo with the slots of the ticking axes refreshed from the neighbours.

        Takes and returns only the small arrays involved, so that a branch of the
        stretch schedule never carries the genome.
        """
        present = occupied[..., None].astype(jnp.float32)
        outgoing = jnp.concatenate([signal * present, present], axis=-1)
        slots = []
        for axis in range(self.ndim):
            wrap = geometry.slot_wraps(self.region.axes[axis])
            for step in (-1, +1):
                if axis in ticking:
                    slots.append(geometry.shift(outgoing, axis, step, wrap))
                else:
                    slots.append(halo[..., 2 * axis + (step > 0), :])
        return jnp.stack(slots, axis=self.ndim)

    # -- 2. decide -----------------------------------------------------------------

    def decide(
        self,
        state: LifeState,
        free: jax.Array,  # (*S,) int32
        phase_bits: jax.Array,  # (MAX_AXES,) float32: which axes tick now
        slot_ticks: jax.Array,  # (S,) bool: whether each slot's axis ticks now
    ) -> tuple[LifeState, jax.Array, Intent, jax.Array]:
        """Think, learn, absorb, pay metabolism, die; returns (state, free, intent, heat)."""
        life, layout = self.config, self.layout
        n = self.cells
        flat, lattice = self._flat, self._lattice

        occupied = flat(state.occupied)
        energy = flat(state.energy)
        free_flat = flat(free)
        self_inputs = jnp.concatenate(
            [
                flat(state.signal),
                flat(state.hidden),
                jnp.log1p(energy.astype(jnp.float32))[:, None] / 8.0,
                jnp.log1p(free_flat.astype(jnp.float32))[:, None] / 8.0,
                jnp.zeros((n, brain.TASK_INPUTS), jnp.float32),
                jnp.broadcast_to(phase_bits, (n, MAX_AXES)),
            ],
            axis=1,
        )
        exists = jnp.asarray(self.exists.reshape(self.slots, n).T)  # (N, S)
        halo = flat(state.halo)  # (N, S, C + 1)
        slot_inputs = jnp.concatenate(  # signal and occupancy (the halo), exists, axis features
            [
                halo,
                exists[..., None].astype(jnp.float32),
                jnp.broadcast_to(self.slot_features, (n, self.slots, 3)),
            ],
            axis=-1,
        )
        plastic = flat(state.plastic)
        genome = {name: flat(tensor) for name, tensor in state.genome.items()}
        thought = brain.think(layout, genome, self_inputs, slot_inputs, exists, plastic)

        # Learn: modulated by the energy change since the last tick.
        change = (energy - flat(state.last_energy)).astype(jnp.float32)
        modulator = jnp.tanh(change / life.modulator_scale)
        # Empty cells' plastic weights are stale and never read: a child starts from zero.
        plastic = brain.hebbian(plastic, thought, modulator)
        outputs = thought.outputs
        signal = jnp.where(occupied[:, None], jnp.tanh(outputs[:, : layout.signals]), 0.0)
        hidden = jnp.where(occupied[:, None], thought.hidden, 0.0)
        actions = outputs[:, layout.signals :]

        # Absorb free energy from the cell.
        want = _fraction_dynamic(jnp.full((n,), life.absorb, jnp.int32), _to_rate(actions[:, brain.ABSORB]))
        take = jnp.minimum(jnp.minimum(want, free_flat), life.max_energy - energy)
        take = jnp.where(occupied, take, 0)
        energy = energy + take
        free_flat = free_flat - take

        # Metabolism: upkeep of the stored genome plus the computation switched on.
        cost = self.upkeep + ((thought.active_units * self.unit_cost) >> 16)
        paid = jnp.where(occupied, jnp.minimum(cost, energy), 0)
        energy = energy - paid
        heat = paid.sum(dtype=jnp.int64)
        age = flat(state.age) + occupied.astype(jnp.int32)

        # Death: the body's remaining energy returns to the cell.
        dead = occupied & (energy == 0)
        if life.max_age is not None:
            dead = dead | (occupied & (age > life.max_age))
        free_flat = free_flat + jnp.where(dead, energy, 0)
        energy = jnp.where(dead, 0, energy)
        alive = occupied & ~dead

        # Intent: the best direction slot on a ticking axis, unless staying scores higher.
        valid = exists & slot_ticks[None, :]
        # The first best slot, by a pass over the few slots (cheaper than argmax on CPU).
        best_score = jnp.full((n,), -jnp.inf, jnp.float32)
        best = jnp.zeros((n,), jnp.int32)
        for slot in range(self.slots):
            score = jnp.where(valid[:, slot], thought.slot_scores[:, slot], -jnp.inf)
            better = score > best_score
            best_score = jnp.where(better, score, best_score)
            best = jnp.where(better, slot, best)
        goes = alive & (best_score > actions[:, brain.STAY])
        birth = actions[:, brain.REPRODUCE] >= actions[:, brain.MOVE]
        eager = jnp.where(birth, actions[:, brain.REPRODUCE], actions[:, brain.MOVE]) > 0.0
        claims = goes & eager & (energy > self._price(birth, best))
        intent = Intent(
            slot=lattice(jnp.where(claims, best, NO_SLOT)),
            birth=lattice(birth),
            endowment=lattice(jnp.minimum(_to_rate(actions[:, brain.ENDOW]), RATE_ONE - 1)),
        )
        state = state.replace(
            occupied=lattice(alive),
            energy=lattice(energy),
            hidden=lattice(hidden),
            signal=lattice(signal),
            plastic=lattice(plastic),
            age=lattice(age),
            deaths=state.deaths + dead.sum(dtype=jnp.int64),
        )
        return state, lattice(free_flat), intent, heat

    # -- 3. resolve ----------------------------------------------------------------

    def claims(
        self,
        occupied: jax.Array,  # (*S,) bool
        energy: jax.Array,  # (*S,) int32
        intent: Intent,
        ticking: tuple[int, ...],
        tick: jax.Array,
        seed: jax.Array,
    ) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Settle claims along the ticking axes, by neighbour gathers only.

        Returns ``winner`` (*S,) int32, the slot of each target cell's accepted claimant
        (or NO_SLOT); ``succeeded`` (*S,) bool, the claimants that won; and the number
        of won claims refused for lack of transfer capacity.
        """
        n, shape = self.cells, self.shape
        cells = geometry.cell_index(shape)
        tie = rng.hash_u32(seed, rng.TIE_BREAK, self.index, tick, cells, xp=jnp)
        bid = (energy.astype(jnp.int64) << 32) | tie.astype(jnp.int64)
        slots = [(axis, sign) for axis in ticking for sign in (0, 1)]

        # Each empty cell picks the highest bid among the claims pointed at it.
        best_bid = jnp.full(shape, -1, jnp.int64)
        winner = jnp.full(shape, NO_SLOT, jnp.int32)
        for axis, sign in slots:
            wrap = geometry.slot_wraps(self.region.axes[axis])
            step = 1 if sign else -1
            back = 2 * axis + (1 - sign)  # the claimant's slot that points at this cell
            claim = geometry.shift(intent.slot == back, axis, step, wrap)
            offer = jnp.where(claim & ~occupied, geometry.shift(bid, axis, step, wrap), -1)
            better = offer > best_bid
            best_bid = jnp.where(better, offer, best_bid)
            winner = jnp.where(better, 2 * axis + sign, winner)

        # At most `capacity` transfers a tick; the rest are refused, in cell order.
        won = (winner != NO_SLOT).reshape(n)
        accepted = won & (jnp.cumsum(won, dtype=jnp.int32) <= self.capacity)
        refused = (won & ~accepted).sum(dtype=jnp.int64)
        winner = jnp.where(accepted.reshape(shape), winner, NO_SLOT)

        # Claimants look back at their target.
        succeeded = jnp.zeros(shape, bool)
        for axis, sign in slots:
            wrap = geometry.slot_wraps(self.region.axes[axis])
            step = 1 if sign else -1
            here = 2 * axis + sign
            back = 2 * axis + (1 - sign)
            seen = geometry.shift(winner == back, axis, step, wrap)
            succeeded = succeeded | ((intent.slot == here) & seen)

        return winner, succeeded, refused

    def transfer(
        self,
        state: LifeState,
        intent: Intent,
        winner: jax.Array,
        succeeded: jax.Array,
        refused: jax.Array,
        tick: jax.Array,
        seed: jax.Array,
    ) -> tuple[LifeState, jax.Array]:
        """Pay for won claims and copy the winners' rows; returns (state, heat).

        Only the rows of target cells are written (at most ``capacity`` a tick).
        """
        n, flat = self.cells, self._flat
        parent = succeeded & intent.birth
        mover = succeeded & ~intent.birth
        paid = jnp.where(succeeded, self._price(intent.birth, jnp.maximum(intent.slot, 0)), 0)
        heat = paid.sum(dtype=jnp.int64)
        left = state.energy - paid
        endowment = _fraction_dynamic(left, intent.endowment)
        # Energy each claimant sends with its transfer, and keeps.
        sent = jnp.where(parent, endowment, jnp.where(mover, left, 0))
        kept = jnp.where(mover, 0, left - jnp.where(parent, endowment, 0))

        # The transfers: rows copied from claimant (source) to target (destination).
        accepted = (winner != NO_SLOT).reshape(n)
        target = jnp.nonzero(accepted, size=self.capacity, fill_value=n)[0].astype(jnp.int32)
        valid = target < n
        safe_target = jnp.minimum(target, n - 1)
        source = jnp.asarray(self.neighbour)[jnp.maximum(winner.reshape(n)[safe_target], 0), safe_target]
        is_birth = flat(parent)[source]
        row = lambda x: flat(x)[source]  # noqa: E731
        born = lambda newborn, inherited: jnp.where(  # noqa: E731
            is_birth.reshape((-1,) + (1,) * (inherited.ndim - 1)), newborn, inherited
        )
        # Founders are numbered 1..n; a child born on tick t at cell c is (t + 1) * n + c + 1.
        new_id = (tick.astype(jnp.int64) + 1) * n + target.astype(jnp.int64) + 1
        parents_rows = {name: row(tensor) for name, tensor in state.genome.items()}
        child_genome = mutate(
            self.layout, parents_rows, target, tick, seed, self.index, self.config.mutation.meta_scale
        )

        def put(field: jax.Array, values: jax.Array) -> jax.Array:
            return flat(field).at[target].set(values, mode="drop").reshape(field.shape)

        energy_rows = flat(sent)[source]
        state = state.replace(
            energy=kept,
            occupied=state.occupied & ~mover,
        )
        state = state.replace(
            occupied=put(state.occupied, valid),
            energy=put(state.energy, energy_rows),
            hidden=put(state.hidden, born(0.0, row(state.hidden))),
            signal=put(state.signal, born(0.0, row(state.signal))),
            plastic=put(state.plastic, born(0.0, row(state.plastic))),
            age=put(state.age, born(0, row(state.age))),
            organism_id=put(state.organism_id, born(new_id, row(state.organism_id))),
            parent_id=put(state.parent_id, born(row(state.organism_id), row(state.parent_id))),
            birth_tick=put(state.birth_tick, born(tick, row(state.birth_tick))),
            generation=put(state.generation, born(row(state.generation) + 1, row(state.generation))),
            founder=put(state.founder, row(state.founder)),
            genome={
                name: put(tensor, born(child_genome[name], parents_rows[name]))
                for name, tensor in state.genome.items()
            },
            births=state.births + (valid & is_birth).sum(dtype=jnp.int64),
            moves=state.moves + (valid & ~is_birth).sum(dtype=jnp.int64),
            refused=state.refused + refused,
        )
        return state, heat

    def _flat(self, x: jax.Array) -> jax.Array:
        """(*S, ...) -> (N, ...)."""
        return x.reshape((self.cells, *x.shape[self.ndim :]))

    def _lattice(self, x: jax.Array) -> jax.Array:
        """(N, ...) -> (*S, ...)."""
        return x.reshape((*self.shape, *x.shape[1:]))

    def _price(self, birth: jax.Array, slot: jax.Array) -> jax.Array:
        """Energy a claim toward ``slot`` costs: a birth or a move across its axis."""
        return jnp.where(birth, jnp.asarray(self.birth_cost)[slot], jnp.asarray(self.move_cost)[slot])

    def finish(self, state: LifeState) -> LifeState:
        """End of tick: remember energy for the next tick's learning signal."""
        return state.replace(last_energy=state.energy)


def _to_rate(x: jax.Array) -> jax.Array:
    """Sigmoid of a brain output as a fixed-point fraction in [0, RATE_ONE]."""
    return jnp.floor(jax.nn.sigmoid(x) * RATE_ONE).astype(jnp.int32)


def _fraction_dynamic(values: jax.Array, rate: jax.Array) -> jax.Array:
    """``floor(values * rate / RATE_ONE)`` for per-cell rates, exact in int64."""
    return ((values.astype(jnp.int64) * rate.astype(jnp.int64)) >> 16).astype(jnp.int32)

