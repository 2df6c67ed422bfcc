"""People in the world: questions posed and tokens paid in interactive regions.

A region with a ``people:`` section is interactive. A person (a name; everyone starts
with ``people.tokens`` tokens) can

- **ask**: pose a question at chosen cells, shown to the organisms there through the
  brain's task inputs exactly as a task's question is (``hca.tasks``): ``logic`` (bits
  a and b and one of Avida's nine functions, by its truth table) or ``value`` (x in
  [-1, 1] and the answer wanted: a function of x from ``hca.tasks.FUNCTIONS``, or one
  number for every cell). While the question is open the state keeps every answer
  given to it (the head's ANSWER through tanh) and who gave it;
- **pay**: give tokens to the organism in a cell, say for a right answer. Tokens are
  energy: what the organism can hold is added to its body, counted in the region's
  ``injected`` and apart as paid by ``people``, and taken from the person's balance.
  Its learning feels a payment as a rise in energy, like any reward.

Every action takes effect between chunks of ticks, at a tick that is recorded: the
run's ``people/events.jsonl`` gets one line per applied action (with that tick and
its outcome), and checkpoints say how many lines they include, so ``hca run
--resume`` replays the rest at their ticks and a run with people in it resumes
bitwise. Balances (``people/balances.json``, written atomically) follow from the log.

Requests come from the live page (``hca.live``) on other threads: ``Desk.submit``
validates one against the world and the balances and queues it (bounded), the run
loop applies the queue with ``Desk.apply``.
"""

from __future__ import annotations

import json
import math
import os
import queue
import threading
from collections import deque
from pathlib import Path
from typing import Annotated, Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hca import brain
from hca.config import Region, WorldConfig
from hca.tasks import FUNCTIONS, KIND, KINDS, LOGIC, OPEN, TABLE, X, Y

EVENTS = "people/events.jsonl"
BALANCES = "people/balances.json"
QUEUE_SIZE = 64  # requests waiting for the next chunk; more get "try again"
KEPT_REQUESTS = 256  # outcomes of recent requests the page can ask about
KEPT_QUESTIONS = 64  # closed questions kept for the page

Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,32}$")]
Identifier = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=64)]
Unit = Annotated[float, Field(ge=-1.0, le=1.0, allow_inf_nan=False)]
Bit = Annotated[int, Field(ge=0, le=1)]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Cell(_Request):
    """One cell of a question and what it is shown there."""

    at: Annotated[list[int], Field(min_length=1, max_length=3)]  # the cell's coordinate
    x: Unit | None = None  # value questions
    a: Bit | None = None  # logic questions
    b: Bit | None = None


class Ask(_Request):
    person: Name
    region: Identifier
    kind: Literal["value", "logic"]
    cells: Annotated[list[Cell], Field(min_length=1, max_length=4096)]
    function: str | None = None  # logic: one of LOGIC; value: one of FUNCTIONS (the answer wanted)
    wanted: Unit | None = None  # value: the answer wanted at every cell, instead of a function
    tolerance: Annotated[float, Field(gt=0.0, le=2.0, allow_inf_nan=False)] = 0.125  # value answers
    reward: Annotated[int, Field(ge=1)] = 100  # tokens offered for a right answer
    ticks: Annotated[int, Field(ge=1, le=1_000_000)] | None = None  # open for; default people.ticks


class Pay(_Request):
    person: Name
    region: Identifier
    at: Annotated[list[int], Field(min_length=1, max_length=3)]
    tokens: Annotated[int, Field(ge=1)]
    question: Annotated[int, Field(ge=0)] | None = None  # the question it pays for, if any


class Refused(Exception):
    """A request that cannot be taken: ``status`` is the HTTP status that says why."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def parse(kind: str, data: Any) -> Ask | Pay:
    """A request from its JSON body; ``Refused(422)`` lists every problem with its key."""
    model = {"ask": Ask, "pay": Pay}[kind]
    try:
        return model.model_validate(data)
    except ValidationError as error:
        problems = []
        for problem in error.errors():
            where = ".".join(str(part) for part in problem["loc"]) or "(body)"
            problems.append(f"{where}: {problem['msg']}")
        raise Refused(422, "; ".join(problems)) from None


def interactive(world: WorldConfig) -> dict[str, int]:
    """Names and indices of the world's interactive regions."""
    return {name: index for index, (name, region) in enumerate(world.regions.items()) if region.people}


def shown(question: dict[str, Any], cell: dict[str, Any]) -> np.ndarray:
    """(TASK_INPUTS,) float32: what a question shows at one of its cells."""
    out = np.zeros(brain.TASK_INPUTS, np.float32)
    out[OPEN] = 1.0
    if question["kind"] == "logic":
        table = LOGIC[question["function"]][0]
        out[KIND + KINDS.index("logic")] = 1.0
        out[X], out[Y] = 2 * cell["a"] - 1, 2 * cell["b"] - 1
        out[TABLE : TABLE + 4] = [2 * bit - 1 for bit in table]
    else:
        out[KIND + KINDS.index("function")] = 1.0
        out[X] = cell["x"]
        out[TABLE : TABLE + 4] = [wanted(question, x) for x in (-1.0, -1.0 / 3.0, 1.0 / 3.0, 1.0)]
    return out


def wanted(question: dict[str, Any], x: float) -> float:
    """The answer a value question wants at x."""
    if question.get("function") is None:
        return float(question["wanted"])
    return float(np.clip(FUNCTIONS[question["function"]](np.float64(x)), -1.0, 1.0))


def right(question: dict[str, Any], cell: dict[str, Any], answer: float) -> bool | None:
    """Whether ``answer`` (tanh of ANSWER) is right at ``cell`` (None: no answer yet)."""
    if answer is None or not math.isfinite(answer):
        return None
    if question["kind"] == "logic":
        return (answer > 0.0) == bool(LOGIC[question["function"]][0][2 * cell["a"] + cell["b"]])
    return abs(answer - wanted(question, cell["x"])) <= question["tolerance"]


class Desk:
    """The people of one run: their balances, their questions, the event log, and the
    queue of requests waiting for the run loop."""

    def __init__(self, world: WorldConfig, path: Path, events: list[dict[str, Any]], start: int):
        self.world = world
        self.path = Path(path)
        self.regions = interactive(world)
        self.lock = threading.Lock()
        self.pending: queue.Queue = queue.Queue(QUEUE_SIZE)
        self.replay = deque(event for event in events if event["tick"] >= start)
        self.people: dict[str, dict[str, int]] = {}
        self.questions: dict[int, dict[str, Any]] = {}
        self.requests: dict[int, dict[str, Any]] = {}
        self.held: dict[str, int] = {}  # tokens of queued payments, per person
        self.queued_asks: dict[str, int] = {}  # queued questions, per region
        self.applied = 0
        self.next_request = 1 + max((event["request"] for event in events), default=0)
        self.finished_at: int | None = None
        for event in events:
            if event["tick"] < start:
                self._book(event)
        self._rewrite_log(events[: self.applied])
        self.write_balances()

    @staticmethod
    def start(world: WorldConfig, path: str | os.PathLike[str]) -> Desk | None:
        """The desk of a new run (None when no region is interactive)."""
        if not interactive(world):
            return None
        return Desk(world, Path(path), [], 0)

    @staticmethod
    def resume(world: WorldConfig, path: str | os.PathLike[str], start: int, applied: int) -> Desk | None:
        """The desk of a run resumed at tick ``start`` from a checkpoint that includes the
        log's first ``applied`` lines; later lines are replayed at their ticks."""
        if not interactive(world):
            return None
        events = read_events(Path(path))
        before = sum(event["tick"] < start for event in events)
        if before != applied:
            raise ValueError(
                f"{Path(path) / EVENTS}: {before} actions before tick {start}, but the checkpoint "
                f"includes {applied}; the log does not belong to this checkpoint"
            )
        return Desk(world, Path(path), events, start)

    # -- requests (any thread) -----------------------------------------------------

    def submit(self, request: Ask | Pay) -> int:
        """Validate ``request`` against the world and the balances and queue it for the
        next chunk; returns its request number. Raises ``Refused``."""
        region = self._region(request.region)
        with self.lock:
            if self.finished_at is not None:
                raise Refused(409, f"the run has ended at tick {self.finished_at}")
            person = self.people.get(request.person)
            known = self.people.keys() | self.held.keys()
            if request.person not in known and len(known) >= region.people.max_people:
                raise Refused(409, f"this run takes at most {region.people.max_people} people")
            balance = region.people.tokens if person is None else person["tokens"]
            if isinstance(request, Pay):
                self._cell(region, request.at, "at")
                if request.tokens > region.people.max_payment:
                    raise Refused(422, f"tokens: at most {region.people.max_payment} in one payment")
                if request.tokens > balance - self.held.get(request.person, 0):
                    raise Refused(409, f"{request.person} has {balance - self.held.get(request.person, 0):,} "
                                       f"tokens free, not {request.tokens:,}")
                if request.question is not None and request.question not in self.questions:
                    raise Refused(404, f"no question {request.question}")
            else:
                self._check_ask(region, request)
                open_now = sum(q["region"] == request.region and q["open"] for q in self.questions.values())
                if open_now + self.queued_asks.get(request.region, 0) >= region.people.max_open:
                    raise Refused(409, f"region {request.region!r} has {region.people.max_open} questions "
                                       f"open already")
            number = self.next_request
            try:
                self.pending.put_nowait((number, request))
            except queue.Full:
                raise Refused(429, "too many requests waiting for the run; try again") from None
            self.next_request += 1
            if isinstance(request, Pay):
                self.held[request.person] = self.held.get(request.person, 0) + request.tokens
            else:
                self.queued_asks[request.region] = self.queued_asks.get(request.region, 0) + 1
                self.held.setdefault(request.person, 0)
            self._remember(number, {"status": "queued"})
            return number

    def _region(self, name: str) -> Region:
        if name not in self.world.regions:
            raise Refused(404, f"no region {name!r} (regions: {', '.join(self.world.regions)})")
        if name not in self.regions:
            raise Refused(404, f"region {name!r} is not interactive (people meet the organisms in: "
                               f"{', '.join(self.regions)})")
        return self.world.regions[name]

    @staticmethod
    def _cell(region: Region, at: list[int], where: str) -> tuple[int, ...]:
        if len(at) != len(region.shape) or not all(0 <= c < n for c, n in zip(at, region.shape)):
            raise Refused(422, f"{where}: expected a cell inside the region's shape {list(region.shape)}, got {at}")
        return tuple(at)

    def _check_ask(self, region: Region, ask: Ask) -> None:
        people = region.people
        if len(ask.cells) > min(people.max_cells, region.cells):
            raise Refused(422, f"cells: at most {min(people.max_cells, region.cells)} cells in one question")
        seen = set()
        for index, cell in enumerate(ask.cells):
            at = self._cell(region, cell.at, f"cells.{index}.at")
            if at in seen:
                raise Refused(422, f"cells.{index}.at: {list(at)} appears twice")
            seen.add(at)
            given = {"x"} if ask.kind == "value" else {"a", "b"}
            for key in ("x", "a", "b"):
                if (getattr(cell, key) is not None) != (key in given):
                    need = "x" if ask.kind == "value" else "a and b"
                    raise Refused(422, f"cells.{index}: a {ask.kind} question shows {need} at each cell")
        if ask.kind == "logic":
            if ask.function not in LOGIC:
                raise Refused(422, f"function: expected one of {', '.join(LOGIC)}, got {ask.function!r}")
            if ask.wanted is not None:
                raise Refused(422, "wanted: a logic question's answer follows from its function")
        elif (ask.function is None) == (ask.wanted is None):
            raise Refused(422, "expected exactly one of 'function' (the answer is f(x)) or 'wanted'")
        elif ask.function is not None and ask.function not in FUNCTIONS:
            raise Refused(422, f"function: expected one of {', '.join(FUNCTIONS)}, got {ask.function!r}")
        if ask.reward > people.max_payment:
            raise Refused(422, f"reward: at most {people.max_payment} tokens")

    def _remember(self, number: int, outcome: dict[str, Any]) -> None:
        self.requests[number] = outcome
        while len(self.requests) > KEPT_REQUESTS:
            del self.requests[next(iter(self.requests))]

    # -- the run loop --------------------------------------------------------------

    def next_tick(self) -> int | None:
        """The tick of the next logged action still to replay, if any."""
        return self.replay[0]["tick"] if self.replay else None

    def apply(self, apply_fns: Applier, state: Any, tick: int) -> Any:
        """Apply the actions due at ``tick`` (logged ones being replayed, then the queue)
        to ``state`` before it steps ``tick``; append them to the log."""
        events: list[tuple[dict[str, Any], Ask | Pay | None]] = []  # (event, the queued request)
        while self.replay and self.replay[0]["tick"] == tick:
            events.append((dict(self.replay.popleft()), None))
        if not self.replay:  # requests wait until the replay has caught up
            while True:
                try:
                    number, request = self.pending.get_nowait()
                except queue.Empty:
                    break
                event = {"request": number, "tick": tick, "action": "pay" if isinstance(request, Pay) else "ask",
                         **request.model_dump(exclude_none=True)}
                if event["action"] == "ask":
                    event["cells"] = [cell.model_dump(exclude_none=True) for cell in request.cells]
                    event.setdefault("ticks", self.world.regions[request.region].people.ticks)
                events.append((event, request))
        if not events:
            return state
        lines = []
        for event, request in events:
            state = self._carry_out(apply_fns, state, event)
            with self.lock:
                # Booked and released at once: a request checked meanwhile counts the
                # action either as queued (held) or as done (in the balances), never neither.
                self._book(event)
                if request is not None:
                    self._release(request)
            lines.append(json.dumps(event, sort_keys=True))
        log = self.path / EVENTS
        with open(log, "a", encoding="utf-8") as out:
            out.write("".join(f"{line}\n" for line in lines))
            out.flush()
            os.fsync(out.fileno())
        self.write_balances()
        return state

    def _carry_out(self, apply_fns: Applier, state: Any, event: dict[str, Any]) -> Any:
        """Change the state by one action; a payment's outcome is written into ``event``."""
        index = self.regions[event["region"]]
        region = self.world.regions[event["region"]]
        if event["action"] == "ask":
            mask = np.zeros(region.shape, bool)
            inputs = np.zeros((*region.shape, brain.TASK_INPUTS), np.float32)
            for cell in event["cells"]:
                mask[tuple(cell["at"])] = True
                inputs[tuple(cell["at"])] = shown(event, cell)
            return apply_fns.ask(state, index, mask, inputs, event["tick"] + event["ticks"])
        state, paid, organism = apply_fns.pay(state, index, np.asarray(event["at"], np.int32), event["tokens"])
        event["paid"], event["organism"] = paid, organism
        return state

    def _release(self, request: Ask | Pay) -> None:
        """A queued request is no longer held (called under the lock, as it is booked)."""
        if isinstance(request, Pay):
            self.held[request.person] -= request.tokens
        else:
            self.queued_asks[request.region] -= 1
        if not self.held.get(request.person):
            self.held.pop(request.person, None)

    def _book(self, event: dict[str, Any]) -> None:
        """Balances and questions after one applied action (called under the lock)."""
        account(self.people, self.world, event)
        if event["action"] == "pay":
            question = self.questions.get(event.get("question"))
            if question is not None:
                question["paid"] += event["paid"]
        else:
            self.questions[event["request"]] = {
                "question": event["request"], "person": event["person"], "region": event["region"],
                "kind": event["kind"], "function": event.get("function"), "wanted": event.get("wanted"),
                "tolerance": event["tolerance"], "reward": event["reward"], "cells": event["cells"],
                "from": event["tick"], "until": event["tick"] + event["ticks"], "open": True, "paid": 0,
            }
        self._remember(event["request"], {"status": "applied", "tick": event["tick"],
                                          **({"paid": event["paid"]} if event["action"] == "pay" else {})})
        self.applied += 1

    def reopen(self) -> None:
        """The run goes on (``Run.advance`` again): requests are taken again."""
        with self.lock:
            self.finished_at = None

    def close_questions(self, tick: int) -> None:
        """Mark questions whose time is up; keep the newest closed ones for the page."""
        with self.lock:
            for question in self.questions.values():
                question["open"] = tick < question["until"]
            closed = [number for number, q in self.questions.items() if not q["open"]]
            for number in closed[: max(0, len(closed) - KEPT_QUESTIONS)]:
                del self.questions[number]

    def finish(self, tick: int) -> None:
        """The run has ended: queued requests are dropped, new ones refused."""
        with self.lock:
            self.finished_at = tick
            while True:
                try:
                    number, _ = self.pending.get_nowait()
                except queue.Empty:
                    break
                self._remember(number, {"status": "dropped", "why": f"the run ended at tick {tick}"})
            self.held.clear()
            self.queued_asks.clear()

    # -- files ---------------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        """Per person: tokens left, paid and questions asked; and the total paid."""
        with self.lock:
            people = {name: dict(person) for name, person in sorted(self.people.items())}
        return {"paid": sum(person["paid"] for person in people.values()), "people": people}

    def write_balances(self) -> None:
        path = self.path / BALANCES
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.tmp")
        temporary.write_text(json.dumps({"applied": self.applied, **self.summary()}, indent=1) + "\n",
                             encoding="utf-8")
        os.replace(temporary, path)

    def _rewrite_log(self, events: list[dict[str, Any]]) -> None:
        path = self.path / EVENTS
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.tmp")
        temporary.write_text("".join(json.dumps(event, sort_keys=True) + "\n" for event in events),
                             encoding="utf-8")
        os.replace(temporary, path)


def account(people: dict[str, dict[str, int]], world: WorldConfig, event: dict[str, Any]) -> None:
    """Per person: tokens left, paid and questions asked, after one logged action."""
    start = world.regions[event["region"]].people.tokens
    person = people.setdefault(event["person"], {"tokens": start, "paid": 0, "asked": 0})
    if event["action"] == "pay":
        person["tokens"] -= event["paid"]
        person["paid"] += event["paid"]
    else:
        person["asked"] += 1


def read_events(run: Path) -> list[dict[str, Any]]:
    """The applied actions of a run, in order (a line cut short by a kill is dropped)."""
    path = run / EVENTS
    events = []
    if path.exists():
        for text in path.read_text(encoding="utf-8").splitlines():
            try:
                events.append(json.loads(text))
            except ValueError:
                break
    return events


class Applier:
    """The jitted changes people make to a world's state (built once per simulation)."""

    def __init__(self, simulation: Any):
        self.simulation = simulation
        regions = list(simulation.config.regions.values())
        self.placed = [len(region.placement) for region in regions]
        self.max_energy = [None if region.organisms is None else region.organisms.max_energy for region in regions]
        kwargs: dict[str, Any] = {"static_argnums": 1, "donate_argnums": 0}
        if simulation.shardings is not None:
            replicated = jax.sharding.NamedSharding(simulation.mesh, jax.sharding.PartitionSpec())
            self._ask = jax.jit(self._ask_fn, out_shardings=simulation.shardings, **kwargs)
            self._pay = jax.jit(self._pay_fn, out_shardings=(simulation.shardings, replicated, replicated), **kwargs)
        else:
            self._ask = jax.jit(self._ask_fn, **kwargs)
            self._pay = jax.jit(self._pay_fn, **kwargs)

    def ask(self, state, index: int, mask: np.ndarray, inputs: np.ndarray, until: int):
        return self._ask(state, index, mask, inputs, np.int32(until))

    def pay(self, state, index: int, at: np.ndarray, tokens: int):
        state, paid, organism = self._pay(state, index, at, np.int32(tokens))
        return state, int(paid), int(organism)

    @staticmethod
    def _ask_fn(state, index, mask, inputs, until):
        region = state.regions[index]
        people = region.people
        people = people.replace(
            inputs=jnp.where(mask[..., None], inputs, people.inputs),
            until=jnp.where(mask, until, people.until),
            answer=jnp.where(mask, jnp.nan, people.answer),
            answered_by=jnp.where(mask, 0, people.answered_by),
        )
        return _with_region(state, index, region.replace(people=people))

    def _pay_fn(self, state, index, at, tokens):
        region = state.regions[index]
        life = region.life
        cell = tuple(at[k] for k in range(at.shape[0]))
        room = self.max_energy[index] - life.energy[cell]
        paid = jnp.where(life.occupied[cell], jnp.minimum(tokens, room), 0)
        organism = jnp.where(life.occupied[cell], life.organism_id[cell], 0)
        tile = cell[: self.placed[index]]
        wide = paid.astype(jnp.int64)
        region = region.replace(
            life=life.replace(energy=life.energy.at[cell].add(paid)),
            injected=region.injected.at[tile].add(wide),
            people=region.people.replace(paid=region.people.paid.at[tile].add(wide)),
        )
        return _with_region(state, index, region), paid, organism


def _with_region(state, index: int, region) -> Any:
    regions = list(state.regions)
    regions[index] = region
    return state.replace(regions=tuple(regions))
