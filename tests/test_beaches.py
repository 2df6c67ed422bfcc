"""Beaches between regions: energy crosses on the beach's ticks, exactly, with a
ledger per region that counts the flows and a world ledger that needs none; the same
on 1 and 8 devices, across a resume, and against the NumPy reference."""

from __future__ import annotations

import copy
import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import WORLDS
from hca.checkpoint import state_digest
from hca.cli import main
from hca.config import parse_world
from hca.parallel import make_mesh
from hca.runner import Run
from hca.phylogeny import read_journals
from hca.world import build, measure_state
from reference import Reference
from test_life import halo_copies, living_world

import yaml


def mixed_with_beaches():
    world = yaml.safe_load((WORLDS / "mixed.yaml").read_text())
    world["regions"]["cpu"]["placement"] = ["socket"]
    world["beaches"] = [
        # Two SMs' last warp of every GPU (16 cells) to the CPU's thread-0 face (16 cells).
        {"name": "pcie", "shores": [{"region": "gpu", "at": {"sm": [2, 4], "warp": 7}},
                                    {"region": "cpu", "at": {"thread": 0}}], "stretch": 8, "diffusion": 0.2},
        {"shores": [{"region": "cpu", "at": {"thread": 1, "core": [0, 4]}},
                    {"region": "plane", "at": {"y": 3, "x": [4, 12]}}], "stretch": 3},
    ]
    return world


def test_energy_crosses_on_the_beach_ticks_as_the_reference_says():
    world = parse_world(mixed_with_beaches())
    simulation = build(world)
    state = simulation.init()
    reference = Reference(world)
    before = np.zeros((2, 2), np.int64)
    for tick in range(49):
        state = simulation.run(state, 1)
        reference.step()
        for index, region in enumerate(state.regions):
            np.testing.assert_array_equal(np.asarray(region.free_energy), reference.free[index])
            np.testing.assert_array_equal(np.asarray(region.injected), reference.injected[index])
            np.testing.assert_array_equal(np.asarray(region.dissipated), reference.dissipated[index])
            np.testing.assert_array_equal(np.asarray(region.beach_in), reference.beach_in[index])
            np.testing.assert_array_equal(np.asarray(region.beach_out), reference.beach_out[index])
        carried = np.asarray(state.carried)
        np.testing.assert_array_equal(carried, reference.carried)
        # Only on its ticks does a beach carry anything (and then it does, both ways).
        for number, stretch in enumerate((8, 3)):
            moved = carried[number] != before[number]
            assert moved.all() if tick % stretch == 0 else not moved.any(), (tick, number)
        before = carried
        ledger = simulation.ledger(state)
        assert ledger["world"]["balanced"] and all(r["balanced"] for r in ledger["regions"].values())
        flows = {name: (r["beach_in"], r["beach_out"]) for name, r in ledger["regions"].items()}
        assert sum(i for i, _ in flows.values()) == sum(o for _, o in flows.values()) == carried.sum()
    assert ledger["beaches"]["pcie"]["carried"][0] > 0 and ledger["beaches"]["beach_1"]["carried"][1] > 0


def crossing_world():
    """The grid's face a = 0 (8 cells) joined to 8 cells of the ring, every other tick:
    organisms (with the same brain on both sides) cross both ways."""
    config = living_world()
    config["beaches"] = [{"shores": [{"region": "grid", "at": {"a": 0}}, {"region": "ring", "at": {"x": [0, 8]}}],
                          "stretch": 2, "diffusion": 0.3}]
    return config


def test_ledgers_balance_every_tick_with_life_crossing():
    simulation = build(parse_world(crossing_world()))

    def one(state, _):
        before = state.crossed
        state = simulation.step(state)
        measured = measure_state(simulation.config, state)
        regions = measured["regions"]
        checks = jnp.stack([measured["world"]["balanced"], *(r["balanced"] for r in regions.values()),
                            sum(r["beach_in"] for r in regions.values()) == state.carried.sum(),
                            sum(r["beach_out"] for r in regions.values()) == state.carried.sum()])
        return state, (checks, (state.crossed - before).sum())

    state, (checks, crossed) = jax.jit(lambda s: jax.lax.scan(one, s, length=2000))(simulation.init())
    assert np.asarray(checks).all()
    crossed = np.asarray(crossed)
    # Organisms crossed both ways, and only on the beach's ticks.
    assert (np.asarray(state.crossed) > 10).all(), state.crossed
    assert crossed[1::2].sum() == 0 and crossed[0::2].sum() == np.asarray(state.crossed).sum()
    assert int(state.carried.sum()) > 0 and int(state.regions[0].life.births.sum()) > 0


def test_organisms_sense_across_and_keep_unique_ids_and_lineages(tmp_path):
    world = parse_world(crossing_world())
    run = Run.start(world, tmp_path / "run", 600, report_every=100, checkpoint_every=600, keep=1)
    run.advance(handle_signals=False)
    state, tick = run.state, run.simulation.tick
    grid, ring = tick.lives
    assert (grid.beach_slot, ring.beach_slot) == (8, 2)
    # A cell on the beach senses its partner's signal and occupancy through the beach slot.
    regions = tick.sense(state.regions, jnp.asarray(tick.branch_of_phase)[int(state.tick) % tick.schedule.period])
    halo = np.asarray(regions[0].life.halo)[0, ..., grid.beach_slot, :].reshape(8, -1)
    partner = state.regions[1].life
    occupied = np.asarray(partner.occupied)[:8, None].astype(np.float32)
    expected = np.concatenate([np.asarray(partner.signal)[:8] * occupied, occupied], axis=1)
    assert int(state.tick) % 2 == 0 and occupied.any()
    np.testing.assert_array_equal(halo, expected)
    # Ids are unique in the world, and lineages cross: a region holds the other's.
    ids = np.concatenate([np.asarray(r.life.organism_id)[np.asarray(r.life.occupied)] for r in state.regions])
    assert len(np.unique(ids)) == len(ids)
    founders = [np.asarray(r.life.founder)[np.asarray(r.life.occupied)] for r in state.regions]
    assert (founders[0] >= grid.cells).any() or (founders[1] < grid.cells).any()
    # The phylogeny holds everyone once, every parent recorded, deaths of known organisms.
    born, died = read_journals(tmp_path / "run" / "phylogeny")
    assert len(np.unique(born["id"])) == len(born["id"])
    parents = born["parent"][born["generation"] > 0]
    assert np.isin(parents, born["id"]).all() and np.isin(died["id"], born["id"]).all()
    assert set(born["region"][np.isin(born["id"], ids)]) == {0, 1}
    # Some of the living were born of a parent born in the other region.
    where = dict(zip(born["id"].tolist(), born["region"].tolist()))
    mixed = [where[p] != r for p, r in zip(born["parent"].tolist(), born["region"].tolist()) if p > 0]
    assert any(mixed)


def test_one_and_eight_devices_are_bitwise_equal_with_beaches():
    from hca.parallel import collectives

    config = living_world()
    config["regions"]["grid"]["placement"] = ["a", "b", "c"]
    config["seed"] = 2
    config["beaches"] = [{"shores": [{"region": "grid", "at": {"c": 1}}, {"region": "ring", "at": {"x": [10, 22]}}],
                          "stretch": 4}]
    world = parse_world(config)
    one, eight = build(world), build(world, make_mesh(world, 8))
    reference, spread = one.run(one.init(), 120), eight.run(eight.init(), 120)
    assert state_digest(reference) == state_digest(spread)
    # Energy and organisms crossed between regions placed on different devices.
    assert int(reference.carried.sum()) > 0 and (np.asarray(reference.crossed) > 0).all(), reference.crossed
    # The halos, beach slots included, are written in place, never copied: on one device
    # and on a mesh, whose halo exchanges sit in the conditional of their axis.
    assert halo_copies(one, one.run.lower(one.abstract_state(), 1).compile().as_text()) == [0, 0]
    assert halo_copies(eight, eight.run.lower(eight.abstract_state(), 1).compile().as_text()) == [0, 0]
    # Nothing crosses devices outside the schedule's branches; the beach adds messages
    # only to the branch of its own ticks (phase 0), not to the branch with the same
    # ticking axes without it (phase 6).
    every_tick, per_branch = collectives(eight, eight.abstract_state())
    assert every_tick == []
    schedule = eight.schedule
    with_beach, without = schedule.branch_of_phase[0], schedule.branch_of_phase[6]
    assert schedule.ticking[with_beach] == schedule.ticking[without]
    assert schedule.beaches[with_beach] == (0,) and schedule.beaches[without] == ()
    assert len(per_branch.get(with_beach, [])) > len(per_branch.get(without, []))


def test_resume_with_beaches_is_bitwise(tmp_path):
    world = mixed_with_beaches()
    world["run"] = {"report_every": 10, "checkpoint_every": 20}
    whole = Run.start(parse_world(world), tmp_path / "whole", 60)
    whole.advance(handle_signals=False)
    cut = Run.start(parse_world(world), tmp_path / "cut", 40)
    cut.advance(handle_signals=False)
    resumed = Run.resume(tmp_path / "cut", steps=20)
    resumed.advance(handle_signals=False)
    assert state_digest(resumed.state) == state_digest(whole.state)
    lines = [json.loads(line) for line in (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["beaches"]["pcie"]["carried"] == [int(v) for v in np.asarray(whole.state.carried[0])]
    assert "beach_in" in lines[-1]["regions"]["cpu"] and lines[-1]["ledger"]["balanced"]


def test_resume_with_organisms_crossing_is_bitwise_across_layouts(tmp_path):
    # The grid is placed: written on one device, resumed spread over 8 from a copy of
    # the run that lost its last checkpoint (as if killed after tick 200).
    world = crossing_world()
    world["regions"]["grid"]["placement"] = ["a", "b", "c"]
    world["run"] = {"report_every": 50, "checkpoint_every": 100}
    whole = Run.start(parse_world(world), tmp_path / "whole", 300)
    whole.advance(handle_signals=False)
    shutil.copytree(tmp_path / "whole", tmp_path / "cut")
    shutil.rmtree(tmp_path / "cut" / "checkpoints" / "300")
    resumed = Run.resume(tmp_path / "cut", devices=8)
    assert resumed.simulation.mesh is not None and int(resumed.state.tick) == 200
    resumed.advance(handle_signals=False)
    assert state_digest(resumed.state) == state_digest(whole.state)
    assert (np.asarray(whole.state.crossed) > 0).all()
    assert (tmp_path / "whole" / "phylogeny.csv").read_text() == (tmp_path / "cut" / "phylogeny.csv").read_text()
    # Metrics: integers the same (float means differ in the last bits across device counts).
    lines = [[json.loads(line) for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
             for run in ("whole", "cut")]
    assert [(line["tick"], line["ledger"], line["beaches"]) for line in lines[0]] == \
           [(line["tick"], line["ledger"], line["beaches"]) for line in lines[1]]


BAD = [
    ({"shores": [{"region": "moon"}, {"region": "plane"}]}, "beaches[0].shores[0].region: expected one of the regions"),
    ({"shores": [{"region": "gpu", "at": {"core": 1}}, {"region": "plane"}]},
     "beaches[0].shores[0].at.core: expected one of the axes of 'gpu'"),
    ({"shores": [{"region": "plane", "at": {"x": 16}}, {"region": "cpu"}]},
     "beaches[0].shores[0].at.x: expected a coordinate below 16"),
    ({"shores": [{"region": "plane", "at": {"x": [3, 2]}}, {"region": "cpu"}]},
     "beaches[0].shores[0].at.x: expected a range [start, stop) with start < stop <= 16"),
    ({"shores": [{"region": "plane", "at": {"x": 0}}, {"region": "cpu"}]},
     "beaches[0].shores: expected blocks of the same number of cells, got 16 and 32"),
    ({"shores": [{"region": "plane"}, {"region": "plane"}]}, "beaches[0].shores: expected two different regions"),
    ({"shores": [{"region": "plane"}]}, "beaches[0].shores: "),
    ({"shores": [{"region": "plane", "at": {"y": 0}}, {"region": "cpu", "at": {"thread": 0}}], "stretch": 0},
     "beaches[0].stretch: "),
    ({"shores": [{"region": "plane", "at": {"y": 0}}, {"region": "cpu", "at": {"thread": 0}}], "diffusion": 0.9},
     "beaches[0].diffusion: expected a rate that"),
    ({"shores": [{"region": "plane", "at": {"y": 0}}, {"region": "cpu", "at": {"thread": 0}}],
      "brains": [{"hidden": 8}, {"hidden": 16}]},
     "beaches[0].shores: expected regions whose organisms' brains have the same sizes"),
]


@pytest.mark.parametrize("beach, message", BAD, ids=range(len(BAD)))
def test_bad_beaches_exit_2_with_key_paths(tmp_path, capsys, beach, message):
    world = yaml.safe_load((WORLDS / "mixed.yaml").read_text())
    beach = dict(beach)
    for shore, brain in zip(beach["shores"], beach.pop("brains", [])):  # organisms on both sides
        world["regions"][shore["region"]]["organisms"] = {"brain": brain}
    world["beaches"] = [beach]
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(world))
    assert main(["run", str(path), "--steps", "5", "--out", str(tmp_path / "run")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_a_cell_on_two_beaches_is_refused(capsys, tmp_path):
    world = mixed_with_beaches()
    world["beaches"].append(copy.deepcopy(world["beaches"][1]))
    world["beaches"][2]["shores"][1]["at"] = {"y": 5, "x": [4, 12]}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(world))
    assert main(["validate", str(path)]) == 2
    assert "beaches[2].shores[0]: cell 1 of 'cpu' is on two beaches (beach_1 and beach_2)" in capsys.readouterr().err


def test_validate_and_inspect_describe_beaches(tmp_path, capsys):
    path = tmp_path / "world.yaml"
    path.write_text(yaml.safe_dump(mixed_with_beaches()))
    assert main(["validate", str(path)]) == 0
    out = capsys.readouterr().out
    assert "beach pcie: gpu (sm 2..3, warp 7) <-> cpu (thread 0), 16 cells; every 8 ticks (125 per 1000), " \
           "diffusion 0.2" in out
    assert "beach beach_1: cpu (core 0..3, thread 1) <-> plane (y 3, x 4..11), 8 cells; every 3 ticks" in out
    assert main(["run", str(path), "--steps", "30", "--out", str(tmp_path / "run"), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["inspect", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "beach pcie (gpu <-> cpu): carried" in out and "beach_in" not in out
    assert "through beaches: in" in out


def test_cyberspace_is_colonised_as_validate_inspect_and_plot_tell(tmp_path, capsys):
    world = WORLDS / "cyberspace.yaml"
    assert main(["validate", str(world)]) == 0
    out = capsys.readouterr().out
    assert "beach pcie: gpu (rack 0, server 0, warp 15) <-> cpu (thread 0), 32 cells; every 8 ticks" in out
    assert "organisms sense, move and give birth across; cost to move/give birth: from gpu 18/40, from cpu 18/40" in out
    run = tmp_path / "run"
    assert main(["run", str(world), "--steps", "500", "--out", str(run), "--quiet"]) == 0
    capsys.readouterr()
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert lines[0]["regions"]["cpu"]["life"]["population"] == lines[0]["regions"]["plane"]["life"]["population"] == 0
    # Life seeded only in the GPU cluster reaches the CPU and, through it, the plane.
    last = lines[-1]
    assert last["regions"]["cpu"]["life"]["population"] > 0 and last["regions"]["plane"]["life"]["population"] > 0
    assert last["beaches"]["pcie"]["crossed"][0] > 0 and last["beaches"]["screen"]["crossed"][0] > 0
    assert all(line["ledger"]["balanced"] for line in lines)
    assert main(["inspect", str(run)]) == 0
    out = capsys.readouterr().out
    assert "organisms crossed" in out and "most numerous lineages (founder cell, organisms): gpu cell" in out
    assert main(["plot", str(run), "--out", str(tmp_path / "plot.png")]) == 0
    assert (tmp_path / "plot.png").stat().st_size > 10_000


def test_render_draws_every_region_one_under_another(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    from hca.pictures import render_size

    world = mixed_with_beaches()
    path = tmp_path / "world.yaml"
    path.write_text(yaml.safe_dump(world, sort_keys=False))
    assert main(["run", str(path), "--steps", "8", "--out", str(tmp_path / "run"), "--quiet"]) == 0
    assert main(["render", str(tmp_path / "run"), "--out", str(tmp_path / "all.png")]) == 0
    assert "every region" in capsys.readouterr().out
    import matplotlib.pyplot as plt

    image = plt.imread(tmp_path / "all.png")
    sizes = [render_size(region.shape) for region in parse_world(world).regions.values()]
    assert image.shape[:2] == (sum(h for _, h in sizes), max(w for w, _ in sizes))
    # The beach cells are outlined in red: the picture of the cpu region has red pixels.
    red = (image[..., 0] > 0.8) & (image[..., 1] < 0.3) & (image[..., 2] < 0.3)
    first, second = sizes[0][1], sizes[0][1] + sizes[1][1]
    assert red[first:second].any() and red[second:].any()
    assert main(["render", str(tmp_path / "run"), "--region", "plane", "--out", str(tmp_path / "plane.png")]) == 0
    assert plt.imread(tmp_path / "plane.png").shape[:2] == sizes[2][::-1]
