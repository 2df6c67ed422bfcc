"""The run loop as a library: start, advance, resume, from Python."""

from __future__ import annotations

import json
import shutil

import pytest

from hca.checkpoint import RunDirectoryError, state_digest
from hca.config import parse_world
from hca.parallel import make_mesh
from hca.runner import Run, read_metrics
from hca.world import build
from test_tasks import tasks_world

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


def test_python_api_checkpoints_and_resumes_bitwise(tmp_path):
    world = parse_world(tasks_world())  # with tasks of every kind
    simulation = build(world)
    expected = state_digest(simulation.run(simulation.init(), 70))

    chunks = []
    run = Run.start(world, tmp_path / "r", 30, report_every=10, checkpoint_every=20)
    outcome = run.advance(lambda ticks, line: chunks.append((ticks, line is not None)), handle_signals=False)
    assert outcome.tick == 30 and outcome.balanced and outcome.stopped_by is None
    assert chunks == [(10, True), (10, True), (10, True)]
    assert sorted(int(p.name) for p in (tmp_path / "r" / "checkpoints").iterdir()) == [20, 30]

    resumed = Run.resume(tmp_path / "r", steps=40)
    assert (resumed.start_tick, resumed.target) == (30, 70)
    outcome = resumed.advance(handle_signals=False)
    assert outcome.tick == 70 and state_digest(resumed.state) == expected
    lines = read_metrics(tmp_path / "r" / "metrics.jsonl")
    assert [line["tick"] for line in lines] == list(range(0, 71, 10))
    assert json.loads((tmp_path / "r" / "run.json").read_text())["target_tick"] == 70
    tasks = lines[-1]["regions"]["grid"]["tasks"]
    assert sum(task["paid_total"] for task in tasks.values()) == sum(
        sum(task["paid"] for task in line["regions"]["grid"]["tasks"].values()) for line in lines[1:]
    )
    assert set(tasks) == {"product", "logic", "parity", "function_1", "function_2"}


def test_run_json_records_what_ran_each_part_and_resuming_says_what_changed(tmp_path, capsys):
    """Each part of a run (its start, each resume) is recorded in run.json with the
    versions, platform, XLA flags and devices that ran it; a part whose ticks are run
    again is dropped; resuming with other software or flags says so; inspect lists the
    parts."""
    from hca._xla import float_flags, versions
    from hca.cli import main

    world = parse_world(tasks_world())
    run = Run.start(world, tmp_path / "r", 20, report_every=10, checkpoint_every=10)
    run.advance(handle_signals=False)
    first = json.loads((tmp_path / "r" / "run.json").read_text())["sessions"]
    assert [entry["from_tick"] for entry in first] == [0]
    assert first[0] | versions() == first[0] and first[0]["platform"] == "cpu"
    mesh = make_mesh(world, None)  # on a CPU one device per core, where the world can be placed so
    assert (first[0]["devices"], first[0]["processes"]) == (1 if mesh is None else mesh.size, 1)
    # hca's own flags, and not the fake device count, which cannot change the floats.
    flags = first[0]["xla_flags"]
    assert flags == float_flags() and "-unroll-full-max-count=15" in flags and "device_count" not in flags
    Run.resume(tmp_path / "r", steps=10).advance(handle_signals=False)
    sessions = json.loads((tmp_path / "r" / "run.json").read_text())["sessions"]
    assert [entry["from_tick"] for entry in sessions] == [0, 20] and sessions[0] == first[0]
    # Ticks 10.. run again: the parts that ran them are dropped; the one before ran
    # another jaxlib on another platform, and recorded no flags (as before they were).
    settings = json.loads((tmp_path / "r" / "run.json").read_text())
    settings["sessions"][0] |= {"jaxlib": "0.0.1", "platform": "gpu"}
    del settings["sessions"][0]["xla_flags"]
    (tmp_path / "r" / "run.json").write_text(json.dumps(settings))
    shutil.rmtree(tmp_path / "r" / "checkpoints" / "20")
    shutil.rmtree(tmp_path / "r" / "checkpoints" / "30")
    told = []
    Run.resume(tmp_path / "r", steps=5, report=told.append).advance(handle_signals=False)
    assert told == [f"{tmp_path / 'r'}: the ticks before 10 ran with jaxlib 0.0.1 and platform gpu and xla_flags "
                    f"(not recorded), the next with jaxlib {versions()['jaxlib']} and platform cpu and xla_flags "
                    f"{flags}: their floats may differ in the last bits from a run that kept them"]
    sessions = json.loads((tmp_path / "r" / "run.json").read_text())["sessions"]
    assert [entry["from_tick"] for entry in sessions] == [0, 10]
    capsys.readouterr()
    assert main(["inspect", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert f"from tick 0: hca {versions()['hca']}, jax {versions()['jax']}, jaxlib 0.0.1, " in out
    on = "1 cpu device" if mesh is None else f"{mesh.size} cpu devices"
    assert f"from tick 10: hca {versions()['hca']}" in out and f"on {on}, started 20" in out
    assert out.count(f"; XLA_FLAGS {flags}\n") == 1  # the part from tick 10; tick 0's recorded none
    assert main(["inspect", str(tmp_path / "r"), "--tick", "10", "--json"]) == 0
    assert [entry["from_tick"] for entry in json.loads(capsys.readouterr().out)["sessions"]] == [0]


def test_start_refuses_a_directory_in_use(tmp_path):
    world = parse_world(tasks_world())
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "keep.txt").write_text("mine")
    with pytest.raises(RunDirectoryError, match="not empty"):
        Run.start(world, tmp_path / "r", 10)
    assert (tmp_path / "r" / "keep.txt").read_text() == "mine"


def test_a_signal_is_told_at_once_while_the_main_thread_waits(tmp_path):
    """``on_signal`` hears each SIGINT from a thread of its own, while the main thread is
    still inside a call that Python's signal handlers cannot interrupt (here a lock held
    by another thread, as the device is during a long chunk); the run loop's request is
    recorded all the same, and the wakeup descriptor is given back afterwards."""
    import os
    import signal
    import threading

    from hca.runner import _StopRequest

    handler, wakeup = signal.getsignal(signal.SIGINT), signal.set_wakeup_fd(-1)
    signal.set_wakeup_fd(wakeup)
    heard = []
    busy = threading.Lock()
    busy.acquire()

    def on_signal(number, count):
        heard.append((number, count))
        if count == 2:
            busy.release()  # what the main thread waits for

    with _StopRequest(on_signal) as stop:
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)
        assert busy.acquire(timeout=20), heard  # released by the watcher, not by the handler
        assert heard == [(signal.SIGINT, 1), (signal.SIGINT, 2)]
    assert stop.signal == signal.SIGINT
    assert signal.set_wakeup_fd(wakeup) == wakeup and signal.getsignal(signal.SIGINT) is handler
