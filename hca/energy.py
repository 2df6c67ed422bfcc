"""Free energy: sources, exact diffusion and decay, all in integer quanta.

Each builder takes one region's config and returns a pure function for the step.
Rates are fixed-point fractions of ``RATE_ONE`` and every transfer is computed with
integer arithmetic, so the ledger balances exactly.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from hca import geometry, rng
from hca.config import (
    RATE_BITS,
    BandSource,
    RainSource,
    Region,
    SpotsSource,
    UniformSource,
    diffusion_rates,
    quantize_rate,
)

# (tick, seed) -> (*shape,) int32 quanta the source offers each cell this tick.
SourceFn = Callable[[jax.Array, jax.Array], jax.Array]


def fraction(values: jax.Array, rate: int) -> jax.Array:
    """``floor(values * rate / RATE_ONE)`` exactly, in 32-bit arithmetic.

    ``values`` are non-negative int32 below 2**30 and ``rate`` at most RATE_ONE. The
    product is split at bit 16 so that neither half overflows.
    """
    mask = (1 << RATE_BITS) - 1
    high = (values >> RATE_BITS) * jnp.int32(rate)
    low = ((values & mask).astype(jnp.uint32) * jnp.uint32(rate)) >> RATE_BITS
    return high + low.astype(jnp.int32)


def fraction_dynamic(values: jax.Array, rate: jax.Array) -> jax.Array:
    """``floor(values * rate / RATE_ONE)`` for per-cell rates, exact in int64."""
    return ((values.astype(jnp.int64) * rate.astype(jnp.int64)) >> RATE_BITS).astype(jnp.int32)


def quotient(numerator: jax.Array, denominator: jax.Array) -> jax.Array:
    """``numerator // denominator`` exactly, in int64, for ``0 <= numerator < 2**62``,
    ``denominator >= 1`` and quotients below ``2**50``.

    An int64 division is one scalar instruction of tens of cycles on a CPU (and emulated
    on GPUs); a float64 division is vectorised. Its quotient is off by at most one
    within these bounds, and is corrected to the exact one in integers.
    """
    numerator, denominator = numerator.astype(jnp.int64), denominator.astype(jnp.int64)
    q = jnp.floor(numerator.astype(jnp.float64) / denominator.astype(jnp.float64)).astype(jnp.int64)
    q = jnp.where(q * denominator > numerator, q - 1, q)
    return jnp.where((q + 1) * denominator <= numerator, q + 1, q)


def make_source(source, region: Region, region_index: int, source_index: int) -> SourceFn:
    """The function that says what ``source`` offers each cell of ``region`` on a tick."""
    shape = region.shape
    amount = jnp.int32(source.amount)

    if isinstance(source, UniformSource):

        def where(tick: jax.Array, seed: jax.Array) -> jax.Array:
            return jnp.ones(shape, dtype=bool)

    elif isinstance(source, SpotsSource) and source.at is not None:
        spots = np.zeros(shape, dtype=bool)
        for coordinate in source.at:
            spots[tuple(coordinate)] = True

        def where(tick: jax.Array, seed: jax.Array) -> jax.Array:
            return jnp.asarray(spots)

    elif isinstance(source, SpotsSource):
        fraction_ = source.fraction

        def where(tick: jax.Array, seed: jax.Array) -> jax.Array:
            cells = geometry.cell_index(shape)
            return rng.bernoulli(fraction_, seed, rng.SPOTS, region_index, source_index, cells, xp=jnp)

    elif isinstance(source, BandSource):
        axis = [a.name for a in region.axes].index(source.axis)
        start, stop = source.start, source.stop

        def where(tick: jax.Array, seed: jax.Array) -> jax.Array:
            position = geometry.coordinate(shape, axis)
            return (position >= start) & (position < stop)

    elif isinstance(source, RainSource):
        probability = source.probability

        def where(tick: jax.Array, seed: jax.Array) -> jax.Array:
            cells = geometry.cell_index(shape)
            return rng.bernoulli(
                probability, seed, rng.RAIN, region_index, source_index, tick, cells, xp=jnp
            )

    else:  # pragma: no cover - the config's union admits nothing else
        raise TypeError(f"unknown source {source!r}")

    every = source.every

    def offer(tick: jax.Array, seed: jax.Array) -> jax.Array:
        pays = (tick % every) == 0
        return jnp.where(where(tick, seed) & pays, amount, jnp.int32(0))

    return offer


def make_inflow(region: Region, region_index: int):
    """``inflow(free, tick, seed) -> (free, added)``: sources fill cells up to capacity;
    ``added`` is what each cell received."""
    sources = [
        make_source(source, region, region_index, index)
        for index, source in enumerate(region.energy.sources)
    ]
    capacity = jnp.int32(region.energy.capacity)

    def inflow(free: jax.Array, tick: jax.Array, seed: jax.Array) -> tuple[jax.Array, jax.Array]:
        if not sources:
            return free, jnp.zeros_like(free)
        offered = jnp.zeros_like(free)
        for offer in sources:  # clamped as it sums, so it never overflows int32
            offered = jnp.minimum(offered + offer(tick, seed), capacity)
        added = jnp.minimum(offered, jnp.maximum(capacity - free, 0))
        return free + added, added

    return inflow


def make_diffusion(region: Region):
    """``diffuse(free, ticking) -> free``: on the ticking axes (a static tuple of axis
    indices) each cell sends ``floor(free * rate)`` across each of its links.

    All sends are computed from the same snapshot, so the order of axes does not matter,
    and the config guarantees a cell never sends more than it holds.
    """
    rates = diffusion_rates(region)
    links = [geometry.link_table(axis) for axis in region.axes]
    wraps = [geometry.link_wraps(axis) for axis in region.axes]
    ndim = len(region.axes)

    def degree_along(axis: int) -> jax.Array:
        # Per-cell number of links along `axis`, broadcast against the lattice.
        degree = links[axis].sum(axis=0).astype(np.int32)
        return jnp.asarray(degree.reshape([-1 if a == axis else 1 for a in range(ndim)]))

    def diffuse(free: jax.Array, ticking: tuple[int, ...]) -> jax.Array:
        moving = [axis for axis in ticking if rates[axis] and region.axes[axis].size > 1]
        if not moving:
            return free
        out = free
        for axis in moving:
            sent = fraction(free, rates[axis])
            out = out - sent * degree_along(axis)
            out = out + geometry.shift(sent, axis, +1, wraps[axis])
            out = out + geometry.shift(sent, axis, -1, wraps[axis])
        return out

    return diffuse


def make_decay(region: Region):
    """``decay(free) -> (free, lost)``: each cell loses ``floor(free * decay)``."""
    rate = quantize_rate(region.energy.decay)

    def decay(free: jax.Array) -> tuple[jax.Array, jax.Array]:
        if rate == 0:
            return free, jnp.zeros_like(free)
        lost = fraction(free, rate)
        return free - lost, lost

    return decay
