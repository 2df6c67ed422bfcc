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
TASK_SITES = 8
TASK_QUESTION = 9
TASK_TABLE = 10


def _mix(h: Any, xp: Any) -> Any:
    """lowbias32: a full-avalanche 32-bit integer mixer."""
    h = h ^ (h >> xp.uint32(16))
    h = h * xp.uint32(0x7FEB352D)
    h = h ^ (h >> xp.uint32(15))
    h = h * xp.uint32(0x846CA68B)
    return h ^ (h >> xp.uint32(16))


def hash_u32(*words: Any, xp: Any) -> Any:
    """uint32 hash of integer words (scalars or arrays, broadcast together)."""
    return hash_more(xp.asarray(0x9E3779B9, dtype=xp.uint32), *words, xp=xp)


def hash_more(h: Any, *words: Any, xp: Any) -> Any:
    """The hash of more words after those hashed into ``h``:
    ``hash_more(hash_u32(a, b), c) == hash_u32(a, b, c)``. Words shared by many draws
    are hashed once (e.g. a child's, before one draw per genome entry)."""
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


# The spacing of ``normal``'s values: the sum of four bytes has variance (256**2 - 1) / 3.
NORMAL_STEP = np.float32(1.0 / np.sqrt((256**2 - 1) / 3))


def normal(*words: Any, xp: Any) -> Any:
    """float32 draws with mean 0 and variance 1, approximately normal.

    The sum of the four bytes of one hash (Irwin-Hall with n = 4): one hash per draw
    and no transcendental functions, with tails cut at about 3.5 standard deviations.
    """
    return normal_steps(*words, xp=xp) * NORMAL_STEP


def normal_steps(*words: Any, xp: Any) -> Any:
    """``normal``'s draws in whole steps of NORMAL_STEP: whole numbers in [-510, 510] as
    float32."""
    return steps_of(hash_u32(*words, xp=xp), xp=xp)


def steps_of(h: Any, xp: Any) -> Any:
    """``normal_steps`` of the hash ``h`` (uint32)."""
    byte = xp.uint32(0xFF)
    total = (h & byte) + ((h >> xp.uint32(8)) & byte) + ((h >> xp.uint32(16)) & byte) + (h >> xp.uint32(24))
    # Each byte has mean 127.5.
    return total.astype(xp.float32) - xp.float32(510.0)


def step_size(scale: Any, xp: Any) -> Any:
    """``scale * NORMAL_STEP`` (float32, >= 0) rounded to 14 significant bits, so that its
    product with ``normal_steps`` (at most 10 bits) is exact: ``x + steps * step_size``
    then rounds once, whether or not the compiler fuses the multiply and the add into
    one instruction (XLA does in some kernels and not in others)."""
    bits = (xp.asarray(scale, xp.float32) * NORMAL_STEP).view(xp.uint32)
    return ((bits + xp.uint32(1 << 9)) & xp.uint32(~((1 << 10) - 1) & 0xFFFFFFFF)).view(xp.float32)
