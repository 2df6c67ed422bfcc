"""Organisms: the ledger with life, population bookkeeping, stretch, inheritance,
agreement with a NumPy reference, determinism and robustness."""

from __future__ import annotations

import copy
import math
import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import hca
from hca import brain, geometry, rng, transfer
from hca.checkpoint import state_digest
from hca.config import parse_world
from hca.organisms import Life
from hca.people import Applier
from hca.tasks import COUNTERS
from hca.world import assemble, build
from reference import WorldReference

LIFE = {
    "density": 0.5,
    "max_age": 30,
    "initial_energy": 60,
    "max_energy": 400,
    "absorb": 30,
    "birth_cost": 2,
    "move_cost": 0.005,
    "brain": {"signals": 2, "hidden": 4, "encoder": 3, "init_scale": 1.0},
    "mutation": {"initial_scale": 0.1, "meta_scale": 0.2},
    "metabolism": {"base": 1, "per_parameter": 0.002, "per_active_unit": 0.25},
}


def living_world(**overrides):
    life = copy.deepcopy(LIFE)
    life.update(overrides)
    return {
        "name": "life",
        "seed": 4,
        "regions": {
            "grid": {
                "axes": [
                    {"name": "a", "size": 3, "stretch": 1},
                    {"name": "b", "size": 4, "stretch": 2, "curled": True},
                    {"name": "c", "size": 2, "stretch": 3, "curled": True},
                    {"name": "d", "size": 1, "curled": True},
                ],
                "energy": {
                    "initial": {"mean": 40, "jitter": 20},
                    "diffusion": 0.1,
                    "decay": 0.01,
                    "sources": [
                        {"kind": "uniform", "amount": 3},
                        {"kind": "rain", "probability": 0.05, "amount": 40},
                    ],
                },
                "organisms": life,
            },
            "ring": {
                "axes": [{"name": "x", "size": 64, "stretch": 1, "curled": True}],
                "energy": {"initial": {"mean": 30}, "sources": [{"kind": "uniform", "amount": 5}]},
                "organisms": life,
            },
        },
    }


@pytest.fixture(scope="module")
def simulation():
    return build(parse_world(living_world()))


def trace(simulation, state, ticks):
    def one(state, _):
        state = simulation.step(state)
        rows = []
        for region in state.regions:
            life = region.life
            rows.append(
                jnp.stack(
                    [
                        region.free_energy.sum(dtype=jnp.int64) + life.energy.sum(dtype=jnp.int64),
                        region.initial_total + region.injected.sum() - region.dissipated.sum(),
                        life.occupied.sum(dtype=jnp.int64),
                        life.births.sum(),
                        life.deaths.sum(),
                        life.moves.sum(),
                        jnp.where(life.occupied, 0, life.energy).sum(dtype=jnp.int64),
                    ]
                )
            )
        return state, jnp.stack(rows)

    return jax.lax.scan(one, state, length=ticks)


def test_ledger_and_population_every_tick_for_2000_ticks(simulation):
    state = simulation.init()
    population0 = [int(region.life.occupied.sum()) for region in state.regions]
    state, rows = jax.jit(trace, static_argnums=(0, 2))(simulation, state, 2000)
    rows = np.asarray(rows)
    total, expected, population, births, deaths, moves, empty_energy = np.moveaxis(rows, -1, 0)
    assert np.array_equal(total, expected)  # the ledger, every tick, every region
    assert not empty_energy.any()  # empty cells hold no body energy
    start = np.array(population0)[None, :]
    assert np.array_equal(population, start + births - deaths)
    previous = np.concatenate([start, population[:-1]])
    step_births = np.diff(np.concatenate([np.zeros_like(start), births]), axis=0)
    step_deaths = np.diff(np.concatenate([np.zeros_like(start), deaths]), axis=0)
    assert np.array_equal(population, previous + step_births - step_deaths)
    # Life really happened: births, deaths and moves in every region, and the world lives.
    assert (births[-1] > 50).all() and (deaths[-1] > 50).all() and (moves[-1] > 0).all()
    assert (population[-1] > 0).all()
    generation = np.asarray(state.regions[0].life.generation)[np.asarray(state.regions[0].life.occupied)]
    assert generation.max() >= 3


def positions(life):
    occupied = np.asarray(life.occupied)
    ids = np.where(occupied, np.asarray(life.organism_id), 0)  # empty cells hold stale ids
    return {int(i): tuple(int(c) for c in np.argwhere(ids == i)[0]) for i in ids[occupied]}


def test_ids_unique_and_births_and_moves_cross_only_ticking_axes(simulation):
    world = simulation.config
    stretches = [[axis.stretch for axis in region.axes] for region in world.regions.values()]
    state = simulation.init()
    crossed = set()
    for tick in range(150):
        before = [positions(region.life) for region in state.regions]
        state = simulation.run(state, 1)
        for index, region in enumerate(state.regions):
            life = region.life
            occupied = np.asarray(life.occupied)
            ids = np.asarray(life.organism_id)[occupied]
            assert len(set(ids.tolist())) == len(ids)  # never one organism in two cells
            assert (ids > 0).all()
            after = positions(life)
            parent_ids = np.asarray(life.parent_id)
            birth_ticks = np.asarray(life.birth_tick)
            for organism, where in after.items():
                if birth_ticks[where] == tick and organism not in before[index]:
                    origin = before[index][int(parent_ids[where])]  # the parent's cell
                elif organism in before[index]:
                    origin = before[index][organism]
                else:
                    raise AssertionError(f"organism {organism} appeared from nowhere")
                moved = [k for k, (a, b) in enumerate(zip(origin, where)) if a != b]
                assert len(moved) <= 1
                for axis in moved:
                    assert tick % stretches[index][axis] == 0, (tick, axis)
                    crossed.add((index, axis))
    assert {(0, 0), (0, 1), (0, 2)} <= crossed  # every axis with neighbours was crossed


def test_crossing_costs_scale_with_stretch():
    world = parse_world(living_world())
    life = Life(world.regions["grid"], 0)
    size = life.layout.size
    for axis, spec in enumerate(world.regions["grid"].axes):
        stretch = spec.stretch
        assert life.birth_cost[axis] == LIFE["birth_cost"] * stretch
        assert life.move_cost[axis] == int(np.ceil(size * LIFE["move_cost"] * stretch))


def test_child_genome_is_parent_plus_its_own_scaled_mutation(simulation):
    state = simulation.run(simulation.init(), 40)
    layout = Life(simulation.config.regions["grid"], 0).layout
    checked = 0
    for step in range(40):
        region_index = step % 2  # both regions, alternately
        before = state.regions[region_index].life
        ids_before = np.where(np.asarray(before.occupied), np.asarray(before.organism_id), 0)
        genome_before = {k: np.asarray(v) for k, v in before.genome.items()}
        tick = int(state.tick)
        state = simulation.run(state, 1)
        life = state.regions[region_index].life
        born = np.asarray(life.occupied) & (np.asarray(life.birth_tick) == tick)
        for where in map(tuple, np.argwhere(born)):
            parent = tuple(np.argwhere(ids_before == int(np.asarray(life.parent_id)[where]))[0])
            target = int(np.ravel_multi_index(where, born.shape))
            scales = np.exp(genome_before["log_mutation"][parent])
            for index, (name, _) in enumerate(layout.tensors):
                entries = layout.entries(name)
                steps = rng.normal_steps(
                    simulation.config.seed, rng.MUTATION, region_index, tick, target, entries, xp=np
                )
                scale = simulation.config.regions["grid"].organisms.mutation.meta_scale
                step = rng.step_size(scale if name == "log_mutation" else scales[index], xp=np) * steps
                limits = brain.LOG_SCALE_RANGE if name == "log_mutation" else (
                    -brain.WEIGHT_LIMIT, brain.WEIGHT_LIMIT
                )
                expected = np.clip(genome_before[name][parent] + step, *limits)
                np.testing.assert_allclose(np.asarray(life.genome[name])[where], expected, rtol=1e-5, atol=1e-6)
            # The scales are inherited and mutate themselves.
            child_scales = np.asarray(life.genome["log_mutation"])[where]
            assert not np.array_equal(child_scales, genome_before["log_mutation"][parent])
            assert np.abs(child_scales - genome_before["log_mutation"][parent]).max() < 2.0
            checked += 1
    assert checked >= 5


@pytest.mark.parametrize("rows, mutated", [(1, 1), (3, 1), (4, 2)])
def test_arrivals_written_a_few_rows_a_pass_equal_one_pass(rows, mutated):
    # The arriving rows of all tiles are listed one after the other, births first, and
    # written a few at a time, in as many passes as they need, a pass's births mutated a
    # few at a time, and rows from other tiles are read where they are. Here one, three
    # or four rows a pass (a pass then spans tiles, and a tile's rows span passes), their
    # births mutated one or two at a time, against the CPU's passes of 128 rows (one
    # pass a tick here).
    config = living_world(max_transfers=4, max_crossings=2)
    config["regions"]["grid"]["placement"] = ["a", "b"]
    world = parse_world(config)
    passes, one = assemble(world), assemble(world)  # changed below: not shared
    for life in passes.tick.lives:
        assert life.arrival_rows == hca.organisms.ARRIVAL_ROWS["cpu"]
        assert life.mutation_rows == hca.organisms.MUTATION_ROWS["cpu"]
        life.arrival_rows, life.mutation_rows = rows, mutated
    state, expected = passes.init(), one.init()
    most = 0
    for _ in range(12):
        before = [np.asarray(r.life.births) + np.asarray(r.life.moves) for r in state.regions]
        state, expected = passes.run(state, 5), one.run(expected, 5)
        assert state_digest(state) == state_digest(expected)
        after = [np.asarray(r.life.births) + np.asarray(r.life.moves) for r in state.regions]
        most = max(most, *(int((b - a).max()) for a, b in zip(before, after)))
    assert most >= 2 * 5  # some tiles took more than one row a tick


@pytest.fixture(scope="module")
def tiled_life():
    config = living_world(max_transfers=4, max_crossings=2)
    config["regions"]["grid"]["placement"] = ["a", "b"]
    return Life(parse_world(config).regions["grid"], 0)


def test_sense_writes_runs_of_axes_as_each_axis_alone(tiled_life):
    # Consecutive ticking axes are written in one pass over the halo: the same halo as
    # one axis at a time, and the slots of the others untouched.
    from hca.sense import sense

    life = tiled_life
    values = np.random.default_rng(0).normal(size=(*life.shape, 2 * life.ndim, life.layout.signals + 1))
    halo = jnp.asarray(values, jnp.float32)
    outgoing = jnp.asarray(np.random.default_rng(1).normal(size=(*life.shape, life.layout.signals + 1)), jnp.float32)
    for ticking in [(0, 1, 2), (1, 2), (0, 2, 3), (3,)]:
        together = sense(life, outgoing, halo, ticking)
        alone = halo
        for axis in ticking:
            alone = sense(life, outgoing, alone, (axis,))
        np.testing.assert_array_equal(np.asarray(together), np.asarray(alone))
        untouched = [slot for slot in range(2 * life.ndim) if slot // 2 not in ticking]
        np.testing.assert_array_equal(np.asarray(together)[..., untouched, :], values.astype(np.float32)[..., untouched, :])
        assert not np.array_equal(np.asarray(together), values.astype(np.float32))


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_listed_passes_take_every_target_once_births_first(tiled_life, data):
    # Each tile lists its targets first (in-tile indices, then `cells`: none); a pass
    # picks `rows` of the list of all tiles' wanted births in tile order, then all tiles'
    # other wanted arrivals in tile order, the last pass padded with no-cell targets,
    # and says how many of its rows are births; the per-tile tally counts them back.
    life = copy.copy(tiled_life)
    life.arrival_rows = data.draw(st.integers(1, 7), label="rows")
    tiles, cells, capacity = life.tiling.tiles, life.tiling.cells, life.capacity
    most = min(cells, capacity)
    counts = data.draw(st.lists(st.integers(0, most), min_size=math.prod(tiles), max_size=math.prod(tiles)))
    targets = np.full((len(counts), capacity), cells, np.int32)
    for t, n in enumerate(counts):
        targets[t, :n] = data.draw(st.permutations(range(cells)))[:n]
    births = np.asarray(data.draw(st.lists(st.booleans(), min_size=targets.size, max_size=targets.size)))
    births = births.reshape(targets.shape)
    # Only the wanted targets are listed (``arrive`` and ``arrive_sent`` each want theirs).
    wanted = np.asarray(data.draw(st.lists(st.booleans(), min_size=targets.size, max_size=targets.size)))
    wanted = wanted.reshape(targets.shape)
    listed = {"target": targets.reshape(*tiles, capacity), "keys": None}
    passes, pick = transfer._listed_passes(
        life, jax.tree.map(jnp.asarray, listed), jnp.asarray(births.reshape(*tiles, capacity)),
        jnp.asarray(wanted.reshape(*tiles, capacity)),
    )
    counts = [int(wanted[t, :n].sum()) for t, n in enumerate(counts)]
    assert int(passes) == -(-sum(counts) // life.arrival_rows)
    picked = [pick(index) for index in range(int(passes))]
    got = [(int(t), int(c)) for one in picked for t, c in zip(one["tile"], one["target"])]
    expected = [
        (t, int(c)) for kind in (True, False) for t in range(len(targets))
        for c, born, want in zip(targets[t], births[t], wanted[t]) if c < cells and want and born == kind
    ]
    assert got[: len(expected)] == expected
    assert all(c == cells for _, c in got[len(expected) :])  # the padding
    born = sum(int((births[t] & wanted[t] & (targets[t] < cells)).sum()) for t in range(len(targets)))
    assert [int(one["leading"]) for one in picked] == [
        min(max(born - index * life.arrival_rows, 0), life.arrival_rows) for index in range(int(passes))
    ]
    tally = transfer._tally_by_tile(life.tiling)
    counted = sum((np.asarray(tally(one["target"] < cells, one["tile"])) for one in picked), np.zeros(tiles, np.int64))
    np.testing.assert_array_equal(counted.reshape(-1), counts)


INTEGER_FIELDS = ("occupied", "energy", "age", "organism_id", "parent_id", "birth_tick",
                  "generation", "founder", "births", "deaths", "moves", "refused")
FLOAT_FIELDS = ("hidden", "signal", "halo")


# Every kind of task, on sites of every form; groups along an open axis and along a
# curled stretch-2 axis, the latter's groups shadowed in part by an earlier task.
TASKS = [
    {"kind": "product", "axis": "a", "n": 2, "levels": 5, "sites": {"at": [[0, 1, 0, 0], [0, 3, 1, 0]]},
     "amount": 35, "every": 5, "deadline": 3},
    {"kind": "logic", "sites": {"fraction": 0.3}, "amount": 40, "every": 3, "budget": 6},
    {"kind": "parity", "axis": "b", "n": 2, "sites": {"fraction": 0.6}, "amount": 30, "every": 4, "deadline": 3},
    {"kind": "function", "function": "table", "levels": 5, "sites": {"axis": "a", "start": 0, "stop": 1},
     "amount": 25, "every": 2, "deadline": 2},
    {"kind": "function", "function": "sine", "sites": {"fraction": 1.0}, "amount": 10, "every": 4, "budget": 2},
]


@pytest.mark.parametrize("tasks, learning, people, beach", [(False, True, False, False), (True, True, False, False),
                                                            (False, False, False, False), (True, True, True, True)],
                         ids=["life", "tasks", "learning-off", "people-beach"])
def test_reference_agrees_for_50_ticks(tasks, learning, people, beach):
    # Placed a and b: tiles of 2 cells, each accepting two transfers a tick, one of them
    # through each side of a placed axis; rows cross between tiles along an open and a
    # curled axis.
    config = living_world(max_transfers=2, max_crossings=1, learning=learning)
    config["regions"]["grid"]["placement"] = ["a", "b"]
    config["seed"] = 2  # a seed whose placed region refuses claims within 50 ticks
    if tasks:
        config["regions"]["grid"]["tasks"] = TASKS
    if people:  # the ring is interactive: a person asks at some of its cells, and pays
        config["regions"]["ring"]["tasks"] = [TASKS[1]]
        config["regions"]["ring"]["people"] = {}
    if beach:  # the placed grid's face c = 1 joined to 12 cells of the ring; organisms cross both ways
        config["beaches"] = [{"shores": [{"region": "grid", "at": {"c": 1}}, {"region": "ring", "at": {"x": [40, 52]}}],
                              "stretch": 1, "diffusion": 0.25, "cost": 3}]
    world = parse_world(config)
    simulation = build(world)
    state = simulation.init()
    reference = WorldReference(world, state)
    applier = Applier(simulation)
    activity = paid = 0
    asked_cells = np.arange(0, 64, 3)
    for tick in range(50):
        if people and tick in (5, 30):  # the second question replaces part of the first
            cells = asked_cells[tick // 30 :: 2]
            inputs = np.random.default_rng(tick).uniform(-1, 1, (len(cells), brain.TASK_INPUTS)).astype(np.float32)
            mask = np.zeros(64, bool)
            mask[cells] = True
            shown = np.zeros((64, brain.TASK_INPUTS), np.float32)
            shown[cells] = inputs
            state = applier.ask(state, 1, mask, shown, tick + 20)
            reference.ask(1, cells, inputs, tick + 20)
        if people and tick in (12, 20):
            for cell in np.flatnonzero(np.asarray(state.regions[1].life.occupied))[:3]:
                state, given, _ = applier.pay(state, 1, np.array([cell], np.int32), 150)
                assert given == reference.pay(1, cell, 150)
                paid += given
        state = simulation.run(state, 1)
        reference.step()
        if people and tick >= 5:
            mine, expected = state.regions[1].people, reference.lives[1].people
            np.testing.assert_array_equal(np.asarray(mine.answered_by), expected["answered_by"])
            np.testing.assert_allclose(np.asarray(mine.answer), expected["answer"], rtol=1e-3, atol=1e-4)
            assert int(mine.paid.sum()) == paid
        for index, region_state in enumerate(state.regions):
            np.testing.assert_array_equal(np.asarray(region_state.free_energy), reference.free[index])
            np.testing.assert_array_equal(np.asarray(region_state.dissipated), reference.dissipated[index])
            life, expected = region_state.life, reference.lives[index]
            for key in INTEGER_FIELDS:
                np.testing.assert_array_equal(np.asarray(getattr(life, key)), expected.lattice(key), key)
            tiles = np.ndim(life.died) - 2  # placed axes
            for key in expected.journal:  # (*tiles, J, cells) -> (J, cells of the region)
                journal = np.moveaxis(np.asarray(getattr(life, key)), tiles, 0)
                np.testing.assert_array_equal(journal.reshape(journal.shape[0], -1), expected.journal[key], key)
            occupied = np.asarray(life.occupied)
            for key in FLOAT_FIELDS:
                actual = np.asarray(getattr(life, key))
                np.testing.assert_allclose(actual, expected.lattice(key), rtol=1e-3, atol=1e-4, err_msg=key)
            plastic = np.asarray(life.plastic)[occupied]  # empty cells' are stale
            np.testing.assert_allclose(plastic, expected.lattice("plastic")[occupied], rtol=1e-3, atol=1e-4)
            for name, tensor in life.genome.items():
                actual = np.asarray(tensor)[occupied]
                wanted = expected.genome[name].reshape(np.shape(tensor))[occupied]
                np.testing.assert_allclose(actual, wanted, rtol=1e-5, atol=1e-6, err_msg=name)
            activity = int(life.births.sum()) + int(life.moves.sum())
            np.testing.assert_array_equal(np.asarray(region_state.injected), reference.injected[index])
            if beach:
                np.testing.assert_array_equal(np.asarray(region_state.beach_in), reference.beach_in[index])
                np.testing.assert_array_equal(np.asarray(region_state.beach_out), reference.beach_out[index])
            if expected.tasks is not None:
                ledger = region_state.tasks
                counts = np.stack([np.asarray(getattr(ledger, key)) for key in COUNTERS], -1)
                np.testing.assert_array_equal(counts.reshape(expected.tasks.counts.shape), expected.tasks.counts)
    assert activity > 0 and int(state.regions[0].life.refused.sum()) > 0
    if beach:  # energy crossed both ways, free and in organisms that crossed
        np.testing.assert_array_equal(np.asarray(state.carried), reference.carried)
        np.testing.assert_array_equal(np.asarray(state.crossed), reference.crossed)
        assert (reference.carried > 0).all()
        assert (reference.crossed > 0).all(), reference.crossed
    if people:  # answers were given to both questions, and payments took energy in
        answered = np.asarray(state.regions[1].people.answered_by) != 0
        assert answered[asked_cells[::2]].any() and answered[asked_cells[1::2]].any() and paid > 0
    if tasks:  # every task posed and paid something
        counts = reference.lives[0].tasks.counts.sum(axis=0)
        assert (counts[:, 0] > 0).all() and (counts[:, 3] > 0).all(), counts
        assert reference.lives[0].tasks.shared > 0  # budgets were shared out


def test_founders_genomes_drawn_from_the_seed():
    world = parse_world(living_world())
    state = build(world).init()
    region = world.regions["grid"]
    life = state.regions[0].life
    layout = Life(region, 0).layout
    cells = np.arange(region.cells).reshape(region.shape)
    expected_occupied = rng.bernoulli(LIFE["density"], world.seed, rng.FOUNDERS, 0, cells, xp=np)
    np.testing.assert_array_equal(np.asarray(life.occupied), expected_occupied)
    start, stop = layout.offsets()["body_w"]
    entries = np.arange(start, stop).reshape(layout.shapes()["body_w"])
    cell = (1, 2, 0, 0)
    flat = int(np.ravel_multi_index(cell, region.shape))
    expected = LIFE["brain"]["init_scale"] * rng.normal(world.seed, rng.GENOME, 0, flat, entries, xp=np)
    np.testing.assert_allclose(np.asarray(life.genome["body_w"])[cell], expected, rtol=1e-6)
    # The head's weights are stored (outputs, hidden) but numbered as (hidden, outputs):
    # output o reads hidden unit h through entry start + h * outputs + o.
    start, stop = layout.offsets()["head_w"]
    entries = np.arange(start, stop).reshape(layout.hidden, layout.outputs).T
    assert layout.shapes()["head_w"] == (layout.outputs, layout.hidden)
    expected = LIFE["brain"]["init_scale"] * rng.normal(world.seed, rng.GENOME, 0, flat, entries, xp=np)
    np.testing.assert_allclose(np.asarray(life.genome["head_w"])[cell], expected, rtol=1e-6)
    assert np.allclose(np.asarray(life.genome["log_mutation"]), np.log(LIFE["mutation"]["initial_scale"]))


def leaves(state):
    return [np.asarray(leaf) for leaf in jax.tree.leaves(state)]


def test_bitwise_determinism_and_no_retrace(simulation):
    simulation = assemble(simulation.config)  # its own: no other test's calls counted
    first = simulation.run(simulation.init(), 120)
    second = simulation.init()
    for n in (7, 50, 63):
        second = simulation.run(second, n)
    for a, b in zip(leaves(first), leaves(second)):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    assert simulation.run._cache_size() == 1
    other = simulation.run(simulation.init(seed=99), 120)
    assert not np.array_equal(
        np.asarray(first.regions[0].life.energy), np.asarray(other.regions[0].life.energy)
    )


@pytest.mark.slow
def test_two_processes_that_compile_the_default_world_apart_agree_bitwise(worlds_dir):
    """A resumed run is a new process that compiles its step again, and that compilation
    must make the same floats. On the CPU it does; XLA GPU chooses some kernels by
    timing them unless its autotuning is off (``hca._xla.NO_AUTOTUNING``). The two run
    side by side, so that such timings would differ; 300 ticks, since on an H200 two
    such runs with autotuning still agreed at tick 160 and differed by 224."""
    script = ("import sys, hca; from hca.checkpoint import state_digest; "
              "s = hca.build(hca.load_world(sys.argv[1])); print(state_digest(s.run(s.init(), 300)))")
    # No compilation cache; on a GPU, memory taken as needed (the two share it).
    env = {name: value for name, value in os.environ.items() if name != "JAX_COMPILATION_CACHE_DIR"}
    env["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
    runs = [subprocess.Popen([sys.executable, "-c", script, str(worlds_dir / "default.yaml")], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    printed = [run.communicate(timeout=900) for run in runs]
    assert all(run.returncode == 0 for run in runs), [err[-2000:] for _, err in printed]
    first, second = (out.split()[-1] for out, _ in printed)
    assert first == second


def test_slot_exists_matches_the_neighbour_tables(worlds_dir):
    """Which slots have a neighbour, computed from coordinates in the step, is what the
    neighbour tables say: none past an open end or along a size-1 axis; the beach slot
    where the shoreline has a partner."""
    worlds = [parse_world(living_world()), hca.load_world(worlds_dir / "cyberspace.yaml")]
    lives = [life for world in worlds for life in build(world).tick.lives if life is not None]
    assert any(life.shoreline is not None for life in lives)
    for life in lives:
        coordinates = np.indices(life.shape)
        expected = []
        for number, axis in enumerate(life.region.axes):
            table = geometry.neighbour_table(axis)
            expected += [table[sign][coordinates[number]] >= 0 for sign in (0, 1)]
        if life.shoreline is not None:
            expected.append(life.shoreline.on)
        np.testing.assert_array_equal(np.asarray(life.slot_exists()), np.stack(expected, axis=-1))


def test_the_step_embeds_no_constant_of_the_lattices_size():
    """Per-cell tables that follow from the geometry (which slots exist, their features)
    are computed in the step, where XLA fuses them into their readers: as constants they
    were read from memory every tick (38 MB a tick on a 131,072-cell world). And the halo
    is refreshed in place, never copied whole (as it was at the end of a branch of the
    stretch schedule)."""
    world = living_world()
    world["regions"] = {
        "tiles": {
            "axes": [
                {"name": "p", "size": 4, "stretch": 2},
                {"name": "q", "size": 4, "stretch": 1, "curled": True},
                {"name": "x", "size": 8, "stretch": 1},
                {"name": "y", "size": 8, "stretch": 1, "curled": True},
            ],
            "placement": ["p", "q"],
            "energy": world["regions"]["grid"]["energy"],
            "organisms": world["regions"]["grid"]["organisms"],
        }
    }
    simulation = build(parse_world(world))
    text = simulation.run.lower(simulation.init(), 1).compile().as_text()
    shapes = re.findall(r"\[([\d,]*)\]\{[^}]*\} constant\(", text)
    sizes = [math.prod(int(n) for n in shape.split(",")) for shape in shapes if shape]
    # The largest table left is per tile: each slot's neighbour in the tile (8 x 64).
    assert sizes and max(sizes) < 4 * 4 * 8 * 8
    assert halo_copies(simulation, text) == [0]
    # Which slots exist becomes one table of floats (for the slots' inputs and their
    # pooling), made once a run: not a second one, nor a copy of it in another layout.
    assert float_slot_tables(text, 4 * 4 * 8 * 8 * 8) == 1
    # The arriving rows are written by scatters at distinct targets, replacing what is
    # there: the step is deterministic on GPU too.
    assert set(scatters(text)) == {"replace"}
    # The decision's arithmetic (its rates are floors of sigmoids) is made once, in 3
    # kernels, for all its readers: it was computed again inside 13. The death journal's
    # rows are written from who died, not from that arithmetic again in each of the
    # (one-threaded) kernels that write them.
    assert kernels_computing(text, "floor") <= 3
    journal = simulation.tick.lives[0].journal
    writes = journal_writes(text, f"4,4,{journal},64")
    assert len(writes) == 3
    assert all(not ops & {"multiply", "floor", "logistic", "tanh"} for ops in writes), writes


def computations(text: str) -> dict[str, str]:
    """The compiled program ``text``'s computations by name, each its body's text."""
    from hca.parallel import _computations

    return {name: "\n".join(lines) for name, lines in _computations(text).items()}


def float_slot_tables(text: str, size: int) -> int:
    """How many arrays of ``size`` floats converted from booleans (the slots that exist:
    one per cell and slot) the compiled program ``text`` makes, copies of them included."""
    bodies = computations(text)
    converts = set()
    for name, body in bodies.items():
        for shape, operand in re.findall(r"= f32\[([\d,]*)\]\{[^}]*\} convert\((%\S+)\)", body):
            boolean = re.search(rf"{re.escape(operand)} = pred\[", body)
            if boolean and math.prod(int(n) for n in shape.split(",") if n) == size:
                converts.add(name)
    made = re.findall(r"%([\w.\-]+) = f32\[([\d,]*)\]\{[^}]*\} fusion\(.*?calls=%([\w.\-]+)", text)
    tables = {
        name for name, shape, called in made
        if called in converts and math.prod(int(n) for n in shape.split(",") if n) == size
    }
    copies = re.findall(r"= f32\[[\d,]*\]\{[^}]*\} (?:copy|fusion)\(%([\w.\-]+)\)", text)
    return len(tables) + sum(operand in tables for operand in copies)


def kernels_computing(text: str, operation: str) -> int:
    """How many kernels of the compiled program ``text`` hold an ``operation``."""
    bodies = computations(text)
    called = re.findall(r"= \S+ fusion\(.*?calls=%([\w.\-]+)", text)
    return sum(f" {operation}(" in bodies[name] for name in called)


def journal_writes(text: str, shape: str) -> list[set[str]]:
    """The operations of each kernel of the compiled program ``text`` that writes a slice
    of an integer array of ``shape`` (e.g. "4,4,32,64") in place."""
    bodies = computations(text)
    out = []
    for called in re.findall(rf"= s(?:32|64)\[{shape}\]\{{[^}}]*\}} fusion\(.*?calls=%([\w.\-]+)", text):
        body = bodies[called]
        if re.search(r"ROOT \S+ = \S+ dynamic-update-slice\(", body):
            out.append(set(re.findall(r"= \S+ ([a-z\-]+)\(", body)))
    return out


def scatters(text: str) -> tuple[str, ...]:
    """How each scatter of the compiled program ``text`` writes its updates: "replace",
    or "combine" (an add, a max, ...: with repeated indices, on GPU, in no fixed order)."""
    bodies = computations(text)
    return tuple(
        "replace" if re.search(r"ROOT \S+ = \S+ parameter\(1\)", bodies[name]) else "combine"
        for name in re.findall(r" scatter\(.*?to_apply=%([\w.\-]+)", text)
    )


def test_scatters_tells_a_scatter_that_combines():
    at = jnp.array([1, 1, 2])
    for update, kind in ((lambda x: x.at[at].add(1.0), "combine"), (lambda x: x.at[at].set(1.0), "replace")):
        assert scatters(jax.jit(update).lower(jnp.zeros(4, jnp.float32)).compile().as_text()) == (kind,)


def halo_copies(simulation, text: str) -> list[int]:
    """Per living region, how many copies of its whole halo (on a mesh, a device's share
    of it) the compiled step ``text`` makes."""
    counts = []
    for region in simulation.abstract_state().regions:
        if region.life is not None:
            tensor = region.life.halo
            halo = ",".join(map(str, tensor.sharding.shard_shape(tensor.shape)))
            assert f"f32[{halo}]" in text
            counts.append(len(re.findall(rf"= f32\[{halo}\]\{{[^}}]*\}} copy\(", text)))
    return counts


@pytest.mark.parametrize(
    "name, life, sources",
    [
        ("huge mutation", {"mutation": {"initial_scale": 7.0, "meta_scale": 5.0}}, None),
        ("zero inflow", {}, []),
        ("saturating inflow", {"absorb": 400}, [{"kind": "uniform", "amount": 100000}]),
        ("fast learning", {"learning_rate": 7.0, "modulator_scale": 0.001}, None),
    ],
)
def test_floats_stay_finite_under_extreme_settings(name, life, sources):
    world = living_world(**life)
    if name == "saturating inflow":
        world["seed"] = 1  # founders that reproduce in the grid (with seed 4 they never do)
    if sources is not None:
        for region in world["regions"].values():
            region["energy"]["sources"] = sources
    simulation = build(parse_world(world))
    state = simulation.run(simulation.init(), 600)
    for leaf in leaves(state):
        if np.issubdtype(leaf.dtype, np.floating):
            assert np.isfinite(leaf).all(), name
    assert simulation.ledger(state)["world"]["balanced"]
    if name == "saturating inflow":
        life_state = state.regions[0].life
        energy = np.asarray(life_state.energy)[np.asarray(life_state.occupied)]
        assert energy.size and energy.max() >= LIFE["max_energy"] - 5  # full, less one metabolism
