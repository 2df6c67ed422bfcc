"""Runs that survive: checkpoints, exact resume, interruptions, inspection, pictures."""

from __future__ import annotations

import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from hca.checkpoint import RunDirectory, state_digest
from hca.cli import main
from hca.config import parse_world
from hca.world import build

sys.path.insert(0, str(Path(__file__).parent))

# orbax leaves the reads of a damaged checkpoint's other arrays unawaited; they are
# collected later, during whichever test runs then.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
from test_life import living_world  # noqa: E402


@pytest.fixture(scope="module")
def world_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("worlds") / "life.yaml"
    path.write_text(yaml.safe_dump(living_world()))
    return path


def run(*argv: str) -> int:
    return main([str(a) for a in argv])


def digest(capsys, run_dir: Path, *extra: str) -> dict:
    capsys.readouterr()
    assert run("inspect", run_dir, "--json", *extra) == 0
    return json.loads(capsys.readouterr().out)


def test_resume_is_bitwise_the_uninterrupted_run(tmp_path, capsys, world_file):
    whole = tmp_path / "whole"
    assert run("run", world_file, "--steps", 100, "--out", whole, "--quiet") == 0
    expected = digest(capsys, whole)
    assert expected["tick"] == 100
    # Splits on and between the ticks of the stretch-2 and stretch-3 axes.
    for split in (1, 37, 60):
        part = tmp_path / f"split{split}"
        assert run("run", world_file, "--steps", split, "--out", part, "--quiet") == 0
        assert run("run", "--resume", part, "--steps", 100 - split, "--quiet") == 0
        resumed = digest(capsys, part)
        assert resumed["state_digest"] == expected["state_digest"], split
        assert resumed["tick"] == 100
        lines = [json.loads(t) for t in (part / "metrics.jsonl").read_text().splitlines()]
        whole_lines = [json.loads(t) for t in (whole / "metrics.jsonl").read_text().splitlines()]
        assert [l["ledger"] for l in lines if l["tick"] % 50 == 0] == [
            l["ledger"] for l in whole_lines if l["tick"] % 50 == 0
        ]


def test_resumed_arrays_equal_the_live_state(tmp_path, world_file):
    world = parse_world(yaml.safe_load(world_file.read_text()))
    simulation = build(world)
    live = simulation.run(simulation.init(), 45)
    out = tmp_path / "r"
    assert run("run", world_file, "--steps", 20, "--out", out, "--quiet") == 0
    assert run("run", "--resume", out, "--steps", 25, "--quiet") == 0
    import jax

    loaded = RunDirectory(out).load(world, simulation.abstract_state()).state
    for a, b in zip(jax.tree.leaves(live), jax.tree.leaves(loaded)):
        a, b = np.asarray(a), np.asarray(b)
        assert a.dtype == b.dtype and np.array_equal(a, b)
    assert state_digest(live) == state_digest(loaded)
    # The same program steps a fresh state and a restored one: a resumed run finds the
    # step the world's first run compiled (in JAX's persistent cache) and compiles nothing.
    assert simulation.run.lower(loaded, 1).as_text() == simulation.run.lower(simulation.init(), 1).as_text()


def test_keep_last_n(tmp_path, world_file):
    out = tmp_path / "k"
    assert run("run", world_file, "--steps", 60, "--out", out, "--checkpoint-every", 10,
               "--keep", 2, "--quiet") == 0
    assert RunDirectory(out).saved_ticks() == [50, 60]


def test_resume_without_steps_finishes_the_first_target(tmp_path, world_file, capsys):
    out = tmp_path / "t"
    assert run("run", world_file, "--steps", 30, "--out", out, "--quiet") == 0
    settings = json.loads((out / "run.json").read_text())
    settings["target_tick"] = 50  # as if a run of 50 had stopped at 30
    (out / "run.json").write_text(json.dumps(settings))
    assert run("run", "--resume", out, "--quiet") == 0
    assert digest(capsys, out)["tick"] == 50


def test_damaged_checkpoint_falls_back_and_deletes_nothing(tmp_path, world_file, capsys):
    out = tmp_path / "d"
    assert run("run", world_file, "--steps", 40, "--out", out, "--checkpoint-every", 20, "--quiet") == 0
    newest = out / "checkpoints" / "40"
    files = sorted(p for p in newest.rglob("*") if p.is_file() and p.stat().st_size > 0)
    before = sorted(str(p) for p in (out / "checkpoints").rglob("*"))
    victim = max(files, key=lambda p: p.stat().st_size)
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 3])
    report = digest(capsys, out)
    assert report["tick"] == 20
    err = capsys.readouterr().err
    capsys.readouterr()
    assert run("inspect", out, "--json") == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "checkpoints/40: damaged" in err
    assert sorted(str(p) for p in (out / "checkpoints").rglob("*")) == before
    # Resuming also continues from tick 20.
    assert run("run", "--resume", out, "--steps", 5, "--quiet") == 0
    assert digest(capsys, out, "--tick", "25")["tick"] == 25


def png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", header[16:24])


def test_inspect_agrees_with_the_live_state(tmp_path, world_file, capsys):
    world = parse_world(yaml.safe_load(world_file.read_text()))
    simulation = build(world)
    live = simulation.run(simulation.init(), 30)
    out = tmp_path / "i"
    assert run("run", world_file, "--steps", 30, "--out", out, "--quiet") == 0
    report = digest(capsys, out)
    assert set(report) >= {"world", "tick", "population", "ledger", "births", "deaths", "regions",
                           "state_digest"}
    assert report["world"] == "life" and report["tick"] == 30
    assert report["state_digest"] == state_digest(live)
    assert report["ledger"] == simulation.ledger(live)["world"]
    lives = [r.life for r in live.regions]
    assert report["population"] == sum(int(np.asarray(l.occupied).sum()) for l in lives)
    assert report["births"] == sum(int(l.births.sum()) for l in lives)
    assert report["deaths"] == sum(int(l.deaths.sum()) for l in lives)
    grid = report["regions"]["grid"]
    assert grid["shape"] == [3, 4, 2, 1] and grid["axes"] == ["a", "b", "c", "d"]
    generation = np.asarray(lives[0].generation)[np.asarray(lives[0].occupied)]
    assert grid["lineages"]["deepest_generation"] == int(generation.max())
    scales = np.exp(np.asarray(lives[0].genome["log_mutation"])[np.asarray(lives[0].occupied)])
    assert grid["mutation_scale"]["mean"] == pytest.approx(float(scales.mean()), rel=1e-5)
    assert run("inspect", out) == 0
    text = capsys.readouterr().out
    assert "state_digest " + report["state_digest"] in text and "lineages alive" in text


def test_render_and_plot_write_pngs_of_the_expected_size(tmp_path, worlds_dir, capsys):
    pytest.importorskip("matplotlib", reason="the viz extra (matplotlib) is not installed")
    from hca.pictures import PANEL_HEIGHT, plot_size, render_size
    from hca.runner import read_metrics

    out = tmp_path / "p"
    assert run("run", worlds_dir / "default.yaml", "--steps", 20, "--out", out,
               "--report-every", 10, "--quiet") == 0
    lattice, history = tmp_path / "lattice.png", tmp_path / "history.png"
    assert run("render", out, "--out", lattice) == 0
    assert png_size(lattice) == render_size((2, 2, 2, 2, 4, 8, 16))
    assert run("plot", out, "--out", history) == 0
    assert png_size(history) == plot_size(read_metrics(out / "metrics.jsonl")) == (900, 7 * PANEL_HEIGHT)  # with tasks and a phylogeny
    sites = tmp_path / "sites.png"
    assert run("render", out, "--show", "tasks", "--out", sites) == 0  # the default world's task sites
    assert png_size(sites) == render_size((2, 2, 2, 2, 4, 8, 16))


def test_picture_titles_and_clipped_panels_read_right():
    pytest.importorskip("matplotlib", reason="the viz extra (matplotlib) is not installed")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hca.pictures import clip_first_burst, hardware_title

    # A 3-D region's hardware map is one row over its first axis: no "down" axes.
    assert hardware_title(["socket", "core", "lane"], 1) == "organisms per socket (across)"
    names = ["a", "b", "c", "d", "e"]
    assert hardware_title(names, 2) == "organisms per b (across) by a (down)"
    assert hardware_title(names, 3) == "organisms per c (across) by a x b (down)"
    # The first reports dwarf the rest: the panel shows the rest, from 0, not mostly
    # the margin below the first reports' range.
    figure, ax = plt.subplots()
    counts = [5000.0, 3000.0, 900.0] + [float(v % 7) for v in range(20)]
    ax.plot(counts)
    clip_first_burst(ax, [counts])
    bottom, top = ax.get_ylim()
    assert top == pytest.approx(1.2 * 6)
    assert -0.05 * top <= bottom <= 0 < top
    plt.close(figure)


def test_a_run_stopped_before_its_first_checkpoint_resumes_from_tick_0(tmp_path, capsys, world_file):
    whole = tmp_path / "whole"
    assert run("run", world_file, "--steps", 30, "--out", whole, "--report-every", 10, "--quiet") == 0
    expected = digest(capsys, whole)
    # As if killed before saving: the directory and a metrics line or two, no checkpoint.
    early = tmp_path / "early"
    assert run("run", world_file, "--steps", 30, "--out", early, "--report-every", 10, "--quiet") == 0
    shutil.rmtree(early / "checkpoints" / "30")
    lines = (early / "metrics.jsonl").read_text().splitlines()
    (early / "metrics.jsonl").write_text("\n".join(lines[:2]) + "\n" + lines[2][:20])
    capsys.readouterr()
    assert run("run", "--resume", early, "--quiet") == 0
    assert "starting again from tick 0" in capsys.readouterr().err
    assert digest(capsys, early)["state_digest"] == expected["state_digest"]
    assert (early / "metrics.jsonl").read_text() == (whole / "metrics.jsonl").read_text()


@pytest.mark.parametrize("command", ["inspect", "resume", "render"])
def test_bad_run_directories(tmp_path, world_file, capsys, command):
    def attempt(path):
        before = sorted(str(p) for p in tmp_path.rglob("*"))
        if command == "inspect":
            code = run("inspect", path)
        elif command == "resume":
            code = run("run", "--resume", path, "--steps", 5, "--quiet")
        else:
            code = run("render", path, "--out", tmp_path / "x.png")
        err = capsys.readouterr().err
        assert code == 2, err
        assert "Traceback" not in err and err.splitlines()[-1].startswith("hca: error: ")
        assert sorted(str(p) for p in tmp_path.rglob("*")) == before  # nothing written
        return err

    assert "no such run directory" in attempt(tmp_path / "missing")
    plain = tmp_path / "plain"
    plain.mkdir()
    assert "not a run directory" in attempt(plain)
    if command != "resume":  # a run with no checkpoint resumes from tick 0 (tested apart)
        empty = tmp_path / "empty"
        assert run("run", world_file, "--steps", 5, "--out", empty, "--quiet") == 0
        shutil.rmtree(empty / "checkpoints" / "5")
        capsys.readouterr()
        assert "no checkpoint" in attempt(empty)
    other = tmp_path / "other"
    assert run("run", world_file, "--steps", 5, "--out", other, "--quiet") == 0
    changed = yaml.safe_load((other / "world.yaml").read_text())
    changed["seed"] = 99
    (other / "world.yaml").write_text(yaml.safe_dump(changed))
    capsys.readouterr()
    assert "different world" in attempt(other)
    truncated = tmp_path / "truncated"
    assert run("run", world_file, "--steps", 5, "--out", truncated, "--quiet") == 0
    for file in (truncated / "checkpoints" / "5").rglob("*"):
        if file.is_file() and file.stat().st_size > 100:
            file.write_bytes(file.read_bytes()[:50])
    capsys.readouterr()
    err = attempt(truncated)
    assert "no readable checkpoint" in err and "damaged" in err


STALLED_SAVE = """
import asyncio, re, sys
from orbax.checkpoint._src.path import atomicity
original = atomicity.AtomicRenameTemporaryPath.finalize
async def stalled(self, *args, **kwargs):
    step = re.search(r"checkpoints/(\\d+)", str(self._final_path))
    if step and int(step.group(1)) > 20:  # the first save completes; the next never commits
        await asyncio.sleep(600)
    return await original(self, *args, **kwargs)
atomicity.AtomicRenameTemporaryPath.finalize = stalled
from hca.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _wait_for(condition, seconds):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return False


def test_sigkill_during_a_save_resumes_from_the_previous_checkpoint(tmp_path, world_file, capsys):
    out = tmp_path / "killed"
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    process = subprocess.Popen(
        [sys.executable, "-c", STALLED_SAVE, "run", str(world_file), "--steps", "1000", "--out",
         str(out), "--checkpoint-every", "20", "--quiet"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        run_dir = RunDirectory(out)
        assert _wait_for(lambda: run_dir.saved_ticks() == [20] and run_dir.interrupted_saves(), 240)
        time.sleep(0.5)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
    assert run_dir.saved_ticks() == [20]
    assert run("run", "--resume", out, "--steps", 15, "--quiet") == 0
    err = capsys.readouterr().err
    assert "incomplete save" in err and "from tick 20" in err
    assert run_dir.interrupted_saves()  # reported, not deleted
    whole = tmp_path / "whole"
    assert run("run", world_file, "--steps", 35, "--out", whole, "--quiet") == 0
    assert digest(capsys, out)["state_digest"] == digest(capsys, whole)["state_digest"]


def test_sigint_saves_and_says_how_to_resume(tmp_path, world_file, capsys):
    out = tmp_path / "stopped"
    process = subprocess.Popen(
        [sys.executable, "-m", "hca", "run", str(world_file), "--steps", "10000000", "--out",
         str(out), "--report-every", "10", "--quiet"],
        env={**os.environ, "JAX_PLATFORMS": "cpu"}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )
    metrics = out / "metrics.jsonl"
    try:
        assert _wait_for(lambda: metrics.exists() and metrics.read_text().count("\n") >= 3, 240)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 128 + signal.SIGINT, err
    assert "Traceback" not in err and f"hca run --resume {out}" in err
    stopped = RunDirectory(out).saved_ticks()[-1]
    # A stop comes after a chunk: chunks end on reports and on phylogeny drains.
    assert stopped > 0 and (stopped % 10 == 0 or stopped % 32 == 0)
    assert run("run", "--resume", out, "--steps", 10, "--quiet") == 0
    assert digest(capsys, out)["tick"] == stopped + 10


def _signalled_while_compiling(tmp_path, world: Path, out: Path, signals) -> tuple[int, str]:
    """(exit status, stderr) of ``hca run WORLD --steps 20 --out OUT`` in a process of
    its own, given ``signals(process, stderr)`` once it says it is compiling the step."""
    import threading

    # A cache of its own, so that the step is compiled, not read from the suite's cache.
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "cache")}
    process = subprocess.Popen([sys.executable, "-m", "hca", "run", str(world), "--steps", "20", "--out", str(out)],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    err = []
    reader = threading.Thread(target=lambda: err.extend(iter(lambda: process.stderr.read(1), "")), daemon=True)
    reader.start()
    try:
        assert _wait_for(lambda: "compiling the step ..." in "".join(err), 240), "".join(err)
        signals(process, lambda: "".join(err))
        process.wait(timeout=240)
        reader.join(timeout=10)
    finally:
        process.kill()
    return process.returncode, "".join(err)


def test_sigint_while_compiling_stops_before_the_first_tick(tmp_path, world_file, capsys):
    """Ctrl-C while the step compiles: the compiler finishes (interrupted, it could crash
    the process), then the run stops before its first tick without a traceback, says
    how to go on, and resumes from tick 0."""
    out = tmp_path / "early"
    status, err = _signalled_while_compiling(
        tmp_path, world_file, out, lambda process, err: process.send_signal(signal.SIGINT)
    )
    assert status == 128 + signal.SIGINT, err
    assert "Traceback" not in err and "SIGINT: stopped before tick 0 was stepped" in err
    assert "hca: SIGINT: stopping when the compiler is done, before the first tick (SIGINT again: at once)" in err
    assert f"hca run --resume {out}" in err
    assert RunDirectory(out).saved_ticks() == [] and not (out / "metrics.jsonl").exists()
    assert run("run", "--resume", out, "--quiet") == 0
    assert digest(capsys, out)["tick"] == 20


def test_a_second_sigint_stops_at_once(tmp_path, worlds_dir):
    """The first Ctrl-C is acknowledged at once, though the main thread is inside the
    compiler; a second stops the process at once, as a kill would, saying so."""
    out = tmp_path / "run"

    def twice(process, err):
        process.send_signal(signal.SIGINT)
        # The default world takes 10 s and more to compile, here with a cache of its own.
        assert _wait_for(lambda: "(SIGINT again: at once)" in err(), 10), err()
        assert process.poll() is None
        process.send_signal(signal.SIGINT)

    status, err = _signalled_while_compiling(tmp_path, worlds_dir / "default.yaml", out, twice)
    assert status == 128 + signal.SIGINT, err
    assert (
        "hca: compiling the step ...\n"
        "hca: SIGINT: stopping when the compiler is done, before the first tick (SIGINT again: at once)\n"
        f"hca: SIGINT again: stopped at once; continue from the last checkpoint with:\n  hca run --resume {out}\n"
    ) in err
    assert "Traceback" not in err
    assert RunDirectory(out).saved_ticks() == [] and not (out / "metrics.jsonl").exists()


def _interrupt(*_args, **_kwargs):
    raise KeyboardInterrupt


def test_sigint_before_the_loop_stops_cleanly_and_says_how_to_go_on(tmp_path, world_file, capsys, monkeypatch):
    """Ctrl-C before a run's loop holds signals (the world being built, the directory
    written, a checkpoint restored): exit 130 with one line and no traceback; a run
    directory is made whole or not at all, and what was made resumes."""
    import hca.checkpoint
    import hca.phylogeny
    import hca.runner

    whole = tmp_path / "whole"
    assert run("run", world_file, "--steps", 10, "--out", whole, "--quiet") == 0
    expected = digest(capsys, whole)["state_digest"]

    # While the world is built: nothing written.
    out = tmp_path / "early"
    with monkeypatch.context() as patch:
        patch.setattr(hca.runner, "build", _interrupt)
        capsys.readouterr()
        assert run("run", world_file, "--steps", 10, "--out", out, "--quiet") == 128 + signal.SIGINT
    err = capsys.readouterr().err
    assert err == "hca: SIGINT: stopped; nothing was written\n"
    assert not out.exists()

    # While the run directory is written: none is left, not even half of one.
    with monkeypatch.context() as patch:
        patch.setattr(hca.checkpoint, "_settings_text", _interrupt)
        assert run("run", world_file, "--steps", 10, "--out", out, "--quiet") == 128 + signal.SIGINT
    assert capsys.readouterr().err == "hca: SIGINT: stopped; nothing was written\n"
    assert sorted(path.name for path in tmp_path.iterdir()) == [".early.new", "whole"]

    # After it was made (here while the phylogeny files are started): resume it.
    with monkeypatch.context() as patch:
        patch.setattr(hca.phylogeny.Recorder, "start", _interrupt)
        assert run("run", world_file, "--steps", 10, "--out", out, "--quiet") == 128 + signal.SIGINT
    err = capsys.readouterr().err
    assert "Traceback" not in err and f"SIGINT: stopped; continue with:\n  hca run --resume {out}\n" in err
    assert sorted(path.name for path in tmp_path.iterdir()) == ["early", "whole"]  # the stale one is gone

    # While it is restored on resume: the same hint, and the run goes on unharmed.
    with monkeypatch.context() as patch:
        patch.setattr(hca.runner, "build", _interrupt)
        assert run("run", "--resume", out, "--quiet") == 128 + signal.SIGINT
    assert f"continue with:\n  hca run --resume {out}\n" in capsys.readouterr().err
    assert run("run", "--resume", out, "--quiet") == 0
    assert digest(capsys, out)["state_digest"] == expected


def test_checkpoints_of_another_format_are_skipped_and_added_keys_keep_the_world(
    tmp_path, worlds_dir, capsys
):
    """A checkpoint of another state format is skipped before anything is restored; the
    recorded world is compared after validation, so a key added later with its default
    (here max_crossings) does not make it a different world."""
    out = tmp_path / "run"
    assert run("run", worlds_dir / "default.yaml", "--steps", 5, "--out", out, "--quiet") == 0
    meta_file = out / "checkpoints" / "5" / "meta" / "metadata"
    meta = json.loads(meta_file.read_text())
    del meta["world"]["regions"]["gpu"]["organisms"]["max_crossings"]
    meta_file.write_text(json.dumps({**meta, "format": 1}))
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    capsys.readouterr()
    assert run("run", "--resume", out, "--steps", 3, "--quiet") == 2
    err = capsys.readouterr().err
    assert "state format 1 by another version of hca" in err and "no readable checkpoint" in err
    assert "Traceback" not in err and sorted(str(p) for p in tmp_path.rglob("*")) == before
    meta_file.write_text(json.dumps(meta))
    assert run("run", "--resume", out, "--steps", 3, "--quiet") == 0
