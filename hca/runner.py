"""Runs: a world advanced in chunks, with metrics, checkpoints and clean stops.

``Run.start`` makes a new run directory and ``Run.resume`` continues one from its
newest good checkpoint; ``Run.advance`` steps the world to the run's target tick in
chunks that end on report and checkpoint ticks, appends a line to ``metrics.jsonl``
after every report interval, saves checkpoints with orbax, and stops cleanly (with a
checkpoint) on SIGINT or SIGTERM. The ``hca run`` command is a thin shell over this.

    from hca.runner import Run
    run = Run.start(world, "runs/first", steps=1000)
    outcome = run.advance()
    run = Run.resume("runs/first", steps=500)   # bitwise as one uninterrupted run
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import numpy as np

from hca.checkpoint import RunDirectory, RunDirectoryError, Saver
from hca.config import WorldConfig
from hca.metrics import COUNTERS, TASK_COUNTERS
from hca.parallel import make_mesh, writer
from hca.people import Applier, Desk
from hca.phylogeny import Recorder, write_standard
from hca.tasks import QUALITY_ONE
from hca.world import Simulation, build

Report = Callable[[str], None]


@dataclass
class Outcome:
    """How ``Run.advance`` ended."""

    tick: int  # the tick reached
    line: dict[str, Any]  # the last metrics line
    elapsed: float  # seconds spent advancing, compilation included
    stopped_by: int | None = None  # the signal that stopped the run early (0: a stop event), if any

    @property
    def balanced(self) -> bool:
        return bool(self.line["ledger"]["balanced"])


# What a run's floats depend on: another version of these, another kind of device, or
# other XLA flags may compute them differently in their last bits (the device count
# does not).
SAME_FLOATS = ("hca", "jax", "jaxlib", "platform", "xla_flags")


def _session(simulation: Simulation, start: int) -> dict[str, Any]:
    """What runs a part of a run, from tick ``start`` (``run.json``'s ``sessions``): the
    versions of hca, JAX, jaxlib and Python, the platform, the XLA flags that may change
    the floats (``hca._xla.float_flags``), the devices and processes, and when it
    started."""
    from datetime import datetime, timezone

    from hca._xla import float_flags, versions

    return {
        "from_tick": start,
        **versions(),
        "platform": jax.default_backend(),
        "xla_flags": float_flags(),
        "devices": 1 if simulation.mesh is None else simulation.mesh.size,
        "processes": jax.process_count(),
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _sessions(before: Any, now: dict[str, Any], path: Path, report: Report) -> list[dict[str, Any]]:
    """The sessions of ``before`` (``run.json``'s) that ran ticks before ``now`` starts
    (the ticks after are run again), then ``now``; reports it when the session that
    reached its tick ran other software or another platform."""
    kept = sessions_before(before, now["from_tick"]) if now["from_tick"] > 0 else []
    if kept:
        changed = [key for key in SAME_FLOATS if kept[-1].get(key) != now[key]]
        if changed:
            then = " and ".join(f"{key} {_said(kept[-1].get(key))}" for key in changed)
            report(f"{path}: the ticks before {now['from_tick']} ran with {then}, the next with "
                   + " and ".join(f"{key} {_said(now[key])}" for key in changed)
                   + ": their floats may differ in the last bits from a run that kept them")
    return [*kept, now]


def _said(value: Any) -> Any:
    """A session's entry as a resume reports it: "" (no flags) and None (an older
    run.json, which recorded none) spelled out."""
    return "(none)" if value == "" else "(not recorded)" if value is None else value


def sessions_before(sessions: Any, tick: int) -> list[dict[str, Any]]:
    """The sessions (``run.json``'s) that computed the state at ``tick``: those that
    started before it, or at tick 0. Entries that are not sessions are left out."""
    if not isinstance(sessions, list):
        return []
    return [entry for entry in sessions if isinstance(entry, dict) and isinstance(entry.get("from_tick"), int)
            and (entry["from_tick"] < tick or entry["from_tick"] == 0)]


class Run:
    """A run directory, its world's simulation and the state it has reached."""

    def __init__(self, run_dir: RunDirectory, simulation: Simulation, state: Any, settings: dict[str, Any],
                 start: int, previous: dict[str, Any] | None, recorder: Recorder, people: Desk | None = None):
        self.run_dir = run_dir
        self.recorder = recorder
        self.people = people  # the people of a world with interactive regions (hca.people)
        self._applier: Applier | None = None
        self.simulation = simulation
        self.state = state
        self.settings = settings
        self.start_tick = start
        self.previous = previous  # the last metrics line already written, if any
        self.interrupted: int | None = None  # a signal held while ``compile`` ran

    @property
    def target(self) -> int:
        return self.settings["target_tick"]

    @staticmethod
    def start(
        world: WorldConfig,
        out: str | os.PathLike[str],
        steps: int,
        *,
        report_every: int | None = None,
        checkpoint_every: int | None = None,
        keep: int | None = None,
        devices: int | None = None,
    ) -> Run:
        """A new run of ``world`` for ``steps`` ticks in the directory ``out``, which must
        not exist or be empty. Nothing is written if the world cannot be built."""
        run_dir = RunDirectory(out)
        path = run_dir.path
        if path.exists() and not path.is_dir():
            raise RunDirectoryError(f"{path}: exists and is not a directory")
        if path.is_dir() and any(path.iterdir()):
            raise RunDirectoryError(f"{path}: directory is not empty; choose a new --out, or --resume it")
        settings = {
            "target_tick": steps,
            "report_every": report_every or world.run.report_every,
            "checkpoint_every": checkpoint_every or world.run.checkpoint_every,
            "keep": keep or world.run.keep,
        }
        simulation = build(world, make_mesh(world, devices))
        settings["sessions"] = [_session(simulation, 0)]
        state = simulation.init()
        run_dir.create(world, settings)
        recorder = Recorder.start(world, run_dir.path, state)
        return Run(run_dir, simulation, state, settings, 0, None, recorder, Desk.start(world, run_dir.path))

    @staticmethod
    def resume(
        path: str | os.PathLike[str],
        *,
        steps: int | None = None,
        report_every: int | None = None,
        checkpoint_every: int | None = None,
        keep: int | None = None,
        devices: int | None = None,
        report: Report = lambda line: None,
    ) -> Run:
        """Continue the run in ``path`` from its newest good checkpoint, to the first run's
        target or for ``steps`` more ticks. Metrics lines after that checkpoint are dropped
        (advancing writes them again, identically). A run stopped before its first
        checkpoint starts again from tick 0, as a new run of its world would."""
        run_dir = RunDirectory(path)
        world = run_dir.world()
        settings = run_dir.settings()
        simulation = build(world, make_mesh(world, devices))
        if run_dir.saved_ticks():
            checkpoint = run_dir.load(world, simulation.abstract_state(), report=report)
            start, state = checkpoint.tick, checkpoint.state
            applied = checkpoint.meta.get("people_applied", 0)
        else:
            for partial in run_dir.interrupted_saves():
                report(f"{partial}: incomplete save (the run was stopped while saving); ignored")
            report(f"{run_dir.path}: no checkpoint yet; starting again from tick 0")
            start, state, applied = 0, simulation.init(), 0
        try:
            people = Desk.resume(world, run_dir.path, start, applied)
        except ValueError as error:
            raise RunDirectoryError(str(error)) from None
        for key, value in (("report_every", report_every), ("checkpoint_every", checkpoint_every), ("keep", keep)):
            if value is not None:
                settings[key] = value
        settings["target_tick"] = start + steps if steps is not None else settings.get("target_tick", start)
        settings.setdefault("report_every", world.run.report_every)
        settings.setdefault("checkpoint_every", world.run.checkpoint_every)
        settings.setdefault("keep", world.run.keep)
        settings["sessions"] = _sessions(settings.get("sessions"), _session(simulation, start), run_dir.path, report)
        run_dir.write_settings(settings)
        # From a checkpoint, its tick's metrics line stays; from tick 0, all are written again.
        previous = keep_metrics_until(run_dir.metrics_file, start if start else -1)
        reports = [line["tick"] for line in read_metrics(run_dir.metrics_file)]
        recorder = Recorder.resume(world, run_dir.path, state, start, reports, settings["report_every"])
        return Run(run_dir, simulation, state, settings, start, previous, recorder, people)

    def compile(self, handle_signals: bool = True, on_signal: Callable[[int, int], None] | None = None) -> float:
        """Compile the run's step now (a run of zero ticks); returns the seconds it took.
        ``advance`` compiles on its first chunk otherwise.

        With ``handle_signals`` (honoured in the main thread), SIGINT and SIGTERM wait for
        the compiler to finish (interrupted, XLA's compiler can crash the process) and
        are then in ``interrupted``, for the caller to stop before the first tick; with
        several processes, as the first process got (0 where only the first did).
        ``on_signal(number, count)`` is told of each at once (see ``advance``)."""
        started = time.perf_counter()
        held = _StopRequest(on_signal) if handle_signals and threading.current_thread() is threading.main_thread() else None
        with held or contextlib.nullcontext():
            self.state = jax.block_until_ready(self.simulation.run(self.state, 0))
        got = None if held is None else held.signal
        self.interrupted = (0 if got is None else got) if _agreed(got is not None) else None
        return time.perf_counter() - started

    def advance(
        self,
        on_chunk: Callable[[int, dict[str, Any] | None], None] | None = None,
        handle_signals: bool = True,
        observer: Callable[[Any, int, dict[str, Any]], None] | None = None,
        stop_event: threading.Event | None = None,
        on_signal: Callable[[int, int], None] | None = None,
    ) -> Outcome:
        """Run to the target tick, writing metrics and checkpoints as it goes.

        ``on_chunk(ticks, line)`` is called after each chunk with the ticks it ran and
        the metrics line written after it (None between reports). With
        ``handle_signals`` (honoured in the main thread), SIGINT and SIGTERM stop the run
        after the current chunk with a checkpoint (``Outcome.stopped_by``); so does
        ``stop_event`` once set (``stopped_by`` 0). ``on_signal(number, count)`` is called
        on each such signal at once, from another thread, while the chunk still runs
        (count: how many have come; e.g. to say so, or to exit on the second, which a
        kill would equal: the last checkpoint stays). ``observer(state, tick, line)`` sees
        the state after every chunk (before the next is dispatched; the live page).
        People's actions (``hca.people``) take effect between chunks, at the tick the
        next chunk starts from; logged ones being replayed end the chunk before theirs.
        """
        simulation, settings, recorder, people = self.simulation, self.settings, self.recorder, self.people
        if people is not None:
            self._applier = self._applier or Applier(simulation)
            people.reopen()
        report_every, checkpoint_every = settings["report_every"], settings["checkpoint_every"]
        drain_every = recorder.every
        target = self.target
        saver = Saver(self.run_dir, simulation.config, settings["keep"])
        started = time.perf_counter()
        tick = int(self.start_tick)
        line = self.previous
        state = self.state
        main_thread = threading.current_thread() is threading.main_thread()
        stop = _StopRequest(on_signal) if handle_signals and main_thread else None
        try:
            if stop is not None:
                stop.__enter__()
            # With several processes the first writes the run's files; all step alike.
            with open(self.run_dir.metrics_file if writer() else os.devnull, "a", encoding="utf-8") as metrics:
                if line is None:
                    line = metrics_line(simulation, state, None, recorder.measure(tick))
                    metrics.write(json.dumps(line) + "\n")
                    metrics.flush()
                collected = None  # a drain whose host side runs while the next chunk steps
                reported = None  # a report's line, its tree measured while the next chunk steps

                def write_report():
                    nonlocal reported
                    if reported is None:
                        return
                    at, regular, pending_line, phylogeny = reported
                    reported = None
                    for name, measured in recorder.measure(at, regular).items():
                        phylogeny[name].update(measured)  # in place: the line holds these dicts
                    metrics.write(json.dumps(pending_line) + "\n")
                    metrics.flush()

                while tick < target:
                    until_report = report_every - tick % report_every
                    until_save = checkpoint_every - tick % checkpoint_every
                    until_drain = drain_every - tick % drain_every
                    chunk = min(until_report, until_save, until_drain, target - tick)
                    if people is not None:
                        state = people.apply(self._applier, state, tick)
                        if people.next_tick() is not None:
                            chunk = min(chunk, people.next_tick() - tick)
                    state = simulation.run(state, chunk)  # dispatched; the device works on
                    write_report()
                    if collected is not None:
                        recorder.finish(collected)
                        collected = None
                    tick += chunk
                    written = None
                    stopping = stop is not None and stop.signal is not None
                    if stop_event is not None and stop_event.is_set():
                        stopping = True
                    stopping = _agreed(stopping)
                    report = tick % report_every == 0 or tick == target
                    if report or tick % drain_every == 0 or stopping:
                        collected = recorder.collect(state, tick)
                    if report or stopping:
                        recorder.finish(collected)
                        collected = None
                    if report:
                        phylogeny = {tree.name: {} for tree in recorder.trees}
                        line = written = metrics_line(simulation, state, line, phylogeny)
                        if people is not None:
                            line["people"] = people.summary()
                        reported = (tick, tick % report_every == 0, line, phylogeny)
                    if tick % checkpoint_every == 0 or tick == target:
                        if collected is not None:  # a checkpoint finds its drains recorded
                            recorder.finish(collected)
                            collected = None
                        write_report()  # and its tick's metrics line written
                        saver.save(state, self._meta())
                        recorder.save(settings["keep"])  # the trees, so that a resume need not replay them
                        if writer() and tick < target and not simulation.config.run.phylogeny.prune:
                            # Kept current: a stop or the end writes only what follows.
                            write_standard(self.run_dir.path)
                    if on_chunk is not None:
                        on_chunk(chunk, written)
                    if people is not None:
                        people.close_questions(tick)
                    if observer is not None:
                        observer(state, tick, line)
                    if stopping and tick < target:
                        write_report()
                        saver.save(state, self._meta())
                        recorder.save(settings["keep"])
                        if writer():
                            write_standard(self.run_dir.path, prune=simulation.config.run.phylogeny.prune)
                        self.state, self.start_tick, self.previous = state, tick, line
                        signal_number = stop.signal if stop is not None and stop.signal is not None else 0
                        return Outcome(tick, line, time.perf_counter() - started, signal_number)
                if collected is not None:
                    recorder.finish(collected)
                write_report()
            if writer():
                write_standard(self.run_dir.path, prune=simulation.config.run.phylogeny.prune)
            self.state, self.start_tick, self.previous = state, tick, line
            return Outcome(tick, line, time.perf_counter() - started)
        finally:
            saver.close()
            if stop is not None:
                stop.__exit__()
            if people is not None:
                people.finish(tick)

    def _meta(self) -> dict[str, Any]:
        """What a checkpoint records besides the state: the people's actions it includes."""
        return {} if self.people is None else {"people_applied": self.people.applied}


def _agreed(stopping: bool) -> bool:
    """With several processes, whether the first is stopping: all stop at the same tick."""
    if jax.process_count() == 1:
        return stopping
    from jax.experimental import multihost_utils

    return bool(multihost_utils.broadcast_one_to_all(np.int32(stopping)))


def metrics_line(simulation: Simulation, state: Any, previous: dict[str, Any] | None,
                 phylogeny: dict[str, Any] | None = None) -> dict[str, Any]:
    """One metrics.jsonl record. Life counters are given per interval (``births``) and
    since tick 0 (``births_total``); ``phylogeny`` (``Recorder.measure``) adds each
    living region's phylogenetic diversity and MODES."""
    measured = simulation.ledger(state)
    regions = {}
    for name, ledger in measured["regions"].items():
        regions[name] = dict(ledger)
        if name in measured["life"]:
            life = dict(measured["life"][name])
            before = previous["regions"][name].get("life", {}) if previous else {}
            for counter in COUNTERS:
                life[f"{counter}_total"] = life[counter]
                life[counter] -= before.get(f"{counter}_total", 0)
            regions[name]["life"] = life
            if phylogeny is not None and name in phylogeny:
                regions[name]["phylogeny"] = phylogeny[name]
    for name, tasks in measured["tasks"].items():
        regions[name]["tasks"] = {}
        for task, counters in tasks.items():
            before = previous["regions"][name].get("tasks", {}).get(task, {}) if previous else {}
            regions[name]["tasks"][task] = _task_line(counters, before)
    line = {"tick": measured["tick"], "ledger": measured["world"], "regions": regions}
    if "beaches" in measured:  # what each beach carried since tick 0, from its first shore and back
        line["beaches"] = measured["beaches"]
    lives = [region["life"] for region in regions.values() if "life" in region]
    if lives:
        line["life"] = {
            key: sum(life[key] for life in lives)
            for key in ("population", *COUNTERS, *(f"{c}_total" for c in COUNTERS), "lineages")
        }
        line["life"]["deepest_generation"] = max(life["deepest_generation"] for life in lives)
    return line


def _task_line(totals: dict[str, int], before: dict[str, Any]) -> dict[str, Any]:
    """A task's metrics: counts over the last interval and since tick 0, and the mean
    quality of the interval's answers (0 to 1; None when nothing was answered). The
    partial results of a group's later cells (``relayed``, ``mean_relay_quality``)
    appear once there have been any: never for one-cell tasks."""
    line: dict[str, Any] = {}
    for key in TASK_COUNTERS:
        line[key] = totals[key] - before.get(f"{key}_total", 0)
        line[f"{key}_total"] = totals[key]
    for count, quality in (("answered", "quality"), ("relayed", "relay_quality")):
        summed = line.pop(quality)
        line[f"mean_{quality}"] = summed / line[count] / QUALITY_ONE if line[count] else None
    if not totals["relayed"]:
        for key in ("relayed", "relayed_total", "relay_quality_total", "mean_relay_quality"):
            del line[key]
    return line


def read_metrics(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The lines of a metrics.jsonl file (a line cut short by a kill is skipped)."""
    path = Path(path)
    lines = []
    if path.exists():
        for text in path.read_text(encoding="utf-8").splitlines():
            try:
                lines.append(json.loads(text))
            except ValueError:
                continue
    return lines


def keep_metrics_until(path: Path, tick: int) -> dict[str, Any] | None:
    """Drop metrics lines after ``tick`` (they will be written again, identically) and
    return the last line kept."""
    if not path.exists():
        return None
    kept, last = [], None
    for text in path.read_text(encoding="utf-8").splitlines():
        try:
            line = json.loads(text)
        except ValueError:
            continue  # a line cut short by a kill
        if line.get("tick", tick + 1) <= tick:
            kept.append(text)
            last = line
    if writer():
        temporary = path.with_name(f".{path.name}.tmp")
        temporary.write_text("".join(f"{text}\n" for text in kept), encoding="utf-8")
        os.replace(temporary, path)
    return last


class _StopRequest:
    """Turns SIGINT and SIGTERM into a request the run loop honours between chunks.

    ``on_signal(number, count)``, if given, is called at once on each of them, from a
    thread of its own: Python runs signal handlers only between bytecodes of the main
    thread, which may be waiting for the device for a long chunk; the watcher reads the
    signal numbers that Python writes to its wakeup file descriptor as they come."""

    def __init__(self, on_signal: Callable[[int, int], None] | None = None) -> None:
        self.signal: int | None = None
        self._previous: dict[int, Any] = {}
        self._on_signal = on_signal
        self._watcher: tuple[threading.Thread, int, int, int] | None = None

    def __enter__(self) -> _StopRequest:
        for number in (signal.SIGINT, signal.SIGTERM):
            self._previous[number] = signal.signal(number, self._handle)
        if self._on_signal is not None:
            read, write = os.pipe()
            os.set_blocking(write, False)
            previous_fd = signal.set_wakeup_fd(write, warn_on_full_buffer=False)
            watcher = threading.Thread(target=self._watch, args=(read,), name="hca-signals", daemon=True)
            watcher.start()
            self._watcher = (watcher, read, write, previous_fd)
        return self

    def _handle(self, number: int, frame: Any) -> None:
        self.signal = number

    def _watch(self, read: int) -> None:
        count = 0
        while data := os.read(read, 64):  # until the write end is closed
            for number in data:
                if number in (signal.SIGINT, signal.SIGTERM):
                    count += 1
                    self._on_signal(number, count)

    def __exit__(self, *exc: Any) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        if self._watcher is not None:
            watcher, read, write, previous_fd = self._watcher
            signal.set_wakeup_fd(previous_fd)
            os.close(write)
            watcher.join(timeout=5)
            os.close(read)
            self._watcher = None
