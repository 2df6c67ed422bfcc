"""One world over several devices: placement, bitwise equality, checkpoints across layouts."""

from __future__ import annotations

import json
import math
import re

import jax
import numpy as np
import pytest

from hca.cli import main
from hca.config import load_world, parse_world
from hca.parallel import PlacementError, device_factors, make_mesh
from hca.world import build
from conftest import WORLDS


@pytest.fixture(scope="module")
def default_world(worlds_dir_module):
    return load_world(worlds_dir_module / "default.yaml")


@pytest.fixture(scope="module")
def worlds_dir_module():
    from conftest import WORLDS

    return WORLDS


def test_device_factors_fill_the_outermost_placed_axes(default_world):
    assert jax.device_count() == 8
    assert device_factors(default_world, 8) == {"cluster": 2, "row": 2, "rack": 2, "server": 1, "gpu": 1}
    assert device_factors(default_world, 2) == {"cluster": 2, "row": 1, "rack": 1, "server": 1, "gpu": 1}
    mesh = make_mesh(default_world, 8)
    assert dict(mesh.shape) == {"cluster": 2, "row": 2, "rack": 2}
    # An axis that cannot take the devices passes them on inward.
    assert device_factors(default_world, 4) == {"cluster": 2, "row": 2, "rack": 1, "server": 1, "gpu": 1}
    assert make_mesh(default_world, 1) is None


def test_by_default_a_cpu_process_spreads_a_world_over_one_device_per_core(default_world, monkeypatch):
    import hca.parallel

    def cores(count):
        monkeypatch.setattr(hca.parallel, "cpu_cores", lambda: count)

    cores(2)
    assert dict(make_mesh(default_world, None).shape) == {"cluster": 2}
    cores(3)  # the most that can be placed, at most one per core
    assert dict(make_mesh(default_world, None).shape) == {"cluster": 2}
    cores(64)  # at most the devices present
    assert make_mesh(default_world, None).size == 8
    cores(1)
    assert make_mesh(default_world, None) is None
    assert make_mesh(default_world, 4).size == 4  # a count asked for is given
    cores(2)
    unplaced = parse_world({"regions": {"r": {"axes": [{"name": "a", "size": 4}]}}})
    assert make_mesh(unplaced, None) is None


def test_placement_errors(default_world):
    with pytest.raises(PlacementError, match="cannot spread 3 devices"):
        device_factors(default_world, 3)
    with pytest.raises(PlacementError, match="only 8 are present"):
        make_mesh(default_world, 16)
    unplaced = parse_world({"regions": {"r": {"axes": [{"name": "a", "size": 4}]}}})
    with pytest.raises(PlacementError, match="no placement"):
        make_mesh(unplaced, 2)


@pytest.mark.parametrize("argv, message", [(["3"], "cannot spread 3 devices"), (["16"], "only 8 are present")])
def test_placement_errors_when_validating(capsys, worlds_dir, argv, message):
    assert main(["validate", str(worlds_dir / "default.yaml"), "--devices", *argv]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1 and message in captured.err


@pytest.mark.parametrize(
    "argv, message",
    [(["--devices", "3"], "cannot spread 3 devices"), (["--devices", "16"], "only 8 are present")],
)
def test_placement_errors_on_the_command_line(tmp_path, capsys, worlds_dir, argv, message):
    out = tmp_path / "r"
    assert main(["run", str(worlds_dir / "default.yaml"), "--steps", "2", "--out", str(out), *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "Traceback" not in err
    assert not out.exists()


def leaves(state):
    return [np.asarray(leaf) for leaf in jax.tree.leaves(state)]


def check_one_versus_eight(world, ticks):
    one = build(world)
    eight = build(world, make_mesh(world, 8))
    reference = one.run(one.init(), ticks)
    spread = eight.init()
    assert spread.regions[0].life.genome["body_w"].sharding.num_devices == 8
    spread = eight.run(spread, ticks)
    for a, b in zip(leaves(reference), leaves(spread)):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    # Lineages crossed shard boundaries: organisms live on another GPU than their founder.
    life = reference.regions[0].life
    region = world.regions["gpu"]
    occupied = np.asarray(life.occupied)
    founder = np.unravel_index(np.asarray(life.founder)[occupied], region.shape)
    here = np.nonzero(occupied)
    assert (founder[4] != here[4]).any()
    # and lineages crossed the split axes (cluster, row, rack): rows were sent between
    # devices and written there (``hca.transfer.arrive_sent``).
    assert any((founder[axis] != here[axis]).any() for axis in range(3))
    assert int(life.births.sum()) > 0 and int(life.moves.sum()) > 0


def test_one_and_eight_devices_are_bitwise_equal(default_world):
    check_one_versus_eight(default_world, 120)


@pytest.mark.slow
def test_one_and_eight_devices_are_bitwise_equal_for_500_ticks(default_world):
    check_one_versus_eight(default_world, 500)


def digest(capsys, run_dir):
    capsys.readouterr()
    assert main(["inspect", str(run_dir), "--json"]) == 0
    return json.loads(capsys.readouterr().out)["state_digest"]


def test_checkpoints_move_between_layouts(tmp_path, capsys, worlds_dir):
    world = str(worlds_dir / "default.yaml")
    whole = tmp_path / "whole"
    assert main(["run", world, "--steps", "60", "--out", str(whole), "--quiet"]) == 0
    expected = digest(capsys, whole)
    # Written on 8 devices, continued on 1; written on 1, continued on 8.
    for first, second in (("8", "1"), ("1", "8")):
        out = tmp_path / f"from{first}"
        assert main(["run", world, "--steps", "27", "--out", str(out), "--devices", first, "--quiet"]) == 0
        assert main(["run", "--resume", str(out), "--steps", "33", "--devices", second, "--quiet"]) == 0
        assert digest(capsys, out) == expected


def test_hca_run_over_two_processes_checkpoints_is_killed_and_resumes_on_one(worlds_dir, tmp_path, capsys):
    """`hca run` as 2 processes x 4 devices (scripts/launch_local_hosts.py): the first
    writes the run directory, all write checkpoints; killed, it resumes on 1 process
    and 1 device, bitwise as a run on one device. The default world with its two
    innermost axes (not placed) shrunk to 512 cells: the same axes, stretches,
    placement and tasks, 16 times fewer cells."""
    import contextlib
    import os
    import signal
    import subprocess
    import sys
    import time

    import yaml

    from conftest import ROOT
    from hca.checkpoint import state_digest

    config = yaml.safe_load((worlds_dir / "default.yaml").read_text())
    axes = {axis["name"]: axis for axis in config["regions"]["gpu"]["axes"]}
    axes["sm"]["size"], axes["warp"]["size"] = 2, 4
    (tmp_path / "world.yaml").write_text(yaml.safe_dump(config))
    world = load_world(tmp_path / "world.yaml")
    run = tmp_path / "run"
    launcher = subprocess.Popen(
        [sys.executable, str(ROOT / "scripts" / "launch_local_hosts.py"), "--hosts", "2", "--devices-per-host", "4",
         "--", "run", str(tmp_path / "world.yaml"), "--steps", "100000", "--checkpoint-every", "20",
         "--report-every", "20", "--out", str(run)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 500
        while not (run / "checkpoints" / "40").is_dir():
            assert launcher.poll() is None and time.monotonic() < deadline, launcher.communicate()[1][-3000:]
            time.sleep(0.5)
    finally:  # the launcher may have ended already (the assertion above then says why)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(launcher.pid, signal.SIGKILL)
    err = launcher.communicate()[1]
    assert "running on 8 devices (cluster 2 x row 2 x rack 2)" in err
    resumed = subprocess.run([sys.executable, "-m", "hca", "run", "--resume", str(run), "--steps", "20", "--devices", "1",
                             "--quiet"],
                             capture_output=True, text=True, timeout=500, check=False)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    start = int(resumed.stderr.split("from tick ")[1].split()[0])
    assert "running on" not in resumed.stderr  # one device: no mesh
    assert start >= 40 and start % 20 == 0
    capsys.readouterr()
    assert main(["inspect", str(run), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    one = build(world)
    state = one.run(one.init(), start + 20)
    assert report["tick"] == start + 20 and report["state_digest"] == state_digest(state)
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [line["tick"] for line in lines] == list(range(0, start + 21, 20))  # one line per report


def test_devices_exchange_only_on_the_ticks_of_the_placed_axes(default_world, capsys):
    """Counted in the compiled program: nothing crosses devices outside the branches of
    the stretch schedule, and each mesh axis exchanges the same messages on each of its
    ticks and none on the others, so a super-step holds (period / stretch) x that many."""
    from hca.parallel import collectives, exchanges

    simulation = build(default_world, make_mesh(default_world, 8))  # cluster 2 x row 2 x rack 2
    state = simulation.abstract_state()
    found = collectives(simulation, state)
    every_tick, per_branch = found
    assert every_tick == []
    schedule = simulation.schedule
    names = [axis.name for axis in default_world.regions["gpu"].axes]
    per_tick = {}
    for mesh_axis in simulation.mesh.axis_names:
        counts = {}
        for branch, ticking in enumerate(schedule.ticking):
            crossing = [op for op in per_branch.get(branch, []) if mesh_axis in op[2]]
            counts[branch] = len(crossing)
            if names.index(mesh_axis) not in ticking[0]:
                assert crossing == [], (mesh_axis, ticking)
        ticking_counts = {n for b, n in counts.items() if names.index(mesh_axis) in schedule.ticking[b][0]}
        assert len(ticking_counts) == 1 and min(ticking_counts) > 0, counts
        # Of them, one buffer of rows each way: two messages of whole rows, the largest.
        words = sum(math.prod(tensor.shape[7:]) for tensor in state.regions[0].life.genome.values())
        for branch, ticking in enumerate(schedule.ticking):
            if names.index(mesh_axis) in ticking[0]:
                sizes = [op[1] for op in per_branch[branch] if mesh_axis in op[2]]
                assert max(sizes) > words * 4 and sizes.count(max(sizes)) == 2, (mesh_axis, branch, sizes)
        per_tick[mesh_axis] = ticking_counts.pop()
        # Over a super-step: the schedule's count of the axis's ticks, times that.
        stretch = default_world.regions["gpu"].axes[names.index(mesh_axis)].stretch
        in_super_step = sum(counts[schedule.branch_of_phase[p]] for p in range(schedule.period))
        assert in_super_step == per_tick[mesh_axis] * schedule.period // stretch
    # Each message goes to one neighbour along one axis (a halo or a buffer of rows).
    assert all(len(op[2]) == 1 for ops in per_branch.values() for op in ops)
    # No weight matrix of the genome (nor the plastic weights) is copied, in any shape:
    # the axes split whole lead the lattice, laid out as XLA lays out a device's size-1
    # axes (with inner axes split, it copied each several times a tick).
    text = simulation.run.lower(state, 1).compile().as_text()
    life = state.regions[0].life
    matrices = {name: tensor for name, tensor in life.genome.items() if tensor.ndim == life.occupied.ndim + 2}
    sizes = {math.prod(tensor.sharding.shard_shape(tensor.shape)) for tensor in matrices.values()}
    assert len(matrices) == 3 and sizes
    copied = [math.prod(map(int, shape.split(","))) for shape in re.findall(r"%\S*copy\S* = f32\[([\d,]+)\]", text)]
    assert not sizes & set(copied)
    # Nothing near the genome's size crosses: each device holds one layer of each split
    # axis, so sending halos of genomes would move its whole share.
    genome = sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree.leaves(state.regions[0].life.genome))
    per_axis, _ = exchanges(simulation, state, found)
    for axis in per_axis:
        stretch = default_world.regions["gpu"].axes[names.index(axis.axis)].stretch
        assert axis.ticks == -(-1000 // stretch)
        assert axis.exchanges == per_tick[axis.axis] * axis.ticks
        assert axis.bytes / axis.ticks < genome / 8 / 4
    # hca validate prints the same numbers.
    capsys.readouterr()
    assert main(["validate", str(WORLDS / "default.yaml"), "--devices", "8"]) == 0
    out = capsys.readouterr().out
    assert "every tick, outside the stretch schedule: none" in out
    for axis in per_axis:
        row = f"{axis.axis:<12}{axis.devices:>8}{axis.stretch:>9}{axis.ticks:>8}{axis.exchanges:>11,}"
        assert row in out, out


def test_without_stretch_devices_exchange_every_tick(default_world):
    from hca.parallel import exchanges

    data = default_world.model_dump(mode="json")
    for axis in data["regions"]["gpu"]["axes"]:
        axis["stretch"] = 1
    flat = parse_world(data)
    simulation = build(flat, make_mesh(flat, 8))
    per_axis, every_tick = exchanges(simulation, simulation.abstract_state())
    assert every_tick  # a super-step of one tick: no branches, every axis crosses every tick
    assert {axis.axis: axis.ticks for axis in per_axis} == {"cluster": 1000, "row": 1000, "rack": 1000}
    assert all(axis.exchanges > 0 for axis in per_axis)


def test_two_living_regions_over_eight_devices_equal_one():
    """A placed region whose placed axes are open, a ring of 4 and a ring of 2 (both
    sides reach the same device), beside an unplaced one kept whole on every device;
    with tasks whose groups straddle devices (parity along b: each cell of a group on
    another device)."""
    from test_life import TASKS, living_world

    from hca.parallel import exchanges

    config = living_world()
    config["regions"]["grid"]["placement"] = ["a", "b", "c"]
    config["regions"]["grid"]["tasks"] = TASKS
    config["seed"] = 2  # founders that thrive in the grid (with seed 4 they die out)
    world = parse_world(config)
    assert device_factors(world, 8) == {"a": 1, "b": 4, "c": 2}
    one = build(world)
    eight = build(world, make_mesh(world, 8))
    reference = one.run(one.init(), 90)
    spread = eight.run(eight.init(), 90)
    for a, b in zip(leaves(reference), leaves(spread)):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    life = reference.regions[0].life
    assert int(life.births.sum()) > 20 and int(life.moves.sum()) > 0
    parity = one.ledger(reference)["tasks"]["grid"]["parity"]
    assert parity["answered"] > 0 and parity["paid"] > 0
    per_axis, every_tick = exchanges(eight, eight.abstract_state())
    assert every_tick == []
    stretch = {axis.name: axis.stretch for axis in world.regions["grid"].axes}
    assert {axis.axis: axis.ticks for axis in per_axis} == {
        name: -(-1000 // stretch[name]) for name in ("b", "c")
    }


@pytest.mark.parametrize("extra, message", [
    (["--coordinator", "127.0.0.1:1"], "need all of --coordinator, --processes and --process-id"),
    (["--coordinator", "127.0.0.1:1", "--processes", "2", "--process-id", "2"], "--process-id: expected 0..1"),
    (["--coordinator", "127.0.0.1:1", "--processes", "2", "--process-id", "0", "--serve", "0"],
     "--serve runs in a single process"),
])
def test_several_processes_bad_arguments(tmp_path, capsys, worlds_dir, extra, message):
    out = tmp_path / "run"
    assert main(["run", str(worlds_dir / "default.yaml"), "--steps", "1", "--out", str(out), *extra]) == 2
    assert message in capsys.readouterr().err and not out.exists()


def test_a_world_with_people_runs_in_one_process(tmp_path, capsys, worlds_dir):
    out = tmp_path / "run"
    argv = ["run", str(worlds_dir / "agora.yaml"), "--steps", "1", "--out", str(out),
            "--coordinator", "127.0.0.1:1", "--processes", "2", "--process-id", "0"]
    assert main(argv) == 2
    assert "people in it" in capsys.readouterr().err and not out.exists()
