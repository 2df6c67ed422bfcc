"""Pictures of a run: the lattice at one tick, and the history in metrics.jsonl.

Drawing needs matplotlib (``pip install 'hca[viz]'``); nothing else in hca does.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

DPI = 100
PANEL_INCHES = 1.6


class MissingViz(Exception):
    """matplotlib is not installed."""


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise MissingViz(
            "drawing needs matplotlib: pip install 'hca[viz]' (or pip install matplotlib)"
        ) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def panel_grid(shape: tuple[int, ...]) -> tuple[int, int]:
    """(rows, columns) of panels for a region: one panel per cell of the axes before the
    last two; the last two outer axes (e.g. server, gpu) run across, the rest down."""
    outer = shape[:-2] if len(shape) > 2 else ()
    across = math.prod(outer[-2:]) if outer else 1
    down = math.prod(outer[:-2]) if len(outer) > 2 else 1
    return down, across


def render_size(shape: tuple[int, ...]) -> tuple[int, int]:
    """Width and height in pixels of ``render``'s picture of a region of ``shape``."""
    down, across = panel_grid(shape)
    width = math.ceil(across * PANEL_INCHES + 1.2) * DPI
    height = math.ceil(down * PANEL_INCHES * _aspect(shape) + 2.6) * DPI
    return width, height


def _aspect(shape: tuple[int, ...]) -> float:
    if len(shape) < 2:
        return 0.35
    return min(max(shape[-2] / shape[-1], 0.25), 2.0)


def render(simulation, checkpoint, out: str, region_name: str | None = None, show: str = "energy") -> str:
    """Draw one region at the checkpoint's tick: a panel per outer cell (for the default
    world, per GPU), each a map over the last two axes (SM x warp), and a hardware map of
    population per outer cell. The maps show the energy of the organisms (grey: empty
    cell), or with ``show="tasks"`` the task each cell shows (dots: where a group's
    answer is read)."""
    plt = _pyplot()
    world = simulation.config
    names = list(world.regions)
    name = region_name or next(
        (n for n, r in zip(names, checkpoint.state.regions) if r.life is not None), names[0]
    )
    index = names.index(name)
    region = world.regions[name]
    region_state = checkpoint.state.regions[index]
    shape = region.shape
    if region_state.life is not None:
        occupied = np.asarray(region_state.life.occupied)
        values = np.where(occupied, np.asarray(region_state.life.energy), np.nan).astype(float)
        label = "organism energy (grey: empty)"
    else:
        occupied = np.zeros(shape, bool)
        values = np.asarray(region_state.free_energy).astype(float)
        label = "free energy"
    cmap, vmin = plt.get_cmap("viridis").with_extremes(bad="#bbbbbb"), 0
    answering = np.zeros(shape, bool)
    names: list[str] = []
    if show == "tasks":
        from hca.tasks import GROUP_KINDS, Tasks

        if not region.tasks:
            raise ValueError(f"region {name!r} has no tasks")
        tasks = Tasks(region, index)
        task_of, position = tasks.sites(int(checkpoint.state.seed), np)
        names = tasks.names
        grouped = np.isin(task_of, [n for n, t in enumerate(region.tasks) if t.kind in GROUP_KINDS])
        answering = grouped & (position == 0)
        values = np.where(task_of >= 0, task_of, np.nan).astype(float)
        cmap = plt.get_cmap("tab10", max(len(names), 1)).with_extremes(bad="#eeeeee")
        vmin, label = -0.5, "task at each cell (light grey: none; dots: a group's answering cell)"
    if len(shape) == 1:
        values, occupied, answering = values[None, :], occupied[None, :], answering[None, :]
    grid = values.reshape(-1, *values.shape[-2:])
    marks = answering.reshape(-1, *answering.shape[-2:])
    down, across = panel_grid(shape)
    width, height = render_size(shape)
    figure = plt.figure(figsize=(width / DPI, height / DPI), dpi=DPI)
    top = 1.0 - 0.9 / (height / DPI)
    bottom = 1.9 / (height / DPI)
    panels = figure.add_gridspec(down, across, left=0.6 / (width / DPI), right=1 - 0.6 / (width / DPI),
                                 top=top, bottom=bottom, wspace=0.08, hspace=0.25)
    finite = values[np.isfinite(values)]
    vmax = float(finite.max()) if finite.size else 1.0
    if names:
        vmax = len(names) - 0.5
    axes_names = [axis.name for axis in region.axes]
    outer_names = axes_names[:-2] if len(shape) > 2 else []
    image = None
    for panel in range(down * across):
        ax = figure.add_subplot(panels[panel // across, panel % across])
        image = ax.imshow(grid[panel], cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto", interpolation="nearest")
        rows, columns = np.nonzero(marks[panel])
        if rows.size:
            ax.scatter(columns, rows, s=2, c="black", marker=".", linewidths=0)
        ax.set_xticks([])
        ax.set_yticks([])
        if outer_names:
            coordinate = np.unravel_index(panel, shape[:-2])
            ax.set_title(" ".join(f"{n[0]}{c}" for n, c in zip(outer_names, coordinate)), fontsize=6, pad=2)
    if image is not None:
        bar = figure.add_axes([0.6 / (width / DPI), 0.9 / (height / DPI), 0.45, 0.18 / (height / DPI)])
        colorbar = figure.colorbar(image, cax=bar, orientation="horizontal", label=label)
        if names:
            colorbar.set_ticks(range(len(names)), labels=names)
    if len(shape) > 2:
        # Hardware map: organisms per outer cell, over all but the last three axes.
        keep = max(len(shape) - 3, 1)
        population = occupied.reshape(*shape[:keep], -1).sum(axis=-1)
        population = population.reshape(-1, shape[keep - 1]) if keep > 1 else population[None, :]
        hardware = figure.add_axes([0.62, 0.25 / (height / DPI), 0.3, 1.3 / (height / DPI)])
        hardware.imshow(population, cmap="magma", aspect="auto", interpolation="nearest")
        hardware.set_xticks([])
        hardware.set_yticks([])
        if population.size <= 64:
            middle = (population.max() + population.min()) / 2
            for (row, column), count in np.ndenumerate(population):
                hardware.text(column, row, f"{count}", ha="center", va="center", fontsize=6,
                              color="black" if count > middle else "white")
        down_names = " x ".join(axes_names[: keep - 1]) or "-"
        hardware.set_title(f"organisms per {axes_names[keep - 1]} (across) by {down_names} (down)", fontsize=7)
    figure.suptitle(
        f"{world.name} / {name}: tick {int(checkpoint.state.tick)}, "
        f"{int(occupied.sum()):,} organisms in {region.cells:,} cells ({' x '.join(axes_names)})",
        fontsize=9,
    )
    figure.savefig(out, dpi=DPI)
    plt.close(figure)
    return out


PLOT_WIDTH = 900
PANEL_HEIGHT = 300  # pixels per panel of the history plot


def task_names(lines: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(region, task) of every task in metrics lines, in order of appearance."""
    names: list[tuple[str, str]] = []
    for line in lines:
        for region, entry in line.get("regions", {}).items():
            for task in entry.get("tasks", {}):
                if (region, task) not in names:
                    names.append((region, task))
    return names


def plot_size(lines: list[dict[str, Any]]) -> tuple[int, int]:
    """Width and height in pixels of ``plot``'s picture: three panels, five with tasks."""
    panels = 5 if task_names(lines) else 3
    return PLOT_WIDTH, PANEL_HEIGHT * panels


def plot(lines: list[dict[str, Any]], out: str, title: str) -> str:
    """Population, births and deaths, the ledger, and each task's answer quality and
    payments over time, from metrics lines."""
    plt = _pyplot()
    ticks = [line["tick"] for line in lines]
    tasks = task_names(lines)
    width, height = plot_size(lines)
    figure, axes = plt.subplots(
        height // PANEL_HEIGHT, 1, figsize=(width / DPI, height / DPI), dpi=DPI, sharex=True, layout="constrained"
    )
    life_ax, turnover_ax, ledger_ax = axes[:3]
    if any("life" in line for line in lines):
        life = [line.get("life", {}) for line in lines]
        life_ax.plot(ticks, [entry.get("population", 0) for entry in life], label="population")
        life_ax.plot(ticks, [entry.get("lineages", 0) for entry in life], label="lineages alive")
        turnover_ax.plot(ticks[1:], [entry.get("births", 0) for entry in life[1:]], label="births")
        turnover_ax.plot(ticks[1:], [entry.get("deaths", 0) for entry in life[1:]], label="deaths")
        turnover_ax.plot(ticks[1:], [entry.get("moves", 0) for entry in life[1:]], label="moves")
    else:
        life_ax.text(0.5, 0.5, "no organisms in this world", ha="center", va="center")
    life_ax.set_ylabel("organisms")
    turnover_ax.set_ylabel("per report interval")
    for key in ("free", "organisms", "total", "injected", "dissipated"):
        ledger_ax.plot(ticks, [line["ledger"][key] for line in lines], label=key)
    ledger_ax.set_ylabel("energy (quanta)")
    balanced = all(line["ledger"]["balanced"] for line in lines)
    ledger_ax.set_title("ledger " + ("balanced at every report" if balanced else "NOT BALANCED"), fontsize=9)
    if tasks:
        quality_ax, paid_ax = axes[3:]
        several = len({region for region, _ in tasks}) > 1
        for region, task in tasks:
            label = f"{region}/{task}" if several else task
            entries = [line["regions"].get(region, {}).get("tasks", {}).get(task) for line in lines[1:]]
            quality = [np.nan if e is None or e["mean_quality"] is None else e["mean_quality"] for e in entries]
            (curve,) = quality_ax.plot(ticks[1:], quality, label=label)
            relay = [np.nan if e is None or e.get("mean_relay_quality") is None else e["mean_relay_quality"]
                     for e in entries]
            if not np.isnan(relay).all():  # a group task: its later cells' partial results
                quality_ax.plot(ticks[1:], relay, "--", color=curve.get_color(), label=f"{label}, passed on")
            paid_ax.plot(ticks[1:], [np.nan if e is None else e["paid"] for e in entries], label=label)
        quality_ax.set_ylabel("mean answer quality")
        quality_ax.set_ylim(-0.02, 1.02)
        quality_ax.set_title(
            "tasks: mean quality of the answers of each report interval (1: all right; dashed: partial results)",
            fontsize=9,
        )
        paid_ax.set_ylabel("quanta paid per interval")
    axes[-1].set_xlabel("tick")
    for ax in axes:
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="upper left")
        ax.grid(alpha=0.3)
    figure.suptitle(title, fontsize=10)
    figure.savefig(out, dpi=DPI)
    plt.close(figure)
    return out
