"""Building a world: ``build(config)`` returns the jitted ``init``, ``step`` and ``run``.

A tick is: sources pay into cells, energy diffuses along the axes that tick now, free
energy decays. Which axes tick is a static schedule over the super-step of
``lcm(stretches)`` ticks: every distinct set of ticking axes is its own compiled
branch, so a stretched axis does no work at all between its ticks.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from hca import energy, geometry, rng
from hca.config import WorldConfig
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

    def ledger(self, state: WorldState) -> dict[str, Any]:
        """The ledger as plain Python numbers: world totals and one entry per region."""
        values = jax.device_get(self.measure(state))
        return _to_python(values)


_KEY_ORDER = ("tick", "world", "regions", "free", "organisms", "total", "injected", "dissipated")


def _to_python(tree: Any) -> Any:
    if isinstance(tree, dict):
        # JAX sorts dict keys; put them back in reading order.
        keys = sorted(tree, key=lambda k: _KEY_ORDER.index(k) if k in _KEY_ORDER else len(_KEY_ORDER))
        return {key: _to_python(tree[key]) for key in keys}
    value = np.asarray(tree)
    return bool(value) if value.dtype == bool else int(value)


def _region_ledger(region: RegionState) -> dict[str, jax.Array]:
    free = region.free_energy.sum(dtype=jnp.int64)
    organisms = jnp.int64(0)
    total = free + organisms
    return {
        "free": free,
        "organisms": organisms,
        "total": total,
        "injected": region.injected,
        "dissipated": region.dissipated,
        "balanced": total == region.initial_total + region.injected - region.dissipated,
    }


def build(config: WorldConfig) -> Simulation:
    """Compile-ready functions for ``config``; nothing is traced until first use."""
    regions = list(config.regions.values())
    schedule = geometry.Schedule.of(config)
    inflows = [energy.make_inflow(region, index) for index, region in enumerate(regions)]
    diffusions = [energy.make_diffusion(region) for region in regions]
    decays = [energy.make_decay(region) for region in regions]

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
        total = free.sum(dtype=jnp.int64)
        return RegionState(
            free_energy=free,
            injected=jnp.int64(0),
            dissipated=jnp.int64(0),
            initial_total=total,
        )

    @jax.jit
    def _init(seed: jax.Array) -> WorldState:
        return WorldState(
            tick=jnp.int32(0),
            seed=seed,
            regions=tuple(init_region(index, seed) for index in range(len(regions))),
        )

    def init(seed: int | None = None) -> WorldState:
        seed = config.seed if seed is None else seed
        return _init(jnp.uint32(seed))

    def tick_branch(ticking: tuple[tuple[int, ...], ...]):
        def branch(state: WorldState) -> WorldState:
            updated = []
            for index, region in enumerate(state.regions):
                free, injected = inflows[index](region.free_energy, state.tick, state.seed)
                free = diffusions[index](free, ticking[index])
                free, dissipated = decays[index](free)
                updated.append(
                    region.replace(
                        free_energy=free,
                        injected=region.injected + injected,
                        dissipated=region.dissipated + dissipated,
                    )
                )
            return state.replace(tick=state.tick + 1, regions=tuple(updated))

        return branch

    branches = [tick_branch(ticking) for ticking in schedule.ticking]
    branch_of_phase = np.asarray(schedule.branch_of_phase, dtype=np.int32)

    def step(state: WorldState) -> WorldState:
        if len(branches) == 1:
            return branches[0](state)
        phase = state.tick % schedule.period
        return jax.lax.switch(jnp.asarray(branch_of_phase)[phase], branches, state)

    @partial(jax.jit, donate_argnums=0)
    def run(state: WorldState, n_ticks: jax.Array | int) -> WorldState:
        return jax.lax.fori_loop(0, n_ticks, lambda _, s: step(s), state)

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
        return {"tick": state.tick, "world": world, "regions": per_region}

    return Simulation(
        config=config,
        schedule=schedule,
        init=init,
        step=jax.jit(step),
        run=run,
        measure=measure,
    )
