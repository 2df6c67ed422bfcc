"""Neighbours at open and curled ends, as exact arrays, and the stretch schedule."""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
import pytest

from hca import geometry
from hca.config import Axis, parse_world


def ax(size, curled):
    return Axis(name="a", size=size, curled=curled)


@pytest.mark.parametrize(
    "size, curled, minus, plus",
    [
        (5, False, [-1, 0, 1, 2, 3], [1, 2, 3, 4, -1]),
        (5, True, [4, 0, 1, 2, 3], [1, 2, 3, 4, 0]),
        (1, False, [-1], [-1]),
        (1, True, [-1], [-1]),
        (2, False, [-1, 0], [1, -1]),
        (2, True, [1, 0], [1, 0]),  # both slots reach the same cell
        (3, True, [2, 0, 1], [1, 2, 0]),
    ],
)
def test_neighbour_table(size, curled, minus, plus):
    table = geometry.neighbour_table(ax(size, curled))
    np.testing.assert_array_equal(table, np.array([minus, plus]))


@pytest.mark.parametrize(
    "size, curled, minus, plus",
    [
        (5, False, [0, 1, 1, 1, 1], [1, 1, 1, 1, 0]),
        (5, True, [1] * 5, [1] * 5),
        (1, True, [0], [0]),
        (2, True, [0, 1], [1, 0]),  # one link between the two cells, not two
        (3, True, [1, 1, 1], [1, 1, 1]),
    ],
)
def test_link_table(size, curled, minus, plus):
    table = geometry.link_table(ax(size, curled))
    np.testing.assert_array_equal(table, np.array([minus, plus], dtype=bool))


@pytest.mark.parametrize("size", [1, 2, 3, 6])
@pytest.mark.parametrize("curled", [False, True])
@pytest.mark.parametrize("step", [-1, 1])
@pytest.mark.parametrize("fill", [0, -1])
def test_shift_reads_the_neighbour_table(size, curled, step, fill):
    axis = ax(size, curled)
    values = np.arange(1, 4 * size * 3 + 1, dtype=np.int64).reshape(4, size, 3)
    shifted = np.asarray(geometry.shift(jnp.asarray(values), 1, step, geometry.slot_wraps(axis), fill=fill))
    neighbours = geometry.neighbour_table(axis)[0 if step < 0 else 1]
    for i, j in enumerate(neighbours):
        expected = values[:, j, :] if j >= 0 else np.full((4, 3), fill, np.int64)  # past an open end
        np.testing.assert_array_equal(shifted[:, i, :], expected)


def test_coordinate_and_cell_index():
    shape = (2, 3, 4)
    np.testing.assert_array_equal(np.asarray(geometry.coordinate(shape, 1)), np.indices(shape)[1])
    np.testing.assert_array_equal(
        np.asarray(geometry.cell_index(shape)), np.arange(24).reshape(shape)
    )


def test_schedule_of_mixed_stretches():
    world = parse_world(
        {
            "regions": {
                "r": {
                    "axes": [
                        {"name": "a", "size": 2, "stretch": 1},
                        {"name": "b", "size": 2, "stretch": 2},
                        {"name": "c", "size": 2, "stretch": 3},
                    ]
                },
                "s": {"axes": [{"name": "x", "size": 3, "stretch": 4}]},
            }
        }
    )
    schedule = geometry.Schedule.of(world)
    assert schedule.period == 12
    for phase in range(12):
        ticking = schedule.ticking[schedule.branch_of_phase[phase]]
        assert ticking[0] == tuple(k for k, s in enumerate((1, 2, 3)) if phase % s == 0)
        assert ticking[1] == ((0,) if phase % 4 == 0 else ())
    # Phases with the same ticking axes share one branch.
    assert len(schedule.ticking) == len({schedule.ticking[b] for b in schedule.branch_of_phase})


def test_ticks_per_thousand():
    assert geometry.ticks_per_thousand(Axis(name="a", size=2, stretch=1)) == 1000
    assert geometry.ticks_per_thousand(Axis(name="a", size=2, stretch=3)) == 334
    assert geometry.ticks_per_thousand(Axis(name="a", size=2, stretch=32)) == 32


@pytest.mark.parametrize(
    "shape, placed, count",
    [
        ((3, 4, 8, 16), 2, 16),  # small tiles: counted directly
        ((2, 3, 64, 132), 2, 12),  # large tiles: binary search
        ((40,), 0, 5),  # nothing placed: one tile
    ],
)
def test_tiles_list_their_first_set_cells_and_write_only_those_rows(shape, placed, count):
    tiling = geometry.Tiling(shape, placed)
    generator = np.random.default_rng(len(shape) + count)
    mask = generator.random(shape) < 0.05
    mask.reshape(*tiling.tiles, -1)[..., :3] = True  # every tile has at least three
    first = np.asarray(tiling.first(tiling.split(jnp.asarray(mask)), count))
    tiles = mask.reshape(*tiling.tiles, tiling.cells)
    for tile in np.ndindex(*tiling.tiles):
        found = np.flatnonzero(tiles[tile])[:count]
        expected = np.concatenate([found, np.full(count - found.size, tiling.cells)])
        np.testing.assert_array_equal(first[tile], expected)
    # Rows land at those cells, tile by tile; the padding (index = tile cells) is dropped.
    values = np.arange(np.prod(shape) * 2, dtype=np.int32).reshape(*shape, 2)
    rows = -np.ones((*tiling.tiles, count, 2), np.int32)
    tile = np.repeat(np.arange(math.prod(tiling.tiles), dtype=np.int32), count)
    written = np.asarray(
        tiling.put_rows(jnp.asarray(values), jnp.asarray(first.reshape(-1)), jnp.asarray(tile), jnp.asarray(rows.reshape(-1, 2)))
    )
    np.testing.assert_array_equal(written[mask & _first_cells(mask, tiling, count)], -1)
    untouched = ~(mask & _first_cells(mask, tiling, count))
    np.testing.assert_array_equal(written[untouched], values[untouched])
    # And are read back from the same cells.
    taken = np.asarray(tiling.take(jnp.asarray(written), jnp.asarray(first)))
    valid = first < tiling.cells
    np.testing.assert_array_equal(taken[valid], -1)
    # The padding reads its tile's last cell (the gather is promised indices in range).
    last = np.asarray(tiling.split(jnp.asarray(written)))[..., -1:, :]
    np.testing.assert_array_equal(taken[~valid], np.broadcast_to(last, taken.shape)[~valid])


def _first_cells(mask, tiling, count):
    tiles = mask.reshape(*tiling.tiles, tiling.cells)
    keep = np.cumsum(tiles, axis=-1) <= count
    return keep.reshape(mask.shape)
