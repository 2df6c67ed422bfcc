"""Benchmark a world: speed against the machine's own memory bandwidth, and memory.

    python scripts/bench.py [WORLD.yaml] [--resize AXIS=SIZE ...] [--ticks N] [--warm N] [--repeats R] [--json]

A tick must read every genome once, and read and write once each organism's plastic
weights, hidden state, signals and halo and each cell's energy arrays (energy, the
energy of the last tick, age, occupancy, free energy): the bytes a tick *must move*.
This prints, from one process: cell-ticks per second; the genome bytes and the
must-move bytes of a tick; the memory read bandwidth measured here on an array at
least as large, between the timed runs (the best of several ways of reading it); the
achieved fraction of each floor (1.0: the tick costs no more than moving those bytes
once at that bandwidth); the brain alone (thinking and learning, jitted on their own)
against its own floor; the compiled run's peak memory against the size of the state;
and where the time goes, twice: each phase of the tick (energy in, sense, decide =
think + learn + answer + act, settle claims, transfer, energy out) compiled on its own
from the same code and timed over two super-steps of the stretch schedule (after one
that compiles them); and the kernels of the fused tick over the timed ticks, traced in
one run (``jax.profiler``), each counted to the
hca function it was compiled from (the phases compiled apart cannot fuse with their
neighbours, so they add up to more than the tick; the kernels are the tick itself),
with the share of the traced tick's wall time in which no kernel runs at all, and how
late a second thread takes up its part of a kernel split over the cores. It names
the processor (model, widest vector instructions, last-level cache), the versions and
the XLA flags the figures were measured with.
``--resize sm=32 --resize warp=64`` makes the default world 131,072 cells (838 MB to
move a tick), beyond the caches of the machines here. The world runs on the devices
``hca run`` would give it (on a CPU one per core, where its placed axes allow;
``--devices N`` to choose); the brain alone and the phases run on the state as it is
spread, and the traced kernels are those of every device.

The timed runs (``--repeats``) each step the same ``--ticks`` ticks from the same state,
the one after ``--warm`` ticks, with the bandwidth read after each: their spread is the
machine's, not the world's (later in a run more organisms are born and move, and a tick
costs more). The figures are the best run against the best reading, with the range of
each run against the reading made right after it. The phases and the traced kernels
start from that state too, so they show where the timed ticks went.
"""

from __future__ import annotations

import argparse
import bisect
import collections
import functools
import gzip
import json
import math
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import hca
from hca import brain
from hca._xla import cpu_cores, float_flags, restart_with_huge_pages, versions
from hca.config import parse_world
from hca.parallel import PlacementError, describe, make_mesh

ROOT = Path(__file__).resolve().parent.parent


def tree_bytes(tree) -> int:
    return sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree.leaves(tree))


def device_bytes(tree) -> int:
    """The bytes of ``tree`` one device holds (a sharded array's shard, a replicated
    array whole)."""
    return sum(
        math.prod(leaf.sharding.shard_shape(leaf.shape)) * leaf.dtype.itemsize for leaf in jax.tree.leaves(tree)
    )


# Fields a tick reads and writes once per cell (LifeState), besides the genome it reads.
MOVED_FIELDS = ("occupied", "energy", "last_energy", "hidden", "signal", "halo", "plastic", "age")
PHASES = ("inflow", "sense", "decide", "settle", "transfer", "decay")
KERNEL_ROWS = 14  # origins printed; the rest are summed in one line


def copied(state):
    """A copy of ``state`` (``run`` donates the state it is given)."""
    return jax.tree.map(lambda x: x.copy(), state)


def processor() -> dict:
    """The CPU the figures were measured on: its model, its widest vector instructions
    (XLA CPU vectorises for them) and its last-level cache, from Linux's /proc and /sys;
    None where a value cannot be read. Two machines of one kind can differ in both, and
    the floor is set against memory only where the genomes exceed the cache."""
    import platform

    info = {"model": platform.processor() or None, "vector": None, "cache_bytes": None}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    fields = {key.strip(): value.strip() for key, value in fields.items()}
    info["model"] = fields.get("model name") or info["model"]
    flags = set((fields.get("flags") or fields.get("Features") or "").split())
    for flag, name in (("avx512f", "AVX-512"), ("avx2", "AVX2"), ("avx", "AVX"), ("sse2", "SSE2"),
                       ("sve", "SVE"), ("asimd", "NEON")):
        if flag in flags:
            info["vector"] = name
            break
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    levels = []
    for cache in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        try:
            level = int((cache / "level").read_text())
            size = (cache / "size").read_text().strip()
        except (OSError, ValueError):
            continue
        if size[-1:] in units and size[:-1].isdigit():
            levels.append((level, int(size[:-1]) * units[size[-1]]))
        elif size.isdigit():
            levels.append((level, int(size)))
    if levels:
        info["cache_bytes"] = max(levels)[1]
    return info


def describe_processor(info: dict) -> str:
    """One line: "AMD EPYC, AVX2, 32 MiB last-level cache"."""
    parts = [info["model"] or "unknown CPU"]
    if info["vector"]:
        parts.append(info["vector"])
    if info["cache_bytes"]:
        parts.append(f"{info['cache_bytes'] / (1 << 20):g} MiB last-level cache")
    return ", ".join(parts)


def must_move_bytes(state) -> int:
    """Bytes a tick must move: each genome read once; MOVED_FIELDS and free energy
    read and written once; one row of the death journal written."""
    total = 0
    for region in state.regions:
        total += 2 * tree_bytes(region.free_energy)
        if region.life is not None:
            total += tree_bytes(region.life.genome)
            total += 2 * sum(tree_bytes(getattr(region.life, name)) for name in MOVED_FIELDS)
            journal = (region.life.died, region.life.died_parent, region.life.died_generation)
            total += sum(tree_bytes(field) for field in journal) // region.life.died.shape[-2]
    return total


def resized(world, sizes: list[str]):
    """The world with the named axes resized (``AXIS=SIZE``, in every region that has them)."""
    data = world.model_dump(mode="json")
    for item in sizes:
        name, _, size = item.partition("=")
        if not size.isdigit():
            raise SystemExit(f"bench: error: --resize {item}: expected AXIS=SIZE, e.g. sm=32")
        found = False
        for region in data["regions"].values():
            for axis in region["axes"]:
                if axis["name"] == name:
                    axis["size"], found = int(size), True
        if not found:
            raise SystemExit(f"bench: error: --resize {item}: no axis named {name!r} in the world")
    return parse_world(data, f"{world.name} resized")


def phase_seconds(simulation, state, rounds: int = 2) -> tuple[dict[str, float], object]:
    """(seconds per tick of each phase of ``hca.step.Tick``, the state after): each
    phase compiled on its own and run on the state as the phase before hands it over,
    over ``rounds`` super-steps. Takes over ``state``."""
    tick = simulation.tick
    # Each piece takes over the regions it is given (donated), as inside the tick, so
    # what it passes through unchanged (the genomes above all) is not copied.
    pieces = {name: jax.jit(getattr(tick, name), donate_argnums=0) for name in PHASES}
    period = tick.schedule.period
    spent = dict.fromkeys(PHASES, 0.0)

    def timed(name, *args):
        start = time.perf_counter()
        out = jax.block_until_ready(pieces[name](*args))
        spent[name] += time.perf_counter() - start
        return out

    for round_ in range(rounds + 1):  # the first round compiles and is not counted
        if round_ == 1:
            spent = dict.fromkeys(PHASES, 0.0)
        for _ in range(period):
            t, seed = state.tick, state.seed
            phase = t % period
            branch = jnp.asarray(tick.branch_of_phase)[phase]
            regions = timed("inflow", state.regions, t, seed)
            regions = timed("sense", regions, branch)
            regions, intents = timed("decide", regions, phase, t, seed)
            regions, claims, carried = timed("settle", regions, intents, branch, t, seed)
            regions, crossed = timed("transfer", regions, intents, claims, branch, t, seed)
            regions = timed("decay", regions)
            state = tick.tally(state, carried, crossed).replace(tick=t + 1, regions=regions)
    return {name: seconds / (rounds * period) for name, seconds in spent.items()}, state


def brain_seconds(simulation, state, rounds: int = 4) -> tuple[float, int]:
    """(seconds, bytes) a tick of every organism's brain alone: ``brain.think`` (every
    slot scored) and the Hebbian step, jitted on their own at the world's shapes, on the
    state's genomes and a copy of its plastic weights. The bytes are its own floor: the
    genomes read, the plastic weights read and written.

    The ticks run in one loop, as in a run: each feeds its signals and hidden state to
    the next and refreshes one direction slot from them (so nothing can be hoisted out
    of the loop), and its outputs live in buffers the loop reuses. A tick's time is the
    difference between loops of ``1 + rounds`` and of 1 tick, over ``rounds`` (at
    least enough for a quarter of a second): what a call costs besides its ticks (the
    first touch of its buffers) is left out."""

    def loop(layout, count, genome, carry, rest, exists):
        def one(_, carry):
            plastic, hidden, signal, slot_inputs, _, units = carry  # _: the last scores
            self_inputs = jnp.concatenate([signal, hidden, rest], axis=1)
            thought = brain.think(layout, genome, self_inputs, slot_inputs, exists, plastic)
            post = brain.post_synaptic(thought, jnp.tanh(rest[:, 0]))
            signal = thought.squashed[:, : layout.signals]
            return (
                brain.hebbian(plastic, thought.hidden, post),
                thought.hidden,
                signal,
                slot_inputs.at[:, 0, 0].set(signal[:, 0]),
                thought.slot_scores,
                units + thought.active_units,
            )

        return jax.lax.fori_loop(0, count, one, carry)

    seconds, moved = 0.0, 0
    for life, region in zip(simulation.tick.lives, state.regions):
        if life is None:
            continue
        layout, cells = life.layout, region.life.occupied.size
        genome = {name: region.life.genome[name].reshape(cells, *shape) for name, shape in layout.tensors}
        # The inputs' widths, as the genome's first weights take them.
        shapes = layout.shapes()
        keys = jax.random.split(jax.random.key(0), 2)
        width = shapes["body_w"][0] - layout.encoder - layout.signals - layout.hidden
        rest = jax.random.normal(keys[0], (cells, width), jnp.float32)
        carry = (
            jnp.array(region.life.plastic.reshape(cells, layout.outputs, layout.hidden)),
            jnp.zeros((cells, layout.hidden), jnp.float32),
            jnp.zeros((cells, layout.signals), jnp.float32),
            jax.random.normal(keys[1], (cells, life.slots, shapes["encoder_w"][0]), jnp.float32),
            jnp.zeros((cells, life.slots), jnp.float32),
            jnp.zeros((cells,), jnp.int32),
        )
        exists = jnp.ones((cells, life.slots), bool)
        step = jax.jit(functools.partial(loop, layout), donate_argnums=2)
        best = {}

        def timed(count):
            nonlocal carry
            start = time.perf_counter()
            carry = jax.block_until_ready(step(count, genome, carry, rest, exists))
            best[count] = min(best.get(count, float("inf")), time.perf_counter() - start)

        timed(1)  # compiles
        timed(1)
        # Enough ticks for a quarter of a second, so that the difference is not noise
        # (on a small world a call's own cost can exceed hundreds of ticks).
        ticks = rounds
        timed(1 + ticks)
        while best[1 + ticks] < 0.25 and ticks < 100_000:
            ticks = max(2 * ticks, math.ceil(ticks * 0.3 / best[1 + ticks]))
            timed(1 + ticks)
        for count in (1 + ticks, 1) * 3:
            timed(count)
        seconds += max(best[1 + ticks] - best[1], 0.0) / ticks
        moved += tree_bytes(genome) + 2 * tree_bytes(carry[0])
    return seconds, moved


# Instructions that only run others (whose kernels the trace shows on their own).
_CONTROL_FLOW = re.compile(r" (?:conditional|while|call)\(")
UNTRACED = "(XLA's own: copies, constants)"


def kernel_origins(hlo: str) -> dict[str, str]:
    """{instruction: origin} for the compiled module ``hlo`` (``Compiled.as_text()``):
    the innermost function of the ``hca`` package in the Python stack an instruction
    was traced from (``brain.think``, ``geometry.Tiling.total``), or ``UNTRACED`` for
    what XLA made on its own (copies, constants). A kernel XLA made of operations it
    rewrote (a cumulative sum or a long sum becomes ``wrapped_reduce-window`` kernels,
    which keep no stack) is counted to the origin of the first of its operands that has
    one: the function whose values it goes on with. Instructions that only run others
    are left out."""
    tables = {}
    for name in ("FileNames", "FunctionNames", "FileLocations", "StackFrames"):
        match = re.search(rf"^{name}\n(.*?)(?:\n\n|\Z)", hlo, re.M | re.S)
        tables[name] = match.group(1).splitlines() if match else []
    named = re.compile(r'(\d+) "(.*)"')
    files = dict(named.match(line).groups() for line in tables["FileNames"])
    functions = dict(named.match(line).groups() for line in tables["FunctionNames"])
    location_of = re.compile(r"(\d+) \{file_name_id=(\d+) function_name_id=(\d+)")
    frame_of = re.compile(r"(\d+) \{file_location_id=(\d+) parent_frame_id=(\d+)")
    package = Path(hca.__file__).resolve().parent
    located = {}  # location id -> "module.function" when in the hca package
    for line in tables["FileLocations"]:
        number, file, function = location_of.match(line).groups()
        path = Path(files[file]).resolve()
        if package in path.parents:
            located[number] = f"{path.stem}.{functions[function].split('.<locals>')[0]}"
    frames = {}  # frame id -> (location id, parent frame id)
    for line in tables["StackFrames"]:
        number, location, parent = frame_of.match(line).groups()
        frames[number] = (location, parent)

    def origin(frame):
        seen = set()
        while frame in frames and frame not in seen:  # from the innermost frame outwards
            seen.add(frame)
            location, frame = frames[frame]
            if location in located:
                return located[location]
        return UNTRACED

    out = {}
    for line in hlo.splitlines():  # operands come before their users
        match = re.match(r"\s*(?:ROOT )?%([\w.\-]+) = ", line)
        if match and not _CONTROL_FLOW.search(line):
            frame = re.search(r"stack_frame_id=(\d+)", line)
            found = origin(frame.group(1)) if frame else UNTRACED
            fused = re.search(r" fusion\(([^)]*)\)", line)
            if found == UNTRACED and fused:  # a kernel XLA made of operations it rewrote
                operands = (out.get(operand, UNTRACED) for operand in re.findall(r"%([\w.\-]+)", fused.group(1)))
                found = next((known for known in operands if known != UNTRACED), UNTRACED)
            out[match.group(1)] = found
    return out


def kernel_seconds(simulation, state, ticks: int, hlo: str) -> tuple[list[dict], dict, object]:
    """(rows, timeline, the state after): the fused tick's kernel time per tick, by
    origin (``kernel_origins`` of ``hlo``, the compiled run of ``ticks``), from one run
    traced by ``jax.profiler``; each row {"origin", "seconds", "kernels"} (kernels
    launched a tick), largest first. Kernel times are summed over the executor's
    threads: independent kernels run side by side, so the sum can exceed the tick's
    wall time. ``timeline``: see ``kernel_timeline``, and ``split_summary`` of how late
    a second thread took up its part of a split kernel (``split_delays``).
    Takes over ``state``."""
    origins = kernel_origins(hlo)
    with tempfile.TemporaryDirectory() as directory:
        with jax.profiler.trace(directory, create_perfetto_trace=True):
            state = jax.block_until_ready(simulation.run(state, ticks))
        trace = next(Path(directory).rglob("*perfetto_trace.json.gz"))
        events = json.loads(gzip.decompress(trace.read_bytes()))
    events = events["traceEvents"] if isinstance(events, dict) else events
    seconds, kernels = collections.Counter(), collections.Counter()
    running, helped = [], []  # (start, end, thread) of each kernel; (time, thread) of each split part
    for event in events:
        if event.get("ph") != "X":
            continue
        origin = origins.get(event.get("name"))
        start, end = event["ts"] * 1e-6, (event["ts"] + event.get("dur", 0)) * 1e-6
        if origin is not None:
            seconds[origin] += event.get("dur", 0) * 1e-6 / ticks
            kernels[origin] += 1 / ticks
            running.append((start, end, event.get("tid")))
        elif event.get("name") == SPLIT_PART:
            helped.append((start, event.get("tid")))
    rows = [
        {"origin": origin, "seconds": spent, "kernels": kernels[origin]}
        for origin, spent in seconds.most_common()
    ]
    timeline = kernel_timeline([(start, end) for start, end, _ in running], ticks)
    timeline.update(split_summary(split_delays(running, helped), ticks))
    return rows, timeline, state


def split_summary(delays: list[float], ticks: int) -> dict:
    """Of ``split_delays`` over ``ticks``: "splits", the parts a tick; "split_delay" and
    "split_delay_p90", the median and the 90th percentile of the delays (None without
    any); "split_delay_total", the delays summed, a tick: the most the first thread of
    those kernels can have spent waiting for the second."""
    return {
        "splits": len(delays) / ticks,
        "split_delay": float(np.median(delays)) if delays else None,
        "split_delay_p90": float(np.percentile(delays, 90)) if delays else None,
        "split_delay_total": float(np.sum(delays)) / ticks,
    }


# The trace's event for a thread of XLA's pool taking up its part of a kernel that XLA
# split over the cores (``outer_dimension_partitions``).
SPLIT_PART = "ThreadpoolListener::StartRegion"


def split_delays(kernels: list[tuple[float, float, object]], parts: list[tuple[float, object]]) -> list[float]:
    """For each part of a split kernel taken up by a thread (``parts``: (time, thread)),
    how long after the kernel began it was taken up: the kernel is the one running on
    another thread then (``kernels``: (start, end, thread)) that began last. Parts with
    no such kernel are left out. A thread that has gone idle takes up its part late."""
    by_thread = collections.defaultdict(list)
    for start, end, thread in sorted(kernels):
        by_thread[thread].append((start, end))
    starts = {thread: [start for start, _ in spans] for thread, spans in by_thread.items()}
    out = []
    for at, thread in parts:
        began = None
        for other, spans in by_thread.items():
            index = bisect.bisect_right(starts[other], at) - 1
            if other != thread and index >= 0 and spans[index][1] >= at:
                began = spans[index][0] if began is None else max(began, spans[index][0])
        if began is not None:
            out.append(at - began)
    return out


def kernel_timeline(intervals: list[tuple[float, float]], ticks: int) -> dict[str, float]:
    """Where the wall time of a traced run of ``ticks`` goes, per tick, from its kernels'
    (start, end) times in seconds: "span", from the first kernel's start to the last
    one's end; "busy", while at least one kernel runs; "idle", while none does (the
    executor between kernels, control flow, and the tracing itself); "parallel", while
    two or more run at once."""
    edges = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    busy = parallel = 0.0
    running, last = 0, None
    for at, change in edges:
        if last is not None:
            busy += (at - last) * (running >= 1)
            parallel += (at - last) * (running >= 2)
        running, last = running + change, at
    span = max(end for _, end in intervals) - min(start for start, _ in intervals) if intervals else 0.0
    return {"span": span / ticks, "busy": busy / ticks, "idle": (span - busy) / ticks, "parallel": parallel / ticks}


class Bandwidth:
    """The machine's read rate: the best bytes per second of jitted reductions that read
    a float32 array of ``n_bytes`` once, to a scalar, to row sums of 16 and 64 entries,
    and to column sums of 1,024 and 4,096 entries. Which is fastest depends on the CPU
    (on one machine here the column sums read 1.6 times faster than the others), so the
    best of them all is the floor's rate. ``measure`` is called between the timed runs
    of the tick: on a machine shared with other work, both come from the same minutes."""

    WIDTH = 1024
    READERS = {
        "sum": lambda x: x.sum(),
        "rows of 16": lambda x: x.reshape(-1, 16).sum(axis=1),
        "rows of 64": lambda x: x.reshape(-1, 64).sum(axis=1),
        "columns of 1024": lambda x: x.sum(axis=0),
        "columns of 4096": lambda x: x.reshape(-1, 4096).sum(axis=0),
    }

    def __init__(self, n_bytes: int):
        rows = max(n_bytes // 4 // (4 * self.WIDTH), 1) * 4
        self.data = jnp.ones((rows, self.WIDTH), jnp.float32)
        self.readers = {name: jax.jit(read) for name, read in self.READERS.items()}
        self.best = dict.fromkeys(self.readers, 0.0)  # bytes per second
        for read in self.readers.values():
            read(self.data).block_until_ready()

    def measure(self, repeats: int) -> float:
        """Read ``repeats`` times with each reader; returns the best rate of this round."""
        now = 0.0
        for name, read in self.readers.items():
            for _ in range(repeats):
                start = time.perf_counter()
                read(self.data).block_until_ready()
                rate = self.data.size * 4 / (time.perf_counter() - start)
                self.best[name] = max(self.best[name], rate)
                now = max(now, rate)
        return now

    @property
    def rate(self) -> float:
        return max(self.best.values())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("world", nargs="?", default=str(ROOT / "worlds" / "default.yaml"))
    parser.add_argument("--ticks", type=int, default=200, help="timed ticks (after warm-up)")
    parser.add_argument("--warm", type=int, default=20, metavar="TICKS",
                        help="ticks run before timing (default 20); later in a run more organisms are"
                             " born and move, and writing their rows takes more of a tick")
    parser.add_argument("--resize", action="append", default=[], metavar="AXIS=SIZE",
                        help="resize an axis of the world (repeatable), e.g. --resize sm=32 --resize warp=64")
    parser.add_argument("--repeats", type=int, default=3, metavar="R",
                        help="timed runs (default 3), each of the same ticks from the same state")
    parser.add_argument("--no-phases", action="store_true", help="skip the per-phase breakdown")
    parser.add_argument("--no-kernels", action="store_true",
                        help="skip the traced run that counts the fused tick's kernels by function")
    parser.add_argument("--devices", type=int, metavar="N",
                        help="spread the world over N devices (default: as `hca run` does, on a CPU one"
                             " per core where the world can be placed so)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    for flag, value, what in (("--ticks", args.ticks, "ticks"), ("--warm", args.warm, "ticks"),
                              ("--repeats", args.repeats, "runs")):
        if value < 1:
            parser.error(f"{flag} {value}: expected a whole number of {what} >= 1")
    if args.devices is not None and args.devices < 1:
        parser.error(f"--devices {args.devices}: expected a whole number of devices >= 1")

    try:
        world = resized(hca.load_world(args.world), args.resize)
    except hca.WorldFileError as error:
        print(f"bench: error: {error}", file=sys.stderr)
        return 2
    try:
        mesh = make_mesh(world, args.devices)
    except PlacementError as error:
        print(f"bench: error: --devices {args.devices}: {error}", file=sys.stderr)
        return 2
    simulation = hca.build(world, mesh)
    state = simulation.init()
    cells = sum(region.cells for region in world.regions.values())
    genome_bytes = sum(
        tree_bytes(region.life.genome) for region in state.regions if region.life is not None
    )
    state_bytes = tree_bytes(state)
    # A compiled run's memory is one device's: against the state one device holds.
    state_device_bytes = device_bytes(state)
    moved_bytes = must_move_bytes(state)

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

    state = simulation.run(state, args.warm)  # warm-up: compile, and let the population settle
    jax.block_until_ready(state)
    # At least 64 MiB or, on an accelerator, 1 GiB (so that the launch of a reduction
    # costs nothing against its reading): the machine's streaming rate for as much data
    # as a tick moves, not the overhead of reading a small array.
    smallest = (64 << 20) if jax.devices()[0].platform == "cpu" else (1 << 30)
    reading = Bandwidth(max(moved_bytes, smallest))
    # Every timed run steps the same ticks from the same state (``run`` donates the state
    # it is given, so each starts from a copy), and the bandwidth is read after each.
    warm = state
    runs, rates, end_ticks = [], [], []
    for _ in range(args.repeats):
        state = jax.block_until_ready(copied(warm))
        start = time.perf_counter()
        state = simulation.run(state, args.ticks)
        jax.block_until_ready(state)
        runs.append((time.perf_counter() - start) / args.ticks)  # per tick
        end_ticks.append(int(state.tick))
        rates.append(reading.measure(repeats=4))
    seconds = min(runs)
    bandwidth, reading_rates = reading.rate, reading.best
    del reading  # its array, before the phases run
    brain_time, brain_bytes = brain_seconds(simulation, state)
    # The phases and the kernels start from the state after the warm-up too: they show
    # where the timed ticks went (later in a run more rows arrive a tick).
    phases = phase_ticks = None
    if not args.no_phases:
        phases, after = phase_seconds(simulation, copied(warm))
        phase_ticks = [int(warm.tick), int(after.tick)]
    kernels = timeline = kernel_ticks = None
    if not args.no_kernels:
        try:
            kernels, timeline, after = kernel_seconds(simulation, copied(warm), args.ticks, compiled.as_text())
            kernel_ticks = [int(warm.tick), int(after.tick)]
        except (RuntimeError, StopIteration, OSError) as error:  # e.g. a profiler already running
            print(f"bench: the kernels were not traced: {error or 'no trace written'}", file=sys.stderr)
    del warm

    report = {
        "world": world.name,
        "warm_ticks": args.warm,
        "devices": describe(mesh),
        "device_count": 1 if mesh is None else mesh.size,
        "cpu_cores": cpu_cores(),
        "processor": processor(),
        # What the speed and the floats depend on besides the code: versions, XLA flags.
        "versions": versions(),
        "xla_flags": float_flags(),
        # Whether glibc's malloc asks for transparent huge pages (a call's first touch of
        # its fresh arrays costs less): hca._xla.restart_with_huge_pages.
        "glibc_tunables": os.environ.get("GLIBC_TUNABLES", ""),
        "cells": cells,
        "ticks_per_second": 1.0 / seconds,
        # Each timed run: seconds a tick, the bandwidth read right after it, the tick it
        # ended on (the same for all: each ran the same ticks), and its floor reached.
        "runs": [
            {"seconds_per_tick": run, "read_bandwidth": rate, "end_tick": end,
             "must_move_ratio": moved_bytes / run / rate}
            for run, rate, end in zip(runs, rates, end_ticks)
        ],
        "cell_ticks_per_second": cells / seconds,
        "genome_bytes_per_tick": genome_bytes,
        "genome_bytes_per_second": genome_bytes / seconds,
        "measured_read_bandwidth": bandwidth,
        "read_rates": reading_rates,
        "bandwidth_ratio": genome_bytes / seconds / bandwidth if genome_bytes else None,
        "must_move_bytes_per_tick": moved_bytes,
        "must_move_ratio": moved_bytes / seconds / bandwidth,
        "brain_seconds": brain_time,
        "brain_bytes": brain_bytes,
        "brain_ratio": brain_bytes / brain_time / bandwidth if brain_bytes else None,
        "phase_seconds": phases,
        "phase_ticks": phase_ticks,  # [first, end) the phases were timed over
        "kernel_seconds": kernels,
        "kernel_ticks": kernel_ticks,  # [first, end) the kernels were traced over: the timed ticks
        "kernel_timeline": timeline,
        "state_bytes": state_bytes,
        "state_device_bytes": state_device_bytes,
        "peak_bytes": peak_bytes,  # of one device
        "peak_over_state": peak_bytes / state_device_bytes if peak_bytes else None,
        "population": sum(
            int(np.asarray(region.life.occupied).sum()) for region in state.regions if region.life is not None
        ),
    }
    if args.json:
        print(json.dumps(report))
        return 0
    gb = 1e9
    print(f"world {report['world']}: {cells:,} cells, population {report['population']:,}, "
          f"{report['cpu_cores']} CPU cores, {jax.devices()[0].platform}, on {report['devices']},"
          f" timed over ticks {args.warm:,}-{args.warm + args.ticks:,}")
    print(f"  {describe_processor(report['processor'])}")
    print(f"  {', '.join(f'{name} {version}' for name, version in report['versions'].items())}; "
          f"XLA_FLAGS {report['xla_flags'] or '(none)'}; GLIBC_TUNABLES {report['glibc_tunables'] or '(none)'}")
    per_run = [1.0 / run["seconds_per_tick"] for run in report["runs"]]
    print(f"  {report['ticks_per_second']:.1f} ticks/s = {report['cell_ticks_per_second'] / 1e6:.2f} M cell-ticks/s"
          f"  (best of {len(per_run)} runs of the same {args.ticks:,} ticks; median {np.median(per_run):.1f})")
    print(f"  genome read per tick        {genome_bytes / 1e6:.1f} MB")
    print(f"  genome bytes per second     {report['genome_bytes_per_second'] / gb:.2f} GB/s")
    fastest = max(reading_rates, key=reading_rates.get)
    print(f"  measured read bandwidth     {bandwidth / gb:.2f} GB/s"
          f" (best of {len(reading_rates)} readers: {fastest})")
    print(f"  must move per tick          {moved_bytes / 1e6:.1f} MB (genomes read; plastic weights, hidden"
          " state, signals, halo and energy arrays read and written)")
    if report["bandwidth_ratio"] is not None:
        print(f"  genome-only floor           {report['bandwidth_ratio']:.2f} of it reached")
    paired = [run["must_move_ratio"] for run in report["runs"]]
    print(f"  must-move floor             {report['must_move_ratio']:.2f} of it reached  (target >= 0.5;"
          f" each run against the reading after it: {min(paired):.2f}-{max(paired):.2f})")
    if report["brain_ratio"] is not None:
        print(f"  brain alone                 {brain_time * 1e3:.2f} ms a tick, {report['brain_ratio']:.2f} of its"
              f" own floor of {brain_bytes / 1e6:.1f} MB")
        print("                              (think, every slot scored, and learn, jitted on their own;"
              " genomes read, plastic weights read and written)")
    one = "" if mesh is None else f" ({state_device_bytes / 1e6:.1f} MB on each device)"
    print(f"  state                       {state_bytes / 1e6:.1f} MB{one}")
    if peak_bytes is not None:
        each = "" if mesh is None else " on each device"
        print(f"  {'peak memory of a run' + each:<27} {peak_bytes / 1e6:.1f} MB = {report['peak_over_state']:.2f} x"
              f" state{each}  (target <= 2)")
    if phases is not None:
        total = sum(phases.values())
        print(f"  phases, each compiled on its own, from tick {phase_ticks[0]:,} (sum {total * 1e3:.2f} ms against"
              f" {seconds * 1e3:.2f} ms for the whole tick):")
        for name, spent in phases.items():
            print(f"    {name:<10} {spent * 1e3:8.3f} ms  {spent / total:6.1%}")
    if kernels:
        total = sum(row["seconds"] for row in kernels)
        shown, rest = kernels[:KERNEL_ROWS], kernels[KERNEL_ROWS:]
        if rest:
            others = {"origin": f"{len(rest)} other functions",
                      "seconds": sum(row["seconds"] for row in rest), "kernels": sum(row["kernels"] for row in rest)}
            shown = shown + [others]
        every = "" if mesh is None else f", on all {mesh.size} devices"
        print(f"  the fused tick's kernels over the timed ticks, by the function they come from ({total * 1e3:.2f}"
              f" ms of kernels a tick, summed over the kernels that run at once{every}):")
        for row in shown:
            print(f"    {row['origin']:<36} {row['seconds'] * 1e3:8.3f} ms  {row['seconds'] / total:6.1%}"
                  f"  {row['kernels']:7.1f} kernels")
        span = timeline["span"]
        print(f"  the traced tick's wall time {span * 1e3:.2f} ms: a kernel running {timeline['busy'] * 1e3:.2f} ms"
              f" ({timeline['busy'] / span:.0%}), two or more at once {timeline['parallel'] * 1e3:.2f} ms"
              f" ({timeline['parallel'] / span:.0%}),")
        print(f"                              none {timeline['idle'] * 1e3:.2f} ms ({timeline['idle'] / span:.0%}:"
              " the executor between kernels, control flow, the tracing)")
        if timeline["splits"]:
            print(f"  kernels split over the cores  {timeline['splits']:.1f} a tick; a second thread took up its part"
                  f" {timeline['split_delay'] * 1e6:.1f} us after the kernel began (median; one in ten"
                  f" {timeline['split_delay_p90'] * 1e6:.1f} us or later),")
            print(f"                              {timeline['split_delay_total'] * 1e3:.2f} ms a tick in all"
                  " (the most the first thread can have waited for the second"
                  + (")" if mesh is None else f"; the {mesh.size} devices' kernels together, on cores they share)"))
    return 0


if __name__ == "__main__":
    restart_with_huge_pages()  # as `hca` does: measured as a run is made
    sys.exit(main())
