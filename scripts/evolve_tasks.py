"""Do organisms evolve to solve their tasks? A world against its control, over seeds.

    python scripts/evolve_tasks.py WORLD.yaml --ticks 20000 --seeds 0 1 2 --out runs/evolve

For each seed the world runs twice: as written (``evolving``) and with mutation
switched off (``control``: children are exact copies of their parents, so selection
can only sort the founders' variation). Each run is an ordinary run directory under
OUT (``evolving-s0``, ``control-s0``, ...), so it can be inspected and plotted, and
an interrupted experiment continues where it stopped when run again with the same
arguments. At the end it writes OUT/summary.md (a table: each task's mean answer
quality and energy earned per organism per tick, early and late, per arm, mean and
range over seeds; for a group task also the quality of the partial results its
later cells pass on), OUT/summary.json and OUT/evolution.png (both over time).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

import hca
from hca import experiment
from hca.checkpoint import RunDirectoryError
from hca.config import load_world
from hca.experiment import control_world

ARMS = ("evolving", "control")


def arm_world(world, arm: str, seed: int):
    """The world of one arm and seed: the control has mutation switched off. Neither
    tracks the phylogeny's tree (``run.phylogeny.track: false``; the journals and
    ``phylogeny.csv`` are written all the same): this experiment reads the tasks and
    the population only, and the tree's bookkeeping on the host can take longer than
    the ticks themselves."""
    changes = ["run.phylogeny.track=false"] + ([] if arm == "evolving" else ["mutation-off"])
    return control_world(world.with_seed(seed), changes)


def run_arm(world, out: Path, ticks: int, report_every: int) -> list[dict]:
    """Run (or finish) one arm's run directory; its metrics lines."""
    try:
        return experiment.run_arm(world, out, ticks, report_every,
                                  report=lambda line: print(line, file=sys.stderr, flush=True))
    except experiment.Stopped as stop:
        raise SystemExit(128 + stop.signal) from None


POPULATION = "(population)"  # the series of the population, beside the tasks'
PASSED_ON = ", passed on"  # after a group task's name: the partial results of its later cells


def series(lines: list[dict]) -> dict[str, dict[str, np.ndarray]]:
    """Per task: ticks, mean quality and quanta earned per organism per tick, per
    interval; for a group task also its later cells' partial results (quality only),
    under its name + PASSED_ON; and the population, under POPULATION."""
    out: dict[str, dict[str, list]] = {}
    for previous, line in zip(lines, lines[1:]):
        span = line["tick"] - previous["tick"]
        entry = out.setdefault(POPULATION, {"tick": [], "population": []})
        entry["tick"].append(line["tick"])
        entry["population"].append(line.get("life", {}).get("population", 0))
        for region in line["regions"].values():
            population = max(region.get("life", {}).get("population", 0), 1)
            for name, task in region.get("tasks", {}).items():
                entry = out.setdefault(name, {"tick": [], "quality": [], "earned": []})
                entry["tick"].append(line["tick"])
                quality = task["mean_quality"]
                entry["quality"].append(np.nan if quality is None else quality)
                entry["earned"].append(task["paid"] / population / span)
                if "relayed" in task:  # a group task: its later cells' partial results
                    entry = out.setdefault(f"{name}{PASSED_ON}", {"tick": [], "quality": [], "earned": []})
                    entry["tick"].append(line["tick"])
                    relay = task["mean_relay_quality"]
                    entry["quality"].append(np.nan if relay is None else relay)
                    entry["earned"].append(np.nan)  # paid with the task's answers
    return {name: {key: np.asarray(value, float) for key, value in entry.items()} for name, entry in out.items()}


def window(values: np.ndarray, part: str, fraction: float = 0.1) -> float:
    """Mean of the first or last ``fraction`` of a series (at least one point)."""
    count = max(1, int(round(len(values) * fraction)))
    chosen = values[:count] if part == "early" else values[-count:]
    return float(np.nanmean(chosen)) if np.isfinite(chosen).any() else float("nan")


def task_names(results: dict) -> list[str]:
    return sorted({name for arm in results.values() for run in arm.values() for name in run} - {POPULATION})


def summarise(results: dict[str, dict[int, dict]], seeds: list[int]) -> dict:
    tasks = task_names(results)
    summary: dict = {"seeds": seeds, "tasks": {}, "population": {}}
    for arm in ARMS:
        summary["population"][arm] = {
            seed: {part: window(results[arm][seed][POPULATION]["population"], part) for part in ("early", "late")}
            for seed in seeds
        }
    for name in tasks:
        entry = {}
        for arm in ARMS:
            per_seed = {}
            for seed in seeds:
                data = results[arm][seed].get(name)
                if data is None:
                    continue
                per_seed[seed] = {
                    f"{measure}_{part}": window(data[measure], part)
                    for measure in ("quality", "earned")
                    for part in ("early", "late")
                }
            entry[arm] = per_seed
        summary["tasks"][name] = entry
    return summary


def _stat(values: list[float], digits: int = 3) -> str:
    """Mean [min, max] of the finite values."""
    values = [v for v in values if np.isfinite(v)]
    if not values:
        return "-"
    return f"{np.mean(values):,.{digits}f} [{min(values):,.{digits}f}, {max(values):,.{digits}f}]"


def table(summary: dict) -> str:
    seeds = summary["seeds"]
    rows = [
        f"Mean over seeds {', '.join(map(str, seeds))} [min, max]; early: first 10% of the run, late: last 10%.",
        "",
        "| task | arm | quality early | quality late | change | earned/organism/tick early | late |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, entry in summary["tasks"].items():
        for arm in ARMS:
            runs = entry[arm].values()
            change = [run["quality_late"] - run["quality_early"] for run in runs]
            rows.append(
                f"| {name} | {arm} | {_stat([r['quality_early'] for r in runs])} | "
                f"{_stat([r['quality_late'] for r in runs])} | {_stat(change)} | "
                f"{_stat([r['earned_early'] for r in runs])} | {_stat([r['earned_late'] for r in runs])} |"
            )
        paired = [
            entry["evolving"][seed]["quality_late"] - entry["control"][seed]["quality_late"]
            for seed in seeds
            if seed in entry["evolving"] and seed in entry["control"]
        ]
        wins = sum(difference > 0 for difference in paired)
        rows.append(
            f"| {name} | evolving - control (late, paired by seed) | | {_stat(paired)} | "
            f"higher in {wins} of {len(paired)} seeds | | |"
        )
    rows += ["", "| population | early | late |", "|---|---|---|"]
    for arm in ARMS:
        runs = summary["population"][arm].values()
        rows.append(f"| {arm} | {_stat([r['early'] for r in runs], 0)} | {_stat([r['late'] for r in runs], 0)} |")
    return "\n".join(rows)


def _json(value):
    """``value`` with NaN (no data) as null, so that the file is standard JSON."""
    if isinstance(value, dict):
        return {key: _json(item) for key, item in value.items()}
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def plot(results: dict, out: Path, title: str) -> None:
    from hca.pictures import _pyplot

    plt = _pyplot()
    tasks = task_names(results)
    figure, axes = plt.subplots(2, len(tasks), figsize=(4.5 * len(tasks), 6.5), squeeze=False, sharex=True)
    colours = {"evolving": "tab:blue", "control": "tab:orange"}
    for column, name in enumerate(tasks):
        for row, measure in enumerate(("quality", "earned")):
            ax = axes[row][column]
            if name.endswith(PASSED_ON) and measure == "earned":
                ax.axis("off")
                ax.text(0.5, 0.5, "paid with the task's answers", ha="center", va="center", transform=ax.transAxes)
                axes[0][column].tick_params(labelbottom=True)
                axes[0][column].set_xlabel("tick")
                continue
            for arm in ARMS:
                curves = [run[name] for run in results[arm].values() if name in run]
                if not curves:
                    continue
                length = min(len(curve["tick"]) for curve in curves)
                ticks = curves[0]["tick"][:length]
                values = np.stack([curve[measure][:length] for curve in curves])
                ax.plot(ticks, np.nanmean(values, axis=0), color=colours[arm], label=f"{arm} (mean of {len(curves)})")
                ax.fill_between(ticks, np.nanmin(values, axis=0), np.nanmax(values, axis=0), color=colours[arm],
                                alpha=0.2, linewidth=0)
            ax.set_title(name if row == 0 else "", fontsize=10)
            ax.set_ylabel("mean answer quality" if measure == "quality" else "quanta earned per organism per tick")
            ax.grid(alpha=0.3)
            if row == 1:
                ax.set_xlabel("tick")
        axes[0][0].legend(fontsize=8)
    figure.suptitle(title, fontsize=11)
    figure.tight_layout()
    figure.savefig(out, dpi=100)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("world", help="a world file with tasks")
    parser.add_argument("--ticks", type=int, default=20000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--report-every", type=int, default=500)
    parser.add_argument("--out", required=True, help="directory for the runs and the summary")
    parser.add_argument("--no-plot", action="store_true", help="write no picture (no matplotlib needed)")
    args = parser.parse_args(argv)
    try:
        world = load_world(args.world)
    except hca.WorldFileError as error:
        print(f"evolve_tasks: error: {error}", file=sys.stderr)
        return 2
    if not any(region.tasks for region in world.regions.values()):
        print(f"evolve_tasks: error: {args.world}: the world has no tasks", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[int, dict]] = {arm: {} for arm in ARMS}
    for seed in args.seeds:
        for arm in ARMS:
            try:
                lines = run_arm(arm_world(world, arm, seed), out / f"{arm}-s{seed}", args.ticks, args.report_every)
            except RunDirectoryError as error:
                print(f"evolve_tasks: error: {error}", file=sys.stderr)
                return 2
            results[arm][seed] = series(lines)
    summary = summarise(results, args.seeds)
    text = table(summary)
    (out / "summary.md").write_text(f"# {world.name}: {args.ticks} ticks\n\n{text}\n", encoding="utf-8")
    (out / "summary.json").write_text(json.dumps(_json(summary), indent=1) + "\n", encoding="utf-8")
    print(text)
    if not args.no_plot:
        plot(results, out / "evolution.png", f"{world.name}: evolving vs control (mutation off), {args.ticks} ticks")
        print(f"{out / 'evolution.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
