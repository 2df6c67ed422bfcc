"""The live page: a running world watched, and met, from a browser.

``Live(simulation, desk)`` serves, with Starlette on uvicorn in a thread of its own,

- ``/``: the page (``hca/page/``: plain HTML and JavaScript, nothing fetched from
  elsewhere), drawing every region as ``hca render`` does (a panel per outer cell,
  each a map over the last two axes), coloured by energy or lineage, with population
  and ledger charts, the organism in a clicked cell, and in interactive regions
  (``hca.people``) the forms to ask questions and pay for answers;
- ``/ws``: a WebSocket that sends the world's description, then frames (the newest
  only: a slow browser skips frames, it never holds the run back);
- ``/api/frame``, ``/api/cell?region=R&cell=N``, ``/api/people``,
  ``/api/requests/N``: the same as JSON;
- ``POST /api/ask`` and ``POST /api/pay``: people's actions, with the run's secret in
  the ``X-HCA-Secret`` header. Every body is validated (pydantic) and bounded; a bad
  one gets a 4xx answer with the reason and changes nothing.

The run loop hands the server the state after a chunk (``Live.observe``, an observer
of ``Run.advance``) at most every ``interval`` seconds: a few small arrays copied to
the host; everything else (JSON, the sockets) happens in the server's thread.
"""

from __future__ import annotations

import asyncio
import functools
import json
import math
import secrets
import socket
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from hca.people import Desk, Refused, parse, right
from hca.pictures import panel_grid

PAGE = Path(__file__).parent / "page"
MAX_BODY = 64 * 1024  # bytes of a request body
HISTORY = 2000  # points of the population and ledger charts
ANSWERS_KEPT = 20  # recent answers remembered per cell
MAX_DRAWN = 1 << 20  # cells of a region the page draws; larger ones are summarised


class Unavailable(Exception):
    """The live page cannot be served (say, the port is taken); one line for the user."""


def _view(config, state) -> dict[str, Any]:
    """The arrays the page shows, per region (small: a few values per cell)."""
    out = {}
    for (name, region), region_state in zip(config.regions.items(), state.regions):
        life, view = region_state.life, {"free": region_state.free_energy}
        if life is not None and region.cells <= MAX_DRAWN:
            view.update(
                occupied=life.occupied, energy=life.energy, lineage=life.founder, id=life.organism_id,
                parent=life.parent_id, generation=life.generation, age=life.age,
            )
        if life is not None:
            view["population"] = life.occupied.sum(dtype=jnp.int32)
        if region_state.people is not None:
            people = region_state.people
            view.update(asked=state.tick < people.until, answer=people.answer, answered_by=people.answered_by)
        out[name] = view
    return out


def describe_world(config) -> dict[str, Any]:
    """What the page needs to lay out the regions."""
    regions = {}
    for name, region in config.regions.items():
        shape = list(region.shape)
        down, across = panel_grid(region.shape)
        regions[name] = {
            "axes": [axis.name for axis in region.axes],
            "shape": shape,
            "cells": region.cells,
            "panels": [down, across],
            "panel": [1, shape[0]] if len(shape) == 1 else shape[-2:],
            "drawn": region.cells <= MAX_DRAWN,
            "life": region.organisms is not None,
            "people": None if region.people is None else region.people.model_dump(),
        }
    return {"type": "world", "name": config.name, "regions": regions}


def bind(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` (0: any free port) for ``Live``; ``Unavailable``
    says why not in one line."""
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except (OSError, OverflowError) as error:
        reason = getattr(error, "strerror", None) or error
        raise Unavailable(f"cannot serve the live page on {host}:{port} ({reason})") from None
    return sock


class Live:
    """The server of one run's live page."""

    def __init__(self, simulation: Any, desk: Desk | None, listening: socket.socket | None = None,
                 secret: str | None = None, interval: float = 0.25):
        """``listening``: a socket from ``bind`` (default: 127.0.0.1, any free port)."""
        self.simulation = simulation
        self.config = simulation.config
        self.desk = desk
        self.secret = secret or secrets.token_urlsafe(18)
        self.interval = interval
        self.world = describe_world(self.config)
        self._view = jax.jit(functools.partial(_view, self.config))
        self._lock = threading.Lock()
        self._publishing = threading.Lock()  # held while a frame is being made
        self._frame: dict[str, Any] | None = None
        self._arrays: dict[str, dict[str, np.ndarray]] = {}
        self._text: tuple[int, str] | None = None
        self.version = 0
        self.history: deque = deque(maxlen=HISTORY)
        self.answers: dict[tuple[str, int], deque] = {}
        self._last_answer: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._last_seen = 0.0
        self._rate: deque = deque(maxlen=20)
        self.clients = 0
        self._closing = False
        self._socket = listening if listening is not None else bind("127.0.0.1", 0)
        self.host, self.port = self._socket.getsockname()[:2]
        self._server = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/?secret={self.secret}"

    def seed_history(self, lines: list[dict[str, Any]]) -> None:
        """Start the charts from a run's metrics lines (a resumed run's past)."""
        with self._lock:
            for line in lines:
                regions = line.get("regions", {})
                self.history.append({
                    "tick": line["tick"], "total": line["ledger"]["total"], "injected": line["ledger"]["injected"],
                    "dissipated": line["ledger"]["dissipated"], "people": line["ledger"].get("people", 0),
                    "population": {name: r["life"]["population"] for name, r in regions.items() if "life" in r},
                })

    # -- the run's side ------------------------------------------------------------

    def observe(self, state: Any, tick: int, line: dict[str, Any] | None = None, force: bool = False) -> None:
        """Take a frame of ``state`` (at most every ``interval`` seconds unless ``force``).

        The run's thread only dispatches the small computations of the frame (the
        device does them before it steps on, and they are not donated); copying them to
        the host and making the frame is the publisher thread's, and a frame that finds
        the publisher busy is dropped. ``force`` waits for the frame to be published."""
        now = time.perf_counter()
        self._rate.append((now, tick))
        if not force and now - self._last_seen < self.interval:
            return
        if not force and self._publishing.locked():
            return  # the previous frame is still being made: drop this one
        self._last_seen = now
        work = (int(tick), self._view(state), self.simulation.measure(state))
        if force:
            with self._publishing:
                self._publish(*work)
            return
        self._publishing.acquire()
        threading.Thread(target=self._publish_and_release, args=work, name="hca-live-frame", daemon=True).start()

    def _publish_and_release(self, *work: Any) -> None:
        try:
            self._publish(*work)
        finally:
            self._publishing.release()

    def _publish(self, tick: int, arrays: dict[str, dict[str, Any]], measured: dict[str, Any]) -> None:
        arrays = jax.device_get(arrays)
        ledger = self.simulation.ledger_of(measured)
        questions = self._questions(tick, arrays)
        regions = {}
        for name, view in arrays.items():
            entry: dict[str, Any] = {"free_total": int(view["free"].sum())}
            if "population" in view:
                entry["population"] = int(view["population"])
            if "occupied" in view:
                occupied = view["occupied"].reshape(-1)
                entry["energy"] = np.where(occupied, view["energy"].reshape(-1), -1).tolist()
                entry["lineage"] = np.where(occupied, view["lineage"].reshape(-1), -1).tolist()
            elif self.world["regions"][name]["drawn"]:
                entry["free"] = view["free"].reshape(-1).tolist()
            regions[name] = entry
        point = {"tick": tick, "total": ledger["world"]["total"], "injected": ledger["world"]["injected"],
                 "dissipated": ledger["world"]["dissipated"], "people": ledger["world"].get("people", 0),
                 "population": {name: r["population"] for name, r in regions.items() if "population" in r}}
        frame = {
            "type": "frame",
            "tick": tick,
            "rate": self._tick_rate(),
            "ledger": ledger["world"],
            "region_ledgers": ledger["regions"],
            "regions": regions,
            "point": point,
            "people": None if self.desk is None else self.desk.summary(),
            "questions": questions,
            "finished": None if self.desk is None else self.desk.finished_at,
        }
        with self._lock:
            self._frame, self._arrays = frame, arrays
            self.history.append(point)
            self.version += 1

    def _tick_rate(self) -> float | None:
        if len(self._rate) < 2:
            return None
        (t0, k0), (t1, k1) = self._rate[0], self._rate[-1]
        return (k1 - k0) / (t1 - t0) if t1 > t0 else None

    def _questions(self, tick: int, arrays: dict[str, dict[str, np.ndarray]]) -> list[dict[str, Any]]:
        """People's questions with the newest answer at each of their cells; new answers
        join each cell's recent answers. A cell answers the newest question posed at it
        (a later one replaces an earlier one there): an earlier question shows no answer
        at a cell it lost (``replaced``)."""
        if self.desk is None:
            return []
        with self.desk.lock:
            questions = [dict(q) for q in self.desk.questions.values()]
        for name in self.desk.regions:
            view = arrays[name]
            answer, by = view["answer"].reshape(-1), view["answered_by"].reshape(-1)
            before = self._last_answer.get(name)
            changed = np.ones(answer.shape, bool) if before is None else (
                (by != before[1]) | ((answer != before[0]) & ~(np.isnan(answer) & np.isnan(before[0]))))
            self._last_answer[name] = (answer, by)
            shape = self.config.regions[name].shape
            mine = [question for question in questions if question["region"] == name]
            owner = {}  # cell -> the newest question posed at it
            for question in mine:
                for cell in question["cells"]:
                    owner[int(np.ravel_multi_index(tuple(cell["at"]), shape))] = question["question"]
            for question in mine:
                cells = []
                for cell in question["cells"]:
                    index = int(np.ravel_multi_index(tuple(cell["at"]), shape))
                    replaced = owner[index] != question["question"]
                    value = None if replaced or np.isnan(answer[index]) else float(answer[index])
                    verdict = right(question, cell, value) if value is not None else None
                    organism = 0 if value is None else int(by[index])
                    cells.append({**cell, "cell": index, "answer": value, "organism": organism, "right": verdict,
                                  "replaced": replaced})
                    if question["open"] and value is not None and changed[index]:
                        recent = self.answers.setdefault((name, index), deque(maxlen=ANSWERS_KEPT))
                        recent.append({"tick": tick, "question": question["question"], "organism": int(by[index]),
                                       "answer": value, "right": verdict})
                question["cells"] = cells
        return questions

    # -- the server ----------------------------------------------------------------

    def start(self) -> str:
        """Serve in a background thread; returns the page's address (with the secret)."""
        import uvicorn

        config = uvicorn.Config(self.app(), log_level="warning", lifespan="off", ws="websockets-sansio")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._socket]},
                                        name="hca-live", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10.0
        while not self._server.started and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        if not self._server.started:
            raise Unavailable(f"the live page's server did not start on {self.host}:{self.port}")
        return self.url

    def close(self) -> None:
        self._closing = True
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10.0)
        self._socket.close()

    def app(self):
        from starlette.applications import Starlette
        from starlette.responses import FileResponse, JSONResponse
        from starlette.routing import Mount, Route, WebSocketRoute
        from starlette.staticfiles import StaticFiles
        from starlette.websockets import WebSocketDisconnect

        def error(status: int, message: str) -> JSONResponse:
            return JSONResponse({"error": message}, status_code=status)

        async def page(request):
            return FileResponse(PAGE / "index.html", headers={"Cache-Control": "no-store"})

        async def frame(request):
            text = self._frame_text()
            if text is None:
                return error(503, "no frame yet: the run has not finished its first chunk")
            return JSONResponse(json.loads(text))

        async def world(request):
            return JSONResponse(self.world)

        async def cell(request):
            name = request.query_params.get("region", "")
            if name not in self.config.regions:
                return error(404, f"no region {name!r}")
            try:
                index = int(request.query_params.get("cell", ""))
            except ValueError:
                return error(422, "cell: expected a whole number (the cell's row-major index)")
            region = self.config.regions[name]
            if not 0 <= index < region.cells:
                return error(422, f"cell: expected 0 <= cell < {region.cells}, got {index}")
            info = self.cell(name, index)
            if info is None:
                return error(503, "no frame yet")
            return JSONResponse(info)

        async def people(request):
            if self.desk is None:
                return error(404, "this world has no interactive region")
            return JSONResponse({**self.desk.summary(), "questions": (self._frame or {}).get("questions", [])})

        async def outcome(request):
            if self.desk is None:
                return error(404, "this world has no interactive region")
            number = request.path_params["number"]
            with self.desk.lock:
                found = self.desk.requests.get(number)
            return error(404, f"no recent request {number}") if found is None else JSONResponse(found)

        async def act(request, kind: str):
            given = request.headers.get("x-hca-secret", "")
            if not secrets.compare_digest(given.encode(), self.secret.encode()):
                return error(403, "wrong or missing secret (the X-HCA-Secret header; hca run prints it)")
            if self.desk is None:
                return error(404, "this world has no interactive region")
            body = bytearray()
            async for chunk in request.stream():
                body += chunk
                if len(body) > MAX_BODY:
                    return error(413, f"request body over {MAX_BODY} bytes")
            try:
                data = json.loads(body)
            except ValueError as problem:
                return error(400, f"malformed JSON: {problem}")
            try:
                number = self.desk.submit(parse(kind, data))
            except Refused as refused:
                return error(refused.status, str(refused))
            return JSONResponse({"request": number, "status": "queued"}, status_code=202)

        async def ask(request):
            return await act(request, "ask")

        async def pay(request):
            return await act(request, "pay")

        async def stream(websocket):
            await websocket.accept()
            self.clients += 1
            try:
                with self._lock:
                    history = list(self.history)
                await websocket.send_text(json.dumps({**self.world, "history": history}))
                seen = -1
                while not self._closing:
                    if self.version != seen and self._frame is not None:
                        seen = self.version
                        await websocket.send_text(self._frame_text())
                    else:
                        await asyncio.sleep(0.05)
            except (WebSocketDisconnect, RuntimeError, OSError):
                return  # the browser went away: its stream ends
            finally:
                self.clients -= 1

        return Starlette(routes=[
            Route("/", page),
            Route("/api/world", world),
            Route("/api/frame", frame),
            Route("/api/cell", cell),
            Route("/api/people", people),
            Route("/api/requests/{number:int}", outcome),
            Route("/api/ask", ask, methods=["POST"]),
            Route("/api/pay", pay, methods=["POST"]),
            WebSocketRoute("/ws", stream),
            Mount("/static", StaticFiles(directory=PAGE)),
        ])

    def _frame_text(self) -> str | None:
        with self._lock:
            if self._frame is None:
                return None
            if self._text is None or self._text[0] != self.version:
                self._text = (self.version, json.dumps(self._frame))
            return self._text[1]

    def cell(self, name: str, index: int) -> dict[str, Any] | None:
        """What the page shows of the organism in a cell, from the newest frame."""
        with self._lock:
            if self._frame is None:
                return None
            view, tick = self._arrays[name], self._frame["tick"]
            recent = list(self.answers.get((name, index), ()))
        shape = self.config.regions[name].shape
        at = [int(c) for c in np.unravel_index(index, shape)]
        info: dict[str, Any] = {"region": name, "cell": index, "at": at, "tick": tick,
                                "free": int(view["free"].reshape(-1)[index])}
        if "occupied" in view:
            def value(key):
                return int(view[key].reshape(-1)[index])

            occupied = bool(view["occupied"].reshape(-1)[index])
            info["occupied"] = occupied
            if occupied:
                info.update(id=value("id"), parent=value("parent"), lineage=value("lineage"),
                            generation=value("generation"), age=value("age"), energy=value("energy"))
        if "answer" in view:
            answer = float(view["answer"].reshape(-1)[index])
            info["asked"] = bool(view["asked"].reshape(-1)[index])
            info["answer"] = None if math.isnan(answer) else answer
            info["answered_by"] = int(view["answered_by"].reshape(-1)[index])
        info["answers"] = recent
        return info
