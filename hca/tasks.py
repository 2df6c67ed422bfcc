"""Tasks: energy earned by computing.

A task poses a question at each of its sites every ``every`` ticks. The question stays
open for ``deadline`` ticks, during which the organism at the site sees it through
the brain's task inputs; on the last of them its answer (the head's ``ANSWER``
output, read through tanh as a number in [-1, 1]) is graded and paid in integer
quanta, up to ``amount`` for a perfect answer: energy injected into the ledger and
counted per task. Every question is a hash of (seed, task, question number, cell),
so the same seed poses the same questions on any number of devices and across a
resume, and nothing in one question tells the next.

Kinds:

- ``function``: answer f(x) for x on a grid of ``levels`` values in [-1, 1]; the
  built-in functions include ``table``, a look-up table drawn from the seed, which a
  genome can only store, never compute.
- ``logic``: Avida's nine two-input logic functions of bits; each question draws two
  bits and one of the task's functions, shown by its truth table. As in Avida's
  logic-9 environment a function pays 2**bonus: EQU pays ``amount``, and each step
  down in difficulty halves it (NOT and NAND pay amount / 16).
- ``product`` and ``parity`` (multicellular): a group is ``n`` consecutive cells
  along ``axis``; each cell is shown its own number (or bit) and the answer is wanted
  at the first, so only cells that pass partial results through their signals can
  earn it. Each cell is paid for its partial result, the product (or parity) of the
  numbers from itself to the last cell, in proportion to the cells it covers: the
  k-th of n cells earns up to (n - k) / n of ``amount``, the first the whole amount
  for the whole answer, the last 1 / n for its own number. The first cell's answer
  is its ``ANSWER`` output; the later cells' partial results are read where they
  travel, from what each says on signal 0, so passing a partial result on is what
  earns (read from ``ANSWER`` instead, passing it on would pay only the cell that
  hears it, and would not evolve). A product's numbers are grid values of magnitude
  at least 1/2.

The question's own counts (posed, answered, quality) are kept at the cell it is
posed for (a group's first cell); what is paid counts every cell; a group's later
cells count their partial results apart (``relayed``, ``relay_quality``). Answers
are graded in integers. A numeric answer is rounded to the nearest grid level; one
``d`` levels from the right one earns ``(tolerance + 1 - d) / (tolerance + 1)`` of
the full amount, nothing beyond ``tolerance``. A bit (logic, parity) is 1
when the answer is positive, and earns all or nothing. Empty sites earn nothing, and
a body never holds more than ``max_energy``: what would overflow it is not paid.
A task with a ``budget`` pays at most that many quanta per answering cell, per
question and tile; when a tile's answers earn more, each is paid its part of the pie
in proportion to what it earned (floored), so answers compete, as organisms compete
for CPU time in Avida: relative quality, not only absolute, decides who thrives.

Each cell shows at most one task: the first in the region's list that includes it.
Deciding that, posing questions and grading are done cell by cell from the cell's
own coordinate, so tasks need no communication between devices at all.

The brain's task inputs (``brain.TASK_INPUTS``), zero where no question is open;
bits are shown as -1 (0) and +1 (1):

    0      1 while a question is open at this cell
    1..4   the kind, one-hot: function, logic, product, parity
    5      function: x; logic: a; product: the cell's number; parity: the cell's bit
    6      logic: b; product, parity: the cell's place, -1 (answers) ... +1 (last)
    7..10  logic: the truth table at (a, b) = 00, 01, 10, 11;
           function: f at x = -1, -1/3, 1/3, 1
    7      product, parity: what the next cell of the group says, its signal 0 as this
           cell last received it along the axis (0 if that cell is empty); at the last
           cell the identity (product +1, parity -1, the bit 0)

Input 7 is the task's wiring, not its answer: a cell hears its partner among the
direction slots anyway, pooled with all its other neighbours; input 7 picks that one
voice out. What the partner says, and what the cell makes of it, are the organisms'
own. The identity at the last cell makes one rule right everywhere: answer and say
the product of your number and what you hear (parity: ``-(x * heard)`` in the +-1
code).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from hca import brain, geometry, rng
from hca.config import FunctionTask, LogicTask, ParityTask, ProductTask, Region
from hca.energy import quotient

KINDS = ("function", "logic", "product", "parity")
GROUP_KINDS = ("product", "parity")  # multicellular: a group of cells answers together
OPEN, KIND, X, Y, TABLE = 0, 1, 5, 6, 7
PARTNER = TABLE  # product, parity: the next cell's signal 0
assert TABLE + 4 == brain.TASK_INPUTS
QUALITY_ONE = 1 << 16  # quality is counted in fixed point

# Avida's logic-9 environment: truth table at (a, b) = 00, 01, 10, 11, and the bonus
# exponent (a function pays 2**bonus / 2**5 of the amount).
LOGIC = {
    "NOT": ((1, 1, 0, 0), 1),  # not a
    "NAND": ((1, 1, 1, 0), 1),
    "AND": ((0, 0, 0, 1), 2),
    "ORN": ((1, 0, 1, 1), 2),  # a or not b
    "OR": ((0, 1, 1, 1), 3),
    "ANDN": ((0, 0, 1, 0), 3),  # a and not b
    "NOR": ((1, 0, 0, 0), 4),
    "XOR": ((0, 1, 1, 0), 4),
    "EQU": ((1, 0, 0, 1), 5),
}
MAX_BONUS = 5

FUNCTIONS = {
    "identity": lambda x: x,
    "negate": lambda x: -x,
    "square": lambda x: x * x,
    "abs": np.abs,
    "sine": lambda x: np.sin(np.pi * x),
    "step": lambda x: np.where(x >= 0, 1.0, -1.0),
}
SIGNATURE = (-1.0, -1.0 / 3.0, 1.0 / 3.0, 1.0)  # where a function's values are shown


def grid_level(value: np.ndarray, levels: int) -> np.ndarray:
    """The nearest of ``levels`` grid values in [-1, 1] (level 0 is -1), half to even."""
    return np.clip(np.round((np.asarray(value, np.float64) + 1.0) / 2.0 * (levels - 1)), 0, levels - 1).astype(
        np.int32
    )


def logic_pay(amount: int, function: str) -> int:
    """What a right answer to ``function`` pays."""
    return (amount << LOGIC[function][1]) >> MAX_BONUS


def product_allowed(levels: int) -> np.ndarray:
    """The grid levels a product's numbers are drawn from: magnitude at least 1/2."""
    step = levels - 1
    return np.array([i for i in range(levels) if abs(2 * i - step) * 2 >= step], np.int32)


@struct.dataclass
class Questions:
    """What the tasks pose at every cell this tick (lattice-shaped, S the region's shape)."""

    inputs: jax.Array  # (*S, TASK_INPUTS) float32, what the brain is shown
    task: jax.Array  # (*S,) int32, the task whose question this cell answers, or -1
    position: jax.Array  # (*S,) int32, place in the task's group (0: the cell the question is for)
    posed: jax.Array  # (*S,) bool, a new question is posed for this cell this tick
    read: jax.Array  # (*S,) bool, this cell's answer is read (graded and paid) this tick
    said: jax.Array  # (*S,) bool, the answer is what the cell says (signal 0), not ANSWER
    target: jax.Array  # (*S,) int32, the right answer: a grid level, or a bit
    full: jax.Array  # (*S,) int32, quanta a perfect answer earns
    levels: jax.Array  # (*S,) int32, grid levels of the answer (2 for a bit)
    tolerance: jax.Array  # (*S,) int32, levels off that still earn


COUNTERS = ("posed", "answered", "quality", "paid", "relayed", "relay_quality")  # TaskLedger's fields


@struct.dataclass
class TaskLedger:
    """What the tasks of a region posed, were answered and paid, since tick 0."""

    posed: jax.Array  # (*tiles, T) int64, questions posed
    answered: jax.Array  # (*tiles, T) int64, questions answered (an organism at the site when read)
    quality: jax.Array  # (*tiles, T) int64, sum of the answers' quality, in units of 1 / QUALITY_ONE
    paid: jax.Array  # (*tiles, T) int64, quanta paid (injected)
    relayed: jax.Array  # (*tiles, T) int64, partial results read at a group's later cells
    relay_quality: jax.Array  # (*tiles, T) int64, their summed quality, like ``quality``

    @staticmethod
    def zeros(tiles: tuple[int, ...], count: int) -> TaskLedger:
        zero = jnp.zeros((*tiles, count), jnp.int64)
        return TaskLedger(*(zero for _ in COUNTERS))

    def add(self, counts: jax.Array) -> TaskLedger:
        """Add (*tiles, T, len(COUNTERS)) counts, in the order of COUNTERS."""
        return TaskLedger(*(getattr(self, name) + counts[..., k] for k, name in enumerate(COUNTERS)))


class Tasks:
    """The tasks of one region, built once from its config."""

    def __init__(self, region: Region, region_index: int):
        self.region = region
        self.index = region_index
        self.shape = region.shape
        self.names = region.task_names()
        self.tasks = list(region.tasks)
        self.axes = {axis.name: number for number, axis in enumerate(region.axes)}
        # Row-major strides: a cell's index moves by stride[axis] per step along it.
        self.stride = [math.prod(self.shape[axis + 1 :]) for axis in range(len(self.shape))]
        self.tables = []
        for task in self.tasks:
            if isinstance(task, FunctionTask) and task.function != "table":
                values = np.linspace(-1.0, 1.0, task.levels)
                self.tables.append(grid_level(FUNCTIONS[task.function](values), task.levels))
            else:
                self.tables.append(None)

    @property
    def count(self) -> int:
        return len(self.tasks)

    @property
    def budgets(self) -> tuple[int | None, ...]:
        return tuple(task.budget for task in self.tasks)

    def sites(self, seed, xp=jnp):
        """(task (*S,) int32, position (*S,) int32): the task each cell shows (-1: none)
        and its place in that task's group (0 for one-cell tasks and for the cell that
        answers). ``xp`` is ``jax.numpy`` in the step, NumPy for pictures and summaries."""
        task, _, position = self._owner(_cell_index(self.shape, xp), seed, xp, self.count)
        return task, position

    def open_at(self, tick: jax.Array) -> jax.Array | None:
        """() bool: whether any task's question is open on ``tick``; None when one always
        is. On the other ticks no cell is shown, posed or read anything, so there is
        nothing to pose or grade."""
        if any(task.deadline >= task.every for task in self.tasks):
            return None
        return jnp.any(jnp.stack([tick % task.every < task.deadline for task in self.tasks]))

    def pose(self, tick: jax.Array, seed: jax.Array, halo: jax.Array) -> Questions:
        """The questions every cell is shown on ``tick``; ``halo`` (*S, 2D, C + 1) is
        what each cell last received from its neighbours (``hca.sense``)."""
        now = self.open_at(tick)
        if now is None:
            return self._pose(tick, seed, halo)
        return jax.lax.cond(now, self._pose, self._closed, tick, seed, halo)

    def _closed(self, tick, seed, halo) -> Questions:
        """The questions of a tick on which none is open: nothing shown, posed or read."""
        zeros = jnp.zeros(self.shape, jnp.int32)
        no = jnp.zeros(self.shape, bool)
        return Questions(
            inputs=jnp.zeros((*self.shape, brain.TASK_INPUTS), jnp.float32),
            task=zeros - 1,
            position=zeros,
            posed=no,
            read=no,
            said=no,
            target=zeros,
            full=zeros,
            levels=zeros + 2,
            tolerance=zeros,
        )

    def _pose(self, tick, seed, halo) -> Questions:
        """The questions of a tick on which one may be open (see ``pose``)."""
        task_of, first, position = self._owner(_cell_index(self.shape, jnp), seed, jnp, self.count)
        out = self._closed(tick, seed, halo).replace(task=task_of, position=position)
        for number, task in enumerate(self.tasks):
            mine = task_of == number
            phase = tick % task.every
            question = tick // task.every
            shown, target, full, levels, tolerance = self._question(number, question, first, position, seed, halo)
            shown = shown.at[..., OPEN].set(1.0).at[..., KIND + KINDS.index(task.kind)].set(1.0)
            is_open = mine & (phase < task.deadline)
            out = out.replace(
                inputs=jnp.where(is_open[..., None], shown, out.inputs),
                posed=out.posed | (mine & (position == 0) & (phase == 0)),
                read=out.read | (mine & (phase == task.deadline - 1)),
                said=out.said | (mine & (position > 0)),
                target=jnp.where(mine, target, out.target),
                full=jnp.where(mine, full, out.full),
                levels=jnp.where(mine, levels, out.levels),
                tolerance=jnp.where(mine, tolerance, out.tolerance),
            )
        return out

    # -- sites -----------------------------------------------------------------------

    def _owner(self, cells, seed, xp, before: int):
        """(task, first, position) at the cells ``cells`` (indices, any shape), among the
        first ``before`` tasks: which task each cell shows (-1: none), the cell that
        answers for it, and its place in the group.

        Tasks claim cells in list order; a group is taken only when none of its cells
        is claimed by an earlier task, so every cell of a group shows the group's task.
        Everything is computed from the cell's own index: no neighbour is read.
        """
        task_of = xp.full(cells.shape, -1, xp.int32)
        first_of, position_of = cells, xp.zeros(cells.shape, xp.int32)
        for number in range(before):
            member, first, position = self._members(number, cells, seed, xp)
            task = self.tasks[number]
            if isinstance(task, (ProductTask, ParityTask)) and number:
                step = self.stride[self.axes[task.axis]]
                for k in range(task.n):
                    member = member & (self._owner(first + k * step, seed, xp, number)[0] < 0)
            take = member & (task_of < 0)
            task_of = xp.where(take, xp.int32(number), task_of)
            first_of = xp.where(take, first, first_of)
            position_of = xp.where(take, position, position_of)
        return task_of, first_of, position_of

    def _members(self, number: int, cells, seed, xp):
        """(member, first, position) at the cells ``cells`` for task ``number``: whether
        each is one of its cells, the cell that answers for it, and its place in the group."""
        task = self.tasks[number]
        if isinstance(task, (ProductTask, ParityTask)):
            axis = self.axes[task.axis]
            coordinate = self._coordinate(cells, axis)
            position = coordinate % task.n
            start = coordinate - position
            first = cells - position * self.stride[axis]
            fits = start + task.n <= self.shape[axis]
            member = fits & self._is_site(number, first, seed, xp)
            return member, first, position.astype(xp.int32)
        return self._is_site(number, cells, seed, xp), cells, xp.zeros(cells.shape, xp.int32)

    def _is_site(self, number: int, cells, seed, xp):
        """Whether the cells ``cells`` (indices, any shape) are sites of task ``number``."""
        sites = self.tasks[number].sites
        if sites.at is not None:
            mask = np.zeros(self.shape, bool)
            for cell in sites.at:
                mask[tuple(cell)] = True
            return xp.asarray(mask.reshape(-1))[cells]
        if sites.fraction is not None:
            return rng.bernoulli(sites.fraction, seed, rng.TASK_SITES, self.index, number, cells, xp=xp)
        coordinate = self._coordinate(cells, self.axes[sites.axis])
        return (coordinate >= sites.start) & (coordinate < sites.stop)

    def _coordinate(self, cells, axis: int):
        """The coordinate along ``axis`` of the cells with indices ``cells``."""
        return (cells // self.stride[axis]) % self.shape[axis]

    # -- questions -------------------------------------------------------------------

    def _question(self, number: int, question, first, position, seed, halo):
        """(shown (*S, TASK_INPUTS), target, full, levels, tolerance) of task ``number``'s
        question at every cell, as if every cell were one of its cells."""
        task = self.tasks[number]
        words = (seed, rng.TASK_QUESTION, self.index, number, question, first)
        shown = jnp.zeros((*self.shape, brain.TASK_INPUTS), jnp.float32)
        ones = jnp.ones(self.shape, jnp.int32)
        if isinstance(task, FunctionTask):
            x = rng.integers(0, task.levels - 1, *words, xp=jnp)
            samples = jnp.asarray(grid_level(np.asarray(SIGNATURE), task.levels))
            target, signature = self._function_values(number, x, samples, seed)
            shown = shown.at[..., X].set(_value(x, task.levels))
            shown = shown.at[..., TABLE : TABLE + 4].set(_value(signature, task.levels))
            return shown, target, ones * task.amount, ones * task.levels, ones * task.tolerance
        if isinstance(task, LogicTask):
            tables = jnp.asarray(np.array([LOGIC[name][0] for name in task.functions], np.int32))
            pays = jnp.asarray(np.array([logic_pay(task.amount, name) for name in task.functions], np.int32))
            h = rng.hash_u32(*words, xp=jnp)
            a = (h & jnp.uint32(1)).astype(jnp.int32)
            b = ((h >> jnp.uint32(1)) & jnp.uint32(1)).astype(jnp.int32)
            function = ((h >> jnp.uint32(2)) % jnp.uint32(len(task.functions))).astype(jnp.int32)
            table = tables[function]  # (*S, 4)
            target = jnp.take_along_axis(table, (2 * a + b)[..., None], axis=-1)[..., 0]
            shown = shown.at[..., X].set(_bit(a)).at[..., Y].set(_bit(b))
            shown = shown.at[..., TABLE : TABLE + 4].set(_bit(table))
            return shown, target, pays[function], ones * 2, ones * 0
        # A group: cell k answers for the cells from itself to the last (a partial result
        # over n - k cells), paid (n - k) / n of the amount; the first answers for all.
        place = (2 * position - (task.n - 1)).astype(jnp.float32) / jnp.float32(task.n - 1)
        heard = halo[..., 2 * self.axes[task.axis] + 1, 0]  # the + slot: the next cell
        identity = jnp.float32(1.0 if isinstance(task, ProductTask) else -1.0)
        shown = shown.at[..., Y].set(place).at[..., PARTNER].set(jnp.where(position == task.n - 1, identity, heard))
        share = (jnp.int64(task.amount) * (task.n - position).astype(jnp.int64) // task.n).astype(jnp.int32)
        if isinstance(task, ParityTask):
            def bit(k):
                return (rng.hash_u32(*words, k, xp=jnp) & jnp.uint32(1)).astype(jnp.int32)

            target = jnp.zeros(self.shape, jnp.int32)
            for k in range(task.n):
                target = target ^ jnp.where(k >= position, bit(k), 0)
            shown = shown.at[..., X].set(_bit(bit(position)))
            return shown, target, share, ones * 2, ones * 0
        # Product: numbers m / D with D = levels - 1 = 2**b; over c numbers the right level
        # is the exact product's, rounded half up: (P + D**c + D**(c-1)) // (2 D**(c-1)),
        # computed in integers.
        allowed = jnp.asarray(product_allowed(task.levels))
        step = task.levels - 1
        bits = step.bit_length() - 1

        def number_at(k):
            index = rng.hash_u32(*words, k, xp=jnp) % jnp.uint32(allowed.shape[0])
            return allowed[index.astype(jnp.int32)]

        product = jnp.ones(self.shape, jnp.int64)
        for k in range(task.n):
            factor = (2 * number_at(k) - step).astype(jnp.int64)
            product = product * jnp.where(k >= position, factor, jnp.int64(1))
        count = (task.n - position).astype(jnp.int64)
        offset = (jnp.int64(1) << (bits * count)) + (jnp.int64(1) << (bits * (count - 1)))
        target = ((product + offset) >> (1 + bits * (count - 1))).astype(jnp.int32)
        shown = shown.at[..., X].set(_value(number_at(position), task.levels))
        return shown, target, share, ones * task.levels, ones * task.tolerance

    def _function_values(self, number: int, x, samples, seed):
        """(f at the levels x, f at the signature's levels) as grid levels."""
        task = self.tasks[number]
        if self.tables[number] is not None:
            table = jnp.asarray(self.tables[number])
            return table[x], table[samples]

        def lookup(level):
            h = rng.hash_u32(seed, rng.TASK_TABLE, self.index, number, level, xp=jnp)
            return (h % jnp.uint32(task.levels)).astype(jnp.int32)

        return lookup(x), lookup(samples)


def grade(
    questions: Questions,  # fields (N, ...) for the N cells of a tile
    answer: jax.Array,  # (N,) float32, tanh of the head's ANSWER output, in [-1, 1]
    occupied: jax.Array,  # (N,) bool
    room: jax.Array,  # (N,) int32, what each body can still hold
    budgets: tuple[int | None, ...],  # each task's budget per answering cell (config)
    now: jax.Array | None = None,  # () bool, ``Tasks.open_at`` the tick (None: always open)
) -> tuple[jax.Array, jax.Array]:
    """(pay (N,) int32, counts (T, len(COUNTERS)) int64) for a tile; zeros, without
    grading, on a tick on which no question is open (``now`` False).

    Questions, answers and quality are counted where a question is posed (a group's
    first cell); payments wherever an answer is paid; a group's later cells' partial
    results as ``relayed`` and ``relay_quality``."""
    if now is None:
        return _grade(questions, answer, occupied, room, budgets)
    nothing = (jnp.zeros(answer.shape, jnp.int32), jnp.zeros((len(budgets), len(COUNTERS)), jnp.int64))
    marked = functools.partial(_grade, budgets=budgets)
    return jax.lax.cond(now, marked, lambda *_: nothing, questions, answer, occupied, room)


def _grade(questions, answer, occupied, room, budgets):
    levels = questions.levels
    level = jnp.round((answer + 1.0) * 0.5 * (levels - 1).astype(jnp.float32)).astype(jnp.int32)
    level = jnp.clip(level, 0, levels - 1)
    share = (questions.tolerance + 1).astype(jnp.int64)
    credit = jnp.maximum(share - jnp.abs(level - questions.target).astype(jnp.int64), 0)
    answered = occupied & questions.read
    earned = jnp.where(answered, quotient(questions.full.astype(jnp.int64) * credit, share), 0)
    for number, budget in enumerate(budgets):
        if budget is None:
            continue
        mine = questions.task == number
        # The tile pays this question at most `budget` per cell it is read at; beyond,
        # every answer gets its part of the pie in proportion to what it earned.
        pie = budget * (mine & questions.read).sum(dtype=jnp.int64)
        total = jnp.where(mine, earned, 0).sum()
        scaled = quotient(earned * pie, jnp.maximum(total, 1))
        earned = jnp.where(mine & (total > pie), scaled, earned)
    pay = jnp.minimum(earned, room.astype(jnp.int64)).astype(jnp.int32)
    quality = jnp.where(answered, quotient(credit << 16, share), 0)
    first = questions.position == 0
    counts = []
    for number in range(len(budgets)):
        mine = questions.task == number
        counts.append(
            jnp.stack(
                [
                    (mine & questions.posed).sum(dtype=jnp.int64),
                    (mine & answered & first).sum(dtype=jnp.int64),
                    jnp.where(mine & first, quality, 0).sum(),
                    jnp.where(mine, pay, 0).sum(dtype=jnp.int64),
                    (mine & answered & ~first).sum(dtype=jnp.int64),
                    jnp.where(mine & ~first, quality, 0).sum(),
                ]
            )
        )
    return pay, jnp.stack(counts)


def _cell_index(shape, xp):
    return geometry.cell_index(shape) if xp is jnp else np.arange(math.prod(shape), dtype=np.int32).reshape(shape)


def _value(level: jax.Array, levels: int) -> jax.Array:
    """Grid level -> its value in [-1, 1] as float32."""
    return (2 * level - (levels - 1)).astype(jnp.float32) / jnp.float32(levels - 1)


def _bit(bit: jax.Array) -> jax.Array:
    return (2 * bit - 1).astype(jnp.float32)


def describe(region: Region, region_index: int, seed: int) -> list[str]:
    """Lines for ``hca validate``: each task's sites (with the world's seed), timing and pay."""
    tasks = Tasks(region, region_index)
    task_of, position = tasks.sites(seed, np)
    lines = []
    for number, (name, task) in enumerate(zip(tasks.names, tasks.tasks)):
        mine = task_of == number
        answering = int((mine & (position == 0)).sum())
        timing = f"a question every {task.every} ticks, open {task.deadline}"
        if isinstance(task, FunctionTask):
            what = f"f(x) = {task.function}(x) on {task.levels} levels, tolerance {task.tolerance}"
            where = f"{answering:,} sites"
            pays = f"pays up to {task.amount}"
        elif isinstance(task, LogicTask):
            what = f"logic {' '.join(task.functions)}"
            where = f"{answering:,} sites"
            pays = "pays " + ", ".join(f"{f} {logic_pay(task.amount, f)}" for f in task.functions)
        else:
            what = f"{task.kind} of {task.n} cells along {task.axis}"
            if isinstance(task, ProductTask):
                what += f" on {task.levels} levels, tolerance {task.tolerance}"
            where = f"{answering:,} groups ({int(mine.sum()):,} cells)"
            pays = f"pays up to {task.amount} for the whole, (n - k) / n of it at the k-th cell"
        if isinstance(task, LogicTask):
            per_tick = answering * max(logic_pay(task.amount, f) for f in task.functions) / task.every
        elif isinstance(task, (ProductTask, ParityTask)):
            per_tick = answering * sum(task.amount * (task.n - k) // task.n for k in range(task.n)) / task.every
        else:
            per_tick = answering * task.amount / task.every
        if task.budget is not None:
            pays += f"; a tile pays at most {task.budget} a cell per question, shared"
            per_tick = min(per_tick, int(mine.sum()) * task.budget / task.every)
        lines.append(f"  task {name}: {what}; {where}; {timing}; {pays} (at most {per_tick:,.0f} quanta/tick)")
    return lines
