"""Transfer: winners pay, and the rows they carry travel to the cells they won.

1. ``depart`` (the same every tick): winners pay, and the rows they carry (genome,
   body, energy) are listed with the target cells of each tile.
2. ``send`` (on a mesh, per set of ticking placed axes): the rows that cross into
   another tile are packed per face into a buffer of ``crossing`` rows and shifted to
   the neighbouring tile, a small exchange between neighbouring devices, on that
   axis's ticks only.
3. ``arrive`` (the same every tick): rows from within a tile are gathered, rows from
   other tiles taken from what was sent (on one device: gathered where they are); a
   child's genome mutates; only the rows of the target cells are written.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from flax import struct

from hca import geometry
from hca.claims import Claims
from hca.decide import NO_SLOT, Intent, and_not
from hca.energy import fraction_dynamic
from hca.organisms import Life
from hca.reproduction import mutate, mutation_keys
from hca.state import LifeState


@struct.dataclass
class Departures:
    """What the winners pay and carry."""

    paid: jax.Array  # (*S,) int32, what each winner pays (heat)
    kept: jax.Array  # (*S,) int32, the energy each claimant keeps
    leaves: jax.Array  # (*S,) bool, movers: their cells are empty afterwards
    rows: dict  # lattice-shaped fields a transfer carries, read at the claimant
    targets: jax.Array  # (*tiles, capacity) int32, in-tile index of each receiving cell, or tile cells
    came_by: jax.Array  # (*tiles, capacity) int32, the slot each target's claimant came by


def depart(life: Life, state: LifeState, intent: Intent, claims: Claims) -> Departures:
    """What the winners pay, keep and carry, and where each tile receives them."""
    succeeded = claims.succeeded
    paid = jnp.where(succeeded, life.price(intent.birth, jnp.maximum(intent.slot, 0), life.beach_costs()), 0)
    left = state.energy - paid
    # A parent sends its child the endowment; a mover takes everything with it.
    parent = succeeded & intent.birth
    sent = jnp.where(parent, fraction_dynamic(left, intent.endowment), jnp.where(succeeded, left, 0))
    rows = with_state(life, state, {"birth": intent.birth, "energy": sent})
    targets = life.tiling.first(life.tiling.split(claims.winner != NO_SLOT), life.capacity)
    return Departures(
        paid=paid,
        kept=left - sent,
        leaves=succeeded & ~intent.birth,
        rows=rows,
        targets=targets,
        came_by=life.tiling.take(claims.winner, targets),
    )


def with_state(life: Life, state: LifeState, rows: dict) -> dict:
    """``rows`` (a transfer's own fields, lattice-shaped) with the state's fields that a
    transfer carries: ``Departures.rows``. Genome tensors travel flat (a view): a row is
    one contiguous run, which the gather and the mutation of arriving rows stream (with
    a tensor's axes they run per axis)."""
    return {
        **rows,
        **{name: getattr(state, name) for name in _WRITTEN},
        "genome": {name: life.tiling.flat_rows(tensor) for name, tensor in state.genome.items()},
    }


def send(life: Life, departures: Departures, claims: Claims, slot: jax.Array, ticking: tuple[int, ...]):
    """The rows that arrive from neighbouring tiles along the placed axes ``ticking``
    (on a mesh: those split over devices that tick), as words (*tiles, capacity, W)
    uint32 aligned with ``departures.targets``.

    A tile packs the rows leaving through each side of those axes, at most ``crossing``
    per side in cell order, into one buffer of words; each side's part moves one tile
    along its axis (on a mesh: one exchange with the neighbouring device). The receiving
    tile lists the cells that accepted a claim through that side in the same order,
    since crossing a placed axis keeps the in-tile coordinates, so the k-th row sent is
    the k-th row received.
    """
    tiling, crossing, axis_of = life.tiling, life.crossing, life.placed
    faces = life.faces(ticking)
    # The claimant's slot that leads out through each face is the face's opposite.
    # All faces at once (one scan, not one per face: on GPU each is several kernels).
    out = jnp.stack([claims.succeeded & (slot == _opposite(face)) for face in faces], axis=-1)
    leaving = tiling.first(jnp.moveaxis(tiling.split(out), -1, -2), crossing)  # (*tiles, F, crossing)
    leaving = leaving.reshape((*tiling.tiles, len(faces) * crossing))
    packed = _pack(tiling.take(departures.rows, leaving), axis_of)
    received = []
    for index, face in enumerate(faces):
        axis, sign = divmod(face, 2)
        part = jax.lax.slice_in_dim(packed, index * crossing, (index + 1) * crossing, axis=axis_of)
        # Rows for the tile on the face's side come from it: toward -1 from the tile below.
        step = 1 if sign else -1
        received.append(geometry.shift(part, axis, step, geometry.slot_wraps(life.region.axes[axis])))
    received = jnp.concatenate(received, axis=axis_of)
    came = jnp.stack([claims.winner == face for face in faces], axis=-1)
    order = jnp.cumsum(tiling.split(came), axis=-2, dtype=jnp.int32) - 1  # (*tiles, cells, F)
    order = tiling.take(tiling.join(order), departures.targets)  # (*tiles, capacity, F)
    place = jnp.zeros_like(departures.targets)
    for index, face in enumerate(faces):
        place = jnp.where(departures.came_by == face, index * crossing + order[..., index], place)
    return jnp.take_along_axis(received, place[..., None], axis=axis_of, mode="clip")


def arrive(
    life: Life,
    state: LifeState,
    claims: Claims,
    departures: Departures,
    tick: jax.Array,
    seed: jax.Array,
    ashore=None,
    tile_numbers: jax.Array | None = None,
) -> tuple[LifeState, jax.Array, jax.Array | None]:
    """Pay for won claims and write the arriving rows, but those sent from another
    device (``arrive_sent`` writes them); returns (state, heat per tile, body energy
    that came across beaches per tile (None without a beach slot)).

    ``ashore`` are the packed rows from across beaches (``Beaches.rows_across``),
    aligned with the targets, or None. Rows from another tile of the lattice given are
    read where they are. Only the rows of target cells are written (at most
    ``capacity`` a tile).

    The targets of all tiles are listed one after the other, births first, and written
    ``life.arrival_rows`` at a time, in as many passes as they need; a pass mutates its
    births ``life.mutation_rows`` at a time (its rows at once where they are as many,
    as on the CPU). On a mesh this runs on each device's block (``Tick._on_blocks``): the
    passes are the device's own, ``tile_numbers`` (the block's tiles, in the region's
    numbering) name its tiles. A source cell is never a target (claims only win empty
    cells), so a pass reads its rows from the state the passes before it wrote, and the
    result is the same in any order. The fields travel through the passes in the
    lattice's shape: XLA computes a field once only where every consumer sees it in one
    shape.
    """
    fields = {
        "occupied": and_not(state.occupied, departures.leaves),
        "energy": departures.kept,
    }
    state, landed = _arrivals(life, state, fields, departures, None, ashore, tick, seed, tile_numbers)
    return state.replace(refused=state.refused + claims.refused), life.tiling.total(departures.paid), landed


def arrive_sent(
    life: Life,
    state: LifeState,
    departures: Departures,
    incoming: jax.Array,
    tick: jax.Array,
    seed: jax.Array,
    tile_numbers: jax.Array | None = None,
) -> LifeState:
    """Write the rows sent from another device (``incoming``, from ``send``, aligned
    with the targets) into the state ``arrive`` made, as ``arrive`` writes the others."""
    fields = {"occupied": state.occupied, "energy": state.energy}
    return _arrivals(life, state, fields, departures, incoming, None, tick, seed, tile_numbers)[0]


def _arrivals(life, state, fields, departures, incoming, ashore, tick, seed, tile_numbers):
    """``state`` with ``fields`` (its occupancy and energy after the departures) and the
    arriving rows written: with ``incoming`` those sent from another device, else the
    others. Returns (state, body energy landed per tile from across beaches, or None)."""
    tiling = life.tiling
    fields = {
        **fields,
        "genome": {name: tiling.flat_rows(tensor) for name, tensor in state.genome.items()},
        **{name: getattr(state, name) for name in _WRITTEN},
    }
    zero = tiling.counter()
    carry = (fields, zero, zero, None if ashore is None else zero)
    tile = jnp.broadcast_to(geometry.cell_index(tiling.tiles)[..., None], departures.targets.shape)
    numbers = tile if tile_numbers is None else jnp.broadcast_to(tile_numbers[..., None], tile.shape)
    listed = {  # per target, (*tiles, capacity, ...)
        "target": departures.targets,
        "came_by": departures.came_by,
        "tile": tile,
        "cell": numbers * tiling.cells + departures.targets,  # in the region's numbering
        "keys": None,
        "incoming": incoming,
        "ashore": ashore,
    }
    if life.config.mutation.enabled:  # hashed once for all targets, outside the passes
        listed["keys"] = mutation_keys(listed["cell"], tick, seed, life.index)
    sent = _sent(life, departures.targets, departures.came_by)
    wanted = sent if incoming is not None else ~sent
    count, pick = _listed_passes(life, listed, _claimant_births(life, departures, listed), wanted)
    write = functools.partial(_write_rows, life, departures.rows, tick)
    carry = jax.lax.fori_loop(0, count, lambda index, carry: write(pick(index), carry), carry)
    fields, births, moves, landed = carry
    state = state.replace(
        **{name: value for name, value in fields.items() if name != "genome"},
        genome={name: fields["genome"][name].reshape(tensor.shape) for name, tensor in state.genome.items()},
        births=state.births + births,
        moves=state.moves + moves,
    )
    return state, landed


def _listed_passes(life: Life, listed: dict, births: jax.Array, wanted: jax.Array):
    """(passes, pick): the ``wanted`` targets of all tiles one after the other, births
    first (the births of every tile in tile order, then the other arrivals in tile
    order), and ``pick(index)`` the ``life.arrival_rows`` of pass ``index`` (past the
    last target: the index ``cells``, no cell), with ``leading``, the births at its
    start.

    ``births`` (*tiles, capacity) bool: whether each target's claimant gives birth;
    ``wanted`` (*tiles, capacity) bool: the targets to list. Each target's place in the
    list is its running count among the births or among the others, and the list is
    made by writing each target's number at its place: a scatter to distinct places,
    once a tick."""
    tiling, rows = life.tiling, life.arrival_rows
    entries = listed["target"].size
    # Every list but the tiles' (a target's tile follows from its entry), flat:
    # (tiles x capacity, ...).
    flat = jax.tree.map(
        lambda x: x.reshape((entries, *x.shape[life.placed + 1 :])), {k: v for k, v in listed.items() if k != "tile"}
    )
    real = (flat["target"] < tiling.cells) & wanted.reshape(-1)
    born = real & births.reshape(-1)
    born_before = jnp.cumsum(born, dtype=jnp.int32)
    others_before = jnp.cumsum(real & ~born, dtype=jnp.int32)
    total_born = born_before[-1]
    total = total_born + others_before[-1]
    size = -(-entries // rows) * rows
    place = jnp.where(born, born_before - 1, jnp.where(real, total_born + others_before - 1, size))
    order = jnp.zeros(size, jnp.int32).at[place].set(jnp.arange(entries, dtype=jnp.int32), mode="drop")

    def pick(index):
        at = jax.lax.dynamic_slice_in_dim(order, index * rows, rows)
        picked = jax.tree.map(lambda x: x[at], flat)
        real = index * rows + jnp.arange(rows, dtype=jnp.int32) < total
        picked["target"] = jnp.where(real, picked["target"], tiling.cells)
        picked["tile"] = at // life.capacity
        picked["leading"] = jnp.clip(total_born - index * rows, 0, rows)
        return picked

    return (total + rows - 1) // rows, pick


def _claimant_births(life: Life, departures: Departures, listed: dict) -> jax.Array:
    """(*tiles, capacity) bool: whether each listed target's claimant gives birth, read
    as ``_write_rows`` reads it."""
    targets, came_by, tile = listed["target"], listed["came_by"], listed["tile"]
    _, row = _sources(life, targets, came_by, tile)
    birth = life.tiling.gather(departures.rows["birth"], row)
    like = jax.eval_shape(lambda rows: life.tiling.gather(rows, row), departures.rows)
    if listed["incoming"] is not None:
        far = _unpack(listed["incoming"], like, targets.ndim - 1)["birth"]
        birth = jnp.where(_sent(life, targets, came_by), far, birth)
    if listed["ashore"] is not None:
        far = _unpack(listed["ashore"], like, targets.ndim - 1)["birth"]
        birth = jnp.where(came_by == life.beach_slot, far, birth)
    return birth


def _sources(life: Life, targets: jax.Array, came_by: jax.Array, tile: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(in-tile index, lattice row) of each target's claimant, from the slot it came by
    (from another tile of the lattice given: the row where it is; across an axis split
    over devices, a row of the block that ``_sent`` replaces)."""
    cells = life.tiling.cells
    slot = jnp.maximum(came_by, 0)
    source = jnp.asarray(life.local_neighbour)[slot, jnp.minimum(targets, cells - 1)]
    return source, jnp.asarray(life.tile_neighbour)[slot, tile] * cells + source


def _sent(life: Life, targets: jax.Array, came_by: jax.Array) -> jax.Array:
    """Whether each target's row was sent from another device: a real target (not
    padding, whose slot is whatever the tile's last cell won) reached through a slot of
    an axis split over devices."""
    return (targets < life.tiling.cells) & jnp.asarray(life.sent)[jnp.maximum(came_by, 0)]


def _tally_by_tile(tiling: geometry.Tiling):
    """``tally(x, tile)``: per tile (*tiles) int64, the sum of ``x`` (R,) over the rows
    of each tile (``tile`` (R,), flat tile indices): a sum, not a scatter-add."""
    tiles = math.prod(tiling.tiles)

    def tally(x, tile):
        mine = tile[:, None] == jnp.arange(tiles, dtype=tile.dtype)[None, :]
        return jnp.where(mine, x[:, None].astype(jnp.int64), 0).sum(axis=0).reshape(tiling.tiles)

    return tally


def _write_rows(life: Life, departed: dict, tick, picked: dict, carry):
    """One pass of ``arrive``: the rows (``departed``: ``Departures.rows``) of the
    ``picked`` targets written into ``carry`` = (fields, births, moves, landed), with
    counts per tile.

    ``picked`` (``_listed_passes``) holds lists of one shape: ``target`` the in-tile
    index (``cells``: none), ``came_by``, ``tile`` the flat tile index, ``cell`` the
    target in the region's numbering, ``keys`` the targets' ``mutation_keys`` (None: no
    mutation), the ``incoming`` and ``ashore`` words (or None), and ``leading``, the
    count of births, which come first."""
    tiling = life.tiling
    tally = _tally_by_tile(tiling)
    fields, births, moves, landed = carry
    targets, came_by, tile = picked["target"], picked["came_by"], picked["tile"]
    lead = targets.ndim - 1  # axes before the rows' own
    valid = targets < tiling.cells
    _, row = _sources(life, targets, came_by, tile)
    # The rows a transfer carries, with the state's as the passes before wrote them.
    carried = {**departed, **{name: fields[name] for name in _WRITTEN}, "genome": fields["genome"]}
    # Rows from a neighbouring tile are read where they are (a placed axis keeps the
    # in-tile index); those sent from another device replace them.
    moved = tiling.gather(carried, row)
    if picked["incoming"] is not None:
        across = _sent(life, targets, came_by)
        far = _unpack(picked["incoming"], moved, lead)
        moved = jax.tree.map(lambda near, far: jnp.where(_lift(across, near), far, near), moved, far)
    if picked["ashore"] is not None:
        by_beach = came_by == life.beach_slot
        far = _unpack(picked["ashore"], moved, lead)
        moved = jax.tree.map(lambda near, far: jnp.where(_lift(by_beach, near), far, near), moved, far)
        landed = landed + tally(jnp.where(valid & by_beach, moved["energy"], 0), tile)
    is_birth = moved["birth"]

    def born(newborn, inherited):
        return jnp.where(_lift(is_birth, inherited), newborn, inherited)

    # Founders are numbered 1..W (W the world's living cells, this region's from its
    # offset); a child born on tick t at the world's living cell c is (t + 1) * W + c + 1.
    cell = picked["cell"]
    new_id = (tick.astype(jnp.int64) + 1) * life.world_cells + life.offset + cell.astype(jnp.int64) + 1
    genome = moved["genome"]
    if picked["keys"] is not None:
        genome = _mutate_leading(life, genome, picked["keys"], picked["leading"])

    rows = {
        "occupied": valid,
        "energy": moved["energy"],
        "hidden": born(0.0, moved["hidden"]),
        "signal": born(0.0, moved["signal"]),
        "plastic": born(0.0, moved["plastic"]),
        "age": born(0, moved["age"]),
        "organism_id": born(new_id, moved["organism_id"]),
        "parent_id": born(moved["organism_id"], moved["parent_id"]),
        "birth_tick": born(tick, moved["birth_tick"]),
        "generation": born(moved["generation"] + 1, moved["generation"]),
        "founder": moved["founder"],
        "genome": genome,
    }
    # The rows are made before any is written: a write that computed its rows itself
    # would read the array it writes, and could not write in place (on GPU, XLA then
    # copies every genome tensor twice a tick).
    rows = jax.lax.optimization_barrier(rows)
    fields = jax.tree.map(lambda field, values: tiling.put_rows(field, targets, tile, values), fields, rows)
    births = births + tally(valid & is_birth, tile)
    moves = moves + tally(valid & ~is_birth, tile)
    return fields, births, moves, landed


def _mutate_leading(life: Life, genome: dict, keys: jax.Array, leading: jax.Array) -> dict:
    """``genome`` (rows (R, size) of each tensor) with its first ``leading`` rows, the
    births, mutated ``life.mutation_rows`` at a time: where that is fewer than R, a pass
    mutates about the births it writes, in a loop, not all its rows; else all R at once,
    the births' children kept. The same children as all rows mutated and the births
    picked."""
    rows = keys.shape[0]
    chunk = math.gcd(rows, life.mutation_rows)

    def one(index, genome):
        start = index * chunk
        parents = {name: jax.lax.dynamic_slice_in_dim(x, start, chunk) for name, x in genome.items()}
        child = mutate(life.layout, parents, jax.lax.dynamic_slice_in_dim(keys, start, chunk),
                       life.config.mutation.meta_scale)
        born = (start + jnp.arange(chunk, dtype=jnp.int32) < leading)[:, None]
        return {
            name: jax.lax.dynamic_update_slice_in_dim(x, jnp.where(born, child[name], parents[name]), start, 0)
            for name, x in genome.items()
        }

    if chunk == rows:  # one chunk: no loop
        return one(0, genome)
    return jax.lax.fori_loop(0, (leading + chunk - 1) // chunk, one, genome)


# LifeState fields written from the arriving rows as they are.
_WRITTEN = ("hidden", "signal", "plastic", "age", "organism_id", "parent_id", "birth_tick", "generation", "founder")


def pack_rows(tree) -> jax.Array:
    """Rows (n, ...) of every leaf -> (n, W) uint32 words, as ``send`` packs them (and
    ``arrive`` unpacks them), so rows can travel between regions too."""
    return _pack(tree, 0)


def row_words(tree, lead: int) -> int:
    """uint32 words per row of a tree of lattice-shaped leaves with ``lead`` axes."""
    return _words(tree, lead)


def _opposite(slot: int) -> int:
    """The slot pointing back along the same axis."""
    return slot ^ 1


def _as_words(x: jax.Array, lead: int) -> jax.Array:
    """(*lead, ...) of a 32- or 64-bit dtype or bool -> (*lead, words) uint32, bit for bit."""
    x = x.astype(jnp.uint32) if x.dtype == jnp.bool_ else jax.lax.bitcast_convert_type(x, jnp.uint32)
    return x.reshape((*x.shape[:lead], -1))


def _word_count(leaf: jax.Array, lead: int) -> int:
    """uint32 words per row of ``leaf`` (rows indexed by its ``lead`` leading axes)."""
    return math.prod(leaf.shape[lead:]) * (2 if leaf.dtype.itemsize == 8 else 1)


def _words(tree, lead: int) -> int:
    """uint32 words per row of a tree of leaves, packed together."""
    return sum(_word_count(leaf, lead) for leaf in jax.tree.leaves(tree))


def _pack(tree, lead: int) -> jax.Array:
    """Rows (*lead, ...) of every leaf -> one (*lead, W) uint32 array."""
    return jnp.concatenate([_as_words(leaf, lead + 1) for leaf in jax.tree.leaves(tree)], axis=-1)


def _unpack(words: jax.Array, like, lead: int):
    """The inverse of ``_pack``: ``like``'s structure, shapes and dtypes from words."""
    leaves, structure = jax.tree.flatten(like)
    out, start = [], 0
    for leaf in leaves:
        count = _word_count(leaf, lead + 1)
        part = jax.lax.slice_in_dim(words, start, start + count, axis=-1)
        start += count
        if leaf.dtype == jnp.bool_:
            value = part.reshape(leaf.shape) != 0
        elif leaf.dtype.itemsize == 8:
            value = jax.lax.bitcast_convert_type(part.reshape((*leaf.shape, 2)), leaf.dtype)
        else:
            value = jax.lax.bitcast_convert_type(part.reshape(leaf.shape), leaf.dtype)
        out.append(value)
    return jax.tree.unflatten(structure, out)


def _lift(x: jax.Array, like: jax.Array) -> jax.Array:
    """``x`` with unit axes appended to broadcast against ``like``'s trailing axes."""
    return x.reshape(x.shape + (1,) * (like.ndim - x.ndim))
