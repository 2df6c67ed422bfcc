"""The run loop as a library: start, advance, resume, from Python."""

from __future__ import annotations

import json

import pytest

from hca.checkpoint import RunDirectoryError, state_digest
from hca.config import parse_world
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


def test_start_refuses_a_directory_in_use(tmp_path):
    world = parse_world(tasks_world())
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "keep.txt").write_text("mine")
    with pytest.raises(RunDirectoryError, match="not empty"):
        Run.start(world, tmp_path / "r", 10)
    assert (tmp_path / "r" / "keep.txt").read_text() == "mine"
