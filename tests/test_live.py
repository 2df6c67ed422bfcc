"""People in the world: the live page's server over real HTTP and WebSocket on
127.0.0.1, people's actions and their event log, resume by replay, and the page in a
real browser (Chromium driven by Playwright)."""

from __future__ import annotations

import copy
import json
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from websockets.sync.client import connect

from hca.checkpoint import RunDirectoryError, state_digest
from hca.cli import main
from hca.config import parse_world
from hca.live import Live
from hca.people import BALANCES, EVENTS, Desk, Refused, parse, read_events
from hca.runner import Run

WORLD = {
    "name": "agora_small",
    "seed": 3,
    "regions": {
        "plaza": {
            "axes": [{"name": "y", "size": 6}, {"name": "x", "size": 8}],
            "energy": {"initial": {"mean": 200, "jitter": 50}, "decay": 0.01,
                       "sources": [{"kind": "uniform", "amount": 1, "every": 2}]},
            "organisms": {"density": 0.5, "initial_energy": 200, "max_energy": 2000, "max_age": 300,
                          "brain": {"signals": 2, "hidden": 4, "encoder": 4}},
            "tasks": [{"kind": "logic", "sites": {"fraction": 1.0}, "amount": 48, "every": 4, "budget": 8}],
            "people": {"tokens": 1000, "max_payment": 300, "ticks": 100000, "max_open": 3, "max_cells": 8},
        },
        "lab": {"axes": [{"name": "x", "size": 8}], "energy": {"initial": {"mean": 10}}},
    },
    "run": {"report_every": 20, "checkpoint_every": 1000000},
}


def wait_for(condition, timeout=60.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class Served:
    """A run advancing in a thread with its live page served on a free port."""

    def __init__(self, path: Path):
        self.run = Run.start(parse_world(WORLD), path, 10**9)
        self.live = Live(self.run.simulation, self.run.people, interval=0.05)
        self.url = self.live.start()
        self.base = f"http://127.0.0.1:{self.live.port}"
        self.headers = {"X-HCA-Secret": self.live.secret}
        self.stop = threading.Event()
        self.thread = threading.Thread(
            target=self.run.advance,
            kwargs={"handle_signals": False, "observer": self.live.observe, "stop_event": self.stop},
            daemon=True,
        )
        self.thread.start()
        self.http = httpx.Client(base_url=self.base, timeout=30.0)
        wait_for(lambda: self.http.get("/api/frame").status_code == 200, what="a first frame")

    def frame(self):
        return self.http.get("/api/frame").json()

    def post(self, path, body, headers=None):
        return self.http.post(path, content=body if isinstance(body, (bytes, str)) else json.dumps(body),
                              headers=self.headers if headers is None else headers)

    def outcome(self, request):
        return wait_for(lambda: (o := self.http.get(f"/api/requests/{request}").json()).get("status") == "applied"
                        and o, what=f"request {request} applied")

    def close(self):
        self.stop.set()
        self.thread.join(timeout=60)
        self.http.close()
        self.live.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    served = Served(tmp_path_factory.mktemp("live") / "run")
    yield served
    served.close()


def occupied_cells(frame, count):
    energy = frame["regions"]["plaza"]["energy"]
    cells = [cell for cell, value in enumerate(energy) if value >= 0][:count]
    return [[cell // 8, cell % 8] for cell in cells]


def test_frames_and_stream(served):
    world = served.http.get("/api/world").json()
    assert world["regions"]["plaza"]["shape"] == [6, 8] and world["regions"]["plaza"]["people"]["tokens"] == 1000
    first = served.frame()
    plaza = first["regions"]["plaza"]
    assert len(plaza["energy"]) == len(plaza["lineage"]) == 48
    assert plaza["population"] == sum(value >= 0 for value in plaza["energy"]) > 0
    assert len(first["regions"]["lab"]["free"]) == 8  # a region without life: its free energy
    assert first["ledger"]["balanced"] and first["ledger"]["people"] == 0
    wait_for(lambda: served.frame()["tick"] > first["tick"], what="the tick to advance")
    with connect(f"ws://127.0.0.1:{served.live.port}/ws") as socket_:
        hello = json.loads(socket_.recv(timeout=30))
        assert hello["type"] == "world" and hello["name"] == "agora_small" and hello["history"]
        ticks = [json.loads(socket_.recv(timeout=30))["tick"] for _ in range(3)]
    assert ticks == sorted(ticks) and ticks[-1] > ticks[0]
    cell = served.http.get("/api/cell", params={"region": "plaza", "cell": 3}).json()
    assert cell["at"] == [0, 3] and "asked" in cell and "free" in cell


BAD = [
    # (path, body, headers (None: the right secret), status)
    ("/api/pay", {"person": "ada", "region": "plaza", "at": [0, 0], "tokens": 5}, {"X-HCA-Secret": "nope"}, 403),
    ("/api/ask", {"person": "ada"}, {}, 403),
    ("/api/pay", {"person": "ada", "region": "moon", "at": [0, 0], "tokens": 5}, None, 404),
    ("/api/pay", {"person": "ada", "region": "lab", "at": [0], "tokens": 5}, None, 404),
    ("/api/pay", {"person": "ada", "region": "plaza", "at": [6, 0], "tokens": 5}, None, 422),
    ("/api/pay", {"person": "ada", "region": "plaza", "at": [0, 0, 0], "tokens": 5}, None, 422),
    ("/api/pay", {"person": "ada", "region": "plaza", "at": [0, 0], "tokens": -5}, None, 422),
    ("/api/pay", {"person": "ada", "region": "plaza", "at": [0, 0], "tokens": 10**12}, None, 422),
    ("/api/pay", {"person": "ada", "region": "plaza", "at": [0, 0], "tokens": 301}, None, 422),
    ("/api/pay", {"person": "ada", "region": "plaza", "at": [0, 0], "tokens": "5"}, None, 422),
    ("/api/pay", {"person": "ada", "region": "plaza", "at": [0, 0], "tokens": 5, "more": 1}, None, 422),
    ("/api/pay", {"person": "a b", "region": "plaza", "at": [0, 0], "tokens": 5}, None, 422),
    ("/api/pay", {"person": "ada", "region": "plaza", "at": [0, 0], "tokens": 5, "question": 999}, None, 404),
    ("/api/pay", b'{"person": "ada", "region": ', None, 400),
    ("/api/pay", b"[1, 2", None, 400),
    ("/api/pay", b"x" * 70000, None, 413),
    ("/api/ask", {"person": "ada", "region": "plaza", "kind": "logic", "function": "XAND",
                  "cells": [{"at": [0, 0], "a": 1, "b": 0}]}, None, 422),
    ("/api/ask", {"person": "ada", "region": "plaza", "kind": "logic", "function": "XOR",
                  "cells": [{"at": [0, 0], "x": 0.5}]}, None, 422),
    ("/api/ask", {"person": "ada", "region": "plaza", "kind": "value", "function": "sine", "wanted": 0.5,
                  "cells": [{"at": [0, 0], "x": 0.5}]}, None, 422),
    ("/api/ask", {"person": "ada", "region": "plaza", "kind": "value", "wanted": 2.0,
                  "cells": [{"at": [0, 0], "x": 0.5}]}, None, 422),
    ("/api/ask", {"person": "ada", "region": "plaza", "kind": "value", "wanted": 0.5,
                  "cells": [{"at": [0, 0], "x": 0.5}, {"at": [0, 0], "x": 0.1}]}, None, 422),
    ("/api/ask", {"person": "ada", "region": "plaza", "kind": "logic", "function": "XOR",
                  "cells": [{"at": [0, k], "a": 1, "b": 0} for k in range(8)] + [{"at": [1, 0], "a": 1, "b": 0}]},
     None, 422),
    ("/api/ask", {"person": "ada", "region": "plaza", "kind": "logic", "function": "XOR", "reward": 5000,
                  "cells": [{"at": [0, 0], "a": 1, "b": 0}]}, None, 422),
]


def test_bad_requests_get_4xx_and_change_nothing(served):
    desk = served.run.people
    events = served.run.run_dir.path / EVENTS
    before = (desk.applied, events.read_text(), (served.run.run_dir.path / BALANCES).read_text())
    for path, body, headers, status in BAD:
        response = served.post(path, body, headers)
        assert response.status_code == status, (body, response.text)
        assert response.json()["error"]
    time.sleep(0.3)  # chunks go by: nothing was queued
    assert desk.pending.empty() and not desk.held
    assert (desk.applied, events.read_text(), (served.run.run_dir.path / BALANCES).read_text()) == before
    assert served.frame()["ledger"]["people"] == 0


def test_people_ask_and_pay(served):
    frame = served.frame()
    cells = occupied_cells(frame, 3)
    ask = {"person": "ada", "region": "plaza", "kind": "logic", "function": "XOR", "reward": 120,
           "cells": [{"at": at, "a": 1, "b": k % 2} for k, at in enumerate(cells)]}
    response = served.post("/api/ask", ask)
    assert response.status_code == 202, response.text
    question = response.json()["request"]
    posed = served.outcome(question)["tick"]

    def answered():
        found = [q for q in served.frame()["questions"] if q["question"] == question]
        return found and any(c["answer"] is not None for c in found[0]["cells"]) and found[0]

    found = wait_for(answered, what="answers to the question")
    assert found["from"] == posed and found["open"] and found["person"] == "ada"
    given = [cell for cell in found["cells"] if cell["answer"] is not None]
    for cell in given:
        assert -1.0 <= cell["answer"] <= 1.0 and cell["organism"] > 0
        assert cell["right"] == ((cell["answer"] > 0) == (cell["a"] != cell["b"]))
    target = given[0]
    info = served.http.get("/api/cell", params={"region": "plaza", "cell": target["cell"]}).json()
    assert info["asked"] and info["answers"] and info["answers"][-1]["question"] == question

    response = served.post("/api/pay", {"person": "ada", "region": "plaza", "at": target["at"], "tokens": 120,
                                        "question": question})
    assert response.status_code == 202, response.text
    outcome = served.outcome(response.json()["request"])
    paid = outcome["paid"]
    assert 0 <= paid <= 120
    wait_for(lambda: served.frame()["ledger"]["people"] == paid, what="the payment in the ledger")
    people = served.http.get("/api/people").json()
    assert people["people"]["ada"] == {"tokens": 1000 - paid, "paid": paid, "asked": 1}
    balances = json.loads((served.run.run_dir.path / BALANCES).read_text())
    assert balances["people"]["ada"]["tokens"] == 1000 - paid and balances["applied"] == 2
    events = read_events(served.run.run_dir.path)
    assert [e["action"] for e in events] == ["ask", "pay"] and events[1]["paid"] == paid
    assert events[1]["tick"] >= events[0]["tick"] == posed

    # Bounded: a person cannot pay more than their balance (queued payments count).
    for _ in range(3):
        assert served.post("/api/pay", {"person": "bob", "region": "plaza", "at": [0, 0], "tokens": 300}).status_code \
            in (202, 409)
    late = served.post("/api/pay", {"person": "bob", "region": "plaza", "at": [0, 0], "tokens": 300})
    balance = served.http.get("/api/people").json()["people"].get("bob", {"tokens": 1000})["tokens"]
    assert late.status_code == 409 or balance >= 300


def test_open_questions_and_the_queue_are_bounded(tmp_path):
    world = parse_world(WORLD)
    desk = Desk.start(world, tmp_path)
    ask = {"person": "ada", "region": "plaza", "kind": "logic", "function": "AND",
           "cells": [{"at": [0, 0], "a": 1, "b": 1}]}
    for _ in range(3):
        desk.submit(parse("ask", ask))
    with pytest.raises(Refused) as refused:
        desk.submit(parse("ask", ask))
    assert refused.value.status == 409 and "open" in str(refused.value)
    for k in range(3):
        desk.submit(parse("pay", {"person": "bob", "region": "plaza", "at": [0, 0], "tokens": 300}))
    with pytest.raises(Refused) as refused:
        desk.submit(parse("pay", {"person": "bob", "region": "plaza", "at": [0, 0], "tokens": 300}))
    assert refused.value.status == 409 and "100 tokens free" in str(refused.value)
    for k in range(100):
        try:
            desk.submit(parse("pay", {"person": f"p{k}", "region": "plaza", "at": [0, 0], "tokens": 1}))
        except Refused as error:
            assert error.status in (409, 429)
            break
    else:
        raise AssertionError("the queue grew without bound")
    desk.finish(0)
    with pytest.raises(Refused) as refused:
        desk.submit(parse("pay", {"person": "bob", "region": "plaza", "at": [0, 0], "tokens": 1}))
    assert refused.value.status == 409 and "ended" in str(refused.value)


def test_a_payment_checked_while_another_is_applied_counts_it(tmp_path, monkeypatch):
    """The page checks a request while the run applies queued ones (in another thread):
    each queued payment counts, as held or as paid, until and after it is booked. Bob
    has 1,000 tokens and 900 queued; a fourth 300 is refused whenever it comes."""
    desk = Desk.start(parse_world(WORLD), tmp_path)
    pay = {"person": "bob", "region": "plaza", "at": [0, 0], "tokens": 300}
    for _ in range(3):
        desk.submit(parse("pay", pay))
    refused = []

    def carry_out(apply_fns, state, event):  # a payment applied in full, and a request meanwhile
        event["paid"], event["organism"] = event["tokens"], 1
        with pytest.raises(Refused) as error:
            desk.submit(parse("pay", pay))
        refused.append(error.value.status)
        return state

    monkeypatch.setattr(desk, "_carry_out", carry_out)
    desk.apply(None, None, 0)
    assert refused == [409, 409, 409]
    assert desk.people["bob"]["tokens"] == 100 and not desk.held
    with pytest.raises(Refused, match="100 tokens free"):
        desk.submit(parse("pay", pay))


def run_with_people(path, steps, actions, world=None, devices=None):
    """A run of the small agora whose observer submits ``actions`` {tick: [(kind, body)]}."""
    world = copy.deepcopy(WORLD if world is None else world)
    world["run"] = {"report_every": 20, "checkpoint_every": 40, "keep": 10}
    run = Run.start(parse_world(world), path, steps, devices=devices)

    def observe(state, tick, line):
        for kind, body in actions.get(tick, []):
            if kind == "pay" and body["at"] is None:  # the first occupied cell, now
                occupied = np.argwhere(np.asarray(state.regions[0].life.occupied))[0]
                body = {**body, "at": [int(c) for c in occupied]}
            run.people.submit(parse(kind, body))

    run.advance(handle_signals=False, observer=observe)
    return run


def test_resume_replays_the_event_log_bitwise(tmp_path, capsys):
    ask = {"person": "ada", "region": "plaza", "kind": "value", "function": "sine", "ticks": 50,
           "cells": [{"at": [1, 2], "x": 0.5}, {"at": [3, 3], "x": -0.25}]}
    pay = {"person": "ada", "region": "plaza", "at": None, "tokens": 250}
    # Actions before the checkpoint at 120 and after it (replayed from the log on resume).
    whole = run_with_people(tmp_path / "whole", 200, {20: [("ask", ask)], 60: [("pay", pay)],
                                                      140: [("pay", pay), ("ask", {**ask, "person": "bob"})]})
    events = read_events(whole.run_dir.path)
    assert [e["tick"] for e in events] == [20, 60, 140, 140] and events[1]["paid"] > 0
    digest = state_digest(whole.state)
    for kept in ([120], [], [40, 80]):
        copy_ = tmp_path / f"from-{kept}"
        shutil.copytree(whole.run_dir.path, copy_)
        for saved in (copy_ / "checkpoints").iterdir():
            if int(saved.name) not in kept:
                shutil.rmtree(saved)
        run = Run.resume(copy_)
        run.advance(handle_signals=False)
        assert state_digest(run.state) == digest, kept
        for name in (EVENTS, BALANCES, "metrics.jsonl"):
            assert (copy_ / name).read_text() == (whole.run_dir.path / name).read_text(), (kept, name)
    # hca inspect counts what people did before the checkpoint's tick.
    assert main(["inspect", str(whole.run_dir.path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    paid = sum(e.get("paid", 0) for e in events)
    assert report["ledger"]["people"] == report["people"]["paid"] == paid
    assert report["regions"]["plaza"]["people"] == {"questions": 2, "payments": 2, "paid": paid}
    assert report["people"]["people"]["bob"] == {"tokens": 1000, "paid": 0, "asked": 1}
    # A log that lost a line the checkpoint includes is refused, not guessed at.
    broken = tmp_path / "broken"
    shutil.copytree(whole.run_dir.path, broken)
    log = broken / EVENTS
    log.write_text("".join(log.read_text().splitlines(keepends=True)[1:]))
    with pytest.raises(RunDirectoryError, match="does not belong to this checkpoint"):
        Run.resume(broken)


def test_people_on_a_region_spread_over_8_devices_as_on_one(tmp_path):
    world = copy.deepcopy(WORLD)
    world["regions"]["plaza"]["axes"][0]["size"] = 8
    world["regions"]["plaza"]["placement"] = ["y"]
    ask = {"person": "ada", "region": "plaza", "kind": "logic", "function": "EQU",
           "cells": [{"at": [k, k], "a": 1, "b": 1} for k in range(8)]}
    pay = {"person": "ada", "region": "plaza", "at": None, "tokens": 250}
    actions = {20: [("ask", ask)], 40: [("pay", pay)], 60: [("pay", {**pay, "tokens": 7})]}
    one = run_with_people(tmp_path / "one", 100, actions, world, devices=1)
    eight = run_with_people(tmp_path / "eight", 100, actions, world, devices=8)
    assert eight.simulation.mesh is not None and eight.simulation.mesh.size == 8
    assert state_digest(one.state) == state_digest(eight.state)
    assert read_events(one.run_dir.path) == read_events(eight.run_dir.path)
    assert sum(event.get("paid", 0) for event in read_events(one.run_dir.path)) > 0


def test_people_only_in_small_regions_with_life(tmp_path, capsys):
    world = copy.deepcopy(WORLD)
    world["regions"]["lab"]["people"] = {}
    world["regions"]["plaza"]["axes"] += [{"name": "z", "size": 2}, {"name": "w", "size": 2}]
    path = tmp_path / "bad.yaml"
    path.write_text(json.dumps(world))
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "regions.plaza.people: expected a region of 1 to 3 axes" in err
    assert "regions.lab.people: expected organisms" in err


def test_serve_on_a_taken_port_writes_nothing(tmp_path, capsys):
    path = tmp_path / "world.yaml"
    path.write_text(json.dumps(WORLD))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = main(["run", str(path), "--steps", "10", "--out", str(tmp_path / "run"), "--serve", str(port)])
    assert code == 2 and "cannot serve the live page" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def chromium() -> str | None:
    for candidate in (os.environ.get("HCA_CHROMIUM"), "/usr/lib/chromium/chromium", shutil.which("chromium"),
                      shutil.which("chromium-browser")):
        if candidate and os.path.exists(candidate):
            return candidate
    return None


def browser_or_skip():
    """Playwright's sync context (``with``), once Chromium is known to be here."""
    if chromium() is None:
        message = "needs Chromium: apt-get install chromium (.ci/run installs it), or set HCA_CHROMIUM"
        if os.environ.get("HCA_REQUIRE_BROWSER"):
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    return sync_playwright()


def test_page_in_a_real_browser(served, tmp_path):
    # An earlier question (the test's own: tests may run on other workers) at occupied cells.
    cells = occupied_cells(served.frame(), 3)
    response = served.post("/api/ask", {"person": "cy", "region": "plaza", "kind": "logic", "function": "AND",
                                        "reward": 50, "cells": [{"at": at, "a": 1, "b": 1} for at in cells]})
    assert response.status_code == 202, response.text
    served.outcome(response.json()["request"])
    errors = []
    with browser_or_skip() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1300, "height": 1000})
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(served.url)
            page.wait_for_function("document.getElementById('status').textContent === 'live'", timeout=30000)
            page.wait_for_function("frame !== null", timeout=30000)
            # The lattice is drawn: the plaza's canvas has coloured pixels.
            coloured = page.evaluate("""() => {
                const c = document.querySelector('canvas[data-region=plaza]');
                const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                let n = 0; for (let i = 0; i < d.length; i += 4) if (d[i] !== d[i+1] || d[i+1] !== d[i+2]) n++;
                return n; }""")
            assert coloured > 100
            first = int(page.text_content("#tick").replace(",", ""))
            page.wait_for_function(f"Number(document.getElementById('tick').textContent.replace(/,/g, '')) > {first}",
                                   timeout=30000)
            # Click an occupied cell: the organism panel shows it.
            cell = page.evaluate("frame.regions.plaza.energy.findIndex((v) => v >= 0)")
            x, y = page.evaluate(f"place(views.plaza, {cell})")
            scale = page.evaluate("views.plaza.scale")
            page.click("canvas[data-region=plaza]", position={"x": x + scale / 2, "y": y + scale / 2})
            page.wait_for_selector("#organism th:has-text('generation')", timeout=30000)
            assert "plaza" in page.text_content("#organism")
            # Ask XOR at the occupied cells, wait for answers, pay for one.
            page.fill("#person", "eve")
            page.click("#clear-cells")
            page.click("#pick-occupied")
            page.select_option("#ask-kind", "logic")
            page.select_option("#ask-function", "XOR")
            page.click("#ask-button")
            mine = "#questions .question:has-text('eve asks XOR in plaza')"
            page.wait_for_selector(f"{mine} button", timeout=60000)
            # With the pointer over it, as a person reaching for a button, the list holds
            # still while the run goes on (else its buttons are replaced under the click).
            # The pointer rests on the button itself, scrolled into view first: a click that
            # had to scroll would move the list from under the pointer and let it be rebuilt.
            page.locator(f"{mine} button").first.hover()
            button = page.query_selector(f"{mine} button")
            now = int(page.text_content("#tick").replace(",", ""))
            page.wait_for_function(
                f"Number(document.getElementById('tick').textContent.replace(/,/g, '')) > {now + 3}", timeout=30000)
            assert button.evaluate("(b) => b.isConnected")
            # Clicked as a person would: whichever of eve's buttons is under the pointer now.
            page.locator(f"{mine} button").first.click()
            page.wait_for_function("Number(document.getElementById('paid').textContent.replace(/,/g, '')) > 0",
                                   timeout=60000)
            page.wait_for_selector("#messages div:has-text('tokens paid at tick')", timeout=30000)
            # A cell answers the newest question posed at it: eve's took cy's cells.
            questions = served.http.get("/api/people").json()["questions"]
            answering = [c["cell"] for q in questions for c in q["cells"] if c["answer"] is not None]
            assert len(answering) == len(set(answering))
            cy = next(q for q in questions if q["person"] == "cy")
            eve = {c["cell"] for q in questions if q["person"] == "eve" for c in q["cells"]}
            assert all(c["replaced"] == (c["cell"] in eve) for c in cy["cells"])
            assert all(c["answer"] is None for c in cy["cells"] if c["replaced"])
            if any(c["replaced"] for c in cy["cells"]):
                page.mouse.move(0, 0)  # the list shows the latest frame again
                page.wait_for_selector("#questions :text('asked again')", timeout=30000)
            tokens = int(page.text_content("#tokens").replace(",", ""))
            paid = served.http.get("/api/people").json()["people"]["eve"]["paid"]
            assert paid > 0 and tokens in (1000, 1000 - paid)  # the frame may lag the payment by one
            shot = Path(os.environ.get("HCA_TEST_ARTIFACTS", tmp_path)) / "live_page.png"
            shot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10000
        finally:
            browser.close()
    assert not errors, errors


def test_page_follows_a_request_until_the_run_takes_it(served):
    """A busy run can take long to apply a request: the page keeps asking for its
    outcome (with a fake clock, far past the 30 s it once gave up after) and reports it."""
    waiting = 110  # answers "queued" before "applied": more than the 100 polls it once made
    asked = []

    def outcome(route):
        asked.append(route.request.url)
        body = {"status": "queued"} if len(asked) <= waiting else {"status": "applied", "tick": 7, "paid": 5}
        route.fulfill(json=body)

    with browser_or_skip() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.clock.install()
            page.route("**/api/requests/424242", outcome)
            page.goto(served.url)
            page.wait_for_function("typeof follow === 'function'")
            page.evaluate("() => { follow(424242, (o) => `request 424242: ${o.paid} tokens paid at tick ${o.tick}`); }")
            while len(asked) <= waiting:
                before = len(asked)
                page.clock.run_for(3000)  # the next poll's timer fires
                deadline = time.monotonic() + 5
                while len(asked) == before and time.monotonic() < deadline:
                    page.evaluate("0")  # lets the route answer the poll's fetch
                if len(asked) == before:
                    break  # the page stopped asking
            assert len(asked) == waiting + 1
            page.clock.run_for(3000)
            page.wait_for_selector("#messages div:has-text('request 424242: 5 tokens paid at tick 7')",
                                   timeout=10000)
        finally:
            browser.close()


def served_by_hca_run(*argv):
    """``hca run ... --serve 0`` in a process of its own, once its run has ended and its
    page stays up: (the process, the page's base address, the secret)."""
    import subprocess
    import sys

    process = subprocess.Popen([sys.executable, "-m", "hca", "run", *map(str, argv), "--serve", "0", "--quiet"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = []
    for line in process.stderr:
        lines.append(line)
        if "stays up" in line:
            break
    address = next(line for line in lines if "live page at" in line).split("live page at ")[1].strip()
    assert address.startswith("http://127.0.0.1:") and "?secret=" in address
    base, secret = address.split("/?secret=")
    return process, base, secret


def interrupted(process):
    """Ctrl-C to a served run whose run has ended: (its exit status, what it printed)."""
    import signal

    try:
        process.send_signal(signal.SIGINT)
        out, _ = process.communicate(timeout=60)
    finally:
        process.kill()
    return process.returncode, out


def test_hca_run_serve_keeps_the_page_up_until_interrupted(tmp_path):
    path = tmp_path / "world.yaml"
    path.write_text(json.dumps(WORLD))
    process, base, secret = served_by_hca_run(path, "--steps", "200", "--out", tmp_path / "run")
    try:
        frame = httpx.get(f"{base}/api/frame", timeout=30).json()
        assert frame["tick"] == 200 and frame["finished"] == 200
        late = httpx.post(f"{base}/api/pay", headers={"X-HCA-Secret": secret}, timeout=30,
                          json={"person": "ada", "region": "plaza", "at": [0, 0], "tokens": 5})
        assert late.status_code == 409 and "ended" in late.json()["error"]
    finally:
        code, out = interrupted(process)
    assert code == 0 and "ledger balanced" in out
    # Resumed with the page, the charts start from the run's past (its metrics lines).
    process, base, _ = served_by_hca_run("--resume", tmp_path / "run", "--steps", "20")
    try:
        with connect(base.replace("http", "ws") + "/ws") as socket_:
            hello = json.loads(socket_.recv(timeout=30))
        ticks = [point["tick"] for point in hello["history"]]
        assert ticks[:11] == list(range(0, 201, 20)) and ticks[-1] == 220
        assert all(point["population"]["plaza"] > 0 for point in hello["history"])
    finally:
        code, _ = interrupted(process)
    assert code == 0
