"""Building a world: ``build(config)`` returns the jitted ``init``, ``step`` and ``run``.

A tick is: sources pay into cells; organisms sense along the axes that tick now, think,
learn, absorb, pay their metabolism and die or claim a neighbouring cell; claims are
resolved and free energy diffuses along the axes that tick now; winners' rows are
sent and copied; free energy decays. Which axes tick is a static schedule over the
super-step of ``lcm(stretches)`` ticks: every distinct set of ticking axes is its own
compiled branch, so a stretched axis does no work at all between its ticks, and on a
mesh, nothing crosses a device boundary outside the branches of the placed axes.
The ledger's counters are kept per tile (``geometry.Tiling``) for the same reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from hca import energy, geometry, parallel, rng
from hca.config import MAX_AXES, WorldConfig
from hca.metrics import life_metrics
from hca.organisms import Life
from hca.state import RegionState, WorldState


@dataclass(frozen=True, eq=False)  # hashed by identity: usable as a static jit argument
class Simulation:
    """The pure functions of one world. ``run`` donates the state it is given."""

    config: WorldConfig
    schedule: geometry.Schedule
    init: Any  # (seed: int | None) -> WorldState
    step: Any  # (WorldState) -> WorldState
    run: Any  # (WorldState, n_ticks) -> WorldState
    measure: Any  # (WorldState) -> dict of scalar arrays (the ledger, world and per region)
    mesh: Any = None  # jax.sharding.Mesh when the world is spread over several devices
    shardings: Any = None  # the state's NamedShardings on `mesh` (None on one device)

    def abstract_state(self) -> Any:
        """ShapeDtypeStructs of the state, with the sharding each array lives in."""
        shapes = jax.eval_shape(lambda: self.init(self.config.seed))
        shardings = self.shardings
        if shardings is None:
            device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
            shardings = jax.tree.map(lambda _: device, shapes)
        return jax.tree.map(
            lambda s, sharding: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding),
            shapes,
            shardings,
        )

    def ledger(self, state: WorldState) -> dict[str, Any]:
        """The ledger as plain Python numbers: world totals and one entry per region."""
        values = jax.device_get(self.measure(state))
        return _to_python(values)


_KEY_ORDER = (
    "tick", "world", "life", "regions", "free", "organisms", "total", "injected", "dissipated",
    "balanced", "population", "births", "deaths", "moves", "refused",
)


def _to_python(tree: Any) -> Any:
    if isinstance(tree, dict):
        # JAX sorts dict keys; put them back in reading order.
        keys = sorted(tree, key=lambda k: _KEY_ORDER.index(k) if k in _KEY_ORDER else len(_KEY_ORDER))
        return {key: _to_python(tree[key]) for key in keys}
    value = np.asarray(tree)
    if value.dtype == bool:
        return bool(value)
    if np.issubdtype(value.dtype, np.floating):
        return float(value)
    return int(value)


def _region_ledger(region: RegionState) -> dict[str, jax.Array]:
    free = region.free_energy.sum(dtype=jnp.int64)
    organisms = jnp.int64(0) if region.life is None else region.life.energy.sum(dtype=jnp.int64)
    total = free + organisms
    injected, dissipated = region.injected.sum(), region.dissipated.sum()
    return {
        "free": free,
        "organisms": organisms,
        "total": total,
        "injected": injected,
        "dissipated": dissipated,
        "balanced": total == region.initial_total + injected - dissipated,
    }


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


def build(config: WorldConfig, mesh: Any = None) -> Simulation:
    """Compile-ready functions for ``config``; nothing is traced until first use.

    With a ``mesh`` (see ``hca.parallel.make_mesh``) the state lives spread over its
    devices along the placed axes.
    """
    regions = list(config.regions.values())
    schedule = geometry.Schedule.of(config)
    inflows = [energy.make_inflow(region, index) for index, region in enumerate(regions)]
    diffusions = [energy.make_diffusion(region) for region in regions]
    decays = [energy.make_decay(region) for region in regions]
    tilings = [geometry.Tiling.of(region) for region in regions]
    lives = [
        None if region.organisms is None else Life(region, index)
        for index, region in enumerate(regions)
    ]
    phase_tables = _phase_tables(config, schedule)
    any_life = any(life is not None for life in lives)

    def init_region(index: int, seed: jax.Array) -> RegionState:
        region = regions[index]
        initial = region.energy.initial
        cells = geometry.cell_index(region.shape)
        free = rng.integers(
            initial.mean - initial.jitter,
            initial.mean + initial.jitter,
            seed,
            rng.INITIAL_ENERGY,
            index,
            cells,
            xp=jnp,
        )
        life = None if lives[index] is None else lives[index].init(seed)
        total = free.sum(dtype=jnp.int64)
        if life is not None:
            total = total + life.energy.sum(dtype=jnp.int64)
        return RegionState(
            free_energy=free,
            injected=tilings[index].counter(),
            dissipated=tilings[index].counter(),
            initial_total=total,
            life=life,
        )

    def make_state(seed: jax.Array) -> WorldState:
        return WorldState(
            tick=jnp.int32(0),
            seed=seed,
            regions=tuple(init_region(index, seed) for index in range(len(regions))),
        )

    shardings = None
    if mesh is not None:
        shardings = parallel.state_shardings(
            config, jax.eval_shape(make_state, jax.ShapeDtypeStruct((), jnp.uint32)), mesh
        )
    _init = jax.jit(make_state, out_shardings=shardings)

    def init(seed: int | None = None) -> WorldState:
        seed = config.seed if seed is None else seed
        return _init(jnp.uint32(seed))

    # The branches of the stretch schedule take and return only what crosses between
    # cells (signals, claims, free energy), never the genomes.
    def sense_branch(ticking: tuple[tuple[int, ...], ...]):
        def branch(inputs):
            return tuple(
                None if life is None else life.sense(*operands, axes)
                for operands, life, axes in zip(inputs, lives, ticking)
            )

        return branch

    def settle_branch(ticking: tuple[tuple[int, ...], ...]):
        def branch(inputs, tick, seed):
            outputs = []
            for index, ((free, claim_inputs), axes) in enumerate(zip(inputs, ticking)):
                claims = None
                if lives[index] is not None:
                    claims = lives[index].claims(*claim_inputs, axes, tick, seed)
                outputs.append((diffusions[index](free, axes), claims))
            return tuple(outputs)

        return branch

    # Rows crossing into another tile along a placed axis travel only on its ticks.
    def send_branch(ticking: tuple[tuple[int, ...], ...]):
        def branch(inputs):
            return tuple(
                None if operands is None else lives[index].send(*operands, axes)
                for index, (operands, axes) in enumerate(zip(inputs, ticking))
            )

        return branch

    sense_branches = [sense_branch(ticking) for ticking in schedule.ticking]
    settle_branches = [settle_branch(ticking) for ticking in schedule.ticking]
    send_branches = [send_branch(ticking) for ticking in schedule.ticking]
    any_placed_life = any(life is not None and life.placed for life in lives)
    branch_of_phase = np.asarray(schedule.branch_of_phase, dtype=np.int32)

    def by_phase(branches, branch, *operands):
        if len(branches) == 1:
            return branches[0](*operands)
        return jax.lax.switch(branch, branches, *operands)

    def step(state: WorldState) -> WorldState:
        """One tick: inflow, sense, decide, resolve and diffuse, decay."""
        tick, seed = state.tick, state.seed
        phase = tick % schedule.period
        branch = jnp.asarray(branch_of_phase)[phase]
        regions_now = []
        for index, region in enumerate(state.regions):
            free, added = inflows[index](region.free_energy, tick, seed)
            regions_now.append(
                region.replace(free_energy=free, injected=region.injected + tilings[index].total(added))
            )
        regions_now = tuple(regions_now)
        if any_life:
            halos = by_phase(
                sense_branches,
                branch,
                tuple(
                    None if region.life is None else (region.life.signal, region.life.occupied, region.life.halo)
                    for region in regions_now
                ),
            )
            regions_now = tuple(
                region if halo is None else region.replace(life=region.life.replace(halo=halo))
                for region, halo in zip(regions_now, halos)
            )
        intents = []
        decided = []
        for index, region in enumerate(regions_now):
            life = lives[index]
            if life is None:
                intents.append(None)
                decided.append(region)
                continue
            bits, slot_ticks = phase_tables[index]
            life_state, free, intent, heat = life.decide(
                region.life, region.free_energy, jnp.asarray(bits)[phase], jnp.asarray(slot_ticks)[phase]
            )
            intents.append(intent)
            decided.append(
                region.replace(life=life_state, free_energy=free, dissipated=region.dissipated + heat)
            )
        settled = by_phase(
            settle_branches,
            branch,
            tuple(
                (
                    region.free_energy,
                    None if intent is None else (region.life.occupied, region.life.energy, intent),
                )
                for region, intent in zip(decided, intents)
            ),
            tick,
            seed,
        )
        departures = [
            None if claims is None else lives[index].depart(region.life, intents[index], claims)
            for index, (region, (_, claims)) in enumerate(zip(decided, settled))
        ]
        incoming = [None] * len(regions)
        if any_placed_life:
            incoming = by_phase(
                send_branches,
                branch,
                tuple(
                    (departure, claims, intent.slot)
                    if departure is not None and lives[index].placed
                    else None
                    for index, (departure, (_, claims), intent) in enumerate(zip(departures, settled, intents))
                ),
            )
        regions_now = []
        for index, (region, (free, claims)) in enumerate(zip(decided, settled)):
            region = region.replace(free_energy=free)
            if claims is not None:
                life, heat = lives[index].arrive(
                    region.life, claims, departures[index], incoming[index], tick, seed
                )
                region = region.replace(life=life, dissipated=region.dissipated + heat)
            regions_now.append(region)
        finished = []
        for index, region in enumerate(regions_now):
            free, lost = decays[index](region.free_energy)
            life = region.life if lives[index] is None else lives[index].finish(region.life)
            finished.append(
                region.replace(
                    free_energy=free, dissipated=region.dissipated + tilings[index].total(lost), life=life
                )
            )
        return state.replace(tick=tick + 1, regions=tuple(finished))

    def run_ticks(state: WorldState, n_ticks: jax.Array | int) -> WorldState:
        return jax.lax.fori_loop(0, n_ticks, lambda _, s: step(s), state)

    if mesh is None:
        run = jax.jit(run_ticks, donate_argnums=0)
    else:
        run = jax.jit(
            run_ticks, donate_argnums=0, in_shardings=(shardings, None), out_shardings=shardings
        )

    @jax.jit
    def measure(state: WorldState) -> dict[str, Any]:
        per_region = {
            name: _region_ledger(region) for name, region in zip(config.regions, state.regions)
        }
        world = {
            key: sum(ledger[key] for ledger in per_region.values())
            for key in ("free", "organisms", "total", "injected", "dissipated")
        }
        world["balanced"] = jnp.all(jnp.stack([ledger["balanced"] for ledger in per_region.values()]))
        life = {
            name: life_metrics(region.life)
            for name, region in zip(config.regions, state.regions)
            if region.life is not None
        }
        return {"tick": state.tick, "world": world, "regions": per_region, "life": life}

    return Simulation(
        config=config,
        schedule=schedule,
        init=init,
        step=jax.jit(step),
        run=run,
        measure=measure,
        mesh=mesh,
        shardings=shardings,
    )
