"""Reproduction: a child's genome is its parent's, changed by the parent's own
inherited mutation scales, which mutate themselves."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from hca import brain, rng
from hca.organisms import genome_entries


def mutate(
    layout: brain.GenomeLayout,
    parents: dict[str, jax.Array],  # {name: (*K, size)} parent genomes, each tensor flat
    children: jax.Array,  # (*K,) int32 cell index of each child
    tick: jax.Array,
    seed: jax.Array,
    region_index: int,
    meta_scale: float,
) -> dict[str, jax.Array]:
    """Children's genomes: each tensor moves by the parent's own inherited scale times a
    standard normal; the log-scales themselves move by ``meta_scale``. Each step is a
    whole number of draws' steps times a short step size (``rng.step_size``), so a child
    is the same bit for bit however XLA compiles the sum."""
    steps = rng.step_size(jnp.exp(parents["log_mutation"]), xp=jnp)  # (*K, tensors)
    meta_step = rng.step_size(meta_scale, xp=np)
    out = {}
    for index, (name, _) in enumerate(layout.tensors):
        lead = children.shape + (1,)
        noise = rng.normal_steps(
            seed,
            rng.MUTATION,
            region_index,
            tick,
            children.reshape(lead),
            genome_entries(layout.entries(name).reshape(-1), children.ndim),
            xp=jnp,
        )
        if name == "log_mutation":
            low, high = brain.LOG_SCALE_RANGE
            out[name] = jnp.clip(parents[name] + meta_step * noise, low, high)
        else:
            step = steps[..., index].reshape(lead) * noise
            out[name] = jnp.clip(parents[name] + step, -brain.WEIGHT_LIMIT, brain.WEIGHT_LIMIT)
    return out
