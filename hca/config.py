"""World files: YAML -> validated, frozen configuration.

A world file is parsed with ``yaml.safe_load`` and validated by pydantic models that
forbid unknown keys, so every problem in a file is reported at once, each with its key
path (``regions.gpu.axes[3].stretch``) and what was expected. Checks that span several
keys (duplicate axis names, diffusion that would send more than a cell holds) run after
the per-key checks and report in the same form.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Annotated, Any, Literal, Union

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

# Brains see 2 * MAX_AXES direction slots, so a genome fits every region up to 7-D.
MAX_AXES = 7
# Rates (diffusion, decay) are applied as fixed-point fractions of 2**RATE_BITS, so
# that every transfer is integer arithmetic and exact.
RATE_BITS = 16
RATE_ONE = 1 << RATE_BITS
# Free energy per cell stays below 2 * capacity, far inside int32.
MAX_CAPACITY = 1 << 29

# What the brain can represent (hca.brain clips log-scales and log-rates to these).
LOG_SCALE_BOUNDS = (math.exp(-12.0), math.exp(2.0))
LEARNING_RATE_BOUNDS = (math.exp(-20.0), math.exp(2.0))

Identifier = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=64)]
Quanta = Annotated[int, Field(ge=0, le=MAX_CAPACITY)]
Rate = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Axis(_Model):
    """One lattice axis. ``stretch`` s: the axis ticks (lets anything cross) when t % s == 0."""

    name: Identifier
    size: Annotated[int, Field(ge=1, le=1 << 20)]
    stretch: Annotated[int, Field(ge=1, le=1 << 16)] = 1
    curled: bool = False
    diffusion: Rate | None = None  # overrides the region's diffusion rate on this axis


class Initial(_Model):
    """Initial free energy per cell: uniform integers in [mean - jitter, mean + jitter]."""

    mean: Quanta = 100
    jitter: Quanta = 0


class _Source(_Model):
    amount: Annotated[int, Field(ge=1, le=MAX_CAPACITY)]
    every: Annotated[int, Field(ge=1)] = 1  # the source pays on ticks t % every == 0


class UniformSource(_Source):
    """Every cell receives ``amount``."""

    kind: Literal["uniform"]


class SpotsSource(_Source):
    """Fixed spots receive ``amount``: listed coordinates (``at``) or a seeded ``fraction``."""

    kind: Literal["spots"]
    at: list[list[int]] | None = None
    fraction: Annotated[float, Field(gt=0.0, le=1.0)] | None = None


class BandSource(_Source):
    """Cells whose coordinate along ``axis`` lies in [start, stop) receive ``amount``."""

    kind: Literal["band"]
    axis: Identifier
    start: Annotated[int, Field(ge=0)] = 0
    stop: Annotated[int, Field(ge=1)]


class RainSource(_Source):
    """Each cell independently receives ``amount`` with ``probability`` on each paying tick."""

    kind: Literal["rain"]
    probability: Annotated[float, Field(gt=0.0, le=1.0)]


Source = Annotated[
    Union[UniformSource, SpotsSource, BandSource, RainSource], Field(discriminator="kind")
]


class Energy(_Model):
    """Free energy of a region: initial amount, diffusion, sources and decay."""

    initial: Initial = Initial()
    diffusion: Rate = 0.0  # fraction sent to each neighbour on an axis tick
    decay: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0  # fraction of free energy lost per tick
    capacity: Annotated[int, Field(ge=1, le=MAX_CAPACITY)] = 1 << 20  # inflow fills cells up to this
    sources: list[Source] = []


class Brain(_Model):
    """Sizes of every organism's brain; the genome's length follows from them."""

    signals: Annotated[int, Field(ge=1, le=32)] = 4  # channels each organism emits
    hidden: Annotated[int, Field(ge=1, le=256)] = 16  # recurrent hidden units
    encoder: Annotated[int, Field(ge=1, le=64)] = 8  # features per direction slot
    init_scale: Annotated[float, Field(gt=0.0, le=10.0)] = 0.5  # std of initial weights


class Mutation(_Model):
    """Self-adaptive mutation: each weight tensor has an inherited log-scale."""

    # Per-tensor std at tick 0, within the range the brain keeps scales in (e**-12..e**2).
    initial_scale: Annotated[float, Field(ge=LOG_SCALE_BOUNDS[0], le=LOG_SCALE_BOUNDS[1])] = 0.02
    meta_scale: Annotated[float, Field(ge=0.0, le=10.0)] = 0.1  # std of the log-scales' own mutation
    enabled: bool = True  # false: children are exact copies (a control for experiments)


class Metabolism(_Model):
    """Heat an organism pays every tick (integer quanta, fixed-point rates)."""

    base: Quanta = 1
    per_parameter: Annotated[float, Field(ge=0.0, le=100.0)] = 0.001  # quanta per stored parameter
    per_active_unit: Annotated[float, Field(ge=0.0, le=100.0)] = 0.05  # quanta per active hidden unit


class Organisms(_Model):
    """Life in a region: the founders, their brains, and the prices of living."""

    density: Annotated[float, Field(ge=0.0, le=1.0)] = 0.25  # fraction of cells seeded at tick 0
    initial_energy: Annotated[int, Field(ge=1, le=MAX_CAPACITY)] = 100
    max_energy: Annotated[int, Field(ge=1, le=MAX_CAPACITY)] = 10_000  # a body holds at most this
    absorb: Quanta = 20  # most free energy taken from the cell per tick
    birth_cost: Quanta = 5  # per unit of stretch of the axis the child is placed across
    move_cost: Annotated[float, Field(ge=0.0, le=100.0)] = 0.002  # quanta per genome parameter moved, per stretch
    # Initial Hebbian rate, within the range the brain keeps rates in (e**-20..e**2).
    learning_rate: Annotated[float, Field(ge=LEARNING_RATE_BOUNDS[0], le=LEARNING_RATE_BOUNDS[1])] = 0.01
    modulator_scale: Annotated[float, Field(gt=0.0)] = 10.0  # energy change giving modulator tanh(1)
    learning: bool = True  # false: plastic weights never change in a life (a control for experiments)
    max_age: Annotated[int, Field(ge=1)] | None = None
    # Births + moves into one tile per tick (a tile: the cells sharing one coordinate on
    # every placed axis; the whole region when nothing is placed); default tile cells / 8.
    max_transfers: Annotated[int, Field(ge=1)] | None = None
    # Of those, transfers into a tile through one side of a placed axis (from the
    # neighbouring tile, on another device once the world is spread): the bandwidth of
    # the link between devices, in organisms per tick. Default max_transfers / 4.
    max_crossings: Annotated[int, Field(ge=1)] | None = None
    brain: Brain = Brain()
    mutation: Mutation = Mutation()
    metabolism: Metabolism = Metabolism()


class Sites(_Model):
    """Where a task poses its questions: listed cells (``at``), a ``fraction`` of the
    cells chosen by the seed, or a block of cells whose coordinate along ``axis`` lies
    in [start, stop). Exactly one of the three."""

    at: list[list[int]] | None = None
    fraction: Annotated[float, Field(gt=0.0, le=1.0)] | None = None
    axis: Identifier | None = None
    start: Annotated[int, Field(ge=0)] = 0
    stop: Annotated[int, Field(ge=1)] | None = None


LOGIC_FUNCTIONS = ("NOT", "NAND", "AND", "ORN", "OR", "ANDN", "NOR", "XOR", "EQU")
BUILT_IN_FUNCTIONS = ("identity", "negate", "square", "abs", "sine", "step", "table")


class _Task(_Model):
    name: Identifier | None = None  # default: the kind, numbered if the kind repeats
    sites: Sites
    amount: Annotated[int, Field(ge=1, le=1 << 20)]  # quanta paid for a perfect answer
    every: Annotated[int, Field(ge=1, le=1 << 20)] = 8  # a new question every `every` ticks
    # Ticks a question stays open; the answer is read on its last tick.
    deadline: Annotated[int, Field(ge=1, le=1 << 20)] = 1
    # At most this many quanta per answering cell on average, per question and tile:
    # when a tile's answers earn more, all its payments shrink in proportion, so that
    # answers compete for a fixed pie. None: every answer is paid what it earned.
    budget: Annotated[int, Field(ge=0, le=1 << 20)] | None = None


class FunctionTask(_Task):
    """Answer f(x): x and the answer on a grid of ``levels`` values in [-1, 1]; answers
    up to ``tolerance`` levels off earn partial credit."""

    kind: Literal["function"]
    function: Literal[BUILT_IN_FUNCTIONS]  # type: ignore[valid-type]
    levels: Annotated[int, Field(ge=2, le=1024)] = 17
    tolerance: Annotated[int, Field(ge=0, le=1024)] = 1


class LogicTask(_Task):
    """Avida's logic-9: each question draws one of ``functions`` and two bits."""

    kind: Literal["logic"]
    functions: Annotated[list[Literal[LOGIC_FUNCTIONS]], Field(min_length=1)] = list(LOGIC_FUNCTIONS)  # type: ignore[valid-type]


class _GroupTask(_Task):
    # Each site is the first of n consecutive cells along `axis` (groups start at
    # coordinates 0, n, 2n, ...); the answer is wanted at the first.
    axis: Identifier
    n: Annotated[int, Field(ge=2, le=1024)]


class ProductTask(_GroupTask):
    """The product of n numbers, one per cell of a group, on a grid of ``levels``."""

    kind: Literal["product"]
    levels: Annotated[int, Field(ge=3, le=1024)] = 17
    tolerance: Annotated[int, Field(ge=0, le=1024)] = 1


class ParityTask(_GroupTask):
    """The parity of n bits, one per cell of a group."""

    kind: Literal["parity"]


Task = Annotated[
    Union[FunctionTask, LogicTask, ProductTask, ParityTask], Field(discriminator="kind")
]


class People(_Model):
    """Makes a region interactive: people on the live page (``hca.people``) post
    questions at its cells and pay its organisms in tokens, which are energy."""

    tokens: Annotated[int, Field(ge=0, le=MAX_CAPACITY)] = 10_000  # each person's balance at first
    max_payment: Annotated[int, Field(ge=1, le=MAX_CAPACITY)] = 1_000  # most tokens one payment carries
    max_people: Annotated[int, Field(ge=1, le=1_000)] = 64  # people who can act in the run
    max_open: Annotated[int, Field(ge=1, le=1_000)] = 32  # questions open at once in the region
    max_cells: Annotated[int, Field(ge=1, le=4_096)] = 64  # cells one question is posed at
    ticks: Annotated[int, Field(ge=1, le=1_000_000)] = 400  # ticks a question stays open, unless told


class Region(_Model):
    """One lattice: an ordered list of axes, its energy physics and its life."""

    axes: Annotated[list[Axis], Field(min_length=1, max_length=MAX_AXES)]
    energy: Energy = Energy()
    organisms: Organisms | None = None
    tasks: list[Task] = []  # sources of energy that pay organisms for answers
    # Axes spread over devices: the region's leading (outermost) axes, in order (e.g.
    # [cluster, row, rack, server, gpu]); the others stay inside a device.
    # `hca run --devices N` splits N devices over them.
    placement: list[Identifier] = []
    # Interactive: people meet the organisms here (a region of 1 to 3 axes with life).
    people: People | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(axis.size for axis in self.axes)

    @property
    def cells(self) -> int:
        return math.prod(self.shape)

    def task_names(self) -> list[str]:
        """Each task's name: its own, or its kind, numbered when the kind repeats."""
        kinds = [task.kind for task in self.tasks]
        names = []
        for index, task in enumerate(self.tasks):
            if task.name is not None:
                names.append(task.name)
            elif kinds.count(task.kind) > 1:
                names.append(f"{task.kind}_{kinds[: index + 1].count(task.kind)}")
            else:
                names.append(task.kind)
        return names


class PhylogenySettings(_Model):
    """How births and deaths reach the run's phylogeny (``hca.phylogeny``)."""

    # The state keeps the deaths of this many ticks; the run drains them (and the
    # organisms born since) at least this often. Memory: 20 bytes per cell per tick.
    drain_every: Annotated[int, Field(ge=1, le=1000)] = 32
    # MODES persistence filter: an organism counts once it has living descendants this
    # many ticks after it was seen alive (Dolson et al. 2019).
    persistence: Annotated[int, Field(ge=1)] = 500
    # Track each region's tree as the run goes (phylotrackpy): phylogenetic diversity and
    # MODES in the metrics. Costs the host a few microseconds per birth; false keeps
    # only the journals and phylogeny.csv (a few percent of a run).
    track: bool = True
    # phylogeny.csv at the end of a run keeps only the living and their ancestors (the
    # journals keep everyone; `hca tree --csv` writes either at any time).
    prune: bool = False


class RunSettings(_Model):
    report_every: Annotated[int, Field(ge=1)] = 100  # ticks between metrics lines
    checkpoint_every: Annotated[int, Field(ge=1)] = 1000  # ticks between checkpoints
    keep: Annotated[int, Field(ge=1)] = 3  # newest checkpoints kept
    phylogeny: PhylogenySettings = PhylogenySettings()


Coordinate = Annotated[int, Field(ge=0)]


class Shore(_Model):
    """One side of a beach: a block of cells of a region. ``at`` gives, per axis, a
    coordinate or a range [start, stop); axes it leaves out are taken whole."""

    region: Identifier
    at: dict[Identifier, Union[Coordinate, Annotated[list[Coordinate], Field(min_length=2, max_length=2)]]] = {}

    def ranges(self, region: Region) -> list[range]:
        """The block's range along each of the region's axes (assumes it is valid)."""
        out = []
        for axis in region.axes:
            given = self.at.get(axis.name)
            if given is None:
                out.append(range(axis.size))
            elif isinstance(given, int):
                out.append(range(given, given + 1))
            else:
                out.append(range(given[0], given[1]))
        return out

    def cells(self, region: Region) -> list[int]:
        """The block's cells (row-major indices into the region), in row-major order."""
        block = tuple(slice(r.start, r.stop) for r in self.ranges(region))
        return np.arange(region.cells).reshape(region.shape)[block].ravel().tolist()


class Beach(_Model):
    """Joins a block of cells of one region to an equal block of another, cell to cell
    in row-major order. On its ticks (every ``stretch``) free energy diffuses across:
    each joined cell sends ``floor(free * diffusion)`` to its partner; where both
    regions have organisms (with the same brain) they sense, move and give birth
    across, paying what crossing an axis of stretch ``cost`` costs (default: the
    beach's stretch)."""

    name: Identifier | None = None  # default: beach_<number>
    shores: Annotated[list[Shore], Field(min_length=2, max_length=2)]
    stretch: Annotated[int, Field(ge=1, le=1 << 16)] = 1
    diffusion: Rate = 0.05
    # Crossing costs what crossing an axis of this stretch costs (default: the beach's).
    cost: Annotated[int, Field(ge=1, le=1 << 16)] | None = None

    @property
    def crossing_stretch(self) -> int:
        """The stretch whose axis crossing costs the same as crossing this beach."""
        return self.stretch if self.cost is None else self.cost


class WorldConfig(_Model):
    """A whole world: named regions, the seed, and run settings."""

    name: Identifier = "world"
    seed: Annotated[int, Field(ge=0, lt=1 << 32)] = 0
    regions: Annotated[dict[Identifier, Region], Field(min_length=1)]
    # Beaches join regions (DESIGN section 6): energy crosses them on their ticks.
    beaches: list[Beach] = []
    run: RunSettings = RunSettings()

    def beach_names(self) -> list[str]:
        return [beach.name or f"beach_{number}" for number, beach in enumerate(self.beaches)]

    def with_seed(self, seed: int) -> WorldConfig:
        return self.model_copy(update={"seed": seed})

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def axis_degree(axis: Axis) -> int:
    """Distinct neighbours of an interior cell along ``axis`` (0, 1 or 2).

    Energy flows once per distinct neighbour: on a curled axis of size 2 both direction
    slots reach the same cell, which is still one neighbour.
    """
    if axis.size == 1:
        return 0
    if axis.size == 2:
        return 1
    return 2


def quantize_rate(rate: float) -> int:
    """A rate as the integer numerator of a fraction of RATE_ONE."""
    return round(rate * RATE_ONE)


def diffusion_rates(region: Region) -> tuple[int, ...]:
    """Fixed-point diffusion rate of each axis of ``region``."""
    default = region.energy.diffusion
    return tuple(
        quantize_rate(default if axis.diffusion is None else axis.diffusion)
        for axis in region.axes
    )


class WorldFileError(Exception):
    """A world file that cannot be used: the file, then one (key path, problem) per line."""

    def __init__(self, path: str | os.PathLike[str], problems: Sequence[tuple[str, str]]):
        self.path = str(path)
        self.problems = list(problems)
        super().__init__(str(self))

    def __str__(self) -> str:
        count = len(self.problems)
        head = f"{self.path}: {count} problem{'s' if count != 1 else ''}"
        lines = [f"  {key}: {message}" if key else f"  {message}" for key, message in self.problems]
        return "\n".join([head, *lines])


def _format_path(loc: Sequence[str | int], data: Any) -> str:
    """A pydantic location as a key path, dropping the union tags pydantic inserts."""
    parts: list[str] = []
    node = data
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
            node = node[item] if isinstance(node, list) and 0 <= item < len(node) else None
            continue
        if isinstance(node, dict) and item not in node and node.get("kind") == item:
            continue  # discriminated-union tag, not a key of the file
        parts.append(f".{item}" if parts else item)
        node = node.get(item) if isinstance(node, dict) else None
    return "".join(parts)


_EXPECTED = {
    "int_type": "expected an integer",
    "int_parsing": "expected an integer",
    "int_from_float": "expected an integer",
    "float_type": "expected a number",
    "float_parsing": "expected a number",
    "finite_number": "expected a finite number",
    "bool_type": "expected true or false",
    "bool_parsing": "expected true or false",
    "string_type": "expected a string",
    "string_pattern_mismatch": "expected a name of letters, digits and underscores, not starting with a digit",
    "dict_type": "expected a mapping",
    "model_type": "expected a mapping",
    "model_attributes_type": "expected a mapping",
    "list_type": "expected a list",
}
_BOUNDS = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=", "less_than": "<"}


def _describe(error: dict[str, Any]) -> str:
    kind = error["type"]
    if kind == "union_tag_invalid":
        return f"expected one of {error['ctx']['expected_tags']} (got {error['ctx']['tag']!r})"
    if kind == "union_tag_not_found":
        return "missing required key"
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "missing required key"
    if kind in _BOUNDS:
        bound = next(iter(error["ctx"].values()))
        message = f"expected a value {_BOUNDS[kind]} {bound}"
    elif kind in _EXPECTED:
        message = _EXPECTED[kind]
    else:
        message = error["msg"]
        message = message[0].lower() + message[1:] if message else message
    return f"{message} (got {error['input']!r})"


def _check_relations(world: WorldConfig) -> list[tuple[str, str]]:
    """Checks that span several keys; assumes every key is individually valid."""
    problems: list[tuple[str, str]] = []
    for region_name, region in world.regions.items():
        where = f"regions.{region_name}"
        seen: dict[str, int] = {}
        for index, axis in enumerate(region.axes):
            if axis.name in seen:
                problems.append(
                    (
                        f"{where}.axes[{index}].name",
                        f"duplicate axis name {axis.name!r} (also axes[{seen[axis.name]}])",
                    )
                )
            seen.setdefault(axis.name, index)
        placed: set[str] = set()
        for index, name in enumerate(region.placement):
            if name not in seen:
                problems.append(
                    (f"{where}.placement[{index}]", f"expected one of the region's axes {list(seen)}, got {name!r}")
                )
            elif name in placed:
                problems.append((f"{where}.placement[{index}]", f"axis {name!r} is placed twice"))
            elif name != region.axes[index].name:
                leading = [axis.name for axis in region.axes[: len(region.placement)]]
                problems.append(
                    (
                        f"{where}.placement[{index}]",
                        f"expected the region's leading axes in order ({leading}): placed axes "
                        f"are the outer levels, got {name!r}",
                    )
                )
            placed.add(name)
        energy = region.energy
        if energy.initial.jitter > energy.initial.mean:
            problems.append(
                (f"{where}.energy.initial.jitter", "expected jitter <= mean (energy is never negative)")
            )
        if energy.initial.mean + energy.initial.jitter > energy.capacity:
            problems.append(
                (f"{where}.energy.initial", "expected mean + jitter <= energy.capacity")
            )
        life = region.organisms
        if life is not None and life.initial_energy > life.max_energy:
            problems.append(
                (f"{where}.organisms.initial_energy", "expected initial_energy <= max_energy")
            )
        rates = diffusion_rates(region)
        sent = sum(axis_degree(axis) * rate for axis, rate in zip(region.axes, rates))
        if sent > RATE_ONE:
            detail = " + ".join(
                f"{axis_degree(axis)} x {energy.diffusion if axis.diffusion is None else axis.diffusion:g}"
                f" ({axis.name})"
                for axis, rate in zip(region.axes, rates)
                if axis_degree(axis) and rate
            )
            problems.append(
                (
                    f"{where}.energy.diffusion",
                    f"expected rates that send at most a cell's whole energy when every axis "
                    f"ticks, but {detail} = {sent / RATE_ONE:.4g} > 1",
                )
            )
        for index, source in enumerate(energy.sources):
            path = f"{where}.energy.sources[{index}]"
            if isinstance(source, BandSource):
                if source.axis not in seen:
                    problems.append(
                        (f"{path}.axis", f"expected one of the region's axes {list(seen)}, got {source.axis!r}")
                    )
                elif not source.start < source.stop <= region.axes[seen[source.axis]].size:
                    size = region.axes[seen[source.axis]].size
                    problems.append(
                        (f"{path}.stop", f"expected start < stop <= {size} (the size of axis {source.axis!r})")
                    )
            if isinstance(source, SpotsSource):
                if (source.at is None) == (source.fraction is None):
                    problems.append((path, "expected exactly one of 'at' (coordinates) or 'fraction'"))
                for spot, coordinate in enumerate(source.at or []):
                    if len(coordinate) != len(region.axes) or not all(
                        0 <= c < size for c, size in zip(coordinate, region.shape)
                    ):
                        problems.append(
                            (
                                f"{path}.at[{spot}]",
                                f"expected a coordinate inside the region's shape {list(region.shape)}, "
                                f"got {coordinate}",
                            )
                        )
        problems.extend(_check_tasks(where, region, seen))
        if region.people is not None:
            if len(region.axes) > 3:
                problems.append((f"{where}.people", f"expected a region of 1 to 3 axes for people, "
                                 f"got {len(region.axes)} ({', '.join(seen)})"))
            if region.organisms is None:
                problems.append((f"{where}.people", "expected organisms in the region people meet"))
    problems.extend(_check_beaches(world))
    return problems


def _check_beaches(world: WorldConfig) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    taken: dict[tuple[str, int], str] = {}  # (region, cell) -> the beach holding it
    names = world.beach_names()
    for number, beach in enumerate(world.beaches):
        where = f"beaches[{number}]"
        sizes = []
        for side, shore in enumerate(beach.shores):
            path = f"{where}.shores[{side}]"
            region = world.regions.get(shore.region)
            if region is None:
                problems.append((f"{path}.region", f"expected one of the regions {list(world.regions)}, "
                                 f"got {shore.region!r}"))
                sizes.append(None)
                continue
            axes = {axis.name: axis for axis in region.axes}
            good = True
            for name, given in shore.at.items():
                if name not in axes:
                    problems.append((f"{path}.at.{name}", f"expected one of the axes of {shore.region!r} "
                                     f"{list(axes)}"))
                    good = False
                    continue
                size = axes[name].size
                if isinstance(given, int) and given >= size:
                    problems.append((f"{path}.at.{name}", f"expected a coordinate below {size} (the size of "
                                     f"axis {name!r}), got {given}"))
                    good = False
                elif isinstance(given, list) and not given[0] < given[1] <= size:
                    problems.append((f"{path}.at.{name}", f"expected a range [start, stop) with start < stop <= "
                                     f"{size} (the size of axis {name!r}), got {given}"))
                    good = False
            sizes.append(math.prod(len(r) for r in shore.ranges(region)) if good else None)
            same = beach.shores[0].region == beach.shores[1].region
            if good and not (same and side == 1):
                for cell in shore.cells(region):
                    other = taken.setdefault((shore.region, cell), names[number])
                    if other != names[number]:
                        problems.append((path, f"cell {cell} of {shore.region!r} is on two beaches "
                                         f"({other} and {names[number]}); a cell joins at most one"))
                        break
        if beach.shores[0].region == beach.shores[1].region:
            problems.append((f"{where}.shores", f"expected two different regions, got {beach.shores[0].region!r} "
                             f"twice (a beach joins two regions)"))
        elif None not in sizes and sizes[0] != sizes[1]:
            problems.append((f"{where}.shores", f"expected blocks of the same number of cells, got {sizes[0]} "
                             f"and {sizes[1]}"))
        lives = [world.regions[shore.region].organisms for shore in beach.shores if shore.region in world.regions]
        sizes_of = [None if life is None else (life.brain.signals, life.brain.hidden, life.brain.encoder)
                    for life in lives]
        if len(lives) == 2 and None not in lives and sizes_of[0] != sizes_of[1]:
            problems.append((f"{where}.shores", "expected regions whose organisms' brains have the same sizes "
                             "(signals, hidden, encoder), so that a genome runs on both sides, got "
                             f"{sizes_of[0]} and {sizes_of[1]}"))
        for shore in beach.shores:
            region = world.regions.get(shore.region)
            if region is None:
                continue
            sent = sum(axis_degree(axis) * rate for axis, rate in zip(region.axes, diffusion_rates(region)))
            if sent + quantize_rate(beach.diffusion) > RATE_ONE:
                problems.append((f"{where}.diffusion", f"expected a rate that, with the axes' of {shore.region!r} "
                                 f"({sent / RATE_ONE:.4g}), sends at most a cell's whole energy"))
    duplicated = {name for name in names if names.count(name) > 1}
    for number, name in enumerate(names):
        if name in duplicated:
            problems.append((f"beaches[{number}].name", f"duplicate beach name {name!r}"))
    return problems


def _check_sites(path: str, sites: Sites, region: Region, axes: dict[str, int]) -> list[tuple[str, str]]:
    problems = []
    given = [key for key in ("at", "fraction", "axis") if getattr(sites, key) is not None]
    if len(given) != 1:
        problems.append((path, f"expected exactly one of 'at' (cells), 'fraction' or 'axis' (a block), got {given or 'none'}"))
    if sites.axis is None and (sites.start != 0 or sites.stop is not None):
        problems.append((path, "'start' and 'stop' go with 'axis'"))
    if sites.axis is not None:
        if sites.axis not in axes:
            problems.append((f"{path}.axis", f"expected one of the region's axes {list(axes)}, got {sites.axis!r}"))
        elif sites.stop is None:
            problems.append((f"{path}.stop", "missing required key (the block is [start, stop) along the axis)"))
        elif not sites.start < sites.stop <= region.axes[axes[sites.axis]].size:
            size = region.axes[axes[sites.axis]].size
            problems.append((f"{path}.stop", f"expected start < stop <= {size} (the size of axis {sites.axis!r})"))
    for index, cell in enumerate(sites.at or []):
        if len(cell) != len(region.axes) or not all(0 <= c < size for c, size in zip(cell, region.shape)):
            problems.append(
                (f"{path}.at[{index}]", f"expected a cell inside the region's shape {list(region.shape)}, got {cell}")
            )
    return problems


def _check_tasks(where: str, region: Region, axes: dict[str, int]) -> list[tuple[str, str]]:
    """Checks of a region's tasks that span several keys."""
    problems: list[tuple[str, str]] = []
    if region.tasks and region.organisms is None:
        problems.append((f"{where}.tasks", "expected organisms in the region: tasks pay organisms for answers"))
    names = region.task_names()
    for index, task in enumerate(region.tasks):
        path = f"{where}.tasks[{index}]"
        if names.index(names[index]) != index:
            problems.append((f"{path}.name", f"duplicate task name {names[index]!r} (also tasks[{names.index(names[index])}])"))
        problems.extend(_check_sites(f"{path}.sites", task.sites, region, axes))
        if task.deadline > task.every:
            problems.append(
                (f"{path}.deadline", f"expected deadline <= every ({task.every}): one question at a time, got {task.deadline}")
            )
        if isinstance(task, (FunctionTask, ProductTask)) and task.tolerance >= task.levels:
            problems.append((f"{path}.tolerance", f"expected tolerance < levels ({task.levels})"))
        if isinstance(task, LogicTask):
            for number, function in enumerate(task.functions):
                if task.functions.index(function) != number:
                    problems.append((f"{path}.functions[{number}]", f"{function} is listed twice"))
        if isinstance(task, ProductTask):
            step = task.levels - 1
            if step & (step - 1):
                problems.append(
                    (f"{path}.levels", f"expected 2**k + 1 levels (3, 5, 9, 17, 33, ...), so that products are "
                     f"exact, got {task.levels}")
                )
            elif (step.bit_length() - 1) * task.n > 62:
                problems.append(
                    (f"{path}.n", f"expected n x log2(levels - 1) <= 62, so that the exact product fits in "
                     f"64 bits, got {task.n} x {step.bit_length() - 1}")
                )
        if not isinstance(task, (ProductTask, ParityTask)):
            continue
        if task.axis not in axes:
            problems.append((f"{path}.axis", f"expected one of the region's axes {list(axes)}, got {task.axis!r}"))
            continue
        axis = region.axes[axes[task.axis]]
        if task.n > axis.size:
            problems.append(
                (f"{path}.n", f"expected n <= {axis.size}: a group is n consecutive cells of axis {axis.name!r} "
                 f"(size {axis.size}), got {task.n}")
            )
            continue
        needed = (task.n - 1) * axis.stretch + 1
        if task.deadline < needed:
            problems.append(
                (f"{path}.deadline", f"expected at least (n - 1) x stretch + 1 = {needed} ticks: the last cell's "
                 f"number reaches the first through {task.n - 1} ticks of axis {axis.name!r} "
                 f"(stretch {axis.stretch}), got {task.deadline}")
            )
        for number, cell in enumerate(task.sites.at or []):
            if len(cell) == len(region.axes) and cell[axes[task.axis]] % task.n:
                problems.append(
                    (f"{path}.sites.at[{number}]", f"expected the first cell of a group: a coordinate along "
                     f"{axis.name!r} that is a multiple of n = {task.n}, got {cell[axes[task.axis]]}")
                )
            elif len(cell) == len(region.axes) and cell[axes[task.axis]] + task.n > axis.size:
                problems.append(
                    (f"{path}.sites.at[{number}]", f"expected a group that fits: {task.n} cells from "
                     f"{cell[axes[task.axis]]} pass the end of axis {axis.name!r} (size {axis.size})")
                )
    return problems


def parse_world(data: Any, path: str | os.PathLike[str] = "<world>") -> WorldConfig:
    """Validate already-parsed YAML data, raising WorldFileError listing every problem."""
    if not isinstance(data, dict):
        raise WorldFileError(path, [("", f"expected a mapping of keys at the top level, got {type(data).__name__}")])
    try:
        world = WorldConfig.model_validate(data)
    except ValidationError as error:
        problems = []
        for item in error.errors():
            where = _format_path(item["loc"], data)
            if item["type"] in ("union_tag_invalid", "union_tag_not_found"):
                where += ".kind"  # the discriminator is what is wrong
            problems.append((where, _describe(item)))
        raise WorldFileError(path, problems) from None
    problems = _check_relations(world)
    if problems:
        raise WorldFileError(path, problems)
    return world


def load_world(path: str | os.PathLike[str], seed: int | None = None) -> WorldConfig:
    """Read and validate a world file; ``seed`` overrides the file's seed."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except FileNotFoundError:
        raise WorldFileError(path, [("", "no such file")]) from None
    except IsADirectoryError:
        raise WorldFileError(path, [("", "expected a YAML file, found a directory")]) from None
    except (OSError, UnicodeDecodeError) as error:
        raise WorldFileError(path, [("", f"cannot be read: {error}")]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(error, "problem", None) or str(error)
        raise WorldFileError(path, [("", f"not valid YAML: {where}{problem}")]) from None
    world = parse_world(data, path)
    if seed is not None:
        if not 0 <= seed < 1 << 32:
            raise WorldFileError(path, [("seed", f"expected 0 <= seed < 2**32, got {seed}")])
        world = world.with_seed(seed)
    return world
