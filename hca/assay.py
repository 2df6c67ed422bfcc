"""Competition assays: which of two sources of organisms grows faster in one world.

The standard experiment of experimental evolution (Lenski et al. 1991): organisms
from two sources (say, a run's founders at tick 0 and their descendants at tick
20,000) are placed in equal numbers, interleaved, in a fresh copy of a world and run
for a number of ticks; each side is counted by lineage at the start and the end. The
*relative fitness* of A against B is the ratio of their Malthusian parameters,
``W = ln(A_end / A_start) / ln(B_end / B_start)`` (1: equally fit), defined in a seed
where both sides grow; the *selection rate* ``r = ln(A_end / A_start) - ln(B_end /
B_start)`` (0: equally fit) stays defined when a side shrinks or dies out (an extinct
side counts as half an organism). Repeated over seeds,
each is reported as a mean with a 95% t-interval.

Organisms enter the assay as newborns of their genomes: plastic weights, hidden state
and age start from zero, and each gets the world's initial energy (times a side's
``energy`` fraction, a handicap for testing).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from hca.checkpoint import RunDirectory, RunDirectoryError
from hca.config import WorldConfig
from hca.organisms import world_places
from hca.world import build

# Two-sided 95% quantiles of Student's t for 1..30 degrees of freedom.
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042)


def interval(values: list[float]) -> dict[str, Any]:
    """Mean and 95% t-interval of finite values (no interval from fewer than two)."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return {"mean": None, "low": None, "high": None, "n": 0}
    mean = float(np.mean(finite))
    if len(finite) < 2:
        return {"mean": mean, "low": None, "high": None, "n": 1}
    df = len(finite) - 1
    half = (_T975[df - 1] if df <= len(_T975) else 1.96) * float(np.std(finite, ddof=1)) / math.sqrt(len(finite))
    return {"mean": mean, "low": mean - half, "high": mean + half, "n": len(finite)}


@dataclass
class Source:
    """Living organisms to draw from: where they came from and their genomes."""

    label: str  # RUN_DIR@TICK
    world: WorldConfig
    region: str
    genomes: dict[str, np.ndarray]  # tensor -> (organisms, *shape)

    @property
    def count(self) -> int:
        return len(next(iter(self.genomes.values())))


def load_source(spec: str, region: str | None = None, report: Callable[[str], None] = lambda line: None) -> Source:
    """``RUN_DIR`` (its newest checkpoint) or ``RUN_DIR@TICK`` (the checkpoint at TICK;
    tick 0 is the run's founders, drawn again from its world and seed)."""
    match = re.fullmatch(r"(.+?)(?:@(\d+))?", spec)
    path, tick = match.group(1), match.group(2)
    run_dir = RunDirectory(path)
    run_dir.check()
    world = run_dir.world()
    simulation = build(world)
    if tick is not None and int(tick) == 0:
        state = simulation.init()
        tick = 0
    else:
        checkpoint = run_dir.load(world, simulation.abstract_state(), None if tick is None else int(tick), report)
        state, tick = checkpoint.state, checkpoint.tick
    living = [name for name, r in world.regions.items() if r.organisms is not None]
    if not living:
        raise RunDirectoryError(f"{path}: its world has no organisms")
    name = region or living[0]
    if name not in living:
        raise RunDirectoryError(f"{path}: no living region {name!r} (its world has {', '.join(living)})")
    life = state.regions[list(world.regions).index(name)].life
    occupied = np.asarray(life.occupied)
    if not occupied.any():
        raise RunDirectoryError(f"{path}: nobody is alive in region {name!r} at tick {tick}")
    genomes = {key: np.asarray(value)[occupied] for key, value in life.genome.items()}
    return Source(f"{path}@{tick}", world, name, genomes)


def _check_fits(source: Source, world: WorldConfig, region: str) -> None:
    life = world.regions[region].organisms
    theirs = source.world.regions[source.region].organisms
    if life is None:
        raise RunDirectoryError(f"the assay's world has no organisms in region {region!r}")
    if theirs.brain != life.brain:
        raise RunDirectoryError(
            f"{source.label}: its organisms' brains ({theirs.brain}) differ from those of the assay's "
            f"region {region!r} ({life.brain})"
        )


def place(simulation: Any, region: str, a: Source, b: Source, seed: int,
          energy: tuple[float, float] = (1.0, 1.0)) -> tuple[Any, np.ndarray]:
    """A fresh state of the simulation's world drawn with ``seed``, whose founders in
    ``region`` come from ``a`` and ``b`` alternately in cell order; returns it and the
    cells whose founders came from ``a``."""
    world = simulation.config
    state = simulation.init(seed)
    index = list(world.regions).index(region)
    shape = world.regions[region].shape
    region_state = state.regions[index]
    life = region_state.life
    occupied = np.asarray(life.occupied).reshape(-1)
    cells = np.flatnonzero(occupied)
    side_a, side_b = cells[0::2], cells[1::2]
    generator = np.random.default_rng([seed, 0x5A55A1])
    genome = {name: np.asarray(tensor).reshape(len(occupied), *tensor.shape[len(shape):]).copy()
              for name, tensor in life.genome.items()}
    held = np.asarray(life.energy).reshape(-1).copy()
    for side, source, fraction in ((side_a, a, energy[0]), (side_b, b, energy[1])):
        picks = generator.integers(0, source.count, len(side))
        for name in genome:
            genome[name][side] = source.genomes[name][picks]
        held[side] = np.floor(held[side] * fraction).astype(held.dtype)
    held = jnp.asarray(held.reshape(shape))
    life = life.replace(
        genome={name: jnp.asarray(rows.reshape(*shape, *rows.shape[1:])) for name, rows in genome.items()},
        energy=held,
        last_energy=jnp.array(held, copy=True),  # its own buffer: the run donates both
    )
    # The ledger starts here: what the placed organisms hold is the region's energy.
    total = region_state.free_energy.sum(dtype=jnp.int64) + held.sum(dtype=jnp.int64)
    regions = list(state.regions)
    regions[index] = region_state.replace(life=life, initial_total=total)
    return state.replace(regions=tuple(regions)), side_a


def _sides(world: WorldConfig, state: Any, index: int, side_a: np.ndarray) -> tuple[int, int]:
    """The living descended from each side's founders (placed in region ``index``),
    wherever in the world they live now (organisms cross beaches)."""
    a = b = 0
    for region in state.regions:
        if region.life is None:
            continue
        alive = np.asarray(region.life.occupied).reshape(-1)
        home, cell = world_places(world, np.asarray(region.life.founder).reshape(-1)[alive])
        mine, from_a = home == index, np.isin(cell, side_a)
        a, b = a + int((mine & from_a).sum()), b + int((mine & ~from_a).sum())
    return a, b


def compete(
    world: WorldConfig,
    a: Source,
    b: Source,
    ticks: int,
    seeds: list[int],
    region: str | None = None,
    energy: tuple[float, float] = (1.0, 1.0),
    on_seed: Callable[[dict[str, Any]], None] = lambda row: None,
) -> dict[str, Any]:
    """Run the assay over ``seeds``; one row per seed, and the summary."""
    living = [name for name, r in world.regions.items() if r.organisms is not None]
    region = region or (a.region if a.region in living else living[0])
    for source in (a, b):
        _check_fits(source, world, region)
    index = list(world.regions).index(region)
    simulation = build(world)
    rows = []
    for seed in seeds:
        state, side_a = place(simulation, region, a, b, seed, energy)
        start = _sides(world, state, index, side_a)
        state = jax.block_until_ready(simulation.run(state, ticks))
        end = _sides(world, state, index, side_a)
        balanced = bool(simulation.ledger(state)["world"]["balanced"])
        growth = [math.log(max(e, 0.5) / s) for s, e in zip(start, end)]
        row = {
            "seed": seed,
            "a_start": start[0], "b_start": start[1], "a_end": end[0], "b_end": end[1],
            # W compares growth rates: defined while both sides grow.
            "relative_fitness": growth[0] / growth[1] if min(growth) > 0 else None,
            "selection_rate": growth[0] - growth[1],
            "balanced": balanced,
        }
        rows.append(row)
        on_seed(row)
    return {
        "a": a.label,
        "b": b.label,
        "world": world.name,
        "region": region,
        "ticks": ticks,
        "energy": list(energy),
        "seeds": rows,
        "relative_fitness": interval([row["relative_fitness"] for row in rows]),
        "selection_rate": interval([row["selection_rate"] for row in rows]),
    }


def describe(result: dict[str, Any]) -> str:
    """The assay as a table for a person."""
    lines = [
        f"competition in world {result['world']!r}, region {result['region']!r}, {result['ticks']:,} ticks",
        f"  A: {result['a']}",
        f"  B: {result['b']}",
        f"{'seed':>6} {'A start':>8} {'B start':>8} {'A end':>8} {'B end':>8} {'W (A vs B)':>11} {'r':>8}",
    ]
    for row in result["seeds"]:
        w = "-" if row["relative_fitness"] is None else f"{row['relative_fitness']:.3f}"
        lines.append(
            f"{row['seed']:>6} {row['a_start']:>8,} {row['b_start']:>8,} {row['a_end']:>8,} {row['b_end']:>8,} "
            f"{w:>11} {row['selection_rate']:>8.3f}"
        )
    for key, name, neutral in (("relative_fitness", "relative fitness W", 1), ("selection_rate", "selection rate r", 0)):
        stats = result[key]
        if stats["mean"] is None:
            lines.append(f"{name}: undefined (a side shrank in every seed)")
        elif stats["low"] is None:
            lines.append(f"{name}: {stats['mean']:.3f} (one seed: no interval)")
        else:
            lines.append(
                f"{name}: {stats['mean']:.3f}, 95% interval [{stats['low']:.3f}, {stats['high']:.3f}] over "
                f"{stats['n']} seeds (equal fitness: {neutral})"
            )
    return "\n".join(lines)


def write_json(result: dict[str, Any], out: str | Path) -> None:
    import json

    Path(out).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
