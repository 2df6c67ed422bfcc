"""Tasks: hand-built organisms are paid what an independent NumPy grading says, a
group of cells computes what one cell cannot, and the ledger counts every payment."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hca import brain, rng
from hca.config import parse_world
from hca.organisms import Life
from hca.tasks import COUNTERS, grade
from hca.world import build
from reference import LOGIC_BONUS, LOGIC_TRUTH

C, H, E = 2, 4, 3  # signals, hidden units, encoder features of the test brains
K = 30.0  # a weight that saturates tanh

# Truth tables written out from the definitions, apart from hca.tasks.
LOGIC, BONUS = LOGIC_TRUTH, LOGIC_BONUS


def task_world(task, axes=None, seed=5):
    """A region where every cell holds an organism that never moves, absorbs or pays
    upkeep, so that its energy changes only by what the task pays."""
    return parse_world(
        {
            "seed": seed,
            "regions": {
                "r": {
                    "axes": axes or [{"name": "x", "size": 6}, {"name": "y", "size": 4}],
                    "energy": {"initial": {"mean": 0}},
                    "organisms": {
                        "density": 1.0,
                        "initial_energy": 100,
                        "max_energy": 1 << 20,
                        "brain": {"signals": C, "hidden": H, "encoder": E},
                        "metabolism": {"base": 0, "per_parameter": 0.0, "per_active_unit": 0.0},
                    },
                    "tasks": [task],
                }
            },
        }
    )


class Genome:
    """A hand-written genome: zeros, then the weights a test sets, by input name."""

    def __init__(self, world):
        self.layout = Life(world.regions["r"], 0).layout
        self.tensors = {name: np.zeros(shape, np.float32) for name, shape in self.layout.tensors}
        self.tensors["gate"][:] = -1.0  # every hidden unit off unless switched on
        self.tensors["log_learning_rate"][:] = -20.0  # no learning to speak of
        self.tensors["log_mutation"][:] = -12.0
        head = self.tensors["head_b"]
        head[C + brain.STAY], head[C + brain.MOVE], head[C + brain.REPRODUCE] = K, -K, -K
        head[C + brain.ABSORB] = -K  # absorbs nothing

    @staticmethod
    def task_input(k: int) -> int:
        """Row of body_w fed by task input k."""
        return C + H + 2 + k

    @staticmethod
    def pooled(k: int) -> int:
        return C + H + 2 + brain.TASK_INPUTS + 7 + k

    def unit(self, unit: int, weights: dict[int, float], bias: float = 0.0) -> None:
        """Switch hidden ``unit`` on: tanh(sum of weights[row] * input[row] + bias)."""
        self.tensors["gate"][unit] = 1.0
        for row, weight in weights.items():
            self.tensors["body_w"][row, unit] = weight
        self.tensors["body_b"][unit] = bias

    def answer(self, weights: dict[int, float], bias: float = 0.0) -> None:
        """The ANSWER output: sum of weights[unit] * hidden[unit] + bias."""
        for unit, weight in weights.items():
            self.tensors["head_w"][C + brain.ANSWER, unit] = weight
        self.tensors["head_b"][C + brain.ANSWER] = bias

    def install(self, simulation):
        state = simulation.init()
        region = state.regions[0]
        shape = simulation.config.regions["r"].shape
        genome = {name: jnp.broadcast_to(jnp.asarray(value), (*shape, *value.shape)) for name, value in self.tensors.items()}
        return state.replace(regions=(region.replace(life=region.life.replace(genome=genome)),))


def run_and_count(world, genome, ticks):
    simulation = build(world)
    state = simulation.run(genome.install(simulation), ticks)
    region = state.regions[0]
    counts = {key: int(np.asarray(getattr(region.tasks, key)).sum()) for key in COUNTERS}
    energy = np.asarray(region.life.energy)
    assert np.asarray(region.life.occupied).all()
    assert simulation.ledger(state)["world"]["balanced"]
    assert int(np.asarray(region.injected).sum()) == counts["paid"]  # tasks are the only inflow
    return counts, energy


def read_ticks(task, ticks):
    """(tick, question number) of every reading before ``ticks``."""
    every, deadline = task.get("every", 8), task.get("deadline", 1)
    return [(t, t // every) for t in range(ticks) if t % every == deadline - 1]


def test_a_correct_logic_organism_is_paid_in_full_by_avidas_bonuses():
    task = {"kind": "logic", "functions": ["AND", "XOR", "NOT", "EQU"], "sites": {"fraction": 1.0},
            "amount": 64, "every": 3, "deadline": 2}
    world = task_world(task)
    genome = Genome(world)
    # The answer is the truth table's entry at (a, b): a 4-way selection from saturated units,
    # unit i on when (a, b) is the i-th pair and the table's i-th bit is 1.
    a, b = genome.task_input(5), genome.task_input(6)
    table = [genome.task_input(7 + i) for i in range(4)]
    for i, (bit_a, bit_b) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
        sa, sb = 2 * bit_a - 1, 2 * bit_b - 1
        genome.unit(i, {a: K * sa, b: K * sb, table[i]: K}, bias=-2.5 * K)
    genome.answer({i: K for i in range(4)}, bias=3.0 * K)
    ticks = 30
    counts, energy = run_and_count(world, genome, ticks)
    expected_pay = np.zeros(world.regions["r"].shape, np.int64)
    cells = np.arange(24).reshape(6, 4)
    asked = set()
    for _, question in read_ticks(task, ticks):
        h = rng.hash_u32(world.seed, rng.TASK_QUESTION, 0, 0, question, cells, xp=np)
        function = (h >> np.uint32(2)) % np.uint32(4)
        for cell in np.ndindex(6, 4):
            name = task["functions"][int(function[cell])]
            expected_pay[cell] += (64 << BONUS[name]) >> 5
            asked.add(name)
    assert counts["answered"] == counts["posed"] == 24 * len(read_ticks(task, ticks))
    assert counts["quality"] == counts["answered"] << 16  # every answer right
    assert counts["paid"] == expected_pay.sum()
    np.testing.assert_array_equal(energy, 100 + expected_pay)
    assert asked == {"AND", "XOR", "NOT", "EQU"}  # paying 16, 32, 4 and 64


@pytest.mark.parametrize("answer_bit", [0, 1])
def test_a_constant_logic_answer_is_paid_only_when_right(answer_bit):
    task = {"kind": "logic", "sites": {"at": [[0, 0], [3, 2], [5, 3]]}, "amount": 32, "every": 2}
    world = task_world(task)
    genome = Genome(world)
    genome.answer({}, bias=K if answer_bit else -K)
    ticks = 40
    counts, energy = run_and_count(world, genome, ticks)
    names = list(LOGIC)
    expected = {tuple(cell): 0 for cell in task["sites"]["at"]}
    right = 0
    for _, question in read_ticks(task, ticks):
        for cell in expected:
            index = cell[0] * 4 + cell[1]
            h = int(rng.hash_u32(world.seed, rng.TASK_QUESTION, 0, 0, question, index, xp=np))
            name = names[(h >> 2) % 9]
            if LOGIC[name](h & 1, (h >> 1) & 1) == answer_bit:
                expected[cell] += (32 << BONUS[name]) >> 5
                right += 1
    assert counts["answered"] == 3 * len(read_ticks(task, ticks)) and 0 < right < counts["answered"]
    assert counts["quality"] == right << 16
    for cell, paid in expected.items():
        assert energy[cell] == 100 + paid
    assert counts["paid"] == sum(expected.values())
    untouched = np.ones(energy.shape, bool)
    for cell in expected:
        untouched[cell] = False
    assert (energy[untouched] == 100).all()  # cells off the sites earn nothing


def function_target(function, level, levels, seed):
    """The right answer's level for x at ``level``, computed here from the definitions."""
    x = -1.0 + 2.0 * level / (levels - 1)
    if function == "table":
        h = rng.hash_u32(seed, rng.TASK_TABLE, 0, 0, level, xp=np)
        return int(h % np.uint32(levels))
    value = {"identity": x, "negate": -x, "square": x * x, "abs": abs(x), "sine": math.sin(math.pi * x),
             "step": 1.0 if x >= 0 else -1.0}[function]
    return int(np.clip(np.round((value + 1.0) / 2.0 * (levels - 1)), 0, levels - 1))


@pytest.mark.parametrize("function", ["identity", "sine", "table"])
def test_partial_credit_for_close_answers(function):
    levels, tolerance, amount = 9, 2, 30
    task = {"kind": "function", "function": function, "levels": levels, "tolerance": tolerance,
            "sites": {"axis": "x", "start": 1, "stop": 3}, "amount": amount, "every": 1}
    world = task_world(task)
    genome = Genome(world)
    answer_level = 5  # a constant answer: tanh(bias) = 0.25 lies at level 5 of 9
    genome.answer({}, bias=float(np.arctanh(-1.0 + 2.0 * answer_level / (levels - 1))))
    ticks = 12
    counts, energy = run_and_count(world, genome, ticks)
    expected = np.zeros((6, 4), np.int64)
    quality = 0
    cells = np.arange(24).reshape(6, 4)
    credits = set()
    for _, question in read_ticks(task, ticks):
        x = rng.integers(0, levels - 1, world.seed, rng.TASK_QUESTION, 0, 0, question, cells, xp=np)
        for cell in np.ndindex(6, 4):
            if not 1 <= cell[0] < 3:
                continue
            distance = abs(answer_level - function_target(function, int(x[cell]), levels, world.seed))
            credit = max(0, tolerance + 1 - distance)
            credits.add(credit)
            expected[cell] += amount * credit // (tolerance + 1)
            quality += (credit << 16) // (tolerance + 1)
    assert counts["answered"] == 8 * ticks and counts["quality"] == quality
    np.testing.assert_array_equal(energy, 100 + expected)
    assert len(credits) >= 2  # some answers earned a part, or all, or nothing


def test_an_exact_function_organism_earns_the_full_amount():
    task = {"kind": "function", "function": "step", "levels": 17, "tolerance": 0,
            "sites": {"fraction": 1.0}, "amount": 50, "every": 2}
    world = task_world(task)
    genome = Genome(world)
    genome.unit(0, {genome.task_input(5): K}, bias=K / 32)  # the sign of x, 0 counting as positive
    genome.answer({0: K})
    ticks = 20
    counts, energy = run_and_count(world, genome, ticks)
    readings = len(read_ticks(task, ticks))
    assert counts["paid"] == 50 * 24 * readings and counts["quality"] == (24 * readings) << 16
    np.testing.assert_array_equal(energy, 100 + 50 * readings)
    # With a budget of 20 a site, the pie is shared: every right answer gets 20 of its 50.
    task["budget"] = 20
    counts, energy = run_and_count(task_world(task), genome, ticks)
    assert counts["paid"] == 20 * 24 * readings and (energy == 100 + 20 * readings).all()
    # The opposite answer is always wrong and earns nothing.
    genome.answer({0: -K})
    counts, energy = run_and_count(world, genome, ticks)
    assert counts["paid"] == 0 and counts["answered"] == 24 * readings and (energy == 100).all()


RING = [{"name": "x", "size": 8, "curled": True}]


def group_genome(world, kind, cooperate):
    """Each cell emits its own number (+-1) as signal 0; the answering cell combines it
    with what its + neighbour (the next cell of the group) emits. Without ``cooperate``,
    a cell answers from its own number alone."""
    genome = Genome(world)
    x = genome.task_input(5)
    genome.unit(0, {x: K})
    genome.tensors["head_w"][0, 0] = K  # signal 0 = the cell's own number
    # Encoder feature 0: the slot's signal 0 through the + slot; -1 from the - slot
    # (sign is the last slot feature). The pool averages both: (v - 1) / 2.
    genome.tensors["encoder_w"][0, 0] = K
    genome.tensors["encoder_w"][C + 4, 0] = 2 * K
    genome.tensors["encoder_b"][0] = -2 * K
    if cooperate:  # the neighbour's number v = 2 * pooled + 1
        genome.unit(1, {x: K, genome.pooled(0): 2 * K})  # on when x = v = +1
        genome.unit(2, {x: -K, genome.pooled(0): -2 * K}, bias=-2 * K)  # on when x = v = -1
    else:  # as if the neighbour's number were +1
        genome.unit(1, {x: K})
        genome.unit(2, {}, bias=-K)
    # Equal numbers: one of units 1 and 2 is on (their sum is 0); different: both off (-2).
    sign = 1.0 if kind == "product" else -1.0  # product: +1 when equal; parity: 1 when different
    genome.answer({1: sign * K, 2: sign * K}, bias=sign * K)
    return genome


def group_world(kind, n, every, deadline, ticks):
    """(world, readings before ``ticks``): a ring of 8 cells in groups of ``n`` along x,
    each asked for the product (of +-1 numbers) or parity of its group, paying 40."""
    task = {"kind": kind, "axis": "x", "n": n, "sites": {"fraction": 1.0}, "amount": 40, "every": every,
            "deadline": deadline}
    if kind == "product":
        task["levels"], task["tolerance"] = 3, 0
    return task_world(task, axes=RING), read_ticks(task, ticks)


@pytest.mark.parametrize("kind", ["product", "parity"])
def test_a_group_of_cells_computes_what_one_cell_cannot(kind):
    world, readings = group_world(kind, n=2, every=4, deadline=2, ticks=(ticks := 40))

    def sign(question, cell):
        """Cell's number as +-1 (a bit b as 2b - 1), drawn here from the questions."""
        first, k = cell - cell % 2, cell % 2
        h = rng.hash_u32(world.seed, rng.TASK_QUESTION, 0, 0, question, first, k, xp=np)
        return 2 * int(h % np.uint32(2) if kind == "product" else h & np.uint32(1)) - 1

    def expected(cooperate):
        """What each cell earns: the first of a group 40 for the whole answer, the last
        20 for its own number, which it passes on (says on signal 0) in both genomes.
        Both answer with the product of the cell's own number and what its + neighbour
        shows (assumed +1 without ``cooperate``), its opposite for parity (bit 1: the
        two differ): right at the first cell when cooperating."""
        flip = 1 if kind == "product" else -1
        paid = np.zeros(8, np.int64)
        for _, question in readings:
            for cell in range(8):
                own = sign(question, cell)
                neighbour = sign(question, (cell + 1) % 8) if cooperate else 1
                wanted = flip * own * sign(question, cell + 1) if cell % 2 == 0 else own
                if cell % 2 == 1:
                    paid[cell] += 20  # it says its own number: always right
                elif flip * own * neighbour == wanted:
                    paid[cell] += 40
        return paid

    counts, energy = run_and_count(world, group_genome(world, kind, cooperate=True), ticks)
    assert counts["posed"] == counts["answered"] == 4 * len(readings)
    assert counts["quality"] == counts["answered"] << 16  # every whole answer right
    np.testing.assert_array_equal(energy[0::2], 100 + 40 * len(readings))
    np.testing.assert_array_equal(energy, 100 + expected(cooperate=True))

    # One cell alone: right only when the other cell's number happens to be +1 (bit 0).
    counts, energy = run_and_count(world, group_genome(world, kind, cooperate=False), ticks)
    alone = expected(cooperate=False)
    assert 0 < alone[0::2].sum() < 40 * 4 * len(readings)
    assert counts["quality"] == (alone[0::2].sum() // 40) << 16
    np.testing.assert_array_equal(energy, 100 + alone)


def chain_genome(world, kind, relay=True):
    """Answer the product of the cell's own number and what the task shows it hears
    from the next cell (input 7), ``-(x * heard)`` for parity in the +-1 code, and say
    it on signal 0 (what a group's later cells are graded on); with ``relay=False``
    say only the cell's own number."""
    genome = Genome(world)
    x, heard = genome.task_input(5), genome.task_input(7)
    sign = 1.0 if kind == "product" else -1.0
    genome.unit(0, {x: K})
    genome.unit(1, {x: K, heard: sign * K}, bias=-K)  # on when x = sign * heard = +1
    genome.unit(2, {x: -K, heard: -sign * K}, bias=-K)  # on when x = sign * heard = -1
    # Units 1 + 2: 0 when x = sign * heard, -2 otherwise.
    for output in (0, C + brain.ANSWER) if relay else (C + brain.ANSWER,):
        genome.tensors["head_w"][output, 1:3] = K
        genome.tensors["head_b"][output] = K
    if not relay:
        genome.tensors["head_w"][0, 0] = K  # signal 0: its own number, +-1
    return genome


@pytest.mark.parametrize("kind", ["product", "parity"])
def test_a_chain_of_four_cells_passes_partial_results_to_the_first(kind):
    """Each cell says its partial result on signal 0 and the task shows each cell what
    the next one says, so every partial result is right and the k-th cell is paid
    (n - k) / n of the amount. Cells that say only their own number pass on nothing
    of the chain's tail: only the last is always right."""
    world, readings = group_world(kind, n=4, every=6, deadline=4, ticks=(ticks := 60))
    counts, energy = run_and_count(world, chain_genome(world, kind), ticks)
    assert counts["posed"] == counts["answered"] == 2 * len(readings)
    assert counts["quality"] == counts["answered"] << 16  # every whole answer right
    assert counts["relayed"] == 3 * counts["answered"]  # the later cells' partial results
    assert counts["relay_quality"] == counts["relayed"] << 16
    place = np.arange(8) % 4
    np.testing.assert_array_equal(energy, 100 + 40 * (4 - place) // 4 * len(readings))

    counts, energy = run_and_count(world, chain_genome(world, kind, relay=False), ticks)
    assert 0 < counts["quality"] < counts["answered"] << 16
    assert counts["relayed"] // 3 << 16 < counts["relay_quality"] < counts["relayed"] << 16
    assert (energy[place == 3] == 100 + 10 * len(readings)).all()
    for k, full in ((0, 40), (1, 30), (2, 20)):  # right only by luck of the numbers
        assert (energy[place == k] < 100 + full * len(readings)).any()


def test_the_deadline_must_let_the_last_number_reach_the_first():
    task = {"kind": "parity", "axis": "x", "n": 2, "sites": {"fraction": 1.0}, "amount": 40, "every": 4, "deadline": 1}
    with pytest.raises(Exception, match=r"tasks\[0\]\.deadline: expected at least"):
        task_world(task, axes=RING)


def tasks_world(**overrides):
    from test_life import TASKS, living_world

    config = living_world(**overrides)
    config["regions"]["grid"]["tasks"] = TASKS
    config["regions"]["grid"]["placement"] = ["a", "b"]
    config["seed"] = 2  # every task has sites with this seed
    return config


def test_no_question_is_shown_posed_or_read_on_the_ticks_tasks_skip():
    """Posing and grading are skipped on ticks on which no task's question is open
    (``Tasks.open_at``): on exactly those ticks, posing would show, pose and read
    nothing anywhere. With a task that is always open nothing is skipped."""
    from test_life import TASKS

    sometimes = [task for task in TASKS if task.get("deadline", 1) < task["every"]]
    config = tasks_world()
    config["regions"]["grid"]["tasks"] = sometimes
    tasks = Life(parse_world(config).regions["grid"], 0).tasks
    halo = jnp.zeros((*tasks.shape, 2 * len(tasks.shape), C + 1), jnp.float32)
    seed = jnp.uint32(2)
    skipped = 0
    for tick in range(60):
        tick = jnp.int32(tick)
        posed = tasks._pose(tick, seed, halo)
        shows = bool((posed.inputs != 0).any() | posed.posed.any() | posed.read.any())
        assert bool(tasks.open_at(tick)) == shows, int(tick)
        if not shows:
            skipped += 1
            closed = tasks.pose(tick, seed, halo)
            assert not (closed.inputs != 0).any() and not closed.posed.any() and not closed.read.any()
        elif int(tick) < 12:
            # Grading on an open tick is the same with or without ``now``.
            flat = jax.tree.map(lambda x: x.reshape(-1, *x.shape[len(tasks.shape):]), posed)
            n = flat.task.shape[0]
            answer = jnp.linspace(-1.0, 1.0, n, dtype=jnp.float32)
            given = (flat, answer, jnp.ones(n, bool), jnp.full(n, 1000, jnp.int32), tasks.budgets)
            for got, want in zip(grade(*given, jnp.bool_(True)), grade(*given)):
                np.testing.assert_array_equal(got, want)
            for got in grade(*given, jnp.bool_(False)):
                assert not np.asarray(got).any()
    assert 0 < skipped < 60
    config["regions"]["grid"]["tasks"] = TASKS
    assert Life(parse_world(config).regions["grid"], 0).tasks.open_at(jnp.int32(1)) is None


def test_the_ledger_balances_every_tick_for_2000_ticks_of_a_task_world():
    import jax

    world = parse_world(tasks_world())
    simulation = build(world)

    def one(state, _):
        before = state.regions[0]
        state = simulation.step(state)
        region = state.regions[0]
        total = region.free_energy.sum(dtype=jnp.int64) + region.life.energy.sum(dtype=jnp.int64)
        expected = region.initial_total + region.injected.sum() - region.dissipated.sum()
        paid = region.tasks.paid.sum() - before.tasks.paid.sum()
        injected = region.injected.sum() - before.injected.sum()
        return state, jnp.stack([total, expected, paid, injected])

    state, rows = jax.jit(lambda s: jax.lax.scan(one, s, length=2000))(simulation.init())
    total, expected, paid, injected = np.asarray(rows).T
    assert np.array_equal(total, expected)  # the region's ledger, every tick
    assert (paid <= injected).all() and paid.sum() > 0  # what tasks pay is injected energy
    ledger = simulation.ledger(state)
    assert ledger["world"]["balanced"]
    posed = [task["posed"] for task in ledger["tasks"]["grid"].values()]
    assert all(count > 0 for count in posed)


def test_without_mutation_children_are_exact_copies():
    config = tasks_world()
    for region in config["regions"].values():
        region["organisms"]["mutation"] = {"initial_scale": 0.1, "enabled": False}
    simulation = build(parse_world(config))
    state = simulation.init()
    founders = {name: np.asarray(tensor) for name, tensor in state.regions[1].life.genome.items()}
    state = simulation.run(state, 120)
    life = state.regions[1].life
    occupied = np.asarray(life.occupied)
    assert int(life.births.sum()) > 20 and (np.asarray(life.generation)[occupied] > 0).any()
    founder = np.asarray(life.founder)[occupied] - simulation.tick.lives[1].offset  # lineages count world cells
    for name, tensor in life.genome.items():  # every organism carries its founder's genome
        np.testing.assert_array_equal(np.asarray(tensor)[occupied], founders[name][founder], name)
