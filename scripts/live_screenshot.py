"""A picture of the live page as a person uses it (the README's docs/live.png).

    python scripts/live_screenshot.py [WORLD.yaml] [--warm 3000] [--out docs/live.png]

Runs the world (the agora by default) with its page served, lets it run --warm ticks,
then opens the page in Chromium (Debian's ``chromium``, driven by Playwright; set
HCA_CHROMIUM to use another), asks the organisms of the first interactive region an
XOR question at its occupied cells, pays the first right answer, shows one of the
organisms that answered, and saves a screenshot of the whole page.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import hca
from hca.config import load_world
from hca.live import Live
from hca.runner import Run


def chromium() -> str:
    for candidate in (os.environ.get("HCA_CHROMIUM"), "/usr/lib/chromium/chromium", shutil.which("chromium")):
        if candidate and os.path.exists(candidate):
            return candidate
    sys.exit("live_screenshot.py: needs Chromium (apt-get install chromium, or set HCA_CHROMIUM)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("world", nargs="?", default=str(Path(hca.__file__).parent.parent / "worlds" / "agora.yaml"))
    parser.add_argument("--warm", type=int, default=3000, help="ticks run before the page is opened")
    parser.add_argument("--out", default="docs/live.png")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    world = load_world(args.world)
    region = next((name for name, r in world.regions.items() if r.people), None)
    if region is None:
        sys.exit(f"{args.world}: no interactive region (a region with a people: section)")
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as directory:
        run = Run.start(world, Path(directory) / "run", 10**9, checkpoint_every=10**9)
        live = Live(run.simulation, run.people)
        url = live.start()
        stop = threading.Event()
        worker = threading.Thread(target=run.advance, daemon=True,
                                  kwargs={"handle_signals": False, "observer": live.observe, "stop_event": stop})
        worker.start()
        while live.version == 0 or live._frame["tick"] < args.warm:
            time.sleep(0.5)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(url)
            page.wait_for_function("frame !== null && history.length > 1", timeout=60000)
            page.fill("#person", "ada")
            page.select_option("#ask-region", region)
            page.select_option("#ask-kind", "logic")
            page.select_option("#ask-function", "XOR")
            page.click("#pick-occupied")
            page.click("#ask-button")
            right = "#questions .question tr:has(.right) button"
            page.wait_for_selector(right, timeout=120000)
            page.click(f"{right} >> nth=0")
            page.wait_for_function("Number(document.getElementById('paid').textContent.replace(/,/g, '')) > 0",
                                   timeout=120000)
            page.wait_for_timeout(3000)  # answers come in
            cell = page.evaluate("frame.questions[0].cells.find((c) => c.answer !== null).cell")
            x, y = page.evaluate(f"place(views.{region}, {cell})")
            scale = page.evaluate(f"views.{region}.scale")
            page.click(f"canvas[data-region={region}]", position={"x": x + scale / 2, "y": y + scale / 2})
            page.click("#clear-cells")
            page.wait_for_selector("#organism th:has-text('generation')")
            page.wait_for_timeout(1500)
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=args.out, full_page=True)
            browser.close()
        stop.set()
        worker.join()
        live.close()
    print(f"{args.out}: the live page of {world.name} at tick {run.start_tick}")


if __name__ == "__main__":
    main()
