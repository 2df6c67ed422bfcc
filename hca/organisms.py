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
   broken by a hash of (seed, tick, claimant); each tile accepts at most
   ``capacity`` of them, in cell order; claimants see whether they won by looking
   back.
4. ``depart`` (the same every tick): winners pay, and the rows they carry (genome,
   body, energy) are listed with the target cells of each tile.
5. ``send`` (per set of ticking axes, only for placed axes): the rows that cross into
   another tile are packed per face into a buffer of ``crossing`` rows and shifted
   to the neighbouring tile: on a mesh, a small exchange between neighbouring
   devices, on that axis's ticks only.
6. ``arrive`` (the same every tick): rows from within a tile are gathered, rows from
   other tiles taken from what was sent; a child's genome mutates; only the rows of
   the target cells are written.

Everything decided tile by tile (a tile is the cells sharing one coordinate on every
placed axis, ``geometry.Tiling``) is the same on any number of devices and needs no
communication, so the step crosses devices only when a placed axis ticks.

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
class Claims:
    """How the claims of a tick were settled."""

    winner: jax.Array  # (*S,) int32, the slot each target's accepted claimant came by, or NO_SLOT
    succeeded: jax.Array  # (*S,) bool, the claimants that won
    refused: jax.Array  # (*tiles,) int64, won claims refused for lack of capacity


@struct.dataclass
class Departures:
    """What the winners pay and carry."""

    paid: jax.Array  # (*S,) int32, what each winner pays (heat)
    kept: jax.Array  # (*S,) int32, the energy each claimant keeps
    leaves: jax.Array  # (*S,) bool, movers: their cells are empty afterwards
    rows: dict  # lattice-shaped fields a transfer carries, read at the claimant
    targets: jax.Array  # (*tiles, capacity) int32, in-tile index of each receiving cell, or tile cells
    came_by: jax.Array  # (*tiles, capacity) int32, the slot each target's claimant came by


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
    parents: dict[str, jax.Array],  # {name: (*K, *shape)} parent genomes
    children: jax.Array,  # (*K,) int32 cell index of each child
    tick: jax.Array,
    seed: jax.Array,
    region_index: int,
    meta_scale: float,
) -> dict[str, jax.Array]:
    """Children's genomes: each tensor moves by the parent's own inherited scale times a
    standard normal; the log-scales themselves move by ``meta_scale``."""
    scales = jnp.exp(parents["log_mutation"])  # (*K, tensors)
    offsets = layout.offsets()
    out = {}
    for index, (name, shape) in enumerate(layout.tensors):
        lead = children.shape + (1,) * len(shape)
        noise = rng.normal(
            seed,
            rng.MUTATION,
            region_index,
            tick,
            children.reshape(lead),
            _entries(offsets[name][0], shape, children.ndim),
            xp=jnp,
        )
        if name == "log_mutation":
            low, high = brain.LOG_SCALE_RANGE
            out[name] = jnp.clip(parents[name] + meta_scale * noise, low, high)
        else:
            step = scales[..., index].reshape(lead) * noise
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
        self.tiling = geometry.Tiling.of(region)
        self.placed = self.tiling.placed
        tile_cells = self.tiling.cells
        # Transfers accepted into one tile per tick, and through one side of a placed axis.
        self.capacity = min(life.max_transfers or max(16, tile_cells // 8), tile_cells)
        self.crossing = min(life.max_crossings or max(1, self.capacity // 4), self.capacity)

        tables = [geometry.neighbour_table(axis) for axis in region.axes]
        # (S, *shape) bool: whether each slot of each cell has a neighbour.
        exists = np.zeros((self.slots, *self.shape), dtype=bool)
        coordinates = np.indices(self.shape).reshape(self.ndim, -1)
        for axis, table in enumerate(tables):
            for sign in (0, 1):
                exists[2 * axis + sign] = (table[sign][coordinates[axis]] >= 0).reshape(self.shape)
        self.exists = exists
        # (S, tile cells) int32: in-tile index of each slot's neighbour along the axes
        # inside a tile (own index along placed axes, and where there is none).
        inner = self.shape[self.placed :]
        local = np.indices(inner).reshape(len(inner), tile_cells)
        self.local_neighbour = np.tile(np.arange(tile_cells, dtype=np.int32), (self.slots, 1))
        for axis in range(self.placed, self.ndim):
            for sign in (0, 1):
                moved = local.copy()
                target = tables[axis][sign][local[axis - self.placed]]
                moved[axis - self.placed] = np.where(target >= 0, target, moved[axis - self.placed])
                self.local_neighbour[2 * axis + sign] = np.ravel_multi_index(tuple(moved), inner)
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
            births=self.tiling.counter(),
            deaths=self.tiling.counter(),
            moves=self.tiling.counter(),
            refused=self.tiling.counter(),
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
        """Think, learn, absorb, pay metabolism, die; returns (state, free, intent, heat),
        heat per tile.

        Every cell on its own: computed tile by tile (mapped over the placed axes), so
        that a sharded lattice is never reshaped across devices.
        """
        tiling = self.tiling
        per_tile = self._decide_tile
        for _ in range(self.placed):
            per_tile = jax.vmap(per_tile, in_axes=(0, 0, 0, None, None))
        exists = jnp.asarray(np.moveaxis(self.exists, 0, -1))  # (*S, S)
        fields = ("occupied", "energy", "last_energy", "signal", "hidden", "halo", "plastic", "age")
        cells = {name: tiling.split(getattr(state, name)) for name in fields}
        cells["genome"] = {name: tiling.split(tensor) for name, tensor in state.genome.items()}
        cells["free"] = tiling.split(free)
        out = per_tile(cells, tiling.split(exists), tiling.split(self._slot_inputs()), phase_bits, slot_ticks)
        out = jax.tree.map(tiling.join, out)
        intent = Intent(slot=out.pop("slot"), birth=out.pop("birth"), endowment=out.pop("endowment"))
        free, dead, paid = out.pop("free"), out.pop("dead"), out.pop("paid")
        state = state.replace(**out, deaths=state.deaths + tiling.total(dead))
        return state, free, intent, tiling.total(paid)

    def _slot_inputs(self) -> np.ndarray:
        """(*S, S, 3): each slot's axis features, the same for every cell."""
        return np.broadcast_to(self.slot_features, (*self.shape, self.slots, 3))

    def _decide_tile(self, cells, exists, features, phase_bits, slot_ticks):
        """``decide`` for the cells of one tile: every array has the tile's cells in front."""
        life, layout = self.config, self.layout
        occupied, energy, free = cells["occupied"], cells["energy"], cells["free"]
        n = occupied.shape[0]
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
        # Each slot: signal and occupancy (the halo), whether it exists, axis features.
        slot_inputs = jnp.concatenate([cells["halo"], exists[..., None].astype(jnp.float32), features], axis=-1)
        thought = brain.think(layout, cells["genome"], self_inputs, slot_inputs, exists, cells["plastic"])

        # Learn: modulated by the energy change since the last tick.
        change = (energy - cells["last_energy"]).astype(jnp.float32)
        modulator = jnp.tanh(change / life.modulator_scale)
        # Empty cells' plastic weights are stale and never read: a child starts from zero.
        plastic = brain.hebbian(cells["plastic"], thought, modulator)
        outputs = thought.outputs
        signal = jnp.where(occupied[:, None], jnp.tanh(outputs[:, : layout.signals]), 0.0)
        hidden = jnp.where(occupied[:, None], thought.hidden, 0.0)
        actions = outputs[:, layout.signals :]

        # Absorb free energy from the cell.
        want = _fraction_dynamic(jnp.full((n,), life.absorb, jnp.int32), _to_rate(actions[:, brain.ABSORB]))
        take = jnp.minimum(jnp.minimum(want, free), life.max_energy - energy)
        take = jnp.where(occupied, take, 0)
        energy = energy + take
        free = free - take

        # Metabolism: upkeep of the stored genome plus the computation switched on.
        cost = self.upkeep + ((thought.active_units * self.unit_cost) >> 16)
        paid = jnp.where(occupied, jnp.minimum(cost, energy), 0)
        energy = energy - paid
        age = cells["age"] + occupied.astype(jnp.int32)

        # Death: the body's remaining energy returns to the cell.
        dead = occupied & (energy == 0)
        if life.max_age is not None:
            dead = dead | (occupied & (age > life.max_age))
        free = free + jnp.where(dead, energy, 0)
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

    # -- 3. resolve ----------------------------------------------------------------

    def claims(
        self,
        occupied: jax.Array,  # (*S,) bool
        energy: jax.Array,  # (*S,) int32
        intent: Intent,
        ticking: tuple[int, ...],
        tick: jax.Array,
        seed: jax.Array,
    ) -> Claims:
        """Settle claims along the ticking axes, by neighbour gathers only."""
        shape, tiling = self.shape, self.tiling
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

        # A tile accepts the first `capacity` of the claims it won, in cell order, less
        # those beyond the first `crossing` through one side of a placed axis.
        won = tiling.split(winner != NO_SLOT)
        accepted = won & (jnp.cumsum(won, axis=-1, dtype=jnp.int32) <= self.capacity)
        for face in self._faces(ticking):
            through = tiling.split(winner == face)
            accepted = accepted & (~through | (jnp.cumsum(through, axis=-1, dtype=jnp.int32) <= self.crossing))
        refused = (won & ~accepted).sum(axis=-1, dtype=jnp.int64)
        winner = jnp.where(tiling.join(accepted), winner, NO_SLOT)

        # Claimants look back at their target.
        succeeded = jnp.zeros(shape, bool)
        for axis, sign in slots:
            wrap = geometry.slot_wraps(self.region.axes[axis])
            step = 1 if sign else -1
            here = 2 * axis + sign
            back = 2 * axis + (1 - sign)
            seen = geometry.shift(winner == back, axis, step, wrap)
            succeeded = succeeded | ((intent.slot == here) & seen)

        return Claims(winner=winner, succeeded=succeeded, refused=refused)

    # -- 4. depart -----------------------------------------------------------------

    def depart(self, state: LifeState, intent: Intent, claims: Claims) -> Departures:
        """What the winners pay, keep and carry, and where each tile receives them."""
        succeeded = claims.succeeded
        paid = jnp.where(succeeded, self._price(intent.birth, jnp.maximum(intent.slot, 0)), 0)
        left = state.energy - paid
        # A parent sends its child the endowment; a mover takes everything with it.
        parent = succeeded & intent.birth
        sent = jnp.where(parent, _fraction_dynamic(left, intent.endowment), jnp.where(succeeded, left, 0))
        rows = {
            "birth": intent.birth,
            "energy": sent,
            "hidden": state.hidden,
            "signal": state.signal,
            "plastic": state.plastic,
            "age": state.age,
            "organism_id": state.organism_id,
            "parent_id": state.parent_id,
            "birth_tick": state.birth_tick,
            "generation": state.generation,
            "founder": state.founder,
            "genome": state.genome,
        }
        targets = self.tiling.first(self.tiling.split(claims.winner != NO_SLOT), self.capacity)
        return Departures(
            paid=paid,
            kept=left - sent,
            leaves=succeeded & ~intent.birth,
            rows=rows,
            targets=targets,
            came_by=self.tiling.take(claims.winner, targets),
        )

    # -- 5. send -------------------------------------------------------------------

    def send(self, departures: Departures, claims: Claims, slot: jax.Array, ticking: tuple[int, ...]):
        """The rows that arrive from neighbouring tiles along the ticking placed axes, as
        words (*tiles, capacity, W) uint32 aligned with ``departures.targets``.

        A tile packs the rows leaving through each side of a ticking placed axis, at
        most ``crossing`` per side in cell order, into one buffer of words; each side's
        part moves one tile along its axis (on a mesh: one exchange with the
        neighbouring device). The receiving tile lists the cells that accepted a claim
        through that side in the same order, since crossing a placed axis keeps the
        in-tile coordinates, so the k-th row sent is the k-th row received.
        """
        tiling, crossing, axis_of = self.tiling, self.crossing, self.placed
        words = _words(departures.rows, self.ndim)
        faces = self._faces(ticking)
        if not faces:
            return jnp.zeros((*tiling.tiles, self.capacity, words), jnp.uint32)
        # The claimant's slot that leads out through each face is the face's opposite.
        leaving = jnp.concatenate(
            [tiling.first(tiling.split(claims.succeeded & (slot == _opposite(face))), crossing) for face in faces],
            axis=-1,
        )
        packed = _pack(tiling.take(departures.rows, leaving), axis_of)
        received = []
        for index, face in enumerate(faces):
            axis, sign = divmod(face, 2)
            part = jax.lax.slice_in_dim(packed, index * crossing, (index + 1) * crossing, axis=axis_of)
            # Rows for the tile on the face's side come from it: toward -1 from the tile below.
            step = 1 if sign else -1
            received.append(geometry.shift(part, axis, step, geometry.slot_wraps(self.region.axes[axis])))
        received = jnp.concatenate(received, axis=axis_of)
        place = jnp.zeros_like(departures.targets)
        for index, face in enumerate(faces):
            order = tiling.join(jnp.cumsum(tiling.split(claims.winner == face), axis=-1, dtype=jnp.int32) - 1)
            place = jnp.where(
                departures.came_by == face, index * crossing + tiling.take(order, departures.targets), place
            )
        return jnp.take_along_axis(received, place[..., None], axis=axis_of)

    # -- 6. arrive -----------------------------------------------------------------

    def arrive(
        self,
        state: LifeState,
        claims: Claims,
        departures: Departures,
        incoming,
        tick: jax.Array,
        seed: jax.Array,
    ) -> tuple[LifeState, jax.Array]:
        """Pay for won claims and write the arriving rows; returns (state, heat per tile).

        Only the rows of target cells are written (at most ``capacity`` a tile).
        """
        tiling = self.tiling
        targets, came_by = departures.targets, departures.came_by
        valid = targets < tiling.cells
        source = jnp.asarray(self.local_neighbour)[jnp.maximum(came_by, 0), jnp.minimum(targets, tiling.cells - 1)]
        moved = tiling.take(departures.rows, source)
        if incoming is not None:
            across = came_by < 2 * self.placed
            far = _unpack(incoming, moved, self.placed)
            moved = jax.tree.map(lambda near, far: jnp.where(_lift(across, near), far, near), moved, far)
        is_birth = moved["birth"]

        def born(newborn, inherited):
            return jnp.where(_lift(is_birth, inherited), newborn, inherited)

        # Founders are numbered 1..n; a child born on tick t at cell c is (t + 1) * n + c + 1.
        cell = geometry.cell_index(tiling.tiles)[..., None] * tiling.cells + targets
        new_id = (tick.astype(jnp.int64) + 1) * self.cells + cell.astype(jnp.int64) + 1
        child_genome = mutate(
            self.layout, moved["genome"], cell, tick, seed, self.index, self.config.mutation.meta_scale
        )

        def put(field: jax.Array, values: jax.Array) -> jax.Array:
            return tiling.put(field, targets, values)

        state = state.replace(
            occupied=put(state.occupied & ~departures.leaves, valid),
            energy=put(departures.kept, moved["energy"]),
            hidden=put(state.hidden, born(0.0, moved["hidden"])),
            signal=put(state.signal, born(0.0, moved["signal"])),
            plastic=put(state.plastic, born(0.0, moved["plastic"])),
            age=put(state.age, born(0, moved["age"])),
            organism_id=put(state.organism_id, born(new_id, moved["organism_id"])),
            parent_id=put(state.parent_id, born(moved["organism_id"], moved["parent_id"])),
            birth_tick=put(state.birth_tick, born(tick, moved["birth_tick"])),
            generation=put(state.generation, born(moved["generation"] + 1, moved["generation"])),
            founder=put(state.founder, moved["founder"]),
            genome={
                name: put(tensor, born(child_genome[name], moved["genome"][name]))
                for name, tensor in state.genome.items()
            },
            births=state.births + (valid & is_birth).sum(axis=-1, dtype=jnp.int64),
            moves=state.moves + (valid & ~is_birth).sum(axis=-1, dtype=jnp.int64),
            refused=state.refused + claims.refused,
        )
        return state, tiling.total(departures.paid)

    def _faces(self, ticking: tuple[int, ...]) -> list[int]:
        """The slots of the ticking placed axes: the sides through which a tile's cells
        receive from the neighbouring tile (a target's winning slot)."""
        return [2 * axis + sign for axis in ticking if axis < self.placed for sign in (0, 1)]

    def _price(self, birth: jax.Array, slot: jax.Array) -> jax.Array:
        """Energy a claim toward ``slot`` costs: a birth or a move across its axis."""
        return jnp.where(birth, jnp.asarray(self.birth_cost)[slot], jnp.asarray(self.move_cost)[slot])

    def finish(self, state: LifeState) -> LifeState:
        """End of tick: remember energy for the next tick's learning signal."""
        return state.replace(last_energy=state.energy)


def _opposite(slot: int) -> int:
    """The slot pointing back along the same axis."""
    return slot ^ 1


def _as_words(x: jax.Array, lead: int) -> jax.Array:
    """(*lead, ...) of a 32- or 64-bit dtype or bool -> (*lead, words) uint32, bit for bit."""
    x = x.astype(jnp.uint32) if x.dtype == jnp.bool_ else jax.lax.bitcast_convert_type(x, jnp.uint32)
    return x.reshape((*x.shape[:lead], -1))


def _word_count(leaf: jax.Array, lead: int) -> int:
    """uint32 words per row of ``leaf`` (rows indexed by its ``lead`` leading axes)."""
    return math.prod(leaf.shape[lead:]) * (2 if leaf.dtype.itemsize == 8 else 1)


def _words(tree, lead: int) -> int:
    """uint32 words per row of a tree of leaves, packed together."""
    return sum(_word_count(leaf, lead) for leaf in jax.tree.leaves(tree))


def _pack(tree, lead: int) -> jax.Array:
    """Rows (*lead, ...) of every leaf -> one (*lead, W) uint32 array."""
    return jnp.concatenate([_as_words(leaf, lead + 1) for leaf in jax.tree.leaves(tree)], axis=-1)


def _unpack(words: jax.Array, like, lead: int):
    """The inverse of ``_pack``: ``like``'s structure, shapes and dtypes from words."""
    leaves, structure = jax.tree.flatten(like)
    out, start = [], 0
    for leaf in leaves:
        count = _word_count(leaf, lead + 1)
        part = jax.lax.slice_in_dim(words, start, start + count, axis=-1)
        start += count
        if leaf.dtype == jnp.bool_:
            value = part.reshape(leaf.shape) != 0
        elif leaf.dtype.itemsize == 8:
            value = jax.lax.bitcast_convert_type(part.reshape((*leaf.shape, 2)), leaf.dtype)
        else:
            value = jax.lax.bitcast_convert_type(part.reshape(leaf.shape), leaf.dtype)
        out.append(value)
    return jax.tree.unflatten(structure, out)


def _lift(x: jax.Array, like: jax.Array) -> jax.Array:
    """``x`` with unit axes appended to broadcast against ``like``'s trailing axes."""
    return x.reshape(x.shape + (1,) * (like.ndim - x.ndim))


def _to_rate(x: jax.Array) -> jax.Array:
    """Sigmoid of a brain output as a fixed-point fraction in [0, RATE_ONE]."""
    return jnp.floor(jax.nn.sigmoid(x) * RATE_ONE).astype(jnp.int32)


def _fraction_dynamic(values: jax.Array, rate: jax.Array) -> jax.Array:
    """``floor(values * rate / RATE_ONE)`` for per-cell rates, exact in int64."""
    return ((values.astype(jnp.int64) * rate.astype(jnp.int64)) >> 16).astype(jnp.int32)

