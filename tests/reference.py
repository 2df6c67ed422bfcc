"""A slow, obvious NumPy implementation of the substrate tick, for agreement tests.

It walks cells and their links one by one with plain Python integers, sharing nothing
with the jitted step but the definition of the counter-based hash.
"""

from __future__ import annotations

import itertools

import numpy as np

from hca import rng
from hca.config import RATE_ONE, WorldConfig, quantize_rate


def _floor_fraction(value: int, rate: float) -> int:
    return (value * quantize_rate(rate)) // RATE_ONE


def _neighbours_by_link(shape, axis, curled):
    """Yield (cell, neighbour) for each distinct link along `axis`, once per direction."""
    size = shape[axis]
    links = set()
    for i in range(size):
        j = i + 1
        if j == size:
            if not curled or size < 3:
                continue
            j = 0
        links.add((i, j))
    for cell in itertools.product(*(range(n) for n in shape)):
        for i, j in links:
            if cell[axis] == i:
                other = list(cell)
                other[axis] = j
                yield cell, tuple(other)
            if cell[axis] == j:
                other = list(cell)
                other[axis] = i
                yield cell, tuple(other)


class Reference:
    def __init__(self, world: WorldConfig, seed: int | None = None):
        self.world = world
        self.seed = world.seed if seed is None else seed
        self.tick = 0
        self.free = []
        self.injected = []
        self.dissipated = []
        for index, region in enumerate(world.regions.values()):
            initial = region.energy.initial
            cells = np.arange(region.cells).reshape(region.shape)
            span = 2 * initial.jitter + 1
            offsets = rng.hash_u32(self.seed, rng.INITIAL_ENERGY, index, cells, xp=np) % np.uint32(span)
            self.free.append(offsets.astype(np.int64) + initial.mean - initial.jitter)
            # The ledger's counters are kept per tile (cells sharing their placed coordinates).
            tiles = region.shape[: len(region.placement)]
            self.injected.append(np.zeros(tiles, np.int64))
            self.dissipated.append(np.zeros(tiles, np.int64))
        # Beaches: what came in and went out of each region (per tile), and what each
        # beach carried from its first shore to its second and back.
        self.beach_in = [np.zeros(r.shape[: len(r.placement)], np.int64) for r in world.regions.values()]
        self.beach_out = [np.zeros(r.shape[: len(r.placement)], np.int64) for r in world.regions.values()]
        self.carried = np.zeros((len(world.beaches), 2), np.int64)

    def _offers(self, index, region):
        shape = region.shape
        cells = np.arange(region.cells).reshape(shape)
        offered = np.zeros(shape, dtype=np.int64)
        for number, source in enumerate(region.energy.sources):
            if self.tick % source.every:
                continue
            if source.kind == "uniform":
                where = np.ones(shape, dtype=bool)
            elif source.kind == "spots" and source.at is not None:
                where = np.zeros(shape, dtype=bool)
                for coordinate in source.at:
                    where[tuple(coordinate)] = True
            elif source.kind == "spots":
                h = rng.hash_u32(self.seed, rng.SPOTS, index, number, cells, xp=np)
                where = (h >> np.uint32(8)) < round(source.fraction * (1 << 24))
            elif source.kind == "band":
                axis = [a.name for a in region.axes].index(source.axis)
                position = np.indices(shape)[axis]
                where = (position >= source.start) & (position < source.stop)
            else:
                h = rng.hash_u32(self.seed, rng.RAIN, index, number, self.tick, cells, xp=np)
                where = (h >> np.uint32(8)) < round(source.probability * (1 << 24))
            offered = np.minimum(offered + np.where(where, source.amount, 0), region.energy.capacity)
        return offered

    def step(self) -> None:
        regions = list(self.world.regions.values())
        frees = [self._inflow(index, region, self.free[index]) for index, region in enumerate(regions)]
        frees = self._organisms(frees)
        crossed = self._beaches(frees)
        for index, region in enumerate(regions):
            self.free[index] = self._diffuse_and_decay(index, region, frees[index], crossed[index])
        self.tick += 1

    def _shores(self, beach):
        """Per shore of ``beach``: (region index, region, its cells as coordinates)."""
        names = list(self.world.regions)
        sides = []
        for shore in beach.shores:
            index = names.index(shore.region)
            region = self.world.regions[shore.region]
            ranges = []
            for axis in region.axes:
                given = shore.at.get(axis.name)
                if given is None:
                    ranges.append(range(axis.size))
                elif isinstance(given, int):
                    ranges.append(range(given, given + 1))
                else:
                    ranges.append(range(*given))
            sides.append((index, region, list(itertools.product(*ranges))))
        return sides

    def _beaches(self, frees):
        """What crosses each beach on its ticks, cell by cell from the same snapshot as
        the axes' diffusion: per region, the change to each cell's free energy."""
        crossed = [np.zeros(free.shape, np.int64) for free in frees]
        for number, beach in enumerate(self.world.beaches):
            if self.tick % beach.stretch:
                continue
            (ia, ra, cells_a), (ib, rb, cells_b) = self._shores(beach)
            assert len(cells_a) == len(cells_b)
            for ca, cb in zip(cells_a, cells_b):
                sent_a = _floor_fraction(int(frees[ia][ca]), beach.diffusion)
                sent_b = _floor_fraction(int(frees[ib][cb]), beach.diffusion)
                crossed[ia][ca] += sent_b - sent_a
                crossed[ib][cb] += sent_a - sent_b
                for index, region, cell, given, taken in ((ia, ra, ca, sent_a, sent_b), (ib, rb, cb, sent_b, sent_a)):
                    tile = cell[: len(region.placement)]
                    self.beach_out[index][tile] += given
                    self.beach_in[index][tile] += taken
                self.carried[number] += (sent_a, sent_b)
        return crossed

    def _inflow(self, index, region, free):
        capacity = region.energy.capacity
        added = np.minimum(self._offers(index, region), np.maximum(capacity - free, 0))
        self.injected[index] += _per_tile(region, added)
        return free + added

    def _organisms(self, frees):
        return frees  # the substrate has none; WorldReference adds them

    def _diffuse_and_decay(self, index, region, free, crossed):
        before = free.copy()
        after = free.copy() + crossed
        for axis, spec in enumerate(region.axes):
            if self.tick % spec.stretch:
                continue
            rate = region.energy.diffusion if spec.diffusion is None else spec.diffusion
            for cell, other in _neighbours_by_link(region.shape, axis, spec.curled):
                amount = _floor_fraction(int(before[cell]), rate)
                after[cell] -= amount
                after[other] += amount
        lost = np.array([_floor_fraction(int(v), region.energy.decay) for v in after.ravel()])
        self.dissipated[index] += _per_tile(region, lost)
        return after - lost.reshape(after.shape)


def _per_tile(region, per_cell):
    tiles = region.shape[: len(region.placement)]
    return np.asarray(per_cell).reshape(tiles + (-1,)).sum(-1).astype(np.int64)


# --- organisms ---------------------------------------------------------------------

ONE = 1 << 16


def _sigmoid_rate(x):
    x = np.asarray(x, np.float32)
    return np.floor((np.float32(1) / (np.float32(1) + np.exp(-x))) * np.float32(ONE)).astype(np.int64)


class LifeReference:
    """One region's organisms, stepped cell by cell in plain NumPy.

    It starts from a given initial state (the founders' genomes are checked apart)
    and follows DESIGN's rules directly: loops over cells and their slots for claims,
    explicit per-organism arithmetic for brains, costs and transfers.
    """

    def __init__(self, region, index, seed, life_state, offset=0, world_cells=None):
        from hca import geometry

        self.region, self.index, self.seed = region, index, seed
        self.config = region.organisms
        self.shape = region.shape
        self.n = region.cells
        self.ndim = len(region.axes)
        # Tiles: the cells sharing their coordinates on the placed (leading) axes.
        self.tiles = self.shape[: len(region.placement)]
        self.tile_cells = int(np.prod(self.shape[len(region.placement):]))
        self.s = {name: np.array(value) for name, value in _fields(life_state).items()}
        # The death journal, (J, cells) per field, row tick % J: who died where.
        depth = np.shape(life_state.died)[len(self.tiles)]
        self.journal = {name: np.zeros((depth, self.n), np.int64) for name in JOURNAL}
        self.genome = {k: np.array(v).reshape(self.n, *np.shape(v)[self.ndim:]) for k, v in life_state.genome.items()}
        for key in list(self.s):
            if key in COUNTERS:  # one per tile
                self.s[key] = self.s[key].reshape(-1).astype(np.int64)
            else:
                self.s[key] = self.s[key].reshape(self.n, *self.s[key].shape[self.ndim:])
        self.tables = [geometry.neighbour_table(axis) for axis in region.axes]
        self.coords = np.array(np.unravel_index(np.arange(self.n), self.shape)).T
        from hca.brain import GenomeLayout

        self.layout = GenomeLayout.of(self.config.brain)
        size = self.layout.size
        self.upkeep = self.config.metabolism.base + int(size * self.config.metabolism.per_parameter)
        self.unit_q = quantize_rate(self.config.metabolism.per_active_unit)
        self.capacity = min(self.config.max_transfers or max(16, self.tile_cells // 8), self.tile_cells)
        self.tasks = TaskReference(region, index, seed, self.tile_cells) if region.tasks else None
        self.people = None  # a person's questions, once one is asked (WorldReference.ask)
        self.crossing = min(self.config.max_crossings or max(1, self.capacity // 4), self.capacity)
        # Ids count the world's living cells; this region's start at `offset`.
        self.offset, self.world_cells = offset, self.n if world_cells is None else world_cells
        # Beaches organisms cross (set by WorldReference): cell -> (other life, its
        # cell, beach number, stretch, the stretch crossing costs as); such a region
        # has one more slot, the last.
        self.partner = {}
        self.beach_slot = None

    @property
    def slots(self):
        return 2 * self.ndim + (self.beach_slot is not None)

    def _shown(self, cell, tick, asked):
        """The question shown at a cell: a person's while one is open there, else a task's."""
        from hca import brain

        if self.people is not None and tick < self.people["until"][cell]:
            return self.people["inputs"][cell]
        return np.zeros(brain.TASK_INPUTS, np.float32) if asked is None else asked[cell]["inputs"]

    def neighbour(self, cell, slot):
        axis, sign = divmod(slot, 2)
        target = self.tables[axis][sign][self.coords[cell][axis]]
        if target < 0:
            return None
        other = self.coords[cell].copy()
        other[axis] = target
        return int(np.ravel_multi_index(tuple(other), self.shape))

    def stretch(self, slot, cell):
        """The stretch a claim toward ``slot`` pays for (a beach's cost)."""
        if slot == self.beach_slot:
            return self.partner[cell][4]
        return self.region.axes[slot // 2].stretch

    def birth_cost(self, slot, cell):
        return self.config.birth_cost * self.stretch(slot, cell)

    def move_cost(self, slot, cell):
        return int(np.ceil(self.layout.size * self.config.move_cost * self.stretch(slot, cell)))

    def price(self, slot, cell):
        return self.birth_cost(slot, cell) if self.birth[cell] else self.move_cost(slot, cell)

    def sense(self, ticking):
        s = self.s
        for cell in range(self.n):
            for axis in ticking:
                for sign in (0, 1):
                    slot = 2 * axis + sign
                    other = self.neighbour(cell, slot)
                    if other is None:
                        s["halo"][cell, slot] = 0.0
                    else:
                        occupied = np.float32(s["occupied"][other])
                        s["halo"][cell, slot, :-1] = s["signal"][other] * occupied
                        s["halo"][cell, slot, -1] = occupied

    def decide(self, free, ticking, tick, beaches_now=()):
        from hca import brain

        s, g, cfg, lay = self.s, self.genome, self.config, self.layout
        c, e = lay.signals, lay.encoder
        heat = np.zeros(self.n, np.int64)
        self.earned = np.zeros(self.n, np.int64)
        asked = [self.tasks.question(cell, tick, s["halo"][cell]) for cell in range(self.n)] if self.tasks else None
        row = tick % len(self.journal["died"])
        for name in JOURNAL:
            self.journal[name][row] = 0
        phase_bits = np.zeros(7, np.float32)
        phase_bits[list(ticking)] = 1.0
        self.intent = np.full(self.n, -1)
        self.birth = np.zeros(self.n, bool)
        self.endow = np.zeros(self.n, np.int64)
        thoughts = []
        for cell in range(self.n):
            occupied = bool(s["occupied"][cell])
            energy = int(s["energy"][cell])
            x = np.concatenate(
                [
                    s["signal"][cell],
                    s["hidden"][cell],
                    [np.log1p(np.float32(energy)) / 8, np.log1p(np.float32(free[cell])) / 8],
                    self._shown(cell, tick, asked),
                    phase_bits,
                ]
            ).astype(np.float32)
            exists = [self.neighbour(cell, k) is not None for k in range(2 * self.ndim)]
            if self.beach_slot is not None:
                exists.append(cell in self.partner)
            exists = np.array(exists)
            slot_in = []
            for k in range(self.slots):
                if k == self.beach_slot:  # a beach: its stretch, "curled" -1, no sign
                    stretch = self.partner[cell][3] if cell in self.partner else 1
                    features = [np.log2(np.float32(stretch)) / 8, -1.0, 0.0]
                else:
                    axis = self.region.axes[k // 2]
                    features = [np.log2(axis.stretch) / 8, float(axis.curled), -1.0 if k % 2 == 0 else 1.0]
                slot_in.append(np.concatenate([s["halo"][cell, k], [float(exists[k])], features]))
            slot_in = np.array(slot_in, np.float32)
            encoded = np.tanh(slot_in @ g["encoder_w"][cell] + g["encoder_b"][cell])
            pooled = (encoded * exists[:, None]).sum(0) / max(exists.sum(), 1)
            active = g["gate"][cell] > 0
            hidden = np.tanh(np.concatenate([x, pooled]) @ g["body_w"][cell] + g["body_b"][cell]) * active
            out = (g["head_w"][cell] + s["plastic"][cell]) @ hidden + g["head_b"][cell]
            scores = encoded @ g["score_w"][cell][:e] + hidden @ g["score_w"][cell][e:]
            rate = np.exp(np.clip(g["log_learning_rate"][cell][0], -20, 2))
            modulator = np.tanh((energy - int(s["last_energy"][cell])) / np.float32(cfg.modulator_scale))
            if occupied and cfg.learning:
                s["plastic"][cell] = np.clip(
                    s["plastic"][cell] + rate * modulator * np.outer(np.tanh(out), hidden),
                    -brain.PLASTIC_LIMIT,
                    brain.PLASTIC_LIMIT,
                )
            if occupied:
                s["signal"][cell] = np.tanh(out[:c])
                s["hidden"][cell] = hidden
            else:
                s["plastic"][cell] = 0
                s["signal"][cell] = 0
                s["hidden"][cell] = 0
            thoughts.append((out, scores, active, exists))
            if self.people is not None and tick < self.people["until"][cell] and occupied:
                self.people["answer"][cell] = np.tanh(out[c + brain.ANSWER])
                self.people["answered_by"][cell] = s["organism_id"][cell]
        # Tasks pay once every answer of the tile is known (a budget is shared).
        if asked is not None:
            # A group's later cells (position > 0) answer by what they say on signal 0.
            answers = [out[0] if question["said"] else out[c + brain.ANSWER]
                       for (out, *_), question in zip(thoughts, asked)]
            rooms = [cfg.max_energy - int(s["energy"][cell]) for cell in range(self.n)]
            self.earned += self.tasks.pay(asked, answers, s["occupied"], rooms)
        for cell in range(self.n):
            occupied = bool(s["occupied"][cell])
            energy = int(s["energy"][cell]) + int(self.earned[cell])
            out, scores, active, exists = thoughts[cell]
            act = out[c:]
            if occupied:
                want = (cfg.absorb * int(_sigmoid_rate(act[brain.ABSORB]))) >> 16
                take = min(want, int(free[cell]), cfg.max_energy - energy)
                energy += take
                free[cell] -= take
                cost = self.upkeep + ((int(active.sum()) * self.unit_q) >> 16)
                paid = min(cost, energy)
                energy -= paid
                heat[cell] += paid
                s["age"][cell] += 1
                dead = energy == 0 or (cfg.max_age is not None and s["age"][cell] > cfg.max_age)
                if dead:
                    for name, field in zip(JOURNAL, ("organism_id", "parent_id", "generation")):
                        self.journal[name][row, cell] = s[field][cell]
                    free[cell] += energy
                    energy = 0
                    s["occupied"][cell] = False
                    s["deaths"][cell // self.tile_cells] += 1
                else:
                    valid = [k for k in range(2 * self.ndim) if exists[k] and k // 2 in ticking]
                    if cell in self.partner and self.partner[cell][2] in beaches_now:
                        valid.append(self.beach_slot)
                    if valid:
                        best = max(valid, key=lambda k: (scores[k], -k))
                        wants_birth = act[brain.REPRODUCE] >= act[brain.MOVE]
                        eager = (act[brain.REPRODUCE] if wants_birth else act[brain.MOVE]) > 0
                        price = self.birth_cost(best, cell) if wants_birth else self.move_cost(best, cell)
                        if scores[best] > act[brain.STAY] and eager and energy > price:
                            self.intent[cell] = best
                        self.birth[cell] = wants_birth
                        self.endow[cell] = min(int(_sigmoid_rate(act[brain.ENDOW])), ONE - 1)
                s["energy"][cell] = energy
        return heat

    def bid(self, claimant, tick):
        tie = int(rng.hash_u32(self.seed, rng.TIE_BREAK, self.index, tick, claimant, xp=np))
        return (int(self.s["energy"][claimant]) << 32) | tie

    def winners(self, ticking, tick, beaches_now=()):
        """The claims this region's empty cells accept: target -> (claimant's life,
        claimant cell, slot the target was reached by)."""
        s, n = self.s, self.n
        winners = {}
        for target in range(n):
            if s["occupied"][target]:
                continue
            best = None
            for axis in ticking:
                for sign in (0, 1):
                    slot = 2 * axis + sign
                    claimant = self.neighbour(target, slot)
                    if claimant is None or self.intent[claimant] != 2 * axis + (1 - sign):
                        continue
                    bid = self.bid(claimant, tick)
                    if best is None or bid > best[0]:
                        best = (bid, self, claimant, slot)
            # Across a beach: the partner claims this cell through its beach slot.
            if target in self.partner and self.partner[target][2] in beaches_now:
                other, claimant = self.partner[target][:2]
                if other.intent[claimant] == other.beach_slot:
                    bid = other.bid(claimant, tick)
                    if best is None or bid > best[0]:
                        best = (bid, other, claimant, self.beach_slot)
            if best is not None:
                winners[target] = best[1:]
        # Each tile takes the first `capacity` claims it won, in cell order, and of those
        # through one side of a placed axis, the first `crossing`.
        accepted, won, through = {}, {}, {}
        for target, (life, claimant, slot) in sorted(winners.items()):
            tile = target // self.tile_cells
            won[tile] = won.get(tile, 0) + 1
            through[tile, slot] = through.get((tile, slot), 0) + 1
            placed = slot // 2 < len(self.region.placement)
            if won[tile] <= self.capacity and (not placed or through[tile, slot] <= self.crossing):
                accepted[target] = (life, claimant, slot)
            else:
                s["refused"][tile] += 1
        return accepted

    def write(self, rows, before, tick):
        """Write the arriving rows: target -> (source life, its cell, birth, energy),
        read from ``before`` (per source life: its body and genome before any transfer)."""
        s = self.s
        for target, (source_life, source, birth, energy) in rows.items():
            body_before, genome_before = before[id(source_life)]
            s["occupied"][target] = True
            s["energy"][target] = energy
            for key in ("hidden", "signal", "plastic", "age", "organism_id", "parent_id",
                        "birth_tick", "generation"):
                s[key][target] = body_before[key][source]
            s["founder"][target] = body_before["founder"][source]
            for name in self.genome:
                self.genome[name][target] = genome_before[name][source]
            if birth:
                s["hidden"][target] = 0
                s["signal"][target] = 0
                s["plastic"][target] = 0
                s["age"][target] = 0
                s["organism_id"][target] = (tick + 1) * self.world_cells + self.offset + target + 1
                s["parent_id"][target] = body_before["organism_id"][source]
                s["birth_tick"][target] = tick
                s["generation"][target] = body_before["generation"][source] + 1
                self._mutate(target, genome_before, source, tick)
                s["births"][target // self.tile_cells] += 1
            else:
                s["moves"][target // self.tile_cells] += 1

    def snapshot(self):
        body = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in self.s.items()}
        return body, {k: v.copy() for k, v in self.genome.items()}

    def _mutate(self, target, before, source, tick):
        from hca import brain

        steps = rng.step_size(np.exp(before["log_mutation"][source]), xp=np)
        meta_step = rng.step_size(self.config.mutation.meta_scale, xp=np)
        for index, (name, _) in enumerate(self.layout.tensors):
            entries = self.layout.entries(name)
            noise = rng.normal_steps(self.seed, rng.MUTATION, self.index, tick, target, entries, xp=np)
            if name == "log_mutation":
                low, high = brain.LOG_SCALE_RANGE
                value = np.clip(before[name][source] + meta_step * noise, low, high)
            else:
                value = np.clip(before[name][source] + steps[index] * noise, -brain.WEIGHT_LIMIT, brain.WEIGHT_LIMIT)
            self.genome[name][target] = value

    def finish(self):
        self.s["last_energy"] = self.s["energy"].copy()

    def lattice(self, key):
        value = self.s[key]
        if key in COUNTERS:
            return value.reshape(self.tiles)
        return value.reshape(self.shape + value.shape[1:])


COUNTERS = ("births", "deaths", "moves", "refused")
JOURNAL = ("died", "died_parent", "died_generation")


def _fields(life_state):
    import dataclasses

    return {
        f.name: getattr(life_state, f.name)
        for f in dataclasses.fields(life_state)
        if f.name != "genome" and f.name not in JOURNAL
    }


class WorldReference(Reference):
    """The substrate reference with organisms, starting from a given initial state."""

    def __init__(self, world, state):
        super().__init__(world, int(state.seed))
        self.lives = []
        living = [region.cells for region in world.regions.values() if region.organisms is not None]
        offset = 0
        for index, (region, region_state) in enumerate(zip(world.regions.values(), state.regions)):
            self.free[index] = np.array(region_state.free_energy).astype(np.int64)
            life = None
            if region.organisms is not None:
                life = LifeReference(region, index, self.seed, region_state.life, offset, sum(living))
                offset += region.cells
            self.lives.append(life)
        self.crossed = np.zeros((len(world.beaches), 2), np.int64)
        # Beaches between regions with organisms: each joined cell's partner.
        for number, beach in enumerate(world.beaches):
            sides = self._shores(beach)
            if any(self.lives[index] is None for index, _, _ in sides):
                continue
            (ia, ra, cells_a), (ib, rb, cells_b) = sides
            a, b = self.lives[ia], self.lives[ib]
            for ca, cb in zip(cells_a, cells_b):
                ca, cb = int(np.ravel_multi_index(ca, ra.shape)), int(np.ravel_multi_index(cb, rb.shape))
                cost = beach.stretch if beach.cost is None else beach.cost
                a.partner[ca] = (b, cb, number, beach.stretch, cost)
                b.partner[cb] = (a, ca, number, beach.stretch, cost)
        for life in self.lives:
            if life is not None and life.partner:
                life.beach_slot = 2 * life.ndim

    def ask(self, index, cells, inputs, until):
        """A person's question at ``cells`` (flat indices), shown as ``inputs`` until ``until``."""
        from hca import brain

        life = self.lives[index]
        if life.people is None:
            life.people = {"inputs": np.zeros((life.n, brain.TASK_INPUTS), np.float32),
                           "until": np.zeros(life.n, np.int64), "answer": np.full(life.n, np.nan, np.float32),
                           "answered_by": np.zeros(life.n, np.int64)}
        for cell, shown in zip(cells, inputs):
            life.people["inputs"][cell] = shown
            life.people["until"][cell] = until
            life.people["answer"][cell] = np.nan
            life.people["answered_by"][cell] = 0

    def pay(self, index, cell, tokens):
        """A person pays ``tokens`` to the organism in ``cell``: what its body can hold."""
        life = self.lives[index]
        paid = min(tokens, life.config.max_energy - int(life.s["energy"][cell])) if life.s["occupied"][cell] else 0
        life.s["energy"][cell] += paid
        self.injected[index].reshape(-1)[cell // life.tile_cells] += paid
        return paid

    def _organisms(self, frees):
        regions = list(self.world.regions.values())
        ticking = [[k for k, axis in enumerate(region.axes) if self.tick % axis.stretch == 0] for region in regions]
        beaches_now = [number for number, beach in enumerate(self.world.beaches) if self.tick % beach.stretch == 0]
        lives = [(index, life) for index, life in enumerate(self.lives) if life is not None]
        # Sense, all from the signals of the last tick; the beach slot from the partner.
        across = {}
        for index, life in lives:
            for cell, (other, partner, number, *_) in life.partner.items():
                if number in beaches_now:
                    occupied = np.float32(other.s["occupied"][partner])
                    across[index, cell] = np.append(other.s["signal"][partner] * occupied, occupied)
        for index, life in lives:
            life.sense(ticking[index])
            for cell in life.partner:
                if (index, cell) in across:
                    life.s["halo"][cell, life.beach_slot] = across[index, cell]
        out = list(frees)
        for index, life in lives:
            flat = frees[index].reshape(-1).copy()
            self.dissipated[index] += _per_tile(regions[index], life.decide(flat, ticking[index], self.tick, beaches_now))
            if life.tasks is not None:
                self.injected[index] += _per_tile(regions[index], life.earned)
            out[index] = flat
        # Claims of every region settled before anyone pays or moves.
        accepted = {index: life.winners(ticking[index], self.tick, beaches_now) for index, life in lives}
        before = {id(life): life.snapshot() for _, life in lives}
        heat = {index: np.zeros(life.n, np.int64) for index, life in lives}
        rows = {index: {} for index, _ in lives}
        where = {id(life): index for index, life in lives}
        for index, life in lives:
            for target, (source_life, claimant, slot) in accepted[index].items():
                s = source_life.s
                source = where[id(source_life)]
                birth = bool(source_life.birth[claimant])
                price = source_life.price(int(source_life.intent[claimant]), claimant)
                heat[source][claimant] += price
                left = int(s["energy"][claimant]) - price
                if birth:
                    energy = (left * int(source_life.endow[claimant])) >> 16
                    s["energy"][claimant] = left - energy
                else:
                    energy = left
                    s["energy"][claimant] = 0
                    s["occupied"][claimant] = False
                rows[index][target] = (source_life, claimant, birth, energy)
                if source_life is not life:  # across a beach: the body's energy crosses too
                    number = source_life.partner[claimant][2]
                    side = 0 if self._shores(self.world.beaches[number])[0][0] == source else 1
                    self.beach_out[source].reshape(-1)[claimant // source_life.tile_cells] += energy
                    self.beach_in[index].reshape(-1)[target // life.tile_cells] += energy
                    self.carried[number][side] += energy
                    self.crossed[number][side] += 1
        for index, life in lives:
            life.write(rows[index], before, self.tick)
            self.dissipated[index] += _per_tile(regions[index], heat[index])
        return [value.reshape(region.shape) for value, region in zip(out, regions)]

    def _diffuse_and_decay(self, index, region, free, crossed):
        free = super()._diffuse_and_decay(index, region, free, crossed)
        if self.lives[index] is not None:
            self.lives[index].finish()
        return free


# --- tasks ---------------------------------------------------------------------------

LOGIC_TRUTH = {
    "NOT": lambda a, b: 1 - a,
    "NAND": lambda a, b: 1 - (a & b),
    "AND": lambda a, b: a & b,
    "ORN": lambda a, b: a | (1 - b),
    "OR": lambda a, b: a | b,
    "ANDN": lambda a, b: a & (1 - b),
    "NOR": lambda a, b: 1 - (a | b),
    "XOR": lambda a, b: a ^ b,
    "EQU": lambda a, b: 1 - (a ^ b),
}
LOGIC_BONUS = {"NOT": 1, "NAND": 1, "AND": 2, "ORN": 2, "OR": 3, "ANDN": 3, "NOR": 4, "XOR": 4, "EQU": 5}
KIND_ORDER = ("function", "logic", "product", "parity")


class TaskReference:
    """A region's tasks, cell by cell in plain Python: who owns each cell, what it is
    asked, and what its answer earns."""

    def __init__(self, region, index, seed, tile_cells):
        self.region, self.index, self.seed = region, index, seed
        self.tasks = list(region.tasks)
        self.shape = region.shape
        self.tile_cells = tile_cells
        self.axes = [axis.name for axis in region.axes]
        tiles = int(np.prod(self.shape[: len(region.placement)]))
        # posed, answered, quality, paid, relayed, relay_quality (hca.tasks.COUNTERS)
        self.counts = np.zeros((tiles, len(self.tasks), 6), np.int64)
        self.shared = 0  # times a tile's budget was shared out

    def _coords(self, cell):
        return list(np.unravel_index(cell, self.shape))

    def _site(self, number, cell):
        sites = self.tasks[number].sites
        coords = self._coords(cell)
        if sites.at is not None:
            return coords in [list(at) for at in sites.at]
        if sites.fraction is not None:
            h = int(rng.hash_u32(self.seed, rng.TASK_SITES, self.index, number, cell, xp=np))
            return (h >> 8) < round(sites.fraction * (1 << 24))
        return sites.start <= coords[self.axes.index(sites.axis)] < sites.stop

    def _group(self, number, cell):
        """(first cell, position) of the group of ``cell`` for a group task, or None."""
        task = self.tasks[number]
        axis = self.axes.index(task.axis)
        coords = self._coords(cell)
        position = coords[axis] % task.n
        start = coords[axis] - position
        if start + task.n > self.shape[axis]:
            return None
        coords[axis] = start
        return int(np.ravel_multi_index(coords, self.shape)), position

    def _group_cells(self, number, first):
        task = self.tasks[number]
        axis = self.axes.index(task.axis)
        for k in range(task.n):
            coords = self._coords(first)
            coords[axis] += k
            yield int(np.ravel_multi_index(coords, self.shape))

    def owner(self, cell, before=None):
        """(task, first, position) for ``cell`` among the first ``before`` tasks."""
        for number in range(len(self.tasks) if before is None else before):
            task = self.tasks[number]
            if task.kind in ("product", "parity"):
                group = self._group(number, cell)
                if group is None or not self._site(number, group[0]):
                    continue
                if any(self.owner(other, number)[0] >= 0 for other in self._group_cells(number, group[0])):
                    continue
                return number, group[0], group[1]
            if self._site(number, cell):
                return number, cell, 0
        return -1, cell, 0

    def question(self, cell, tick, halo):
        """What ``cell`` is asked on ``tick``; ``halo`` (slots, signals + 1) is what it
        last received from its neighbours."""
        from hca import brain

        number, first, position = self.owner(cell)
        inputs = np.zeros(brain.TASK_INPUTS, np.float32)
        asked = {"inputs": inputs, "task": number, "read": False, "posed": False, "first": True, "said": False}
        if number < 0:
            return asked
        task = self.tasks[number]
        q = tick // task.every
        phase = tick % task.every
        asked["read"] = phase == task.deadline - 1
        asked["posed"] = position == 0 and phase == 0
        asked["first"] = position == 0
        asked["said"] = task.kind in ("product", "parity") and position > 0

        def h(*extra):
            return int(rng.hash_u32(self.seed, rng.TASK_QUESTION, self.index, number, q, first, *extra, xp=np))

        def value(level, levels):
            return np.float32(2 * level - (levels - 1)) / np.float32(levels - 1)

        if task.kind == "function":
            levels = task.levels
            x = h() % levels

            def f(level):
                if task.function == "table":
                    return int(rng.hash_u32(self.seed, rng.TASK_TABLE, self.index, number, level, xp=np)) % levels
                v = -1.0 + 2.0 * level / (levels - 1)
                y = {"identity": v, "negate": -v, "square": v * v, "abs": abs(v),
                     "sine": float(np.sin(np.pi * v)), "step": 1.0 if v >= 0 else -1.0}[task.function]
                return int(np.clip(np.round((y + 1.0) / 2.0 * (levels - 1)), 0, levels - 1))

            samples = [int(np.clip(np.round((p + 1.0) / 2.0 * (levels - 1)), 0, levels - 1))
                       for p in (-1.0, -1.0 / 3.0, 1.0 / 3.0, 1.0)]
            inputs[5] = value(x, levels)
            inputs[7:11] = [value(f(p), levels) for p in samples]
            asked.update(target=f(x), full=task.amount, levels=levels, tolerance=task.tolerance)
        elif task.kind == "logic":
            word = h()
            a, b = word & 1, (word >> 1) & 1
            name = task.functions[(word >> 2) % len(task.functions)]
            truth = LOGIC_TRUTH[name]
            inputs[5], inputs[6] = 2 * a - 1, 2 * b - 1
            inputs[7:11] = [2 * truth(i, j) - 1 for i in (0, 1) for j in (0, 1)]
            asked.update(target=truth(a, b), full=(task.amount << LOGIC_BONUS[name]) >> 5, levels=2, tolerance=0)
        elif task.kind == "parity":
            bits = [h(k) & 1 for k in range(task.n)]
            inputs[5] = 2 * bits[position] - 1
            inputs[6] = np.float32(2 * position - (task.n - 1)) / np.float32(task.n - 1)
            # The next cell's signal 0 through the + slot of the axis; bit 0 at the last.
            inputs[7] = -1.0 if position == task.n - 1 else halo[2 * self.axes.index(task.axis) + 1, 0]
            # The partial result from this cell to the last, paid by the cells it covers.
            asked.update(target=int(np.bitwise_xor.reduce(bits[position:])), levels=2, tolerance=0,
                         full=task.amount * (task.n - position) // task.n)
        else:
            from fractions import Fraction
            import math

            levels = task.levels
            step = levels - 1
            allowed = [i for i in range(levels) if abs(Fraction(2 * i - step, step)) >= Fraction(1, 2)]
            numbers = [allowed[h(k) % len(allowed)] for k in range(task.n)]
            product = math.prod(Fraction(2 * level - step, step) for level in numbers[position:])
            target = math.floor((product + 1) / 2 * step + Fraction(1, 2))  # half up
            inputs[5] = value(numbers[position], levels)
            inputs[6] = np.float32(2 * position - (task.n - 1)) / np.float32(task.n - 1)
            inputs[7] = 1.0 if position == task.n - 1 else halo[2 * self.axes.index(task.axis) + 1, 0]
            asked.update(target=target, levels=levels, tolerance=task.tolerance,
                         full=task.amount * (task.n - position) // task.n)
        if phase < task.deadline:
            inputs[0] = 1.0
            inputs[1 + KIND_ORDER.index(task.kind)] = 1.0
        else:
            inputs[:] = 0.0
        return asked

    def pay(self, asked, answers, occupied, rooms):
        """What each cell earns now (its answer graded, a budget shared within its
        tile), counted per task and tile."""
        earned = np.zeros(len(asked), np.int64)
        for cell, question in enumerate(asked):
            number = question["task"]
            if number < 0:
                continue
            tile = cell // self.tile_cells
            self.counts[tile, number, 0] += question["posed"]
            if not (occupied[cell] and question["read"]):
                continue
            levels, tolerance = question["levels"], question["tolerance"]
            y = np.tanh(np.float32(answers[cell]))
            level = int(np.clip(np.round((y + np.float32(1)) * np.float32(0.5) * np.float32(levels - 1)), 0, levels - 1))
            credit = max(0, tolerance + 1 - abs(level - question["target"]))
            earned[cell] = question["full"] * credit // (tolerance + 1)
            # The question's counts at its first cell; a group's partial results apart.
            where = 1 if question["first"] else 4
            self.counts[tile, number, where] += 1
            self.counts[tile, number, where + 1] += (credit << 16) // (tolerance + 1)
        for number, task in enumerate(self.tasks):
            if task.budget is None:
                continue
            for tile in range(len(asked) // self.tile_cells):
                cells = [c for c in range(tile * self.tile_cells, (tile + 1) * self.tile_cells)
                         if asked[c]["task"] == number]
                pie = task.budget * sum(asked[c]["read"] for c in cells)
                total = sum(int(earned[c]) for c in cells)
                if total > pie:
                    self.shared += 1
                    for c in cells:
                        earned[c] = earned[c] * pie // total
        pay = np.minimum(earned, rooms)
        for cell, question in enumerate(asked):
            if question["task"] >= 0:
                self.counts[cell // self.tile_cells, question["task"], 3] += pay[cell]
        return pay
