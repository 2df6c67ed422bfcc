"""Reading a checkpoint without running anything: what a person asks of a run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from hca.checkpoint import Checkpoint, RunDirectory, state_digest
from hca.organisms import world_places
from hca.world import build


def load(run_dir: RunDirectory, tick: int | None, report) -> tuple[Any, Checkpoint]:
    """The simulation of a run directory and its newest good checkpoint (or ``tick``)."""
    world = run_dir.world()
    simulation = build(world)
    return simulation, run_dir.load(world, simulation.abstract_state(), tick=tick, report=report)


def _lineages(life, world, top: int = 5) -> dict[str, Any]:
    """The living's lineages; a lineage is named by its founder's region and cell
    (lineages cross beaches)."""
    names = list(world.regions)

    def founder(number: int) -> dict[str, Any]:
        (index,), (cell,) = world_places(world, [number])
        return {"founder_region": names[index], "founder_cell": int(cell)}

    occupied = np.asarray(life.occupied)
    founders = np.asarray(life.founder)[occupied]
    generation = np.asarray(life.generation)[occupied]
    counts = np.bincount(founders) if founders.size else np.zeros(0, np.int64)
    order = np.argsort(-counts, kind="stable")[:top]
    return {
        "living": int((counts > 0).sum()),
        "deepest_generation": int(generation.max()) if generation.size else 0,
        "mean_generation": float(generation.mean()) if generation.size else 0.0,
        "most_numerous": [
            {**founder(int(f)), "organisms": int(counts[f])} for f in order if counts[f] > 0
        ],
    }


def _genome_stats(life) -> dict[str, Any]:
    occupied = np.asarray(life.occupied)
    stats = {}
    for name, tensor in life.genome.items():
        values = np.asarray(tensor)[occupied]
        stats[name] = {
            "mean": float(values.mean()) if values.size else 0.0,
            "std": float(values.std()) if values.size else 0.0,
        }
    scales = np.exp(np.asarray(life.genome["log_mutation"])[occupied])
    mutation = {
        "mean": float(scales.mean()) if scales.size else 0.0,
        "min": float(scales.min()) if scales.size else 0.0,
        "max": float(scales.max()) if scales.size else 0.0,
    }
    return {"genome": stats, "mutation_scale": mutation}


def _task_stats(tasks: dict[str, dict[str, int]]) -> dict[str, dict[str, Any]]:
    """Each task since tick 0: questions posed and answered, mean quality, quanta paid;
    for a group task, also its later cells' partial results and their mean quality."""
    from hca.tasks import QUALITY_ONE

    def mean(counters: dict[str, int], quality: str, count: str) -> float | None:
        return counters[quality] / counters[count] / QUALITY_ONE if counters[count] else None

    stats = {}
    for name, counters in tasks.items():
        stats[name] = {
            "posed": counters["posed"],
            "answered": counters["answered"],
            "mean_quality": mean(counters, "quality", "answered"),
            "paid": counters["paid"],
        }
        if counters["relayed"]:  # a group task's partial results, at its later cells
            relay = mean(counters, "relay_quality", "relayed")
            stats[name].update(relayed=counters["relayed"], mean_relay_quality=relay)
    return stats


def summary(simulation, checkpoint: Checkpoint, path: str) -> dict[str, Any]:
    """Everything ``hca inspect`` reports, as plain JSON-ready values."""
    state = checkpoint.state
    world = simulation.config
    measured = simulation.ledger(state)
    from hca.runner import read_metrics, sessions_before

    reported = next(
        (line for line in read_metrics(Path(path) / "metrics.jsonl") if line.get("tick") == int(state.tick)), {}
    )
    regions = {}
    population = births = deaths = moves = 0
    for (name, region), region_state in zip(world.regions.items(), state.regions):
        entry: dict[str, Any] = {
            "axes": [axis.name for axis in region.axes],
            "shape": list(region.shape),
            "ledger": measured["regions"][name],
        }
        life = region_state.life
        if life is not None:
            entry["population"] = int(np.asarray(life.occupied).sum())
            entry["births"] = int(np.sum(life.births))
            entry["deaths"] = int(np.sum(life.deaths))
            entry["moves"] = int(np.sum(life.moves))
            entry["lineages"] = _lineages(life, world)
            entry.update(_genome_stats(life))
            population += entry["population"]
            births += entry["births"]
            deaths += entry["deaths"]
            moves += entry["moves"]
        if region_state.tasks is not None:
            entry["tasks"] = _task_stats(measured["tasks"][name])
        if name in reported.get("regions", {}):
            measures = reported["regions"][name]
            if "phylogeny" in measures:
                entry["phylogeny"] = dict(measures["phylogeny"])
                entry["phylogeny"]["lineage_entropy_bits"] = measures["life"]["lineage_entropy_bits"]
        regions[name] = entry
    beaches = {}
    for name, beach in zip(world.beach_names(), world.beaches):
        beaches[name] = {"shores": [shore.region for shore in beach.shores],
                         "cells": len(beach.shores[0].cells(world.regions[beach.shores[0].region])),
                         "carried": measured["beaches"][name]["carried"],
                         "crossed": measured["beaches"][name]["crossed"]}
    people = _people(world, path, int(state.tick))
    if people is not None:
        for name, paid in people.pop("regions").items():
            regions[name]["people"] = paid
    return {
        "run_dir": path,
        "world": world.name,
        "seed": world.seed,
        "tick": int(state.tick),
        "population": population,
        "births": births,
        "deaths": deaths,
        "moves": moves,
        "ledger": measured["world"],
        "regions": regions,
        **({} if people is None else {"people": people}),
        **({"beaches": beaches} if beaches else {}),
        # The parts of the run that computed this state (run.json), with what ran them.
        "sessions": sessions_before(RunDirectory(path).settings().get("sessions"), int(state.tick)),
        "state_digest": state_digest(state),
    }


def _people(world, path: str, tick: int) -> dict[str, Any] | None:
    """What people did before ``tick`` (from the run's event log): per person tokens left,
    paid and questions asked; per interactive region the questions, payments and quanta."""
    from hca.people import account, interactive, read_events

    regions = interactive(world)
    if not regions:
        return None
    people: dict[str, dict[str, int]] = {}
    per_region = {name: {"questions": 0, "payments": 0, "paid": 0} for name in regions}
    for event in read_events(Path(path)):
        if event["tick"] >= tick:
            break
        account(people, world, event)
        region = per_region[event["region"]]
        if event["action"] == "pay":
            region["payments"] += 1
            region["paid"] += event["paid"]
        else:
            region["questions"] += 1
    return {"paid": sum(r["paid"] for r in per_region.values()), "people": people, "regions": per_region}


def describe(report: dict[str, Any]) -> str:
    """The summary as text for a person."""
    ledger = report["ledger"]
    lines = [
        f"{report['run_dir']}: world {report['world']!r}, seed {report['seed']}, tick {report['tick']}",
        f"population {report['population']:,}; since tick 0: {report['births']:,} births, "
        f"{report['deaths']:,} deaths, {report['moves']:,} moves",
        f"ledger: free {ledger['free']:,} + organisms {ledger['organisms']:,} = total {ledger['total']:,}; "
        f"injected {ledger['injected']:,}"
        + (f" ({ledger['people']:,} paid by people)" if "people" in ledger else "")
        + f", dissipated {ledger['dissipated']:,}; {'balanced' if ledger['balanced'] else 'NOT BALANCED'}",
    ]
    for name, region in report["regions"].items():
        shape = " x ".join(f"{axis} {size}" for axis, size in zip(region["axes"], region["shape"]))
        lines.append(f"region {name}: {shape}")
        if "beach_in" in region["ledger"]:
            lines.append(f"  through beaches: in {region['ledger']['beach_in']:,}, "
                         f"out {region['ledger']['beach_out']:,} quanta since tick 0")
        if "population" not in region:
            lines.append("  no organisms")
            continue
        lineages = region["lineages"]
        several = sum("population" in r for r in report["regions"].values()) > 1
        top = ", ".join(
            f"{entry['founder_region'] + ' ' if several else ''}cell {entry['founder_cell']} ({entry['organisms']})"
            for entry in lineages["most_numerous"]
        )
        lines.append(
            f"  population {region['population']:,}; lineages alive {lineages['living']:,}; "
            f"generations: deepest {lineages['deepest_generation']}, mean {lineages['mean_generation']:.1f}"
        )
        if top:
            lines.append(f"  most numerous lineages (founder cell, organisms): {top}")
        scale = region["mutation_scale"]
        lines.append(
            f"  mutation scale: mean {scale['mean']:.4g}, min {scale['min']:.4g}, max {scale['max']:.4g}"
        )
        if "people" in region:
            given = region["people"]
            lines.append(
                f"  people: {given['questions']:,} questions asked, {given['payments']:,} payments, "
                f"{given['paid']:,} quanta paid (of injected)"
            )
        for task, stats in region.get("tasks", {}).items():
            quality = "-" if stats["mean_quality"] is None else f"{stats['mean_quality']:.3f}"
            lines.append(
                f"  task {task}: {stats['posed']:,} questions posed, {stats['answered']:,} answered, "
                f"mean quality {quality}, {stats['paid']:,} quanta paid"
            )
            if "relayed" in stats:
                lines.append(
                    f"    partial results passed on by later cells: {stats['relayed']:,}, "
                    f"mean quality {stats['mean_relay_quality']:.3f}"
                )
        if "phylogeny" in region:
            tree = region["phylogeny"]
            diversity = tree.get("phylogenetic_diversity")
            lines.append(
                f"  phylogeny: {tree['recorded_total']:,} organisms recorded; lineage entropy "
                f"{tree['lineage_entropy_bits']:.2f} bits"
                + ("; not tracked (run.phylogeny.track: false)" if diversity is None
                   else f"; phylogenetic diversity {diversity:,}")
            )
            modes = tree.get("modes")
            if diversity is not None and modes is None:
                lines.append("  MODES: none yet (no report old enough for the persistence filter)")
            elif modes is not None:
                lines.append(
                    f"  MODES (persistent since tick {modes['from_tick']}: {modes['persistent']:,}): "
                    f"change {modes['change']}, novelty {modes['novelty']}, ecology {modes['ecology']:.2f} bits, "
                    f"complexity {modes['complexity']}"
                )
        lines.append("  genome (mean +- std over the living):")
        for tensor, stats in region["genome"].items():
            lines.append(f"    {tensor:<18} {stats['mean']:+.4f} +- {stats['std']:.4f}")
    for name, beach in report.get("beaches", {}).items():
        first, second = beach["shores"]
        lines.append(f"beach {name} ({first} <-> {second}): carried {beach['carried'][0]:,} quanta from {first} to "
                     f"{second} and {beach['carried'][1]:,} back since tick 0 (free and in bodies), "
                     f"{beach['cells']:,} cells; organisms crossed {beach['crossed'][0]:,} from {first}, "
                     f"{beach['crossed'][1]:,} from {second}")
    if "people" in report:
        for person, given in report["people"]["people"].items():
            lines.append(f"person {person}: {given['asked']:,} questions asked, {given['paid']:,} tokens paid, "
                         f"{given['tokens']:,} left")
    for entry in report.get("sessions", []):
        get = lambda key: entry.get(key, "?")  # noqa: E731
        devices, processes = entry.get("devices", 1), entry.get("processes", 1)
        lines.append(f"from tick {get('from_tick')}: hca {get('hca')}, jax {get('jax')}, jaxlib {get('jaxlib')}, "
                     f"Python {get('python')} on {devices} {get('platform')} device{'s' if devices != 1 else ''}"
                     f"{f' in {processes} processes' if processes != 1 else ''}, started {get('started')}"
                     f"{f'; XLA_FLAGS {flags}' if (flags := entry.get('xla_flags')) else ''}")
    lines.append(f"state_digest {report['state_digest']}")
    return "\n".join(lines)
