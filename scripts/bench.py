"""Benchmark a world: speed against the machine's own memory bandwidth, and memory.

    python scripts/bench.py [WORLD.yaml] [--ticks N] [--json]

A tick must read every genome once, so its floor is the time to stream the genome
array from memory. This prints, from one process: cell-ticks per second, genome bytes
read per tick, the memory read bandwidth measured here on an array at least as large
as the genome array, their ratio (achieved genome bytes per second / bandwidth; 1.0
means the tick costs no more than reading the genomes), and the compiled run's peak
memory against the size of the state.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import hca

ROOT = Path(__file__).resolve().parent.parent


def tree_bytes(tree) -> int:
    return sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree.leaves(tree))


def read_bandwidth(n_bytes: int, repeats: int) -> float:
    """Best bytes per second of jitted reductions that read a float32 array of n_bytes
    once (to a scalar, and to row sums of 16 and 64 entries): the fastest way found
    here to stream that much memory."""
    width = 64 * 16
    data = jnp.ones((max(n_bytes // 4 // width, 1), width), jnp.float32)
    readers = [
        jax.jit(lambda x: x.sum()),
        jax.jit(lambda x: x.reshape(-1, 16).sum(axis=1)),
        jax.jit(lambda x: x.reshape(-1, 64).sum(axis=1)),
    ]
    best = float("inf")
    for read in readers:
        read(data).block_until_ready()
        for _ in range(repeats):
            start = time.perf_counter()
            read(data).block_until_ready()
            best = min(best, time.perf_counter() - start)
    return data.size * 4 / best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("world", nargs="?", default=str(ROOT / "worlds" / "default.yaml"))
    parser.add_argument("--ticks", type=int, default=200, help="timed ticks (after warm-up)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()

    world = hca.load_world(args.world)
    simulation = hca.build(world)
    state = simulation.init()
    cells = sum(region.cells for region in world.regions.values())
    genome_bytes = sum(
        tree_bytes(region.life.genome) for region in state.regions if region.life is not None
    )
    state_bytes = tree_bytes(state)

    compiled = simulation.run.lower(state, args.ticks).compile()
    memory = compiled.memory_analysis()
    peak_bytes = None
    if memory is not None:
        peak_bytes = (
            memory.argument_size_in_bytes
            + memory.output_size_in_bytes
            - memory.alias_size_in_bytes
            + memory.temp_size_in_bytes
        )

    state = simulation.run(state, 20)  # warm-up: compile, and let the population settle
    jax.block_until_ready(state)
    timings = []
    for _ in range(3):
        start = time.perf_counter()
        state = simulation.run(state, args.ticks)
        jax.block_until_ready(state)
        timings.append(time.perf_counter() - start)
    seconds = min(timings) / args.ticks  # per tick

    bandwidth = read_bandwidth(max(genome_bytes, 64 << 20), repeats=10)
    report = {
        "world": world.name,
        "devices": [str(device) for device in jax.devices()][:1] + (["..."] if jax.device_count() > 1 else []),
        "cpu_cores": os.cpu_count(),
        "cells": cells,
        "ticks_per_second": 1.0 / seconds,
        "cell_ticks_per_second": cells / seconds,
        "genome_bytes_per_tick": genome_bytes,
        "genome_bytes_per_second": genome_bytes / seconds,
        "measured_read_bandwidth": bandwidth,
        "bandwidth_ratio": genome_bytes / seconds / bandwidth if genome_bytes else None,
        "state_bytes": state_bytes,
        "peak_bytes": peak_bytes,
        "peak_over_state": peak_bytes / state_bytes if peak_bytes else None,
        "population": sum(
            int(np.asarray(region.life.occupied).sum()) for region in state.regions if region.life is not None
        ),
    }
    if args.json:
        print(json.dumps(report))
        return 0
    gb = 1e9
    print(f"world {report['world']}: {cells:,} cells, population {report['population']:,}, "
          f"{report['cpu_cores']} CPU cores, {jax.devices()[0].platform}")
    print(f"  {report['ticks_per_second']:.1f} ticks/s = {report['cell_ticks_per_second'] / 1e6:.2f} M cell-ticks/s")
    print(f"  genome read per tick        {genome_bytes / 1e6:.1f} MB")
    print(f"  genome bytes per second     {report['genome_bytes_per_second'] / gb:.2f} GB/s")
    print(f"  measured read bandwidth     {bandwidth / gb:.2f} GB/s")
    if report["bandwidth_ratio"] is not None:
        print(f"  ratio                       {report['bandwidth_ratio']:.2f}  (target >= 0.5 on CPU)")
    print(f"  state                       {state_bytes / 1e6:.1f} MB")
    if peak_bytes is not None:
        print(f"  peak memory of a run        {peak_bytes / 1e6:.1f} MB = {report['peak_over_state']:.2f} x state"
              "  (target <= 2)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
