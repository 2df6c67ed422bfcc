"""Counter-based randomness: every draw is a hash of (seed, purpose, ..., cell index).

Nothing is threaded through a sequential loop and nothing depends on the device
layout, so a cell draws the same number on one device or many, in one run or resumed.
The functions take the array module (``numpy`` or ``jax.numpy``) so that reference
implementations in tests draw exactly what the jitted step draws.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# Purposes keep independent streams apart.
INITIAL_ENERGY = 1
SPOTS = 2
RAIN = 3
FOUNDERS = 4
GENOME = 5
TIE_BREAK = 6
MUTATION = 7


def _mix(h: Any, xp: Any) -> Any:
    """lowbias32: a full-avalanche 32-bit integer mixer."""
    h = h ^ (h >> xp.uint32(16))
    h = h * xp.uint32(0x7FEB352D)
    h = h ^ (h >> xp.uint32(15))
    h = h * xp.uint32(0x846CA68B)
    return h ^ (h >> xp.uint32(16))


def hash_u32(*words: Any, xp: Any) -> Any:
    """uint32 hash of integer words (scalars or arrays, broadcast together)."""
    h = xp.asarray(0x9E3779B9, dtype=xp.uint32)
    with np.errstate(over="ignore"):  # uint32 wrap-around is the point (NumPy scalars warn)
        for word in words:
            h = _mix(h ^ xp.asarray(word).astype(xp.uint32), xp)
    return h


def bernoulli(probability: float, *words: Any, xp: Any) -> Any:
    """True with ``probability`` (resolved to 2**-24), independently for each hash input."""
    threshold = round(probability * (1 << 24))  # 2**24 when probability == 1: always true
    return (hash_u32(*words, xp=xp) >> xp.uint32(8)) < xp.uint32(threshold)


def integers(low: int, high: int, *words: Any, xp: Any) -> Any:
    """Integers in [low, high] (inclusive), as int32."""
    span = high - low + 1
    return (hash_u32(*words, xp=xp) % xp.uint32(span)).astype(xp.int32) + xp.int32(low)


def normal(*words: Any, xp: Any) -> Any:
    """float32 standard normal draws (Box-Muller on two hashes of the words)."""
    first = hash_u32(*words, 0, xp=xp) >> xp.uint32(8)
    second = hash_u32(*words, 1, xp=xp) >> xp.uint32(8)
    u1 = (first.astype(xp.float32) + xp.float32(0.5)) * xp.float32(2.0**-24)
    u2 = second.astype(xp.float32) * xp.float32(2.0**-24)
    radius = xp.sqrt(xp.float32(-2.0) * xp.log(u1))
    return radius * xp.cos(xp.float32(2.0 * np.pi) * u2)
