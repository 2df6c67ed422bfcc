"""Scaling over devices: speed, and what crosses between devices, from the compiled program.

    python scripts/bench_scaling.py [WORLD.yaml] [--devices 1 2 4 8] [--ticks N] [--json]

For each device count this reports ticks per second and, read from the compiled run
(not guessed), the collective operations that move data between devices: how many a
tick executes on average, the bytes each device sends per tick, in all and across each
mesh axis, and the fraction of ticks that exchange anything. Collectives inside a
branch of the stretch schedule run only on that branch's ticks; the others run every
tick. The same is reported for the world with every stretch set to 1, to show what
stretch saves.

On a CPU the devices are faked (XLA_FLAGS=--xla_force_host_platform_device_count,
set here when absent), so ticks per second there measure overhead, not speed-up.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

if "--xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
    ).strip()

import jax  # noqa: E402

import hca  # noqa: E402
from hca.config import parse_world  # noqa: E402
from hca.parallel import collectives, exchanges, make_mesh  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
def exchange_profile(simulation, state) -> dict:
    """Collectives per tick from the compiled run, weighting branch collectives by how
    often the stretch schedule runs each branch."""
    compiled = collectives(simulation, state)
    every_tick, per_branch = compiled
    schedule = simulation.schedule
    runs = Counter(schedule.branch_of_phase)  # phases per super-step running each branch
    period = schedule.period
    kinds: Counter = Counter()
    per_tick_ops = per_tick_bytes = 0.0
    weighted = [(1.0, every_tick)] + [(runs[b] / period, ops) for b, ops in per_branch.items()]
    for share, ops in weighted:
        for kind, size, _ in ops:
            kinds[kind] += share
            per_tick_ops += share
            per_tick_bytes += share * size
    exchanging = {p for p, b in enumerate(schedule.branch_of_phase) if per_branch.get(b)}
    fraction = 1.0 if every_tick else len(exchanging) / period
    per_axis, _ = exchanges(simulation, state, compiled)
    return {
        "collectives_per_tick": per_tick_ops,
        "bytes_sent_per_device_per_tick": per_tick_bytes,
        "bytes_per_tick_by_axis": {axis.axis: axis.bytes / 1000 for axis in per_axis},
        "every_tick_collectives": len(every_tick),
        "fraction_of_ticks_exchanging": fraction if per_tick_ops else 0.0,
        "by_kind_per_tick": dict(kinds),
    }


def unstretched(world):
    data = world.model_dump(mode="json")
    for region in data["regions"].values():
        for axis in region["axes"]:
            axis["stretch"] = 1
    data["name"] = f"{world.name}_unstretched"
    return parse_world(data)


def measure(world, devices: int, ticks: int) -> dict:
    simulation = hca.build(world, make_mesh(world, devices))
    state = simulation.init()
    profile = exchange_profile(simulation, state) if devices > 1 else {
        "collectives_per_tick": 0.0, "bytes_sent_per_device_per_tick": 0.0,
        "every_tick_collectives": 0, "fraction_of_ticks_exchanging": 0.0, "by_kind_per_tick": {},
        "bytes_per_tick_by_axis": {},
    }
    state = simulation.run(state, 5)
    jax.block_until_ready(state)
    start = time.perf_counter()
    state = simulation.run(state, ticks)
    jax.block_until_ready(state)
    seconds = (time.perf_counter() - start) / ticks
    cells = sum(region.cells for region in world.regions.values())
    return {"world": world.name, "devices": devices, "ticks_per_second": 1 / seconds,
            "cell_ticks_per_second": cells / seconds, **profile}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("world", nargs="?", default=str(ROOT / "worlds" / "default.yaml"))
    parser.add_argument("--devices", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--ticks", type=int, default=50)
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    args = parser.parse_args()
    world = hca.load_world(args.world)
    platform = jax.devices()[0].platform
    present = jax.device_count()
    for devices in args.devices:
        if devices > present:
            print(f"bench_scaling: {devices} devices asked, {present} present: skipped", file=sys.stderr)
    counts = [devices for devices in args.devices if devices <= present]
    rows = []
    for variant in (world, unstretched(world)):
        for devices in counts:
            row = measure(variant, devices, args.ticks)
            rows.append(row)
            if args.json:
                print(json.dumps(row), flush=True)
    if not args.json:
        print(f"{platform}: {jax.device_count()} devices ({os.cpu_count()} CPU cores)")
        print(f"{'world':<22}{'devices':>8}{'ticks/s':>10}{'coll/tick':>11}{'bytes/tick':>12}"
              f"{'every-tick':>12}{'exchanging':>12}  bytes/tick by mesh axis")
        for row in rows:
            by_axis = ", ".join(f"{name} {value:,.0f}" for name, value in row["bytes_per_tick_by_axis"].items())
            print(f"{row['world']:<22}{row['devices']:>8}{row['ticks_per_second']:>10.1f}"
                  f"{row['collectives_per_tick']:>11.1f}{row['bytes_sent_per_device_per_tick']:>12,.0f}"
                  f"{row['every_tick_collectives']:>12}{row['fraction_of_ticks_exchanging']:>12.2f}  {by_axis or '-'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
