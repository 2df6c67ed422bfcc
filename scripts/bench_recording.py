"""What recording the phylogeny costs a run, measured as a ratio in one process.

    python scripts/bench_recording.py [WORLD.yaml] [--warm 3000] [--ticks 2000]

The world is first run for --warm ticks (past the founders' boom of births), then the
same --ticks are timed twice from that state: stepped alone, in chunks that end at every
drain (``run.phylogeny.drain_every``) and report (``run.report_every``), and stepped
with a ``Recorder`` as a run does: births and deaths drained after every chunk (device
to host, journals appended) and, at each report, phylotrackpy fed and the tree measured,
each while the next chunk steps.
Prints births and deaths per tick, the fraction of the births that reached the tree (the
others died out between two reports with all their descendants), and the slowdown the
recording adds.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import jax

import hca
from hca.config import load_world
from hca.phylogeny import Recorder
from hca.world import build


def timed(simulation, state, ticks: int, every: int, report: int, recorder: Recorder | None) -> tuple[float, object]:
    """Seconds to step ``ticks`` in chunks that end at every drain (``every``) and report
    (``report``); with a recorder, draining and measuring as ``Run.advance`` does: the
    host side of a drain, and the tree's measure at a report, run while the next chunk
    steps."""
    tick = int(state.tick)
    end = tick + ticks
    started = time.perf_counter()
    collected = reported = None
    while tick < end:
        chunk = min(every - tick % every, report - tick % report, end - tick)
        state = simulation.run(state, chunk)
        if reported is not None:
            recorder.measure(reported)
            reported = None
        if collected is not None:
            recorder.finish(collected)
            collected = None
        tick += chunk
        if recorder is not None:  # a chunk ends at a drain, a report or the end
            collected = recorder.collect(state, tick)
            if tick % report == 0 or tick == end:
                recorder.finish(collected)
                collected, reported = None, tick
    if reported is not None:
        recorder.measure(reported)
    state = jax.block_until_ready(state)
    return time.perf_counter() - started, state


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("world", nargs="?", default=str(Path(hca.__file__).parent.parent / "worlds" / "default.yaml"))
    parser.add_argument("--warm", type=int, default=3000, help="ticks run before timing")
    parser.add_argument("--ticks", type=int, default=2000, help="ticks timed, each way")
    args = parser.parse_args()

    world = load_world(args.world)
    simulation = build(world)
    every = world.run.phylogeny.drain_every
    ticks = max(args.ticks // every, 1) * every
    warm = max(args.warm // every, 1) * every
    kept = jax.device_get(simulation.run(simulation.init(), warm))

    def births(state) -> int:
        return sum(int(r.life.births.sum()) for r in state.regions if r.life is not None)

    def events(state) -> int:
        return births(state) + sum(int(r.life.deaths.sum()) for r in state.regions if r.life is not None)

    def taxa(recorder) -> int:
        return sum(tree.systematics.get_next_id() for tree in recorder.trees)

    jax.block_until_ready(simulation.run(jax.device_put(kept), every))  # compiled before timing
    report = world.run.report_every
    plain, after = timed(simulation, jax.device_put(kept), ticks, every, report, None)
    with tempfile.TemporaryDirectory() as directory:
        recorder = Recorder.start(world, directory, jax.device_put(kept))  # the warm state's living, as roots
        recorder.measure(warm)  # as a run's first line: the roots in the tree
        roots = taxa(recorder)
        recorded, _ = timed(simulation, jax.device_put(kept), ticks, every, report, recorder)
        fed = taxa(recorder) - roots
    result = {
        "world": world.name,
        "from_tick": warm,
        "ticks": ticks,
        "drain_every": every,
        "report_every": report,
        "births_and_deaths_per_tick": (events(after) - events(kept)) / ticks,
        "births_fed_to_the_tree": fed / max(births(after) - births(kept), 1),
        "ticks_per_second_plain": ticks / plain,
        "ticks_per_second_recorded": ticks / recorded,
        "recording_slowdown": recorded / plain - 1,
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
