"""The command line as a user meets it: validate's summary, run's files and ledger."""

from __future__ import annotations

import json

from hca.cli import main
from hca.config import load_world


def test_validate_prints_the_seven_axes(capsys, worlds_dir):
    assert main(["validate", str(worlds_dir / "default.yaml")]) == 0
    out = capsys.readouterr().out
    for name in ("cluster", "row", "rack", "server", "gpu", "sm", "warp"):
        assert f"\n  {name} " in out
    assert "8,192 cells" in out and "bytes of state" in out
    assert "every 32 ticks (32 per 1000)" in out and "every tick (1000 per 1000)" in out
    assert "genome 923 parameters (3,692 bytes)" in out
    # Moving costs ceil(923 x 0.002 x stretch); a birth 4 x stretch.
    assert "cluster 60/128" in out and "warp 2/4" in out


def test_shipped_worlds_validate(capsys, worlds_dir):
    for path in sorted(worlds_dir.glob("*.yaml")):
        assert main(["validate", str(path)]) == 0, path
    assert "2,162,688 cells" in capsys.readouterr().out  # the full-scale H100 pod


def test_default_world_shape(worlds_dir):
    world = load_world(worlds_dir / "default.yaml")
    (region,) = world.regions.values()
    assert [axis.name for axis in region.axes] == [
        "cluster", "row", "rack", "server", "gpu", "sm", "warp"
    ]
    stretches = [axis.stretch for axis in region.axes]
    assert stretches == sorted(stretches, reverse=True) and stretches[-1] == 1
    assert [axis.curled for axis in region.axes] == [False] * 4 + [True] * 3
    assert 1_000 <= region.cells <= 50_000


def test_run_writes_resolved_world_and_balanced_metrics(tmp_path, capsys, worlds_dir):
    out = tmp_path / "runs" / "x"
    argv = ["run", str(worlds_dir / "mixed.yaml"), "--steps", "130", "--out", str(out)]
    assert main(argv + ["--seed", "11", "--report-every", "50"]) == 0
    assert "ledger balanced" in capsys.readouterr().out
    resolved = load_world(out / "world.yaml")
    assert resolved == load_world(worlds_dir / "mixed.yaml", seed=11)
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [line["tick"] for line in lines] == [0, 50, 100, 130]
    for line in lines:
        ledger = line["ledger"]
        assert set(ledger) >= {"free", "organisms", "total", "injected", "dissipated"}
        assert ledger["balanced"]
        assert set(line["regions"]) == {"gpu", "cpu", "plane"}
        assert ledger["total"] == sum(region["total"] for region in line["regions"].values())
        for region in line["regions"].values():
            assert region["balanced"]
    assert lines[-1]["ledger"]["injected"] > 0 and lines[-1]["ledger"]["dissipated"] > 0


def test_run_accepts_an_existing_empty_dir(tmp_path, worlds_dir):
    out = tmp_path / "empty"
    out.mkdir()
    argv = ["run", str(worlds_dir / "mixed.yaml"), "--steps", "4", "--out", str(out), "--quiet"]
    assert main(argv) == 0
    assert sorted(p.name for p in out.iterdir()) == ["checkpoints", "metrics.jsonl", "run.json", "world.yaml"]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["4"]
