"""One tick of a world, phase by phase.

1. ``inflow``: sources pay into cells, up to capacity;
2. ``sense``: each cell's halo is refreshed along the axes that tick now;
3. ``decide``: every organism thinks, learns, answers the question of its cell's task
   (``hca.tasks``: graded answers are paid, injected energy), absorbs, pays its
   metabolism, dies or states an intent;
4. ``settle``: claims on empty cells are settled and free energy diffuses, along the
   axes that tick now, and across the beaches that tick now (``hca.beaches``);
5. ``transfer``: winners pay, rows crossing into another tile are sent along the
   placed axes that tick now, and arriving rows are written;
6. ``decay``: free energy decays, and organisms remember their energy for learning.

Which axes tick is a static schedule over the super-step of ``lcm(stretches)`` ticks
(``geometry.Schedule``): every distinct set of ticking axes is its own compiled branch
of the phases that cross between cells (settle, send, and what crosses beaches), and
sense refreshes each axis' halo in a conditional on whether the branch ticks it, so a
stretched axis does no work at all between its ticks and, on a mesh, nothing crosses a
device boundary outside the ticks of the placed axes. The branches take and return only
what crosses between cells (signals, claims, free energy, packed rows), never the
genomes.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec

from hca import energy, geometry
from hca.beaches import Beaches
from hca.claims import bids, settle_claims
from hca.config import MAX_AXES, WorldConfig
from hca.decide import decide
from hca.organisms import Life
from hca.sense import emitted, sense
from hca.state import RegionState, WorldState
from hca.transfer import arrive, arrive_sent, depart, pack_rows, row_words, send, with_state

# The names under which a region's axis refreshes its halo (``Tick.sense``) and under
# which rows are sent on the ticks of a set of axes split over devices
# (``Tick._arrive_sent``, ``Tick.sent_sets``): the compiled program's operations carry
# them, so that a device exchange inside can be told apart.
SENSE_AXIS = "sense_axis_{region}_{axis}"
SENT_SET = "sent_set_{index}"


def _phase_tables(config: WorldConfig, schedule: geometry.Schedule):
    """Per region: (period, MAX_AXES) float32 phase bits and (period, 2D) bool slot ticks."""
    tables = []
    for index, region in enumerate(config.regions.values()):
        bits = np.zeros((schedule.period, MAX_AXES), np.float32)
        slots = np.zeros((schedule.period, 2 * len(region.axes)), bool)
        for phase in range(schedule.period):
            for axis in schedule.ticking[schedule.branch_of_phase[phase]][index]:
                bits[phase, axis] = 1.0
                slots[phase, 2 * axis : 2 * axis + 2] = True
        tables.append((bits, slots))
    return tables


def _scored_sets(slot_ticks: np.ndarray, life: Life | None):
    """(slot sets, (period,) int32 set of each phase) for a region's brains: the direction
    slots that can be claimed on each phase (the ticking axes' from ``slot_ticks``, and
    the beach slot), each distinct set once; None where every phase has the same set."""
    if life is None:
        return None
    beach = () if life.beach_slot is None else (life.beach_slot,)
    sets, which = [], []
    for ticks in slot_ticks:
        slots = tuple(int(slot) for slot in np.flatnonzero(ticks)) + beach
        if slots not in sets:
            sets.append(slots)
        which.append(sets.index(slots))
    return None if len(sets) == 1 else (tuple(sets), np.asarray(which, np.int32))


class Tick:
    """The tick of one world: ``Tick(config)(state) -> state``, a pure function."""

    def __init__(self, config: WorldConfig, lives: Sequence[Life | None], mesh: Any = None):
        regions = list(config.regions.values())
        self.schedule = schedule = geometry.Schedule.of(config)
        self.lives = list(lives)
        # On a mesh, rows that cross into a tile on another device are sent there (``send``:
        # an exchange between neighbouring devices) on the ticks of the axes split over
        # devices; each device writes its arriving rows itself (``_on_blocks``).
        self.mesh = mesh
        split = [
            () if life is None or mesh is None
            else tuple(k for k, name in enumerate(region.placement) if mesh.shape.get(name, 1) > 1)
            for region, life in zip(regions, self.lives)
        ]
        sent = [
            tuple(tuple(axis for axis in axes if axis in split[index]) for index, axes in enumerate(ticking))
            for ticking in schedule.ticking
        ]
        # The distinct sets (per region: the split axes that tick) where some axis ticks,
        # and each schedule branch's (-1: none).
        self.sent_sets = list(dict.fromkeys(x for x in sent if any(x)))
        self.sent_of_branch = np.asarray([self.sent_sets.index(x) if any(x) else -1 for x in sent], dtype=np.int32)
        self.tilings = [geometry.Tiling.of(region) for region in regions]
        self.inflows = [energy.make_inflow(region, index) for index, region in enumerate(regions)]
        self.diffusions = [energy.make_diffusion(region) for region in regions]
        self.decays = [energy.make_decay(region) for region in regions]
        self.phase_tables = _phase_tables(config, schedule)
        self.scored = [
            _scored_sets(slots, life) for (_, slots), life in zip(self.phase_tables, self.lives)
        ]
        self.beaches = Beaches(config)
        # (period, beaches) bool: which beaches tick on each phase.
        self.beach_phases = np.zeros((schedule.period, max(len(config.beaches), 1)), bool)
        for phase, branch in enumerate(schedule.branch_of_phase):
            self.beach_phases[phase, list(schedule.beaches[branch])] = True
        self.branch_of_phase = np.asarray(schedule.branch_of_phase, dtype=np.int32)
        self.any_life = any(life is not None for life in self.lives)

    def __call__(self, state: WorldState) -> WorldState:
        tick, seed = state.tick, state.seed
        phase = tick % self.schedule.period
        branch = jnp.asarray(self.branch_of_phase)[phase]
        regions = self.inflow(state.regions, tick, seed)
        regions = self.sense(regions, branch)
        regions, intents = self.decide(regions, phase, tick, seed)
        regions, claims, carried = self.settle(regions, intents, branch, tick, seed)
        regions, crossed = self.transfer(regions, intents, claims, branch, tick, seed)
        regions = self.decay(regions)
        return self.tally(state, carried, crossed).replace(tick=tick + 1, regions=regions)

    @staticmethod
    def tally(state: WorldState, carried, crossed) -> WorldState:
        """The world's beach counters with a tick's flows added: free energy carried
        (``settle``), organisms and their bodies' energy carried (``transfer``)."""
        if carried is not None:
            state = state.replace(carried=state.carried + carried)
        if crossed is not None:
            organisms, bodies = crossed
            state = state.replace(carried=state.carried + bodies, crossed=state.crossed + organisms)
        return state

    # -- the phases ------------------------------------------------------------------

    def inflow(self, regions: tuple[RegionState, ...], tick, seed) -> tuple[RegionState, ...]:
        """Sources pay into cells up to capacity; what enters is injected."""
        out = []
        for index, region in enumerate(regions):
            free, added = self.inflows[index](region.free_energy, tick, seed)
            out.append(region.replace(free_energy=free, injected=region.injected + self.tilings[index].total(added)))
        return tuple(out)

    def sense(self, regions: tuple[RegionState, ...], branch) -> tuple[RegionState, ...]:
        """Halos refreshed along the ticking axes, and beach slots across the ticking
        beaches (a branch of the schedule).

        Each axis is refreshed on its own, in a ``lax.cond`` on whether this tick's
        branch ticks it (none for an axis that ticks on every tick), and only the beach
        slots' values come out of the schedule's switch: the halo is written in place.
        Returned from a branch of the switch, XLA copied it whole at the end of every
        branch but one. On a mesh an axis' cond holds its exchanges between devices,
        under the name ``sense_axis_<region>_<axis>`` (``SENSE_AXIS``), by which
        ``hca.parallel.collectives`` counts them in the branches that tick the axis."""
        if not self.any_life:
            return regions
        inputs = tuple(
            None if region.life is None else (region.life.signal, region.life.occupied, region.life.halo)
            for region in regions
        )
        across = [None] * len(regions)
        if self.beaches.crossing:  # only the beach slots' values come out of the switch
            across = self._by_branch(
                lambda ticking, beaches: lambda shores: tuple(self._across(beaches, list(shores))),
                branch,
                tuple(self._shores(inputs)),
            )
        out = []
        for index, (region, life, seen) in enumerate(zip(regions, self.lives, across)):
            if life is None or region.life is None:
                out.append(region)
                continue
            state = region.life
            halo = state.halo
            if seen is not None:  # first: then nothing reads the halo as it was after its writes
                halo = halo.at[..., life.beach_slot, :].set(seen)
            outgoing = emitted(state.signal, state.occupied)
            ticks = [
                np.array([axis in ticking[index] for ticking in self.schedule.ticking]) for axis in range(life.ndim)
            ]
            # The axes inside a device that tick on every tick are refreshed together
            # (their slots are adjacent: one pass over the halo); they exchange nothing.
            always = tuple(axis for axis in range(life.placed, life.ndim) if ticks[axis].all())
            if always:
                halo = sense(life, outgoing, halo, always)
            for axis in range(life.ndim):
                if axis in always or not ticks[axis].any():
                    continue
                refresh = functools.partial(sense, life, outgoing, ticking=(axis,))
                with jax.named_scope(SENSE_AXIS.format(region=index, axis=axis)):
                    if ticks[axis].all():
                        halo = refresh(halo)
                    else:
                        halo = jax.lax.cond(jnp.asarray(ticks[axis])[branch], refresh, lambda same: same, halo)
            out.append(region.replace(life=state.replace(halo=halo)))
        return tuple(out)

    def _shores(self, inputs) -> list:
        """Per region with a beach slot, (signal, occupied, the slot's last value) from its
        ``inputs`` (signal, occupied, halo); None for the others."""
        return [
            None if item is None or life is None or life.beach_slot is None
            else (item[0], item[1], item[2][..., life.beach_slot, :])
            for item, life in zip(inputs, self.lives)
        ]

    def _across(self, beaches: tuple[int, ...], shores: list) -> list:
        """Per region, what its beach slot receives across the ticking ``beaches`` (its
        last value where none of them ticks), None for regions without a beach slot;
        ``shores`` as ``_shores`` makes them."""
        return self.beaches.across(
            [None if shore is None else emitted(shore[0], shore[1]) for shore in shores],
            beaches,
            [None if shore is None else shore[2] for shore in shores],
        )

    def decide(self, regions: tuple[RegionState, ...], phase, tick, seed) -> tuple[tuple[RegionState, ...], list]:
        """Every organism thinks, learns, answers its task and acts on its own;
        metabolism is heat, what tasks pay is injected."""
        out, intents = [], []
        for index, region in enumerate(regions):
            life = self.lives[index]
            if life is None:
                out.append(region)
                intents.append(None)
                continue
            bits, slot_ticks = self.phase_tables[index]
            scored = self.scored[index]
            if scored is not None:
                scored = (scored[0], jnp.asarray(scored[1])[phase])
            questions = None if life.tasks is None else life.tasks.pose(tick, seed, region.life.halo)
            people = region.people
            asked = None if people is None else (tick < people.until, people.inputs)
            beach_open = None
            if life.beach_slot is not None:
                shore = life.shoreline
                beach_open = jnp.asarray(self.beach_phases)[phase][jnp.asarray(shore.beach)] & jnp.asarray(shore.on)
            decision = decide(
                life,
                region.life,
                region.free_energy,
                jnp.asarray(bits)[phase],
                jnp.asarray(slot_ticks)[phase],
                questions,
                tick,
                asked,
                beach_open,
                scored,
                None if life.tasks is None else life.tasks.open_at(tick),
            )
            if people is not None:
                # The answers to people's questions, and who gave them, stay for the page.
                answering = asked[0] & region.life.occupied
                people = people.replace(
                    answer=jnp.where(answering, decision.answer, people.answer),
                    answered_by=jnp.where(answering, region.life.organism_id, people.answered_by),
                )
            region = region.replace(
                life=decision.state,
                free_energy=decision.free,
                dissipated=region.dissipated + decision.heat,
                people=people,
            )
            if questions is not None:
                region = region.replace(
                    injected=region.injected + decision.earned, tasks=region.tasks.add(decision.task_counts)
                )
            out.append(region)
            intents.append(decision.intent)
        return tuple(out), intents

    def settle(self, regions, intents, branch, tick, seed) -> tuple[tuple[RegionState, ...], list, Any]:
        """Claims settled and free energy diffused along the ticking axes and across the
        ticking beaches (a branch); returns what each beach carried (None: no beaches)."""

        def make(ticking, beaches):
            def resolve(inputs):
                claims = self._claims([claim_inputs for _, claim_inputs in inputs], ticking, beaches)
                outputs = [
                    (self.diffusions[index](free, axes), settled)
                    for index, ((free, _), axes, settled) in enumerate(zip(inputs, ticking, claims))
                ]
                if not len(self.beaches):
                    return tuple(outputs), None
                # Across beaches, from the same snapshot as the axes' diffusion.
                deltas, inflow, outflow, carried = self.beaches.flow([free for free, _ in inputs], beaches)
                outputs = [
                    (free if delta is None else free + delta, claims)
                    for (free, claims), delta in zip(outputs, deltas)
                ]
                return tuple(outputs), (inflow, outflow, carried)

            return resolve

        settled, flows = self._by_branch(
            make,
            branch,
            tuple(
                (
                    region.free_energy,
                    # The bids are made once, outside the branches: made inside, XLA
                    # computed their hash again for every neighbour each slot reads.
                    None if intent is None
                    else (region.life.occupied, bids(life, region.life.energy, tick, seed), intent),
                )
                for region, intent, life in zip(regions, intents, self.lives)
            ),
        )
        regions = tuple(region.replace(free_energy=free) for region, (free, _) in zip(regions, settled))
        if flows is not None:
            inflow, outflow, carried = flows
            regions = tuple(
                region if region.beach_in is None
                else region.replace(
                    beach_in=region.beach_in + inflow[index], beach_out=region.beach_out + outflow[index]
                )
                for index, region in enumerate(regions)
            )
        else:
            carried = None
        return regions, [claims for _, claims in settled], carried

    def _claims(self, inputs, ticking, beaches) -> list:
        """Per region, its claims settled along its ticking axes and across the ticking
        beaches; ``inputs`` per region (occupied, bid, intent) or None."""
        bid = [None if operands is None else operands[1] for operands in inputs]
        shores = [
            None if life is None or life.beach_slot is None else life for life in self.lives
        ]
        crossing = any(self.beaches.joins[k].living for k in beaches)
        offers = [None] * len(inputs)
        if crossing:
            # A cell's partner bids for it if it claims the beach slot.
            offers = self.beaches.across(
                [None if life is None else jnp.where(operands[2].slot == life.beach_slot, value, -1)
                 for life, operands, value in zip(shores, inputs, bid)],
                beaches,
                [None if life is None else jnp.full(life.shape, -1, jnp.int64) for life in shores],
            )
        claims = [
            None if operands is None else settle_claims(life, operands[0], value, operands[2], axes, offer)
            for life, operands, value, axes, offer in zip(self.lives, inputs, bid, ticking, offers)
        ]
        if crossing:
            # Claimants across a beach look back at their partner cell.
            seen = self.beaches.across(
                [None if life is None else settled.winner == life.beach_slot for life, settled in zip(shores, claims)],
                beaches,
                [None if life is None else jnp.zeros(life.shape, bool) for life in shores],
            )
            claims = [
                settled if life is None
                else settled.replace(succeeded=settled.succeeded | ((operands[2].slot == life.beach_slot) & won))
                for life, settled, operands, won in zip(shores, claims, inputs, seen)
            ]
        return claims

    def transfer(self, regions, intents, claims, branch, tick, seed) -> tuple[tuple[RegionState, ...], Any]:
        """Winners pay (heat) and their rows are written where they won; on a mesh, rows
        crossing into a tile on another device travel along the ticking axes split over
        devices, and rows cross the ticking beaches (branches). Returns the regions and
        what crossed the beaches (None: no organisms cross any): (B, 2) organisms and
        (B, 2) body energy."""
        departures = [
            None if settled is None else depart(self.lives[index], region.life, intents[index], settled)
            for index, (region, settled) in enumerate(zip(regions, claims))
        ]
        ashore = [None] * len(regions)
        crossing = self.beaches.crossing
        if crossing:

            def make(ticking, beaches):
                def exchange(inputs):
                    rows, targets, went = inputs
                    ashore = self.beaches.rows_across(
                        self.lives, rows, targets, beaches, pack_rows
                    )
                    # Every branch returns the same shapes: nothing where no beach ticks.
                    ashore = tuple(
                        None if life is None or life.beach_slot is None
                        else got if got is not None
                        else jnp.zeros((*targets[index].shape, row_words(rows[index], life.ndim)), jnp.uint32)
                        for index, (life, got) in enumerate(zip(self.lives, ashore))
                    )
                    # Counted here, on the beaches' ticks only: the sums over a region
                    # cross devices.
                    energy = [None if tree is None else tree["energy"] for tree in rows]
                    return ashore, self.beaches.crossings(self.lives, energy, went, beaches)

                return exchange

            went = tuple(
                None if settled is None or life.beach_slot is None
                else settled.succeeded & (intent.slot == life.beach_slot)
                for life, settled, intent in zip(self.lives, claims, intents)
            )
            ashore, counted = self._by_branch(
                make,
                branch,
                (
                    tuple(None if d is None else d.rows for d in departures),
                    tuple(None if d is None else d.targets for d in departures),
                    went,
                ),
            )
        crossed, leaving = None, [None] * len(regions)
        if crossing:
            leaving, organisms, bodies = counted
            crossed = (organisms, bodies)

        out = []
        for index, (region, settled) in enumerate(zip(regions, claims)):
            if settled is not None:
                life, heat, landed = self._on_blocks(
                    index, arrive, region.life, settled, departures[index], tick, seed, ashore[index]
                )
                region = region.replace(life=life, dissipated=region.dissipated + heat)
                if landed is not None:
                    region = region.replace(
                        beach_in=region.beach_in + landed, beach_out=region.beach_out + leaving[index]
                    )
            out.append(region)
        if self.sent_sets:
            out = self._arrive_sent(out, claims, departures, intents, branch, tick, seed)
        return tuple(out), crossed

    def _arrive_sent(self, regions, claims, departures, intents, branch, tick, seed) -> list[RegionState]:
        """On a mesh, on the ticks of axes split over devices: the rows that cross
        between devices sent (``send``) and written (``arrive_sent``).

        One conditional whose other branch changes nothing, so that XLA writes the rows
        in place (with two branches that both write, it copied every genome tensor the
        branches update at the end of each), and inside it a switch over the distinct
        sets of split axes that tick, which only sends."""
        # The state's fields enter the conditional once: handed in twice (as the state and
        # as the rows carried), a field updated in place inside was copied whole.
        own = ("birth", "energy")
        operands = (
            tuple(region.life for region in regions),
            tuple(claims),
            tuple(None if d is None else d.replace(rows={name: d.rows[name] for name in own}) for d in departures),
            tuple(None if intent is None else intent.slot for intent in intents),
            tick,
            seed,
        )

        def sending(operands):
            states, settled, departed, slots, tick, seed = operands
            departed = [
                None if d is None else d.replace(rows=with_state(life, state, d.rows))
                for life, state, d in zip(self.lives, states, departed)
            ]

            def make(number, sent):
                def sends(_):
                    with jax.named_scope(SENT_SET.format(index=number)):
                        return tuple(
                            None if not axes
                            else send(self.lives[index], departed[index], settled[index], slots[index], axes)
                            for index, axes in enumerate(sent)
                        )

                return sends

            branches = [make(number, sent) for number, sent in enumerate(self.sent_sets)]
            if len(branches) == 1:
                incoming = branches[0](None)
            else:
                incoming = jax.lax.switch(jnp.asarray(self.sent_of_branch)[branch], branches, None)
            return tuple(
                state if words is None
                else self._on_blocks(index, arrive_sent, state, departed[index], words, tick, seed)
                for index, (state, words) in enumerate(zip(states, incoming))
            )

        states = jax.lax.cond(
            jnp.asarray(self.sent_of_branch)[branch] >= 0, sending, lambda operands: operands[0], operands
        )
        return [region if state is None else region.replace(life=state) for region, state in zip(regions, states)]

    def _on_blocks(self, index, function, *args):
        """``function(life, *args)`` in the region ``index``: ``arrive`` or
        ``arrive_sent``. On a mesh each device runs it on its own block (``shard_map``):
        the passes that write the arriving rows are then the device's own, counted with no
        reduction across devices, and rows from another of its tiles are read where they
        are, as on one device."""
        life = self.lives[index]
        if self.mesh is None or not life.placed:
            return function(life, *args)
        mesh, tiles = self.mesh, life.tiling.tiles
        split = PartitionSpec(*[name if name in mesh.shape else None for name in life.region.placement])

        def spec(leaf):
            return split if tuple(leaf.shape[: len(tiles)]) == tiles else PartitionSpec()

        local = life.on_block(mesh)

        def one(numbers, *args):
            return function(local, *args, tile_numbers=numbers)

        numbers = geometry.cell_index(tiles)
        out = jax.eval_shape(lambda *a: function(life, *a), *args)
        return jax.shard_map(
            one, mesh=mesh, in_specs=jax.tree.map(spec, (numbers, *args)), out_specs=jax.tree.map(spec, out),
            check_vma=False,
        )(numbers, *args)

    def decay(self, regions: tuple[RegionState, ...]) -> tuple[RegionState, ...]:
        """Free energy decays (heat); organisms remember their energy for learning."""
        out = []
        for index, region in enumerate(regions):
            free, lost = self.decays[index](region.free_energy)
            life = region.life
            if life is not None:
                life = life.replace(last_energy=life.energy)
            out.append(
                region.replace(
                    free_energy=free, dissipated=region.dissipated + self.tilings[index].total(lost), life=life
                )
            )
        return tuple(out)

    # -- the schedule ----------------------------------------------------------------

    def _by_branch(self, make: Callable, branch, *operands):
        """``make(ticking, beaches)(*operands)`` for the axes and beaches that tick in this
        tick's branch: one compiled branch per distinct set."""
        schedule = self.schedule
        branches = [make(ticking, beaches) for ticking, beaches in zip(schedule.ticking, schedule.beaches)]
        if len(branches) == 1:
            return branches[0](*operands)
        return jax.lax.switch(branch, branches, *operands)
