"""Placing a world on several devices: the mesh and the sharding of every array.

Region axes named in a region's ``placement`` are spread over a
``jax.sharding.Mesh`` whose axes carry the same names; the other axes stay inside a
device. The step is the same program as on one device: the arrays carry sharding
annotations and XLA partitions the program, turning shifts along a sharded axis
into collective permutes between neighbouring devices (a ring on a curled axis).
Every quantity in the state is an integer or is computed cell by cell, so a world on
N devices evolves bitwise as on one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from hca._xla import cpu_cores
from hca.config import WorldConfig
from hca.step import SENSE_AXIS, SENT_SET


class PlacementError(Exception):
    """The devices asked for cannot be placed on the world's axes; one line."""


def placed_axes(world: WorldConfig) -> list[str]:
    """Mesh axis names, outermost first: every placed axis of every region."""
    names: list[str] = []
    for region in world.regions.values():
        for name in region.placement:
            if name not in names:
                names.append(name)
    return names


def _sizes(world: WorldConfig, name: str) -> list[int]:
    return [
        axis.size
        for region in world.regions.values()
        if name in region.placement
        for axis in region.axes
        if axis.name == name
    ]


def device_factors(world: WorldConfig, devices: int) -> dict[str, int]:
    """How many devices each placed axis spans, filling the outermost placed axis first.

    Outermost first: the axes that devices split whole are then the lattice's leading
    axes, of size 1 on each device, which XLA lays out as its arrays' most major; split
    further in, they were laid out otherwise than the tick's reshapes want, and XLA
    copied the genome's weight matrices and the plastic weights several times a tick.
    And the outer axes of a world such as the default one are the most stretched, whose
    exchanges are rarest.

    Raises PlacementError when ``devices`` does not divide into the placed axes' sizes.
    """
    names = placed_axes(world)
    remaining = devices
    factors = {name: 1 for name in names}
    for name in names:
        sizes = _sizes(world, name)
        for split in range(remaining, 0, -1):
            if remaining % split == 0 and all(size % split == 0 for size in sizes):
                factors[name] = split
                remaining //= split
                break
    if remaining != 1:
        placed = ", ".join(f"{name} ({'/'.join(map(str, _sizes(world, name)))})" for name in names)
        raise PlacementError(
            f"cannot spread {devices} devices over the placed axes "
            f"{placed or '(none: the world has no placement)'}; the device count must "
            f"divide into their sizes"
        )
    return factors


def make_mesh(world: WorldConfig, devices: int | None) -> Mesh | None:
    """The mesh for ``devices`` devices, or None for a single device.

    By default the most devices present that can be placed; on the CPU of one process
    at most one per core (``import hca`` makes one JAX device per core): two devices
    sharing a core only wait for each other.
    """
    available = jax.devices()
    if devices is not None:
        if devices > len(available):
            raise PlacementError(
                f"asked for {devices} devices, but only {len(available)} are present "
                f"({available[0].platform})"
            )
    else:
        most = len(available)
        if available[0].platform == "cpu" and jax.process_count() == 1:
            most = min(most, cpu_cores())
        devices = 1
        for count in range(most, 1, -1):
            try:
                device_factors(world, count)
            except PlacementError:
                continue
            devices = count
            break
    factors = device_factors(world, devices)
    if devices == 1:
        return None
    names = [name for name in factors if factors[name] > 1]
    grid = np.array(available[:devices]).reshape([factors[name] for name in names])
    return Mesh(grid, tuple(names))


def state_shardings(world: WorldConfig, state_shapes: Any, mesh: Mesh) -> Any:
    """A NamedSharding for every leaf of the state: lattice-shaped arrays and per-tile
    counters are split along their placed axes, everything else is replicated."""
    replicated = NamedSharding(mesh, PartitionSpec())
    regions = []
    for region, region_shapes in zip(world.regions.values(), state_shapes.regions):
        # The placed axes lead the region's axes: arrays of the lattice and per-tile
        # counters alike start with them.
        tiles = region.shape[: len(region.placement)]
        split = NamedSharding(
            mesh,
            PartitionSpec(*[name if name in mesh.shape else None for name in region.placement]),
        )

        def sharding(leaf, tiles=tiles, split=split):
            return split if tiles and tuple(leaf.shape[: len(tiles)]) == tiles else replicated

        regions.append(jax.tree.map(sharding, region_shapes))
    carried = None if state_shapes.carried is None else replicated
    crossed = None if state_shapes.crossed is None else replicated
    return state_shapes.replace(tick=replicated, seed=replicated, regions=tuple(regions), carried=carried,
                                crossed=crossed)


def describe(mesh: Mesh | None) -> str:
    if mesh is None:
        return "1 device"
    axes = " x ".join(f"{name} {size}" for name, size in mesh.shape.items())
    return f"{mesh.devices.size} devices ({axes})"


def initialize_hosts(coordinator: str | None, processes: int | None, process_id: int | None) -> None:
    """Join the other hosts through JAX's multi-controller runtime.

    With no arguments JAX finds them itself where it can (SLURM, for one). On CPU the
    hosts exchange data through gloo.
    """
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=coordinator, num_processes=processes, process_id=process_id
    )


def gather(state: Any) -> Any:
    """The state (any pytree of arrays) with every array whole on this host, as NumPy.
    Across several processes this is a collective: every process must call it, with
    the same tree, in the same order."""
    from jax.experimental import multihost_utils

    if jax.process_count() == 1:
        return jax.device_get(state)

    def whole(leaf):
        if isinstance(leaf, jax.Array) and not leaf.is_fully_replicated:
            return np.asarray(multihost_utils.process_allgather(leaf, tiled=True))
        return np.asarray(leaf)

    return jax.tree.map(whole, state)


def writer() -> bool:
    """Whether this process writes a run's files (the first; all of them on one host)."""
    return jax.process_index() == 0


def barrier(name: str) -> None:
    """Wait for every process to reach this point (nothing on one process)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


# -- what crosses between devices, read from the compiled program -------------------

_COLLECTIVE = re.compile(
    r"=\s*(\(?[a-z0-9]+\[[^\]]*\][^=]*?)\s"
    r"(all-gather|all-reduce|collective-permute|all-to-all|reduce-scatter)(-start)?\("
)
_SHAPE = re.compile(r"([a-z]+[0-9]*)\[([0-9,]*)\]")
_BYTES = {"pred": 1, "s8": 1, "u8": 1, "bf16": 2, "s32": 4, "u32": 4, "f32": 4, "s64": 8, "u64": 8, "f64": 8}


def _computations(hlo: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    name = None
    for line in hlo.splitlines():
        header = re.match(r"^(?:ENTRY\s+)?%?([\w.\-]+)\s*\(", line)
        if header and not line.startswith(" "):
            name = header.group(1)
            found[name] = []
        elif name is not None:
            found[name].append(line)
    return found


def _sent_bytes(result_type: str) -> int:
    """Bytes of the first array in an op's result type: what one device sends."""
    match = _SHAPE.search(result_type)
    if not match:
        return 0
    count = 1
    for dim in (int(d) for d in match.group(2).split(",") if d):
        count *= dim
    return count * _BYTES.get(match.group(1), 4)


_PAIRS = re.compile(r"source_target_pairs=\{((?:\{\d+,\d+\},?)*)\}")


def _crossed(line: str, mesh: Mesh) -> tuple[str, ...]:
    """The mesh axes an operation's messages cross: those along which its source and
    target devices differ (partition i is ``mesh.devices.flat[i]``). Operations
    without explicit pairs are counted as crossing every axis."""
    names = tuple(mesh.shape)
    found = _PAIRS.search(line)
    if not found:
        return names
    sizes = tuple(mesh.shape.values())
    crossed: set[str] = set()
    for source, target in re.findall(r"\{(\d+),(\d+)\}", found.group(1)):
        a = np.unravel_index(int(source), sizes)
        b = np.unravel_index(int(target), sizes)
        crossed.update(name for name, i, j in zip(names, a, b) if i != j)
    return tuple(name for name in names if name in crossed)


def collectives(simulation, state) -> tuple[list[tuple[str, int, tuple[str, ...]]], dict[int, list]]:
    """The collective operations of the compiled ``run``, each as (kind, bytes sent per
    device, mesh axes crossed): those executed every tick, and those of each branch of
    the stretch schedule (keyed by branch index), which run only on that branch's ticks.
    A branch's are those inside its computation, and the exchanges of the axes it
    ticks: each axis refreshes its halo in a conditional of its own (``Tick.sense``),
    whose operations carry the axis' name (``hca.step.SENSE_AXIS``), and rows are sent
    in a branch per set of ticking axes split over devices (``Tick._arrive_sent``),
    whose operations carry the set's number (``hca.step.SENT_SET``)."""
    sensed = re.compile("/" + SENSE_AXIS.format(region=r"(\d+)", axis=r"(\d+)") + "/")
    sent = re.compile("/" + SENT_SET.format(index=r"(\d+)") + "/")
    sent_of_branch = simulation.tick.sent_of_branch
    ticking = simulation.schedule.ticking
    # Compiled afresh, not taken from the persistent cache: its key leaves out the
    # operations' names, so a program compiled by an hca that named them otherwise
    # would be read with those names.
    cached = jax.config.jax_enable_compilation_cache
    jax.config.update("jax_enable_compilation_cache", False)
    try:
        hlo = simulation.run.lower(state, 1).compile().as_text()
    finally:
        jax.config.update("jax_enable_compilation_cache", cached)
    parts = _computations(hlo)
    branch_of: dict[str, int] = {}
    for lines in parts.values():
        for line in lines:
            listed = re.search(r"branch_computations=\{([^}]*)\}", line)
            if listed:
                for index, name in enumerate(listed.group(1).split(",")):
                    branch_of[name.strip().lstrip("%")] = index
    every_tick: list[tuple[str, int, tuple[str, ...]]] = []
    per_branch: dict[int, list[tuple[str, int, tuple[str, ...]]]] = {}
    for name, lines in parts.items():
        for line in lines:
            match = _COLLECTIVE.search(line)
            if not match:
                continue
            found = (match.group(2), _sent_bytes(match.group(1)), _crossed(line, simulation.mesh))
            axis, rows = sensed.search(line), sent.search(line)
            if axis:
                region, index = map(int, axis.groups())
                for branch, axes in enumerate(ticking):
                    if index in axes[region]:
                        per_branch.setdefault(branch, []).append(found)
            elif rows:
                for branch in np.flatnonzero(sent_of_branch == int(rows.group(1))):
                    per_branch.setdefault(int(branch), []).append(found)
            elif name in branch_of:
                per_branch.setdefault(branch_of[name], []).append(found)
            else:
                every_tick.append(found)
    return every_tick, per_branch


@dataclass(frozen=True)
class AxisExchanges:
    """What crosses one mesh axis over ticks 0..999, read from the compiled program."""

    axis: str  # mesh axis (a placed region axis)
    devices: int  # devices along it
    stretch: int  # the placed axis's stretch
    ticks: int  # ticks with at least one exchange across it
    exchanges: int  # messages across it (each device sends one per exchange)
    bytes: int  # bytes each device sends across it

    @property
    def bytes_per_exchange(self) -> int:
        return self.bytes // self.exchanges if self.exchanges else 0


def exchanges(simulation, state, found=None) -> tuple[list[AxisExchanges], list[tuple[str, int, tuple[str, ...]]]]:
    """Per mesh axis, the exchanges of ticks 0..999 (the schedule says which branch
    runs on each tick); and the collectives outside the schedule's branches, which run
    every tick (none, when only stretched axes' ticks cross devices). ``found``: what
    ``collectives`` returned for this simulation, to spare compiling it again."""
    every_tick, per_branch = found if found is not None else collectives(simulation, state)
    schedule, mesh = simulation.schedule, simulation.mesh
    stretch = {}
    for region in simulation.config.regions.values():
        for axis in region.axes:
            if axis.name in region.placement:
                stretch.setdefault(axis.name, axis.stretch)
    found = []
    for name, devices in mesh.shape.items():
        ticks = messages = sent = 0
        for tick in range(1000):
            ops = every_tick + per_branch.get(schedule.branch_of_phase[tick % schedule.period], [])
            ops = [op for op in ops if name in op[2]]
            ticks += bool(ops)
            messages += len(ops)
            sent += sum(op[1] for op in ops)
        found.append(AxisExchanges(name, devices, stretch.get(name, 1), ticks, messages, sent))
    return found, every_tick
