"""Integer arithmetic of the tick that is written for speed: exact against plain Python."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from hca import brain, rng
from hca.decide import and_not, first_best
from hca.energy import quotient

_quotient = jax.jit(quotient)

# Numerators below 2**62, denominators from 1, quotients below 2**50 (the documented
# bounds), with the values around powers of two and multiples of the denominator that a
# float division gets wrong first.
denominators = st.one_of(
    st.integers(1, 64),
    st.integers(1, 1 << 40),
    st.sampled_from([3, 7, (1 << 20) + 1, (1 << 31) - 1]),
)


@st.composite
def pairs(draw):
    d = draw(denominators)
    largest = min((1 << 50) - 1, ((1 << 62) - 1) // d)
    q = draw(st.one_of(st.integers(0, 1 << 20), st.integers(0, largest)))
    r = draw(st.one_of(st.just(0), st.just(d - 1), st.integers(0, d - 1)))
    n = min(q * d + r, (1 << 62) - 1)
    return n, d


@settings(max_examples=300, deadline=None)
@given(st.lists(pairs(), min_size=1, max_size=64))
def test_quotient_is_exact_floor_division(cases):
    numerators = np.array([n for n, _ in cases], np.int64)
    denominators_ = np.array([d for _, d in cases], np.int64)
    got = np.asarray(_quotient(jnp.asarray(numerators), jnp.asarray(denominators_)))
    np.testing.assert_array_equal(got, numerators // denominators_)


def test_quotient_at_the_edges():
    top = (1 << 62) - 1
    n = np.array([0, 1, 5, (1 << 52) + 1, (1 << 53) - 1, (1 << 53) + 1, top, top], np.int64)
    d = np.array([1, 1, 5, 1 << 12, 3, 1 << 12, 1 << 12, (1 << 40) - 3], np.int64)
    np.testing.assert_array_equal(np.asarray(_quotient(jnp.asarray(n), jnp.asarray(d))), n // d)


_fused = jax.jit(lambda x, steps, size: x + steps * size)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.floats(-12.0, 2.0), min_size=1, max_size=16),
    st.floats(-16.0, 16.0, width=32, allow_subnormal=False),  # XLA CPU flushes subnormals
)
def test_mutation_steps_round_once_however_compiled(log_scales, x):
    # Mutation adds whole steps of the normal draws times a short step size: the product
    # is exact, so XLA's fused multiply-add and NumPy's two roundings agree bit for bit.
    scales = np.exp(np.asarray(log_scales, np.float32))
    size = rng.step_size(scales, xp=np)
    assert np.all(np.abs(size / (scales * rng.NORMAL_STEP) - 1) <= 2.0**-14)
    steps = np.arange(-510, 511, dtype=np.float32)[:, None]
    product = steps * size
    np.testing.assert_array_equal(product.astype(np.float64), steps.astype(np.float64) * size.astype(np.float64))
    base = np.full(product.shape, x, np.float32)
    got = np.asarray(_fused(base, np.broadcast_to(steps, product.shape), np.broadcast_to(size, product.shape)))
    np.testing.assert_array_equal(got, base + product)
    np.testing.assert_array_equal(np.asarray(rng.step_size(jnp.asarray(scales), xp=jnp)), size)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 2**31 - 1), min_size=2, max_size=7), st.integers(1, 6))
def test_a_hash_continues_from_its_first_words(words, split):
    # Mutation hashes a child's words once and each genome entry after them: the same
    # draws as hashing all the words together (jitted, as the step does).
    split = min(split, len(words) - 1)
    whole = rng.hash_u32(*words, xp=np)
    assert rng.hash_more(rng.hash_u32(*words[:split], xp=np), *words[split:], xp=np) == whole
    continued = jax.jit(lambda h, rest: rng.hash_more(h, *rest, xp=jnp))(
        rng.hash_u32(*words[:split], xp=jnp), jnp.asarray(words[split:], jnp.uint32)
    )
    assert int(continued) == int(whole)
    assert rng.steps_of(whole, xp=np) == rng.normal_steps(*words, xp=np)


_first_best = jax.jit(first_best)
# Scores as a brain makes them, with the ties, signed zeros, infinities and neighbours in
# the last bit that an order of the scores' bits gets wrong first (not subnormal: XLA
# flushes those to zero).
scores = st.one_of(
    st.floats(-1e6, 1e6, width=32, allow_subnormal=False),
    st.sampled_from([0.0, -0.0, -np.inf, np.inf, 1.0, float(np.nextafter(np.float32(1), np.float32(2)))]),
)


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 15).flatmap(lambda s: st.lists(st.lists(scores, min_size=s, max_size=s), min_size=1, max_size=32)))
def test_first_best_is_the_first_slot_of_the_highest_score(rows):
    x = np.array(rows, np.float32)
    # In one shape (one compile), padded with -inf: slots that never win a row alone.
    padded = np.full((32, 15), -np.inf, np.float32)
    padded[: x.shape[0], : x.shape[1]] = x
    best, score = _first_best(padded)
    np.testing.assert_array_equal(np.asarray(best)[: len(x)], np.argmax(x, axis=1))
    np.testing.assert_array_equal(np.asarray(score)[: len(x)], x.max(axis=1))


def test_tanh_rows_is_tanh_bitwise_computed_on_rows_of_a_multiple_of_8():
    rng_ = np.random.default_rng(0)
    x = np.concatenate([
        rng_.normal(0, 3, (1000, 10)),
        np.array([[0.0, -0.0, 1e-30, -1e-30, 9.0, -9.0, 20.0, -20.0, np.inf, -np.inf]]),
    ]).astype(np.float32)
    rows = jax.jit(brain._tanh_rows)
    np.testing.assert_array_equal(np.asarray(rows(x)).view(np.uint32), np.asarray(jax.jit(jnp.tanh)(x)).view(np.uint32))
    # The tanh itself runs on padded rows (XLA does not fold the padding away).
    compiled = rows.lower(x).compile().as_text()
    assert "f32[1001,16]" in compiled and "tanh(" in compiled


def test_and_not_is_a_and_not_b_computed_on_bytes():
    rng_ = np.random.default_rng(0)
    # As the tick calls it: an operand in the lattice's shape against one in the tiles'.
    a = rng_.random((2, 4, 8, 16)) < 0.5
    b = rng_.random((2, 4, 128)) < 0.5
    both = jax.jit(lambda a, b: and_not(a, b.reshape(a.shape)))
    out = np.asarray(both(a, b))
    assert out.dtype == np.bool_
    np.testing.assert_array_equal(out, a & ~b.reshape(a.shape))
    table = np.asarray(jax.jit(and_not)(np.array([0, 0, 1, 1], bool), np.array([0, 1, 0, 1], bool)))
    np.testing.assert_array_equal(table, [False, False, True, False])
    # Bytes compared, not bools: the form XLA CPU compiles to vector code.
    assert "u8[2,4,8,16]" in both.lower(a, b).compile().as_text()
