"""Pictures of a run: the lattice at one tick, and the history in metrics.jsonl.

Drawing needs matplotlib (``pip install 'hca[viz]'``); nothing else in hca does.
"""

from __future__ import annotations

import math
import textwrap
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
    # Cells on a beach: outlined in red.
    shore = np.zeros(region.cells, bool)
    for beach in world.beaches:
        for side in beach.shores:
            if side.region == name:
                shore[side.cells(region)] = True
    shore = shore.reshape(shape)
    if len(shape) == 1:
        values, occupied, answering, shore = values[None, :], occupied[None, :], answering[None, :], shore[None, :]
    grid = values.reshape(-1, *values.shape[-2:])
    marks = answering.reshape(-1, *answering.shape[-2:])
    shores = shore.reshape(-1, *shore.shape[-2:])
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
        rows, columns = np.nonzero(shores[panel])
        if rows.size:
            ax.scatter(columns, rows, s=14, marker="s", facecolors="none", edgecolors="red", linewidths=0.6)
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
        hardware.set_title(hardware_title(axes_names, keep), fontsize=7)
    beached = " (red: cells on a beach)" if shore.any() else ""
    title = (f"{world.name} / {name}: tick {int(checkpoint.state.tick)}, "
             f"{int(occupied.sum()):,} organisms in {region.cells:,} cells ({' x '.join(axes_names)}){beached}")
    figure.suptitle(textwrap.fill(title, max(40, int(width / DPI * 13))), fontsize=9)
    figure.savefig(out, dpi=DPI)
    plt.close(figure)
    return out


def render_all(simulation, checkpoint, out: str) -> str:
    """Every region of the world, each drawn as ``render`` draws it, one under another."""
    import io

    plt = _pyplot()
    images = []
    for name in simulation.config.regions:
        buffer = io.BytesIO()
        render(simulation, checkpoint, buffer, name)
        buffer.seek(0)
        images.append(plt.imread(buffer, format="png"))
    width = max(image.shape[1] for image in images)
    channels = images[0].shape[2]
    blocks = []
    for image in images:
        pad = np.ones((image.shape[0], width - image.shape[1], channels), image.dtype)
        blocks.append(np.concatenate([image, pad], axis=1))
    plt.imsave(out, np.concatenate(blocks, axis=0))
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


def phylogeny_regions(lines: list[dict[str, Any]]) -> list[str]:
    """The regions whose metrics carry phylogeny measures, in first-seen order."""
    names: dict[str, None] = {}
    for line in lines:
        for name, region in line.get("regions", {}).items():
            if "phylogeny" in region:
                names[name] = None
    return list(names)


def plot_size(lines: list[dict[str, Any]]) -> tuple[int, int]:
    """Width and height in pixels of ``plot``'s picture: three panels, two more with
    tasks, two more with a phylogeny."""
    panels = 3 + 2 * bool(task_names(lines)) + 2 * bool(phylogeny_regions(lines))
    return PLOT_WIDTH, PANEL_HEIGHT * panels


def hardware_title(axes_names: list[str], keep: int) -> str:
    """The hardware map's title: its columns are the ``keep``-th axis, its rows the
    axes before it (one row when there are none)."""
    title = f"organisms per {axes_names[keep - 1]} (across)"
    if keep > 1:
        title += f" by {' x '.join(axes_names[: keep - 1])} (down)"
    return title


def clip_first_burst(ax, series: list, label: str = "the first reports") -> None:
    """Keep a panel readable when its first points dwarf the rest (e.g. MODES counts at
    the first report, when every type is new): scale to what follows, and say so."""
    values = np.atleast_2d(np.asarray(series, float))
    finite = np.isfinite(values).any(axis=0)
    if finite.sum() < 10:
        return
    first = np.flatnonzero(finite)[:3]  # the first three reports with values
    rest = values.copy()
    rest[:, first] = np.nan
    with np.errstate(all="ignore"):
        later, whole, low = np.nanmax(rest), np.nanmax(values), np.nanmin(rest)
    if np.isfinite(later) and later > 0 and whole > 3 * later:
        # Both ends from what is shown: the margin autoscaling left below the first
        # reports' range would otherwise take most of the panel.
        bottom = min(0.0, low)
        ax.set_ylim(bottom - 0.05 * (1.2 * later - bottom), 1.2 * later)
        ax.text(0.99, 0.95, f"{label} off scale (up to {whole:,.0f})", transform=ax.transAxes,
                ha="right", va="top", fontsize=7)


def _plot_evolution(modes_ax, diversity_ax, lines: list[dict[str, Any]], regions: list[str]) -> None:
    """MODES change and novelty; ecology, lineage entropy and complexity."""
    several = len(regions) > 1
    complexity_ax = diversity_ax.twinx()
    for region in regions:
        prefix = f"{region}: " if several else ""
        ticks, modes, entropy = [], [], []
        for line in lines:
            entry = line["regions"].get(region, {})
            if "phylogeny" in entry:
                ticks.append(line["tick"])
                modes.append(entry["phylogeny"].get("modes") or {})
                entropy.append(entry.get("life", {}).get("lineage_entropy_bits", np.nan))

        def series(key):
            return [np.nan if m.get(key) is None else m[key] for m in modes]

        modes_ax.plot(ticks, series("change"), label=f"{prefix}change")
        modes_ax.plot(ticks, series("novelty"), label=f"{prefix}novelty")
        clip_first_burst(modes_ax, [series("change"), series("novelty")])
        diversity_ax.plot(ticks, series("ecology"), label=f"{prefix}ecology (persistent types)")
        diversity_ax.plot(ticks, entropy, label=f"{prefix}lineage entropy")
        complexity_ax.plot(ticks, series("complexity"), ":", color="black", label=f"{prefix}complexity")
    modes_ax.set_ylabel("types per report")
    modes_ax.set_title("MODES: types passing the persistence filter that are new since the last report "
                       "(change) or ever (novelty)", fontsize=9)
    diversity_ax.set_ylabel("Shannon entropy (bits)")
    complexity_ax.set_ylabel("most active units")
    complexity_ax.legend(fontsize=7, loc="upper right")


def plot(lines: list[dict[str, Any]], out: str, title: str,
         shore_names: dict[str, tuple[str, str]] | None = None) -> str:
    """Population (and each living region's), births, deaths, moves and crossings of
    each beach, the ledger, and each task's answer quality and payments over time, from
    metrics lines; ``shore_names`` names each beach's two regions."""
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
        living = [name for name, entry in lines[0]["regions"].items() if "life" in entry]
        if len(living) > 1:  # each region's own population
            for name in living:
                life_ax.plot(ticks, [line["regions"][name]["life"]["population"] for line in lines], "--",
                             label=f"{name}: population")
        crossing = {name: beach for name, beach in lines[0].get("beaches", {}).items() if "crossed" in beach}
        if crossing and len(lines) > 1:  # organisms crossing each beach, each way, per interval
            cross_ax = life_ax.twinx()
            for name in crossing:
                shores = (shore_names or {}).get(name, ("its first shore", "its second shore"))
                for way in (0, 1):
                    crossed = [line["beaches"][name]["crossed"][way] for line in lines]
                    cross_ax.plot(ticks[1:], np.diff(crossed), ":", label=f"crossed {name} from {shores[way]}")
            cross_ax.set_ylabel("crossings per report interval")
            cross_ax.legend(fontsize=7, loc="upper right")
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
        quality_ax, paid_ax = axes[3:5]
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
    evolving = phylogeny_regions(lines)
    if evolving:
        _plot_evolution(axes[-2], axes[-1], lines, evolving)
    axes[-1].set_xlabel("tick")
    for ax in axes:
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="upper left")
        ax.grid(alpha=0.3)
    figure.suptitle(title, fontsize=10)
    figure.savefig(out, dpi=DPI)
    plt.close(figure)
    return out


def tree_layout(table: dict[str, np.ndarray]) -> np.ndarray:
    """A vertical position for every organism of a phylogeny table (``hca.phylogeny.
    standard_table``): leaves one apart in depth-first order, each parent midway
    between its first and last child."""
    from hca.phylogeny import parent_rows

    n = len(table["id"])
    parent_at = parent_rows(table)
    children: list[list[int]] = [[] for _ in range(n)]
    for child in np.argsort(table["origin_time"], kind="stable").tolist():
        if parent_at[child] >= 0:
            children[parent_at[child]].append(child)
    roots = [int(k) for k in np.argsort(table["origin_time"], kind="stable") if parent_at[k] < 0]
    y = np.zeros(n)
    leaf = 0
    stack: list[tuple[int, bool]] = [(root, False) for root in reversed(roots)]
    while stack:
        node, done = stack.pop()
        if done:
            y[node] = (y[children[node][0]] + y[children[node][-1]]) / 2
        elif children[node]:
            stack.append((node, True))
            stack.extend((child, False) for child in reversed(children[node]))
        else:
            y[node] = leaf
            leaf += 1
    return y


def tree(table: dict[str, np.ndarray], out: str, title: str, end: int, regions: list[str],
         colour: str = "founder") -> str:
    """Draw a phylogeny against time: each organism a horizontal line from its birth to
    its death (or the end), joined to its parent where it was born, coloured by its
    founder, its coarse genotype (``type``) or its ``complexity`` (active units)."""
    plt = _pyplot()
    from matplotlib.collections import LineCollection

    y = tree_layout(table)
    n = len(y)
    start = table["origin_time"].astype(float)
    stop = np.where(table["destruction_time"] < 0, end, table["destruction_time"]).astype(float)
    from hca.phylogeny import parent_rows

    parent_at = parent_rows(table)
    found = parent_at >= 0
    # Colour by founder: follow parents up to the roots.
    root = np.where(found, parent_at, np.arange(n))
    parent_at = np.maximum(parent_at, 0)  # roots: joined to nothing (masked by `found`)
    for _ in range(int(table["generation"].max(initial=0)) + 1):
        up = root[root]
        if np.array_equal(up, root):
            break
        root = up
    palette = plt.get_cmap("tab20")
    founders, colour_index = np.unique(root, return_inverse=True)
    colours = palette(colour_index % 20)
    legend = f"{len(founders)} founder lineage{'s' * (len(founders) != 1)}, by colour"
    if colour == "type":
        kinds, kind_index = np.unique(table["type"], return_inverse=True)
        colours = palette(kind_index % 20)
        colours[table["type"] < 0] = (0.7, 0.7, 0.7, 1.0)
        legend = f"{len(founders)} founder lineage{'s' * (len(founders) != 1)}; colour: coarse genotype"
    elif colour == "complexity":
        known = table["complexity"] >= 0
        top = max(int(table["complexity"].max(initial=1)), 1)
        colours = plt.get_cmap("viridis")(np.clip(table["complexity"], 0, None) / top)
        colours[~known] = (0.7, 0.7, 0.7, 1.0)
        legend = f"colour: active hidden units (dark 0 to yellow {top})"
    height = min(max(4.0, 0.02 * y.max(initial=1.0) + 3), 14.0)
    figure, ax = plt.subplots(figsize=(PLOT_WIDTH / DPI, height), dpi=DPI, layout="constrained")
    lives = np.stack([np.stack([start, y], 1), np.stack([stop, y], 1)], 1)
    ax.add_collection(LineCollection(lives, colors=colours, linewidths=0.6))
    joins = np.stack([np.stack([start, y[parent_at]], 1), np.stack([start, y], 1)], 1)[found]
    ax.add_collection(LineCollection(joins, colors=colours[found], linewidths=0.3, alpha=0.6))
    living = table["destruction_time"] < 0
    ax.scatter(stop[living], y[living], s=2, color=colours[living], zorder=3)
    ax.set_xlim(-0.01 * max(end, 1), end * 1.01 + 1)
    ax.set_ylim(-1, y.max(initial=0) + 1)
    ax.set_yticks([])
    ax.set_xlabel("tick")
    ax.set_title(
        f"{n:,} organisms: the living ({int(living.sum()):,}, dots) and their ancestors; {legend}"
        + (f"; regions {', '.join(regions)}" if len(regions) > 1 else ""),
        fontsize=9,
    )
    figure.suptitle(title, fontsize=10)
    figure.savefig(out, dpi=DPI)
    plt.close(figure)
    return out
