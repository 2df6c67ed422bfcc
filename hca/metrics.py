"""What a person wants to know about a living region, computed on device."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from hca import tasks
from hca.state import LifeState

# Cumulative counters, reported per interval by the run loop as well as in total.
COUNTERS = ("births", "deaths", "moves", "refused")


def life_metrics(life: LifeState, world_cells: int) -> dict[str, jax.Array]:
    """Population, energy, age, lineage and mutation statistics of one region, whose
    lineages are numbered among the world's ``world_cells`` living cells."""
    alive = life.occupied
    population = alive.sum(dtype=jnp.int64)
    count = jnp.maximum(population, 1).astype(jnp.float32)
    energy = jnp.where(alive, life.energy, 0)
    scales = jnp.exp(life.genome["log_mutation"]).mean(axis=-1)
    founders = life.founder.reshape(-1)
    lineages = jnp.zeros(world_cells, bool).at[founders].max(alive.reshape(-1))
    # Shannon entropy (bits) of the lineages' shares of the living (integer counts,
    # so the same on any number of devices up to float rounding).
    sizes = jnp.zeros(world_cells, jnp.int32).at[founders].add(alive.reshape(-1).astype(jnp.int32))
    share = sizes.astype(jnp.float32) / count
    lineage_entropy = -jnp.where(sizes > 0, share * jnp.log2(jnp.where(sizes > 0, share, 1.0)), 0.0).sum()
    return {
        "population": population,
        **{name: getattr(life, name).sum() for name in COUNTERS},  # kept per tile
        "mean_energy": energy.sum(dtype=jnp.int64).astype(jnp.float32) / count,
        "max_energy": energy.max(),
        "mean_age": jnp.where(alive, life.age, 0).sum(dtype=jnp.int64).astype(jnp.float32) / count,
        "deepest_generation": jnp.where(alive, life.generation, 0).max(),
        "mean_mutation_scale": jnp.where(alive, scales, 0.0).sum() / count,
        "lineages": lineages.sum(dtype=jnp.int64),
        "lineage_entropy_bits": jnp.where(lineage_entropy > 0, lineage_entropy, 0.0),  # never -0.0
    }


# Per-task counters, cumulative like COUNTERS; quality is summed in 1 / QUALITY_ONE units.
TASK_COUNTERS = tasks.COUNTERS


def task_metrics(ledger, names: list[str]) -> dict[str, dict[str, jax.Array]]:
    """Each task's counters since tick 0, summed over tiles."""
    tiles = tuple(range(ledger.posed.ndim - 1))
    return {
        name: {key: getattr(ledger, key)[..., index].sum(axis=tiles) for key in TASK_COUNTERS}
        for index, name in enumerate(names)
    }
