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
of the phases that cross between cells (sense, settle, send), so a stretched axis does
no work at all between its ticks and, on a mesh, nothing crosses a device boundary
outside the branches of the placed axes. The branches take and return only what
crosses between cells (signals, claims, free energy, packed rows), never the genomes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from hca import energy, geometry
from hca.beaches import Beaches
from hca.claims import settle_claims
from hca.config import MAX_AXES, WorldConfig
from hca.decide import decide
from hca.organisms import Life
from hca.sense import sense
from hca.state import RegionState, WorldState
from hca.transfer import arrive, depart, send


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


class Tick:
    """The tick of one world: ``Tick(config)(state) -> state``, a pure function."""

    def __init__(self, config: WorldConfig, lives: Sequence[Life | None]):
        regions = list(config.regions.values())
        self.schedule = schedule = geometry.Schedule.of(config)
        self.lives = list(lives)
        self.tilings = [geometry.Tiling.of(region) for region in regions]
        self.inflows = [energy.make_inflow(region, index) for index, region in enumerate(regions)]
        self.diffusions = [energy.make_diffusion(region) for region in regions]
        self.decays = [energy.make_decay(region) for region in regions]
        self.phase_tables = _phase_tables(config, schedule)
        self.beaches = Beaches(config)
        self.branch_of_phase = np.asarray(schedule.branch_of_phase, dtype=np.int32)
        self.any_life = any(life is not None for life in self.lives)
        self.any_placed_life = any(life is not None and life.placed for life in self.lives)

    def __call__(self, state: WorldState) -> WorldState:
        tick, seed = state.tick, state.seed
        phase = tick % self.schedule.period
        branch = jnp.asarray(self.branch_of_phase)[phase]
        regions = self.inflow(state.regions, tick, seed)
        regions = self.sense(regions, branch)
        regions, intents = self.decide(regions, phase, tick, seed)
        regions, claims, carried = self.settle(regions, intents, branch, tick, seed)
        regions = self.transfer(regions, intents, claims, branch, tick, seed)
        regions = self.decay(regions)
        if carried is not None:
            state = state.replace(carried=state.carried + carried)
        return state.replace(tick=tick + 1, regions=regions)

    # -- the phases ------------------------------------------------------------------

    def inflow(self, regions: tuple[RegionState, ...], tick, seed) -> tuple[RegionState, ...]:
        """Sources pay into cells up to capacity; what enters is injected."""
        out = []
        for index, region in enumerate(regions):
            free, added = self.inflows[index](region.free_energy, tick, seed)
            out.append(region.replace(free_energy=free, injected=region.injected + self.tilings[index].total(added)))
        return tuple(out)

    def sense(self, regions: tuple[RegionState, ...], branch) -> tuple[RegionState, ...]:
        """Halos refreshed along the ticking axes (a branch of the schedule)."""
        if not self.any_life:
            return regions

        def make(ticking, _beaches):
            def refresh(inputs):
                return tuple(
                    None if life is None else sense(life, *operands, axes)
                    for operands, life, axes in zip(inputs, self.lives, ticking)
                )

            return refresh

        halos = self._by_branch(
            make,
            branch,
            tuple(
                None if region.life is None else (region.life.signal, region.life.occupied, region.life.halo)
                for region in regions
            ),
        )
        return tuple(
            region if halo is None else region.replace(life=region.life.replace(halo=halo))
            for region, halo in zip(regions, halos)
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
            questions = None if life.tasks is None else life.tasks.pose(tick, seed, region.life.halo)
            people = region.people
            asked = None if people is None else (tick < people.until, people.inputs)
            decision = decide(
                life,
                region.life,
                region.free_energy,
                jnp.asarray(bits)[phase],
                jnp.asarray(slot_ticks)[phase],
                questions,
                tick,
                asked,
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
            def resolve(inputs, tick, seed):
                outputs = []
                for index, ((free, claim_inputs), axes) in enumerate(zip(inputs, ticking)):
                    life = self.lives[index]
                    claims = None if life is None else settle_claims(life, *claim_inputs, axes, tick, seed)
                    outputs.append((self.diffusions[index](free, axes), claims))
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
                    None if intent is None else (region.life.occupied, region.life.energy, intent),
                )
                for region, intent in zip(regions, intents)
            ),
            tick,
            seed,
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

    def transfer(self, regions, intents, claims, branch, tick, seed) -> tuple[RegionState, ...]:
        """Winners pay (heat) and their rows are written where they won; rows crossing
        into another tile travel along the ticking placed axes (a branch)."""
        departures = [
            None if settled is None else depart(self.lives[index], region.life, intents[index], settled)
            for index, (region, settled) in enumerate(zip(regions, claims))
        ]
        incoming = [None] * len(regions)
        if self.any_placed_life:

            def make(ticking, _beaches):
                def exchange(inputs):
                    return tuple(
                        None if operands is None else send(self.lives[index], *operands, axes)
                        for index, (operands, axes) in enumerate(zip(inputs, ticking))
                    )

                return exchange

            incoming = self._by_branch(
                make,
                branch,
                tuple(
                    (departure, settled, intent.slot)
                    if departure is not None and self.lives[index].placed
                    else None
                    for index, (departure, settled, intent) in enumerate(zip(departures, claims, intents))
                ),
            )
        out = []
        for index, (region, settled) in enumerate(zip(regions, claims)):
            if settled is not None:
                life, heat = arrive(
                    self.lives[index], region.life, settled, departures[index], incoming[index], tick, seed
                )
                region = region.replace(life=life, dissipated=region.dissipated + heat)
            out.append(region)
        return tuple(out)

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
