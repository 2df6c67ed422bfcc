"""Reproduction: a child's genome is its parent's, changed by the parent's own
inherited mutation scales, which mutate themselves."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from hca import brain, rng
from hca.organisms import genome_entries


def mutation_keys(children: jax.Array, tick: jax.Array, seed: jax.Array, region_index: int) -> jax.Array:
    """(*K,) uint32: the hash of each child's words (``children`` (*K,) int32, its cell
    index) that all its mutation draws share; ``mutate`` hashes one genome entry more."""
    return rng.hash_u32(seed, rng.MUTATION, region_index, tick, children, xp=jnp)


def mutate(
    layout: brain.GenomeLayout,
    parents: dict[str, jax.Array],  # {name: (*K, size)} parent genomes, each tensor flat
    keys: jax.Array,  # (*K,) uint32, ``mutation_keys`` of the children
    meta_scale: float,
) -> dict[str, jax.Array]:
    """Children's genomes: each tensor moves by the parent's own inherited scale times a
    standard normal; the log-scales themselves move by ``meta_scale``. Each step is a
    whole number of draws' steps times a short step size (``rng.step_size``), so a child
    is the same bit for bit however XLA compiles the sum.

    A draw is ``rng.normal_steps(seed, MUTATION, region, tick, child, entry)``; its first
    words come hashed in ``keys``, made once a tick for every child (in a kernel of their
    own, not again for each of a row's entries)."""
    steps = rng.step_size(jnp.exp(parents["log_mutation"]), xp=jnp)  # (*K, tensors)
    meta_step = rng.step_size(meta_scale, xp=np)
    lead = keys.shape + (1,)
    out = {}
    for index, (name, _) in enumerate(layout.tensors):
        entries = genome_entries(layout.entries(name).reshape(-1), keys.ndim)
        noise = rng.steps_of(rng.hash_more(keys.reshape(lead), entries, xp=jnp), xp=jnp)
        if name == "log_mutation":
            low, high = brain.LOG_SCALE_RANGE
            out[name] = jnp.clip(parents[name] + meta_step * noise, low, high)
        else:
            step = steps[..., index].reshape(lead) * noise
            out[name] = jnp.clip(parents[name] + step, -brain.WEIGHT_LIMIT, brain.WEIGHT_LIMIT)
    return out
