"""The ``hca`` command line: validate a world file, run a world."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

EXIT_BAD_INPUT = 2


class UsageError(Exception):
    """A problem with what the user asked for, reported in one line with exit status 2."""


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {value}")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hca",
        description="Hyperspace cellular automata: worlds shaped like a GPU cluster.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    validate = commands.add_parser(
        "validate",
        help="check a world file and summarise it",
        description="Check a world file and print its regions, axes, cells, state size "
        "and how often each axis ticks. Exit status 2 if the file has problems.",
    )
    validate.add_argument("world", metavar="WORLD.yaml", help="the world file to check")
    validate.add_argument("--seed", type=_count, help="check with this seed instead of the file's")

    run = commands.add_parser(
        "run",
        help="run a world and record its metrics",
        description="Run a world for a number of ticks. Writes RUN_DIR/world.yaml (the "
        "resolved world) and RUN_DIR/metrics.jsonl (one JSON line per report).",
    )
    run.add_argument("world", metavar="WORLD.yaml", help="the world file to run")
    run.add_argument("--steps", type=_count, required=True, help="number of ticks to run")
    run.add_argument(
        "--out",
        required=True,
        metavar="RUN_DIR",
        help="directory for the run's files; must not exist or be empty",
    )
    run.add_argument("--seed", type=_count, help="seed for every random draw (default: the file's)")
    run.add_argument(
        "--report-every",
        type=_positive_int,
        metavar="K",
        help="ticks between metrics lines (default: the file's run.report_every)",
    )
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def _summary(world, path: str) -> str:
    import jax

    from hca import geometry
    from hca.config import diffusion_rates, RATE_ONE
    from hca.world import build

    simulation = build(world)
    shapes = jax.eval_shape(lambda: simulation.init(world.seed))
    state_bytes = sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree.leaves(shapes))
    cells = sum(region.cells for region in world.regions.values())
    count = len(world.regions)
    lines = [
        f"{path}: world {world.name!r}, seed {world.seed}, {count} region{'s' if count != 1 else ''}, "
        f"{cells:,} cells, {state_bytes:,} bytes of state",
    ]
    for name, region in world.regions.items():
        shape = "x".join(str(size) for size in region.shape)
        lines.append(f"region {name}: {len(region.axes)}-D, shape {shape}, {region.cells:,} cells")
        lines.append(f"  {'axis':<12}{'size':>6}{'stretch':>9}  {'curled':<8}{'diffusion':>10}  ticks")
        for axis, rate in zip(region.axes, diffusion_rates(region)):
            often = "every tick" if axis.stretch == 1 else f"every {axis.stretch} ticks"
            lines.append(
                f"  {axis.name:<12}{axis.size:>6}{axis.stretch:>9}  {'yes' if axis.curled else 'no':<8}"
                f"{rate / RATE_ONE:>10.4g}  {often} ({geometry.ticks_per_thousand(axis)} per 1000)"
            )
    schedule = simulation.schedule
    lines.append(
        f"super-step: {schedule.period} tick{'s' if schedule.period != 1 else ''}, "
        f"{len(schedule.ticking)} distinct sets of ticking axes"
    )
    return "\n".join(lines)


def _validate(args: argparse.Namespace) -> int:
    from hca.config import load_world

    world = load_world(args.world, seed=args.seed)
    print(_summary(world, args.world))
    return 0


def _prepare_run_dir(path: Path) -> None:
    if path.exists() and not path.is_dir():
        raise UsageError(f"{path}: exists and is not a directory")
    if path.is_dir() and any(path.iterdir()):
        raise UsageError(f"{path}: directory is not empty; choose a new --out")


def _metrics_line(simulation, state, previous: dict[str, Any] | None) -> dict[str, Any]:
    """One metrics.jsonl record. Life counters are given per interval (``births``) and
    since tick 0 (``births_total``)."""
    from hca.metrics import COUNTERS

    measured = simulation.ledger(state)
    regions = {}
    for name, ledger in measured["regions"].items():
        regions[name] = dict(ledger)
        if name in measured["life"]:
            life = dict(measured["life"][name])
            before = previous["regions"][name]["life"] if previous else {}
            for counter in COUNTERS:
                life[f"{counter}_total"] = life[counter]
                life[counter] -= before.get(f"{counter}_total", 0)
            regions[name]["life"] = life
    line = {"tick": measured["tick"], "ledger": measured["world"], "regions": regions}
    lives = [region["life"] for region in regions.values() if "life" in region]
    if lives:
        line["life"] = {
            key: sum(life[key] for life in lives)
            for key in ("population", *COUNTERS, *(f"{c}_total" for c in COUNTERS), "lineages")
        }
        line["life"]["deepest_generation"] = max(life["deepest_generation"] for life in lives)
    return line


def _run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from hca.config import load_world
    from hca.world import build

    world = load_world(args.world, seed=args.seed)
    out = Path(args.out)
    _prepare_run_dir(out)
    report_every = args.report_every or world.run.report_every

    simulation = build(world)
    state = simulation.init()
    out.mkdir(parents=True, exist_ok=True)
    resolved = out / "world.yaml"
    temporary = out / ".world.yaml.tmp"
    temporary.write_text(world.to_yaml(), encoding="utf-8")
    os.replace(temporary, resolved)

    started = time.perf_counter()
    with open(out / "metrics.jsonl", "w", encoding="utf-8") as metrics, tqdm(
        total=args.steps, unit="tick", disable=args.quiet, file=sys.stderr, dynamic_ncols=True
    ) as progress:
        line = _metrics_line(simulation, state, None)
        metrics.write(json.dumps(line) + "\n")
        done = 0
        try:
            while done < args.steps:
                chunk = min(report_every, args.steps - done)
                state = simulation.run(state, chunk)
                line = _metrics_line(simulation, state, line)
                done += chunk
                metrics.write(json.dumps(line) + "\n")
                metrics.flush()
                progress.update(chunk)
                postfix = {"population": line["life"]["population"]} if "life" in line else {}
                progress.set_postfix(**postfix, total=line["ledger"]["total"], refresh=False)
        except KeyboardInterrupt:
            progress.close()
            print(f"hca: interrupted after tick {done}; metrics so far are in {out}", file=sys.stderr)
            return 130
    elapsed = time.perf_counter() - started
    ledger = line["ledger"]
    verdict = "balanced" if ledger["balanced"] else "NOT BALANCED"
    print(
        f"{out}: {done} ticks in {elapsed:.1f} s; ledger {verdict}: total {ledger['total']:,} = "
        f"initial + injected {ledger['injected']:,} - dissipated {ledger['dissipated']:,}"
    )
    return 0 if ledger["balanced"] else 1


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from hca.config import WorldFileError

    try:
        if args.command == "validate":
            return _validate(args)
        return _run(args)
    except WorldFileError as error:
        print(f"hca: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except UsageError as error:
        print(f"hca: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
