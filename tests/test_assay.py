"""Competition assays and controlled experiments."""

from __future__ import annotations

import json

import pytest
from test_life import living_world

from hca import assay, experiment
from hca.cli import main
from hca.config import load_world, parse_world
from hca.runner import Run

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


def assay_world():
    """The test world with a ring of 256 cells: assays compete on the ring."""
    config = living_world()
    config["regions"]["ring"]["axes"][0]["size"] = 256
    return config


@pytest.fixture(scope="module")
def evolved(tmp_path_factory):
    """A small world run for 60 ticks, with a checkpoint at 30 and 60."""
    path = tmp_path_factory.mktemp("assay") / "run"
    run = Run.start(parse_world(assay_world()), path, 60, report_every=10, checkpoint_every=30, keep=3)
    run.advance(handle_signals=False)
    return path


def test_identical_sources_are_equally_fit(evolved):
    source = assay.load_source(f"{evolved}@60", "ring")
    result = assay.compete(source.world, source, source, ticks=40, seeds=[1, 2, 3, 4, 5], region="ring")
    assert all(row["balanced"] for row in result["seeds"])
    assert all(abs(row["a_start"] - row["b_start"]) <= 1 for row in result["seeds"])
    fitness, rate = result["relative_fitness"], result["selection_rate"]
    assert fitness["n"] >= 3 and fitness["low"] < 1 < fitness["high"]
    assert rate["low"] < 0 < rate["high"]


def test_a_handicapped_source_loses(evolved):
    source = assay.load_source(f"{evolved}@60", "ring")
    result = assay.compete(source.world, source, source, ticks=40, seeds=[1, 2, 3], region="ring",
                           energy=(0.02, 1.0))
    assert all(row["balanced"] for row in result["seeds"])
    assert result["selection_rate"]["high"] < 0  # below 0 over the whole interval
    for row in result["seeds"]:  # W, where both sides grew, below 1
        assert row["selection_rate"] < 0 and (row["relative_fitness"] is None or row["relative_fitness"] < 1)


def test_founders_are_drawn_again_and_placement_interleaves(evolved):
    founders = assay.load_source(f"{evolved}@0", "ring")
    later = assay.load_source(str(evolved), "ring")
    assert founders.label.endswith("@0") and later.label.endswith("@60")
    world = founders.world
    from hca.world import build

    simulation = build(world)
    state, side_a = assay.place(simulation, "ring", founders, later, seed=3)
    life = state.regions[1].life
    import numpy as np

    occupied = np.flatnonzero(np.asarray(life.occupied).reshape(-1))
    assert list(side_a) == list(occupied[0::2])
    # Every placed genome is one of its source's.
    rows = np.asarray(life.genome["body_w"]).reshape(len(np.asarray(life.occupied).reshape(-1)), -1)
    a_rows = founders.genomes["body_w"].reshape(founders.count, -1)
    b_rows = later.genomes["body_w"].reshape(later.count, -1)
    for cell in occupied:
        pool = a_rows if cell in side_a else b_rows
        assert (pool == rows[cell]).all(axis=1).any()
    assert bool(simulation.ledger(state)["world"]["balanced"])
    # A placed state runs the program a fresh one runs (which the run above compiled, so
    # an assay of a run's world starts from JAX's persistent cache): one program, not two.
    assert simulation.run.lower(state, 1).as_text() == simulation.run.lower(simulation.init(), 1).as_text()


def test_compete_command_prints_and_rejects(evolved, tmp_path, capsys, worlds_dir):
    out = tmp_path / "result.json"
    assert main(["compete", f"{evolved}@0", str(evolved), "--ticks", "10", "--seeds", "1", "2",
                 "--region", "ring", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "relative fitness W" in printed and "selection rate r" in printed
    assert len(json.loads(out.read_text())["seeds"]) == 2
    assert main(["compete", f"{evolved}@45", str(evolved), "--ticks", "10"]) == 2
    assert "no checkpoint at tick 45 (saved ticks: 30, 60)" in capsys.readouterr().err
    assert main(["compete", str(tmp_path / "nothing"), str(evolved), "--ticks", "10"]) == 2
    capsys.readouterr()
    assert main(["compete", str(evolved), str(evolved), "--ticks", "10", "--world", str(worlds_dir / "default.yaml")]) == 2
    assert "brains" in capsys.readouterr().err


def test_experiment_runs_both_arms_and_summarises(tmp_path, worlds_dir, capsys):
    world_file = tmp_path / "w.yaml"
    import yaml

    world_file.write_text(yaml.safe_dump(living_world()))
    out = tmp_path / "exp"
    argv = ["experiment", str(world_file), "--steps", "30", "--out", str(out), "--seeds", "1", "2",
            "--report-every", "10", "--control", "mutation-off", "learning-off"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "| regions.grid.life.population |" in printed
    control = load_world(out / "control-s1" / "world.yaml")
    assert not control.regions["grid"].organisms.mutation.enabled
    assert not control.regions["grid"].organisms.learning
    assert load_world(out / "treatment-s2" / "world.yaml").regions["grid"].organisms.learning
    summary = json.loads((out / "summary.json").read_text())
    population = summary["metrics"]["regions.grid.life.population"]
    assert population["compared"] == 2 and population["treatment"]["n"] == 2
    # Run again: nothing is run twice, the summary is the same.
    before = (out / "treatment-s1" / "metrics.jsonl").read_text()
    assert main(argv) == 0
    assert (out / "treatment-s1" / "metrics.jsonl").read_text() == before
    assert json.loads((out / "summary.json").read_text()) == summary
    assert main(["experiment", str(world_file), "--steps", "30", "--out", str(tmp_path / "bad"),
                 "--control", "gravity-off"]) == 2
    assert "expected one of mutation-off, learning-off, tasks-off" in capsys.readouterr().err


def test_values_at_paths_and_intervals():
    line = {"tick": 5, "regions": {"g": {"life": {"population": 7}, "flag": True}}}
    assert experiment.value_at(line, "regions.g.life.population") == 7.0
    assert experiment.value_at(line, "regions.g.flag") is None
    assert experiment.value_at(line, "regions.h.life.population") is None
    stats = assay.interval([1.0, 2.0, 3.0])
    assert stats["mean"] == 2.0 and stats["low"] == pytest.approx(2 - 4.303 / 3 ** 0.5)
    assert assay.interval([4.0])["low"] is None and assay.interval([])["mean"] is None


def test_experiment_hears_ctrl_c_like_hca_run(tmp_path, monkeypatch, capsys):
    """``hca experiment`` hands its runs the same signal notice as ``hca run``: the first
    Ctrl-C is acknowledged at once, a second stops the process at once (here the exit
    is caught), saying how to continue."""
    import os
    import signal

    import yaml

    world_file = tmp_path / "w.yaml"
    world_file.write_text(yaml.safe_dump(living_world()))
    advance = Run.advance
    exits = []

    class Exit(Exception):
        pass

    def interrupted(self, *args, on_signal=None, **kwargs):
        on_signal(signal.SIGINT, 1)
        assert "hca: SIGINT: stopping after this chunk of ticks, with a checkpoint (SIGINT again: at once)\n" in (
            capsys.readouterr().err
        )
        with pytest.raises(Exit):
            on_signal(signal.SIGINT, 2)
        return advance(self, *args, **kwargs)

    def exit_(status):
        exits.append(status)
        raise Exit

    monkeypatch.setattr(Run, "advance", interrupted)
    monkeypatch.setattr(os, "_exit", exit_)
    argv = ["experiment", str(world_file), "--steps", "10", "--out", str(tmp_path / "exp"), "--seeds", "1"]
    assert main(argv) == 0
    assert exits == [128 + signal.SIGINT] * 2  # one run per arm
    assert "hca: SIGINT again: stopped at once; run the same command again to continue" in capsys.readouterr().err
