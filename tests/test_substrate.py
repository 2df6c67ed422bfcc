"""The substrate's physics: exact ledger, stretch as time dilation, reference agreement."""

from __future__ import annotations

import copy

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hca.config import parse_world
from hca.world import assemble, build
from reference import Reference


def region(axes, placement=(), **energy):
    energy.setdefault("initial", {"mean": 500, "jitter": 300})
    return {"axes": axes, "energy": energy, "placement": list(placement)}


def axis(name, size, stretch=1, curled=False, **extra):
    return {"name": name, "size": size, "stretch": stretch, "curled": curled, **extra}


SOURCES = [
    {"kind": "uniform", "amount": 2, "every": 3},
    {"kind": "band", "axis": "b", "start": 0, "stop": 1, "amount": 7},
    {"kind": "spots", "fraction": 0.2, "amount": 11},
    {"kind": "rain", "probability": 0.05, "amount": 90},
]

# Open, curled, size-1, curled size-2 and curled size-1 axes with mixed stretches, over
# several regions, one of them placed (counters per tile); the last region is pushed
# against its capacity.
MIXED = {
    "name": "mixed_axes",
    "seed": 3,
    "regions": {
        "open_and_curled": region(
            [axis("a", 3, 1), axis("b", 4, 2, True), axis("c", 1, 3, True), axis("d", 2, 5, True)],
            diffusion=0.11,
            decay=0.01,
            sources=SOURCES,
            placement=["a", "b"],
        ),
        "line": region([axis("a", 5, 3)], diffusion=0.3, decay=0.2, sources=[SOURCES[0]]),
        "ring": region(
            [axis("b", 6, 1, True, diffusion=0.45), axis("z", 1)],
            diffusion=0.0,
            capacity=900,
            sources=[{"kind": "uniform", "amount": 60}],
        ),
    },
}


def ledger_trace(simulation, state, ticks):
    """Per-tick (tick, total, injected, dissipated, initial) for every region, on device."""

    def one(state, _):
        state = simulation.step(state)
        rows = jnp.stack(
            [
                jnp.stack(
                    [
                        region.free_energy.sum(dtype=jnp.int64),
                        region.injected.sum(),
                        region.dissipated.sum(),
                        region.initial_total,
                    ]
                )
                for region in state.regions
            ]
        )
        return state, rows

    return jax.lax.scan(one, state, length=ticks)


def test_ledger_exact_every_tick_for_2000_ticks():
    simulation = build(parse_world(MIXED))
    state = simulation.init()
    state, rows = jax.jit(ledger_trace, static_argnums=(0, 2))(simulation, state, 2000)
    rows = np.asarray(rows)
    total, injected, dissipated, initial = np.moveaxis(rows, -1, 0)
    assert np.array_equal(total, initial + injected - dissipated)
    # Tick by tick: total(t+1) = total(t) + injected(t) - dissipated(t).
    previous = np.concatenate([initial[:1], total[:-1]])
    step_in = np.diff(np.concatenate([np.zeros((1, rows.shape[1]), np.int64), injected]), axis=0)
    step_out = np.diff(np.concatenate([np.zeros((1, rows.shape[1]), np.int64), dissipated]), axis=0)
    assert np.array_equal(total, previous + step_in - step_out)
    # Energy really flowed in and out, and the capped region sits at its capacity.
    assert (injected[-1] > 0).all() and (dissipated[-1, :2] > 0).all()
    assert int(np.asarray(state.regions[2].free_energy).max()) <= 2 * 900
    assert simulation.ledger(state)["world"]["balanced"]


def test_diffusion_conserves_and_never_goes_negative_at_the_limit():
    # Rates that together send exactly a cell's whole energy when every axis ticks.
    world = parse_world(
        {
            "regions": {
                "r": region(
                    [axis("a", 3, 1, True), axis("b", 2, 2, True), axis("c", 4, 1)],
                    diffusion=0.2,
                )
            }
        }
    )
    simulation = build(world)
    state = simulation.init()
    start = simulation.ledger(state)["world"]["total"]
    for _ in range(20):
        state = simulation.run(state, 1)
        assert int(np.asarray(state.regions[0].free_energy).min()) >= 0
        assert simulation.ledger(state)["world"]["total"] == start


def marginals(free):
    free = np.asarray(free)
    return [free.sum(axis=tuple(a for a in range(free.ndim) if a != k)) for k in range(free.ndim)]


def test_energy_crosses_an_axis_only_on_its_ticks():
    world = parse_world(
        {
            "regions": {
                "r": region(
                    [axis("one", 4, 1), axis("two", 5, 2, True), axis("three", 3, 3)],
                    diffusion=0.1,
                )
            }
        }
    )
    simulation = build(world)
    state = simulation.init()
    stretches = (1, 2, 3)
    for tick in range(24):
        before = marginals(state.regions[0].free_energy)
        state = simulation.run(state, 1)
        after = marginals(state.regions[0].free_energy)
        for k, stretch in enumerate(stretches):
            moved = not np.array_equal(before[k], after[k])
            assert moved == (tick % stretch == 0), (tick, k)


def test_reference_agrees_exactly_for_100_ticks():
    world = parse_world(MIXED)
    simulation = build(world)
    state = simulation.init()
    reference = Reference(world)
    for _ in range(100):
        state = simulation.run(state, 1)
        reference.step()
        for index, region_state in enumerate(state.regions):
            np.testing.assert_array_equal(np.asarray(region_state.free_energy), reference.free[index])
            np.testing.assert_array_equal(np.asarray(region_state.injected), reference.injected[index])
            np.testing.assert_array_equal(np.asarray(region_state.dissipated), reference.dissipated[index])
    assert int(state.tick) == reference.tick == 100


def test_initial_state_matches_reference():
    world = parse_world(MIXED)
    state = build(world).init(seed=12345)
    reference = Reference(world, seed=12345)
    for index, region_state in enumerate(state.regions):
        np.testing.assert_array_equal(np.asarray(region_state.free_energy), reference.free[index])


def arrays(state):
    return [np.asarray(leaf) for leaf in jax.tree.leaves(state)]


def test_same_seed_bitwise_same_state_and_different_seed_differs():
    world = parse_world(MIXED)
    simulation = build(world)
    first = simulation.run(simulation.init(seed=5), 300)
    second = simulation.run(simulation.init(seed=5), 300)
    for a, b in zip(arrays(first), arrays(second)):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    other = simulation.run(simulation.init(seed=6), 300)
    assert not all(np.array_equal(a, b) for a, b in zip(arrays(first), arrays(other)))
    # Randomness enters through the initial jitter and through spots and rain.
    assert not np.array_equal(
        np.asarray(simulation.init(seed=5).regions[0].free_energy),
        np.asarray(simulation.init(seed=6).regions[0].free_energy),
    )


def test_run_in_pieces_equals_run_in_one_go():
    simulation = build(parse_world(MIXED))
    whole = simulation.run(simulation.init(), 97)
    pieces = simulation.init()
    for n in (1, 30, 2, 64):
        pieces = simulation.run(pieces, n)
    for a, b in zip(arrays(whole), arrays(pieces)):
        assert np.array_equal(a, b)


def test_run_does_not_retrace():
    simulation = assemble(parse_world(MIXED))  # its own: no other test's calls counted
    state = simulation.init()
    for n in (1, 5, 17, 5, 1000):
        state = simulation.run(state, n)
    assert simulation.run._cache_size() == 1
    assert int(state.tick) == 1028


def test_state_dtypes():
    state = build(parse_world(MIXED)).init()
    assert state.tick.dtype == jnp.int32 and state.seed.dtype == jnp.uint32
    for region_state in state.regions:
        assert region_state.free_energy.dtype == jnp.int32
        assert region_state.injected.dtype == jnp.int64
        assert region_state.dissipated.dtype == jnp.int64


@pytest.mark.parametrize("name", ["default.yaml", "mixed.yaml"])
def test_shipped_worlds_balance(worlds_dir, name):
    from hca.config import load_world

    simulation = build(load_world(worlds_dir / name))
    state = simulation.run(simulation.init(), 200)
    ledger = simulation.ledger(state)
    assert ledger["world"]["balanced"] and ledger["tick"] == 200
    assert all(region["balanced"] for region in ledger["regions"].values())


def test_a_world_built_again_is_the_simulation_built_before():
    from hca import world as world_module

    config = parse_world(MIXED)
    first = build(config)
    assert build(parse_world(copy.deepcopy(MIXED))) is first  # an equal world, parsed again
    assert assemble(config) is not first
    # Another seed: the same functions (compiled once), its own initial state.
    other = build(parse_world({**MIXED, "seed": MIXED["seed"] + 1}))
    assert other is not first and other.config.seed == MIXED["seed"] + 1
    assert (other.run, other.step, other.measure, other.tick) == (first.run, first.step, first.measure, first.tick)
    assert int(other.init().seed) == MIXED["seed"] + 1 and int(first.init().seed) == MIXED["seed"]
    assert build(parse_world({**MIXED, "seed": MIXED["seed"] + 1})) is other
    # Only the last few are kept: after as many other worlds, the first is built anew.
    for index in range(world_module.BUILT_KEPT):
        build(parse_world({**MIXED, "name": f"other{index}"}))
    again = build(config)
    assert again is not first and again.run is not first.run
