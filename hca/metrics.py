"""What a person wants to know about a living region, computed on device."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from hca import tasks
from hca.state import LifeState

# Cumulative counters, reported per interval by the run loop as well as in total.
COUNTERS = ("births", "deaths", "moves", "refused")


def life_metrics(life: LifeState) -> dict[str, jax.Array]:
    """Population, energy, age, lineage and mutation statistics of one region."""
    alive = life.occupied
    population = alive.sum(dtype=jnp.int64)
    count = jnp.maximum(population, 1).astype(jnp.float32)
    energy = jnp.where(alive, life.energy, 0)
    scales = jnp.exp(life.genome["log_mutation"]).mean(axis=-1)
    founders = life.founder.reshape(-1)
    lineages = jnp.zeros(founders.shape, bool).at[founders].max(alive.reshape(-1))
    return {
        "population": population,
        **{name: getattr(life, name).sum() for name in COUNTERS},  # kept per tile
        "mean_energy": energy.sum(dtype=jnp.int64).astype(jnp.float32) / count,
        "max_energy": energy.max(),
        "mean_age": jnp.where(alive, life.age, 0).sum(dtype=jnp.int64).astype(jnp.float32) / count,
        "deepest_generation": jnp.where(alive, life.generation, 0).max(),
        "mean_mutation_scale": jnp.where(alive, scales, 0.0).sum() / count,
        "lineages": lineages.sum(dtype=jnp.int64),
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
