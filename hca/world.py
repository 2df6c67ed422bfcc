"""Building a world: ``build(config)`` returns the jitted ``init``, ``step``, ``run``
and ``measure`` of a world (jax-md style: pure functions chosen once at build time).

The tick itself, phase by phase, is ``hca.step.Tick``; ``run`` is a ``fori_loop`` over
ticks that donates the state it is given, with a traced tick count, so no retracing.
The ledger's counters are kept per tile (``geometry.Tiling``), so that counting never
needs communication between devices.
"""

from __future__ import annotations

import collections
import functools
from dataclasses import dataclass, replace
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from hca import brain, geometry, parallel, rng
from hca.beaches import shorelines
from hca.config import Region, WorldConfig
from hca.metrics import life_metrics, task_metrics
from hca.organisms import Life, id_offsets
from hca.state import PeopleState, RegionState, WorldState
from hca.step import Tick
from hca.tasks import TaskLedger


@dataclass(frozen=True, eq=False)  # hashed by identity: usable as a static jit argument
class Simulation:
    """The pure functions of one world. ``run`` donates the state it is given."""

    config: WorldConfig
    schedule: geometry.Schedule
    initial: Any  # (seed: uint32 array) -> WorldState, jitted; see ``init``
    step: Any  # (WorldState) -> WorldState
    run: Any  # (WorldState, n_ticks) -> WorldState
    measure: Any  # (WorldState) -> dict of scalar arrays (the ledger, world and per region)
    tick: Any  # hca.step.Tick: the tick phase by phase (step is it jitted)
    mesh: Any = None  # jax.sharding.Mesh when the world is spread over several devices
    shardings: Any = None  # the state's NamedShardings on `mesh` (None on one device)

    def init(self, seed: int | None = None) -> WorldState:
        """The world at tick 0 for ``seed`` (by default the config's)."""
        return self.initial(jnp.uint32(self.config.seed if seed is None else seed))

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
        return self.ledger_of(self.measure(state))

    def ledger_of(self, measured: dict[str, Any]) -> dict[str, Any]:
        """``ledger`` from what ``measure`` returned (perhaps still being computed)."""
        values = _to_python(parallel.gather(measured))
        # JAX sorts dict keys; tasks go back in the world file's order.
        for name, tasks in values["tasks"].items():
            values["tasks"][name] = {task: tasks[task] for task in self.config.regions[name].task_names()}
        if "beaches" in values:
            values["beaches"] = {name: values["beaches"][name] for name in self.config.beach_names()}
        return values


_KEY_ORDER = (
    "tick", "world", "life", "regions", "free", "organisms", "total", "injected", "dissipated",
    "balanced", "beach_in", "beach_out", "people", "carried", "crossed", "population", "births", "deaths", "moves", "refused",
)


def _to_python(tree: Any) -> Any:
    if isinstance(tree, dict):
        # JAX sorts dict keys; put them back in reading order.
        keys = sorted(tree, key=lambda k: _KEY_ORDER.index(k) if k in _KEY_ORDER else len(_KEY_ORDER))
        return {key: _to_python(tree[key]) for key in keys}
    value = np.asarray(tree)
    if value.ndim:
        return value.tolist()
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
    expected = region.initial_total + injected - dissipated
    ledger = {"free": free, "organisms": organisms, "total": total, "injected": injected, "dissipated": dissipated}
    if region.beach_in is not None:
        ledger["beach_in"], ledger["beach_out"] = region.beach_in.sum(), region.beach_out.sum()
        expected = expected + ledger["beach_in"] - ledger["beach_out"]
    ledger["balanced"] = total == expected
    if region.people is not None:
        ledger["people"] = region.people.paid.sum()  # of injected: what people paid
    return ledger


def initial_region(region: Region, index: int, life: Life | None, seed: jax.Array,
                   on_beach: bool = False) -> RegionState:
    """A region at tick 0: free energy drawn from the seed, and its founders."""
    initial = region.energy.initial
    free = rng.integers(
        initial.mean - initial.jitter,
        initial.mean + initial.jitter,
        seed,
        rng.INITIAL_ENERGY,
        index,
        geometry.cell_index(region.shape),
        xp=jnp,
    )
    life_state = None if life is None else life.init(seed)
    total = free.sum(dtype=jnp.int64)
    if life_state is not None:
        total = total + life_state.energy.sum(dtype=jnp.int64)
    tiling = geometry.Tiling.of(region)
    return RegionState(
        free_energy=free,
        injected=tiling.counter(),
        dissipated=tiling.counter(),
        initial_total=total,
        life=life_state,
        tasks=TaskLedger.zeros(tiling.tiles, len(region.tasks)) if region.tasks else None,
        people=None if region.people is None else PeopleState(
            inputs=jnp.zeros((*region.shape, brain.TASK_INPUTS), jnp.float32),
            until=jnp.zeros(region.shape, jnp.int32),
            answer=jnp.full(region.shape, jnp.nan, jnp.float32),
            answered_by=jnp.zeros(region.shape, jnp.int64),
            paid=tiling.counter(),
        ),
        beach_in=tiling.counter() if on_beach else None,
        beach_out=tiling.counter() if on_beach else None,
    )


def measure_state(config: WorldConfig, state: WorldState) -> dict[str, Any]:
    """The ledger (world and per region) and life statistics, as scalar arrays."""
    per_region = {name: _region_ledger(region) for name, region in zip(config.regions, state.regions)}
    world = {
        key: sum(ledger[key] for ledger in per_region.values())
        for key in ("free", "organisms", "total", "injected", "dissipated")
    }
    paid_by_people = [ledger["people"] for ledger in per_region.values() if "people" in ledger]
    if paid_by_people:
        world["people"] = sum(paid_by_people)
    # The world's equation has no beach terms: what leaves one region arrives in another.
    initial = sum(region.initial_total for region in state.regions)
    world["balanced"] = jnp.all(jnp.stack([ledger["balanced"] for ledger in per_region.values()])) & (
        world["total"] == initial + world["injected"] - world["dissipated"])
    world_cells = id_offsets(config)[1]
    life = {
        name: life_metrics(region.life, world_cells)
        for name, region in zip(config.regions, state.regions)
        if region.life is not None
    }
    tasks = {
        name: task_metrics(region.tasks, config.regions[name].task_names())
        for name, region in zip(config.regions, state.regions)
        if region.tasks is not None
    }
    measured = {"tick": state.tick, "world": world, "regions": per_region, "life": life, "tasks": tasks}
    if state.carried is not None:
        measured["beaches"] = {
            name: {"carried": state.carried[k], "crossed": state.crossed[k]}
            for k, name in enumerate(config.beach_names())
        }
    return measured


# The worlds built last, by ((config but its seed, as JSON; mesh), seed): see ``build``.
_BUILT: collections.OrderedDict[tuple[tuple[str, Any], int], Simulation] = collections.OrderedDict()
BUILT_KEPT = 8


def build(config: WorldConfig, mesh: Any = None) -> Simulation:
    """Compile-ready functions for ``config``; nothing is traced until first use.

    With a ``mesh`` (see ``hca.parallel.make_mesh``) the state lives spread over its
    devices along the placed axes. A world built again, with an equal config and mesh,
    is the ``Simulation`` built before (the last ``BUILT_KEPT`` are kept), so that its
    functions are not traced and compiled again: a run resumed in the same process, a
    test that builds a world its neighbour built. One that differs from a kept one only
    in its seed shares that one's functions (the seed is the state's, not the step's):
    the seeds of an experiment compile once. ``assemble`` builds anew.
    """
    steps = (config.with_seed(0).model_dump_json(), mesh)  # all but the seed
    simulation = _BUILT.pop((steps, config.seed), None)
    if simulation is None:
        sibling = next((kept for (kept_steps, _), kept in _BUILT.items() if kept_steps == steps), None)
        simulation = assemble(config, mesh) if sibling is None else replace(sibling, config=config)
    _BUILT[steps, config.seed] = simulation
    while len(_BUILT) > BUILT_KEPT:
        _BUILT.popitem(last=False)
    return simulation


def assemble(config: WorldConfig, mesh: Any = None) -> Simulation:
    """A new ``Simulation`` of ``config``, shared with no other caller (``build`` shares
    them): for one whose parts are changed, e.g. a test that writes arriving rows in
    other passes."""
    regions = list(config.regions.values())
    offsets, world_cells = id_offsets(config)
    lives = [
        None if region.organisms is None
        else Life(region, index, config.run.phylogeny.drain_every, offsets[index], world_cells, shore)
        for index, (region, shore) in enumerate(zip(regions, shorelines(config)))
    ]
    tick = Tick(config, lives, mesh)

    def make_state(seed: jax.Array) -> WorldState:
        return WorldState(
            tick=jnp.int32(0),
            seed=seed,
            regions=tuple(
                initial_region(region, index, life, seed, index in tick.beaches.touching)
                for index, (region, life) in enumerate(zip(regions, lives))
            ),
            carried=jnp.zeros((len(config.beaches), 2), jnp.int64) if config.beaches else None,
            crossed=jnp.zeros((len(config.beaches), 2), jnp.int64) if config.beaches else None,
        )

    shardings = None
    if mesh is not None:
        shardings = parallel.state_shardings(
            config, jax.eval_shape(make_state, jax.ShapeDtypeStruct((), jnp.uint32)), mesh
        )
    # On one device the state is made, restored and stepped on the first device, whether
    # or not the arrays given are committed to it (a state built by hand, or placed by
    # an assay, is not). JAX compiles a step of uncommitted arrays apart from one of
    # committed arrays: without these shardings such a state would compile the step
    # again, missing the persistent cache that a run of the same world had filled.
    placed = jax.sharding.SingleDeviceSharding(jax.devices()[0]) if mesh is None else shardings
    initial = jax.jit(make_state, out_shardings=placed)

    def run_ticks(state: WorldState, n_ticks: jax.Array | int) -> WorldState:
        return jax.lax.fori_loop(0, n_ticks, lambda _, s: tick(s), state)

    run = jax.jit(run_ticks, donate_argnums=0, in_shardings=(placed, None), out_shardings=placed)

    measure = jax.jit(functools.partial(measure_state, config))

    return Simulation(
        config=config,
        schedule=tick.schedule,
        initial=initial,
        step=jax.jit(tick, in_shardings=(placed,), out_shardings=placed),
        run=run,
        measure=measure,
        tick=tick,
        mesh=mesh,
        shardings=shardings,
    )
