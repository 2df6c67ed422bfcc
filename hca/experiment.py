"""Controlled experiments: a world as treatment against a control, over seeds.

Each arm and seed is an ordinary run directory under the experiment's directory
(``treatment-s1``, ``control-s1``, ...), so it can be inspected, plotted and treed,
and an interrupted experiment continues where it stopped when run again. The control
is the same world with something switched off (``CONTROLS``) or any keys changed
(``key.path=value``). Any metric of ``metrics.jsonl`` (a dotted path into its lines)
is summarised: its mean over the last ``late`` fraction of each run, per arm as a mean
with a 95% t-interval over seeds, and the paired difference treatment - control.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from hca.assay import interval
from hca.config import WorldConfig, parse_world
from hca.runner import Run, read_metrics

ARMS = ("treatment", "control")


def _every_living_region(key: str, value: Any) -> Callable[[dict], None]:
    def apply(world: dict) -> None:
        for region in world["regions"].values():
            if region.get("organisms") is not None:
                target = region["organisms"]
                *path, last = key.split(".")
                for part in path:
                    target = target.setdefault(part, {})
                target[last] = value

    return apply


def _no_tasks(world: dict) -> None:
    for region in world["regions"].values():
        region["tasks"] = []


# What a control can switch off, by name.
CONTROLS: dict[str, Callable[[dict], None]] = {
    "mutation-off": _every_living_region("mutation.enabled", False),
    "learning-off": _every_living_region("learning", False),
    "tasks-off": _no_tasks,
}


def control_world(world: WorldConfig, changes: list[str], source: str = "the control") -> WorldConfig:
    """``world`` with each change applied: a name from CONTROLS, or ``key.path=value``
    (the value read as YAML). Bad changes raise WorldFileError naming the key path."""
    from hca.config import WorldFileError

    data = world.model_dump(mode="json")
    problems = []
    for change in changes:
        if change in CONTROLS:
            CONTROLS[change](data)
            continue
        if "=" not in change:
            problems.append(("", f"{change!r}: expected one of {', '.join(CONTROLS)} or key.path=value"))
            continue
        key, text = change.split("=", 1)
        target = data
        *path, last = key.strip().split(".")
        try:
            for part in path:
                target = target.setdefault(part, {}) if isinstance(target, dict) else target[int(part)]
            if isinstance(target, list):
                target[int(last)] = yaml.safe_load(text)
            else:
                target[last] = yaml.safe_load(text)
        except (ValueError, IndexError, TypeError, AttributeError, yaml.YAMLError):
            problems.append((key.strip(), f"cannot set it to {text!r} here"))
    if problems:
        raise WorldFileError(source, problems)
    return parse_world(data, source)


def arm_world(world: WorldConfig, control: WorldConfig, arm: str, seed: int) -> WorldConfig:
    return (world if arm == "treatment" else control).with_seed(seed)


class Stopped(Exception):
    """A run of the experiment was stopped by a signal (after saving a checkpoint)."""

    def __init__(self, number: int):
        super().__init__(f"stopped by signal {number}")
        self.signal = number


def run_arm(world: WorldConfig, out: Path, ticks: int, report_every: int | None,
            report: Callable[[str], None] = lambda line: None,
            on_signal: Callable[[int, int], None] | None = None) -> list[dict]:
    """Run (or finish) one arm's run directory; its metrics lines. ``on_signal``: see
    ``Run.advance``."""
    if (out / "world.yaml").exists():
        lines = read_metrics(out / "metrics.jsonl")
        if lines and lines[-1]["tick"] >= ticks:
            return lines
        run = Run.resume(out, report=report)
        run.settings["target_tick"] = ticks
    else:
        run = Run.start(world, out, ticks, report_every=report_every, keep=1,
                        checkpoint_every=max(ticks // 4, report_every or world.run.report_every))
    report(f"{out}: ticks {run.start_tick}..{ticks}")
    outcome = run.advance(on_signal=on_signal)
    if outcome.stopped_by is not None:
        raise Stopped(outcome.stopped_by)
    return read_metrics(out / "metrics.jsonl")


def value_at(line: dict, path: str) -> float | None:
    """The number at a dotted path of a metrics line (None where there is none)."""
    value: Any = line
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def default_metrics(lines: list[dict]) -> list[str]:
    """Population, lineage entropy, phylogenetic diversity, MODES and every task's
    answer quality of each living region."""
    paths: dict[str, None] = {}
    for line in lines:
        for name, region in line.get("regions", {}).items():
            if "life" in region:
                for key in ("population", "lineage_entropy_bits"):
                    paths[f"regions.{name}.life.{key}"] = None
            if "phylogeny" in region:
                paths[f"regions.{name}.phylogeny.phylogenetic_diversity"] = None
                for key in ("change", "novelty", "ecology", "complexity"):
                    paths[f"regions.{name}.phylogeny.modes.{key}"] = None
            for task in region.get("tasks", {}):
                paths[f"regions.{name}.tasks.{task}.mean_quality"] = None
    return list(paths)


def late_mean(lines: list[dict], path: str, late: float) -> float | None:
    values = [value_at(line, path) for line in lines]
    values = [v for v in values if v is not None]
    if not values:
        return None
    count = max(1, int(round(len(values) * late)))
    return float(np.mean(values[-count:]))


def summarise(results: dict[str, dict[int, list[dict]]], metrics: list[str], late: float) -> dict[str, Any]:
    seeds = sorted(results["treatment"])
    out: dict[str, Any] = {"seeds": seeds, "late": late, "metrics": {}}
    for path in metrics:
        per_arm = {arm: {seed: late_mean(results[arm][seed], path, late) for seed in seeds} for arm in ARMS}
        differences = [
            per_arm["treatment"][seed] - per_arm["control"][seed]
            for seed in seeds
            if per_arm["treatment"][seed] is not None and per_arm["control"][seed] is not None
        ]
        out["metrics"][path] = {
            **{arm: {"per_seed": per_arm[arm], **interval(list(per_arm[arm].values()))} for arm in ARMS},
            "difference": interval(differences),
            "treatment_higher": sum(d > 0 for d in differences),
            "compared": len(differences),
        }
    return out


def _number(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"


def table(summary: dict[str, Any], title: str) -> str:
    """The summary as a Markdown table."""
    def cell(stats: dict) -> str:
        if stats["mean"] is None:
            return "-"
        if stats["low"] is None:
            return _number(stats["mean"])
        return f"{_number(stats['mean'])} [{_number(stats['low'])}, {_number(stats['high'])}]"

    lines = [
        f"# {title}",
        "",
        f"Mean over the last {summary['late']:.0%} of each run; mean [95% t-interval] over seeds "
        f"{', '.join(map(str, summary['seeds']))}; difference paired by seed.",
        "",
        "| metric | treatment | control | treatment - control | seeds treatment higher |",
        "|---|---|---|---|---|",
    ]
    for path, stats in summary["metrics"].items():
        lines.append(
            f"| {path} | {cell(stats['treatment'])} | {cell(stats['control'])} | {cell(stats['difference'])} "
            f"| {stats['treatment_higher']}/{stats['compared']} |"
        )
    return "\n".join(lines) + "\n"


def plot(results: dict[str, dict[int, list[dict]]], metrics: list[str], out: Path, title: str) -> Path:
    """Each metric over time: per arm, the mean over seeds and the range."""
    from hca.pictures import DPI, PANEL_HEIGHT, PLOT_WIDTH, _pyplot, clip_first_burst

    plt = _pyplot()
    figure, axes = plt.subplots(len(metrics), 1, figsize=(PLOT_WIDTH / DPI, PANEL_HEIGHT * len(metrics) / DPI),
                                dpi=DPI, sharex=True, layout="constrained", squeeze=False)
    for ax, path in zip(axes[:, 0], metrics):
        drawn = []
        for arm in ARMS:
            runs = list(results[arm].values())
            ticks = sorted({line["tick"] for lines in runs for line in lines})
            grid = np.full((len(runs), len(ticks)), np.nan)
            for row, lines in enumerate(runs):
                at = {line["tick"]: value_at(line, path) for line in lines}
                grid[row] = [np.nan if at.get(t) is None else at[t] for t in ticks]
            if np.isnan(grid).all():
                continue
            with warnings.catch_warnings():  # ticks where every seed lacks the metric
                warnings.simplefilter("ignore", RuntimeWarning)
                mean, low, high = np.nanmean(grid, 0), np.nanmin(grid, 0), np.nanmax(grid, 0)
            (curve,) = ax.plot(ticks, mean, label=f"{arm} (mean of {len(runs)})")
            ax.fill_between(ticks, low, high, color=curve.get_color(), alpha=0.2, linewidth=0)
            drawn.append(high)
        if drawn and len({len(values) for values in drawn}) == 1:
            clip_first_burst(ax, drawn)
        ax.set_title(path, fontsize=9)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="upper left")
    axes[-1, 0].set_xlabel("tick")
    figure.suptitle(title, fontsize=10)
    figure.savefig(out, dpi=DPI)
    plt.close(figure)
    return out


def experiment(
    world: WorldConfig,
    control: WorldConfig,
    out: str | Path,
    ticks: int,
    seeds: list[int],
    metrics: list[str] | None = None,
    report_every: int | None = None,
    late: float = 0.1,
    report: Callable[[str], None] = lambda line: None,
    description: str = "",
    on_signal: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Run both arms over the seeds (continuing what exists) and summarise; writes
    OUT/summary.md, OUT/summary.json and, with matplotlib, OUT/experiment.png.
    ``on_signal``: see ``Run.advance``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[int, list[dict]]] = {arm: {} for arm in ARMS}
    for seed in seeds:
        for arm in ARMS:
            results[arm][seed] = run_arm(arm_world(world, control, arm, seed), out / f"{arm}-s{seed}", ticks,
                                         report_every, report, on_signal)
    metrics = metrics or default_metrics(results["treatment"][seeds[0]])
    summary = summarise(results, metrics, late)
    summary.update(world=world.name, ticks=ticks, control=description)
    title = f"{world.name}: treatment vs control ({description}), {ticks:,} ticks"
    (out / "summary.md").write_text(table(summary, title), encoding="utf-8")
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=_json_safe) + "\n", encoding="utf-8")
    try:
        plot(results, metrics, out / "experiment.png", title)
    except Exception as error:  # matplotlib missing: the tables stand on their own
        from hca.pictures import MissingViz

        if not isinstance(error, MissingViz):
            raise
    return summary


def _json_safe(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else str(value)

