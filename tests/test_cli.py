"""The command line as a user meets it: validate's summary, run's files and ledger."""

from __future__ import annotations

import importlib.util
import json

import pytest

from hca.cli import main
from hca.config import load_world


def test_validate_prints_the_seven_axes(capsys, worlds_dir):
    assert main(["validate", str(worlds_dir / "default.yaml")]) == 0
    out = capsys.readouterr().out
    for name in ("cluster", "row", "rack", "server", "gpu", "sm", "warp"):
        assert f"\n  {name} " in out
    assert "8,192 cells" in out and "bytes of state" in out
    assert "every 32 ticks (32 per 1000)" in out and "every tick (1000 per 1000)" in out
    assert "genome 1,084 parameters (4,336 bytes)" in out
    # Moving costs ceil(1084 x 0.002 x stretch); a birth 4 x stretch.
    assert "cluster 70/128" in out and "warp 3/4" in out
    # Tasks: every cell is a site of one of them (2 of 8 SMs ask for sin, the rest logic).
    assert "task function: f(x) = sine(x) on 17 levels, tolerance 2; 2,048 sites" in out
    assert "task logic: logic NOT NAND AND ORN OR ANDN NOR XOR EQU; 6,144 sites" in out


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
    assert lines[-1]["ledger"]["injected"] > 0
    # Energy crosses the world's beaches both ways, and each region counts it.
    assert all(min(beach["carried"]) > 0 for beach in lines[-1]["beaches"].values())
    assert sum(r["beach_in"] for r in lines[-1]["regions"].values()) == sum(
        sum(beach["carried"]) for beach in lines[-1]["beaches"].values())


def test_run_accepts_an_existing_empty_dir(tmp_path, worlds_dir):
    out = tmp_path / "empty"
    out.mkdir()
    argv = ["run", str(worlds_dir / "mixed.yaml"), "--steps", "4", "--out", str(out), "--quiet"]
    assert main(argv) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "checkpoints", "metrics.jsonl", "phylogeny", "phylogeny.csv", "run.json", "world.yaml"]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["4"]


def test_metrics_count_each_task(tmp_path, worlds_dir, capsys):
    out = tmp_path / "tasks"
    assert main(["run", str(worlds_dir / "tasks.yaml"), "--steps", "64", "--out", str(out), "--report-every", "32",
                 "--quiet"]) == 0
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    world = load_world(worlds_dir / "tasks.yaml")
    (name, region), = world.regions.items()
    for previous, line in zip(lines, lines[1:]):
        tasks = line["regions"][name]["tasks"]
        assert list(tasks) == region.task_names()
        for task, entry in tasks.items():
            before = previous["regions"][name].get("tasks", {}).get(task, {})
            assert entry["posed"] == entry["posed_total"] - before.get("posed_total", 0) > 0, task
            assert 0 <= entry["answered"] <= entry["posed"]
            assert entry["mean_quality"] is None or 0.0 <= entry["mean_quality"] <= 1.0
            # Only group tasks have later cells passing partial results on.
            group = region.tasks[region.task_names().index(task)].kind in ("product", "parity")
            assert ("relayed" in entry) == group, task
            if group:
                assert entry["relayed"] == entry["relayed_total"] - before.get("relayed_total", 0) > 0
                assert entry["mean_relay_quality"] is None or 0.0 <= entry["mean_relay_quality"] <= 1.0
    last = lines[-1]
    paid = sum(task["paid_total"] for task in last["regions"][name]["tasks"].values())
    assert 0 < paid < last["ledger"]["injected"]  # tasks pay part of what enters

    # hca inspect reports the same totals from the checkpoint.
    capsys.readouterr()
    assert main(["inspect", str(out), "--json"]) == 0
    inspected = json.loads(capsys.readouterr().out)["regions"][name]["tasks"]
    for task, entry in last["regions"][name]["tasks"].items():
        assert inspected[task]["posed"] == entry["posed_total"]
        assert inspected[task]["paid"] == entry["paid_total"]
        assert ("relayed" in inspected[task]) == ("relayed" in entry)
        if "relayed" in entry:
            assert inspected[task]["relayed"] == entry["relayed_total"]
            quality = entry["relay_quality_total"] / entry["relayed_total"] / 65536
            assert inspected[task]["mean_relay_quality"] == pytest.approx(quality)
    assert main(["inspect", str(out)]) == 0
    assert "partial results passed on by later cells" in capsys.readouterr().out
    if importlib.util.find_spec("matplotlib"):  # the plot draws partial results too
        assert main(["plot", str(out), "--out", str(tmp_path / "history.png")]) == 0
        assert (tmp_path / "history.png").stat().st_size > 0


# Starts the command line as the `hca` script does, and sends itself SIGINT the moment
# anything first imports JAX.
_CTRL_C_AT_JAX = """
import os, signal, sys
import hca.cli
assert "jax" not in sys.modules, "importing hca imported JAX"

class CtrlC:
    def find_spec(self, name, path=None, target=None):
        if name == "jax":
            sys.meta_path.remove(self)
            os.kill(os.getpid(), signal.SIGINT)
        return None

sys.meta_path.insert(0, CtrlC())
sys.exit(hca.cli.main(sys.argv[1:]))
"""


def test_ctrl_c_while_jax_loads_stops_without_a_traceback(tmp_path, worlds_dir):
    """`import hca` does not import JAX, so the command line hears a Ctrl-C while JAX
    loads: it stops with status 130, says so in one line, and writes nothing."""
    import signal
    import subprocess
    import sys

    out = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-c", _CTRL_C_AT_JAX, "run", str(worlds_dir / "default.yaml"), "--out", str(out)],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert result.returncode == 128 + signal.SIGINT, result.stderr
    assert result.stderr == "hca: SIGINT: stopped\n"
    assert not out.exists()


def test_a_bad_world_file_is_reported_without_loading_jax(tmp_path):
    import subprocess
    import sys

    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nregions: {a: {axes: [{name: q, size: -1}]}}\n")
    code = "import sys, hca.cli\nstatus = hca.cli.main(sys.argv[1:])\nassert 'jax' not in sys.modules\nsys.exit(status)"
    result = subprocess.run([sys.executable, "-c", code, "validate", str(bad)],
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 2
    assert result.stderr == f"hca: error: {bad}: 1 problem\n  regions.a.axes[0].size: expected a value >= 1 (got -1)\n"


def test_jax_settings_hold_whichever_is_imported_first():
    """hca's JAX settings (int64 ledgers) hold when JAX is imported after hca, from the
    environment, and when before, in JAX's config."""
    import subprocess
    import sys

    for first in ("import hca; import jax", "import jax; import hca"):
        code = f"{first}; import jax.numpy as jnp; print(jnp.arange(3).dtype, jax.config.jax_threefry_partitionable)"
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
        assert result.stdout.split() == ["int64", "True"], first


def test_version_names_hca_jax_jaxlib_and_python(capsys):
    import platform
    from importlib import metadata

    with pytest.raises(SystemExit) as exit:
        main(["--version"])
    assert exit.value.code == 0
    assert capsys.readouterr().out == (
        f"hca {metadata.version('hca')} (jax {metadata.version('jax')}, jaxlib {metadata.version('jaxlib')}, "
        f"Python {platform.python_version()})\n"
    )


def test_every_help_page_renders_as_written(capsys):
    """argparse formats an argument's help with %, but a description only when it names
    %(prog): every page prints without a doubled or unformatted percent sign."""
    commands = ["validate", "run", "inspect", "render", "plot", "tree", "compete", "experiment"]
    pages = {}
    for argv in [["--help"]] + [[command, "--help"] for command in commands]:
        with pytest.raises(SystemExit) as exit:
            main(argv)
        assert exit.value.code == 0, argv
        pages[argv[0]] = page = capsys.readouterr().out
        assert page.startswith("usage: "), argv
        assert "%%" not in page and "%(" not in page, (argv, page)
    assert "with 95% intervals over seeds" in " ".join(pages["compete"].split())
