"""What the live page costs a run, measured as a ratio in one process.

    python scripts/bench_live.py [WORLD.yaml] [--warm 1000] [--ticks 2000] [--rounds 3]

Two runs of the world (the agora by default: the default world's GPU cluster and a
plaza for people), of the same seed, are advanced --warm ticks, then --ticks at a
time over the same ticks: one alone, one with its page served and open
(``Live.observe`` taking frames after chunks as ``hca run --serve`` does, and a
WebSocket client in another thread receiving and decoding every frame it is sent).
Both do the same work; rounds alternate which goes first, so that drifts in the
machine's speed fall on both sides. Prints ticks/s each way, the frames the client
got, and the ratio (with the page / without), per round and as a median.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path

import hca
from hca.config import load_world
from hca.live import Live
from hca.runner import Run


def advance(run: Run, ticks: int, observer=None) -> float:
    """Ticks per second over ``ticks`` more ticks of ``run``."""
    run.settings["target_tick"] = run.start_tick + ticks
    started = time.perf_counter()
    run.advance(handle_signals=False, observer=observer)
    return ticks / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("world", nargs="?", default=str(Path(hca.__file__).parent.parent / "worlds" / "agora.yaml"))
    parser.add_argument("--warm", type=int, default=1000, help="ticks run before timing")
    parser.add_argument("--ticks", type=int, default=2000, help="ticks timed per round, each way")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    from websockets.sync.client import connect

    world = load_world(args.world)
    with tempfile.TemporaryDirectory() as directory:
        # Two runs of the same world and seed step through the same states: one alone,
        # one watched, over the same ticks in every round (in alternating order).
        alone, watched = (Run.start(world, Path(directory) / name, args.warm, checkpoint_every=10**9)
                          for name in ("alone", "watched"))
        for run in (alone, watched):
            run.compile(handle_signals=False)
            run.advance(handle_signals=False)
        live = Live(watched.simulation, watched.people)
        live.start()
        live.observe(watched.state, watched.start_tick, force=True)
        frames = {"count": 0, "bytes": 0}
        stop = threading.Event()

        def watch() -> None:  # a browser's part: receive and decode every frame sent
            with connect(f"ws://127.0.0.1:{live.port}/ws", max_size=None) as socket:
                while not stop.is_set():
                    try:
                        text = socket.recv(timeout=0.5)
                    except TimeoutError:
                        continue
                    json.loads(text)
                    frames["count"] += 1
                    frames["bytes"] += len(text)

        def served() -> float:
            client = threading.Thread(target=watch, daemon=True)
            stop.clear()
            client.start()
            rate = advance(watched, args.ticks, observer=live.observe)
            stop.set()
            client.join()
            return rate

        ratios = []
        print(f"{world.name}: {sum(r.cells for r in world.regions.values()):,} cells, from tick {args.warm}")
        for round_ in range(args.rounds):
            before = dict(frames)
            if round_ % 2 == 0:
                rate_alone, rate_served = advance(alone, args.ticks), served()
            else:
                rate_served, rate_alone = served(), advance(alone, args.ticks)
            got = frames["count"] - before["count"]
            size = (frames["bytes"] - before["bytes"]) / max(got, 1)
            ratios.append(rate_served / rate_alone)
            print(f"round {round_ + 1} (ticks {alone.start_tick - args.ticks}..{alone.start_tick}): "
                  f"alone {rate_alone:,.0f} ticks/s; page open {rate_served:,.0f} ticks/s "
                  f"({got} frames of {size / 1024:,.0f} KiB received); ratio {ratios[-1]:.3f}")
        live.close()
        print(f"median ratio (page open / alone): {statistics.median(ratios):.3f}")


if __name__ == "__main__":
    main()
