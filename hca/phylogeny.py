"""The run's phylogeny: every organism that ever lived, and what it says about evolution.

Births and deaths reach the host without the history ever living on the device: the
state keeps the deaths of the last ``drain_every`` ticks (``LifeState.died*``), and the
run *drains* them, with the organisms born since the last drain, at least that often.
Drains happen on the ticks that are multiples of ``drain_every`` or of the report
interval, and at the end of a run; each appends to two journals in the run directory,
binary files of fixed-size little-endian records (``BORN_RECORD``, ``DIED_RECORD``;
``numpy.fromfile`` reads them):

- ``phylogeny/born.bin``: ``id, parent, origin_time, region, cell, generation, type,
  complexity``, one record per organism (``type`` and ``complexity`` are -1 for
  organisms that never lived through a drain: their genomes were gone before anyone
  looked);
- ``phylogeny/died.bin``: ``id, region, destruction_time, cell``.

``origin_time`` is the tick during which an organism was born (0 for founders) and
``destruction_time`` the tick during which it died. ``region`` and ``cell`` are where
it was born in ``born.bin`` and where it died in ``died.bin`` (organisms cross
beaches). Ids are the state's ``organism_id``, unique in the world.

``write_standard`` joins the journals into ``phylogeny.csv`` in the ALife data
standard (``id, ancestor_list, origin_time, destruction_time`` plus the columns
above), optionally pruned to the ancestors of the living: the dead in the order they
died, then the living. The run's own file keeps the rows of those dead when it was last
written (``phylogeny/standard.npz``), and writes only the rows after them.

From what it drains, the ``Recorder`` keeps the tree of each region (the organisms
born there; a child born to an immigrant is a root there, its parent in the journals)
in ``phylotrackpy`` (pruning extinct branches), fed at each report with what happened
since the last (leaving out the subtrees that died out in between, which it would add
and prune again), and measures, at every report: phylogenetic diversity and
the MODES measures of open-ended evolution (Dolson et al. 2019): *change* (types
passing the persistence filter now that did not at the last report), *novelty* (types
passing it for the first time ever), *ecology* (Shannon entropy, in bits, of the
persistent types' abundances) and *complexity* (most active hidden units among
persistent organisms); ``run.phylogeny.track: false`` leaves the trees out, and keeps
the journals. An organism *persists* once it still has living descendants
(or lives itself) ``persistence`` ticks after a report that saw it alive. A *type* is
a coarse genotype: the signs of 16 fixed random projections of the genome's weights,
so that close relatives share a type and a type can be lost and found again.

Everything the recorder knows is derived from the journals, so a resumed run could
rebuild it by replaying them all, at tens of microseconds an organism (tens of minutes
for a million ticks of the default world). Instead, at each checkpoint the recorder
saves its trees as they were at its last regular report (``phylogeny/trees-TICK.npz``:
each tree's taxa with their parents and origins, the living with their types, the
MODES snapshots and sets), and a resumed run rebuilds each tree from the newest such
file it can use, with one taxon per living organism or ancestor, then replays the
journals' tails from there on: the journals, ``phylogeny.csv`` and the metrics come out
the same as in one uninterrupted run. Without a usable file (a run saved by an older
hca, or rolled back past every file) it replays the journals from tick 0.
"""

from __future__ import annotations

import io
import math
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from hca import brain, parallel
from hca.config import WorldConfig
from hca.organisms import id_offsets, world_places

DIRECTORY = "phylogeny"
BORN = "born.bin"
DIED = "died.bin"
STANDARD = "phylogeny.csv"
STANDARD_HEADER = "id,ancestor_list,origin_time,destruction_time,region,cell,generation,type,complexity\n"
FINAL = "standard.npz"  # how much of phylogeny.csv is final, and where its rest lies in the journals
BORN_RECORD = np.dtype([("id", "<i8"), ("parent", "<i8"), ("origin_time", "<i4"), ("region", "<i4"),
                        ("cell", "<i4"), ("generation", "<i4"), ("type", "<i4"), ("complexity", "<i4")])
DIED_RECORD = np.dtype([("id", "<i8"), ("region", "<i4"), ("destruction_time", "<i4"), ("cell", "<i4")])
BORN_COLUMNS = BORN_RECORD.names
DIED_COLUMNS = DIED_RECORD.names
SAVED_TREES = "trees-{tick}.npz"  # the trees at a regular report, saved with a checkpoint
TAIL_BLOCK = 1 << 20  # records a resume reads at a time, from a journal's end back
STANDARD_ROWS = 1 << 16  # rows of phylogeny.csv formatted at a time
TYPE_BITS = 16
# Births and deaths a tree keeps drained before it is fed at the latest (~70 MB).
PENDING_LIMIT = 1_000_000
# Genome tensors left out of a type: the inherited rates, which drift without meaning.
_UNTYPED = ("log_learning_rate", "log_mutation")


def type_projection(layout: brain.GenomeLayout) -> dict[str, np.ndarray]:
    """Fixed random projections of each typed genome tensor, (entries, TYPE_BITS)."""
    generator = np.random.default_rng(20190101)
    return {
        name: generator.standard_normal((math.prod(shape), TYPE_BITS)).astype(np.float32)
        for name, shape in layout.tensors
        if name not in _UNTYPED
    }


def genome_types(genome: dict[str, jax.Array], projection: dict[str, np.ndarray], lead: int) -> jax.Array:
    """(*S,) int32: each cell's coarse genotype, the sign bits of its projections."""
    total = None
    for name, matrix in projection.items():
        tensor = genome[name]
        flat = tensor.reshape((*tensor.shape[:lead], -1))
        part = jnp.einsum("...p,pb->...b", flat, jnp.asarray(matrix), precision=jax.lax.Precision.HIGHEST)
        total = part if total is None else total + part
    bits = (total > 0).astype(jnp.int32)
    weights = jnp.arange(TYPE_BITS, dtype=jnp.int32).reshape((1,) * lead + (TYPE_BITS,))
    return (bits << weights).sum(axis=-1)


def make_census(config: WorldConfig):
    """A jitted function of the state: what a drain reads from each living region."""
    regions = list(config.regions.values())
    plans = []
    for index, region in enumerate(regions):
        if region.organisms is not None:
            layout = brain.GenomeLayout.of(region.organisms.brain)
            plans.append((index, len(region.axes), type_projection(layout)))

    def census(state):
        out = []
        for index, lead, projection in plans:
            life = state.regions[index].life
            out.append({
                "died": life.died,
                "died_parent": life.died_parent,
                "died_generation": life.died_generation,
                "occupied": life.occupied.reshape(-1),
                "organism_id": life.organism_id.reshape(-1),
                "parent_id": life.parent_id.reshape(-1),
                "birth_tick": life.birth_tick.reshape(-1),
                "generation": life.generation.reshape(-1),
                "type": genome_types(life.genome, projection, lead).reshape(-1),
                "complexity": (life.genome["gate"] > 0).sum(axis=-1, dtype=jnp.int32).reshape(-1),
            })
        return out

    return jax.jit(census)


@dataclass
class Snapshot:
    """The living organisms of a region at a report tick."""

    tick: int
    ids: np.ndarray
    types: np.ndarray
    complexity: np.ndarray


@dataclass
class Tree:
    """One region's phylogeny as tracked so far, and its MODES bookkeeping."""

    name: str
    systematics: Any  # phylotrackpy Systematics: the living and their ancestors
    taxa: dict[int, Any] = field(default_factory=dict)  # id -> Taxon, pruned ones dropped
    living: dict[int, tuple[int, int]] = field(default_factory=dict)  # id -> (type, complexity)
    snapshots: list[Snapshot] = field(default_factory=list)
    seen: set[int] = field(default_factory=set)  # types that ever passed the filter
    previous: set[int] = field(default_factory=set)  # types passing it at the last report
    recorded: int = 0  # organisms recorded since tick 0
    pending: list[tuple[dict, dict]] = field(default_factory=list)  # drained, not yet fed to the tracker

    def saved(self) -> dict[str, np.ndarray]:
        """What ``restore`` needs to make this tree again, as arrays: the taxa in the order
        they were made (a parent before its children) with their parents (0: a root) and
        origin ticks, the living with their types, the MODES snapshots and sets."""
        taxa = list(self.taxa.values())
        parents = [taxon.get_parent() for taxon in taxa]
        living = np.array(list(self.living.values()), np.int64).reshape(-1, 2)
        snapshots = self.snapshots
        return {
            "recorded": np.int64(self.recorded),
            "taxa": np.fromiter(self.taxa, np.int64, len(taxa)),
            "parents": np.array([0 if parent is None else parent.get_info() for parent in parents], np.int64),
            "origins": np.array([taxon.get_origination_time() for taxon in taxa], np.int64),
            "living": np.fromiter(self.living, np.int64, len(self.living)),
            "living_types": living[:, 0],
            "living_complexity": living[:, 1],
            "snapshot_ticks": np.array([snapshot.tick for snapshot in snapshots], np.int64),
            "snapshot_sizes": np.array([len(snapshot.ids) for snapshot in snapshots], np.int64),
            "snapshot_ids": np.concatenate([np.zeros(0, np.int64)] + [s.ids for s in snapshots]),
            "snapshot_types": np.concatenate([np.zeros(0, np.int64)] + [s.types for s in snapshots]),
            "snapshot_complexity": np.concatenate([np.zeros(0, np.int64)] + [s.complexity for s in snapshots]),
            "seen": np.array(sorted(self.seen), np.int64),
            "previous": np.array(sorted(self.previous), np.int64),
        }

    def restore(self, saved: dict[str, np.ndarray], tick: int) -> None:
        """Make this (new) tree the one ``saved`` describes, as it was at ``tick``: each
        taxon made again under its parent, in the order it was first made, and those no
        longer living removed (all of them have living descendants, so none is pruned)."""
        systematics, taxa = self.systematics, self.taxa
        for organism, parent, origin in zip(*(saved[key].tolist() for key in ("taxa", "parents", "origins"))):
            systematics.set_update(origin)
            above = taxa.get(parent)
            taxa[organism] = systematics.add_org(organism) if above is None else systematics.add_org(organism, above)
        self.living = dict(zip(saved["living"].tolist(),
                               zip(saved["living_types"].tolist(), saved["living_complexity"].tolist())))
        systematics.set_update(tick)
        for organism in [organism for organism in taxa if organism not in self.living]:
            systematics.remove_org(taxa[organism])
        ends = np.cumsum(saved["snapshot_sizes"])
        self.snapshots = [
            Snapshot(int(at), *(saved[key][end - size:end] for key in
                                ("snapshot_ids", "snapshot_types", "snapshot_complexity")))
            for at, size, end in zip(saved["snapshot_ticks"].tolist(), saved["snapshot_sizes"].tolist(), ends.tolist())
        ]
        self.seen = set(saved["seen"].tolist())
        self.previous = set(saved["previous"].tolist())
        self.recorded = int(saved["recorded"])


_SAVED_KEYS = {
    "recorded", "taxa", "parents", "origins", "living", "living_types", "living_complexity", "snapshot_ticks",
    "snapshot_sizes", "snapshot_ids", "snapshot_types", "snapshot_complexity", "seen", "previous",
}


def _new_tree(name: str) -> Tree:
    from phylotrackpy import systematics

    tracker = systematics.Systematics(lambda organism: organism, True, True, False, False)
    tree = Tree(name, tracker)
    tracker.on_prune(lambda taxon: tree.taxa.pop(taxon.get_info(), None))
    return tree


class Recorder:
    """Drains births and deaths into the run's journals and tracks each region's tree."""

    def __init__(self, config: WorldConfig, run_path: str | os.PathLike[str]):
        self.config = config
        self.path = Path(run_path) / DIRECTORY
        self.every = config.run.phylogeny.drain_every
        self.persistence = config.run.phylogeny.persistence
        self.track = config.run.phylogeny.track
        self.living_regions = [
            (index, name, region) for index, (name, region) in enumerate(config.regions.items())
            if region.organisms is not None
        ]
        self.trees = [_new_tree(name) for _, name, _ in self.living_regions]
        self.census = make_census(config)
        self.world_cells = id_offsets(config)[1]
        # The tree of each living region, by region index.
        self.tree_of = np.full(len(config.regions), -1)
        self.tree_of[[index for index, _, _ in self.living_regions]] = np.arange(len(self.living_regions))
        self.drained = 0  # the journals hold everything that happened before this tick
        self.writes = parallel.writer()  # with several processes, the first writes the files
        self.started = False  # the founders are recorded
        self.reports: list[int] = []  # the regular reports measured, since tick 0
        # Whether the trees are still as the last regular report left them (nothing fed
        # since): only then can ``save`` write them.
        self.settled = True
        self.restored_from = -1  # the report whose saved trees a resume started from (-1: none)

    # -- the run's side ----------------------------------------------------------------

    @staticmethod
    def start(config: WorldConfig, run_path, state) -> Recorder:
        """A new phylogeny: empty journals, and the founders of ``state`` (at tick 0;
        from a later state, everyone alive then enters as a root)."""
        recorder = Recorder(config, run_path)
        if recorder.writes:
            recorder.path.mkdir(parents=True, exist_ok=True)
            for name in (BORN, DIED):
                _write_atomic(recorder.path / name, b"")
            forget_final(recorder.path)
            for tick in recorder._saved_ticks():  # of a run started again from tick 0
                (recorder.path / SAVED_TREES.format(tick=tick)).unlink()
        recorder.drained = int(state.tick)
        recorder.drain(state, recorder.drained)
        return recorder

    @staticmethod
    def resume(config: WorldConfig, run_path, state, tick: int, report_ticks: list[int], report_every: int) -> Recorder:
        """The recorder of a run resumed at ``tick`` (with ``state``): the journals are
        cut back to the last drain at or before it that any run reaching that tick makes
        (on the ``drain_every`` grid, or a regular report among ``report_ticks``, the
        metrics lines kept) and replayed, with a measure at every regular report; the
        state's journal covers what follows."""
        if tick == 0 or not (Path(run_path) / DIRECTORY / BORN).exists():
            return Recorder.start(config, run_path, state)
        recorder = Recorder(config, run_path)
        # The last drain every run reaching `tick` made: on the drain grid, or a report.
        regular = [t for t in report_ticks if t <= tick and t % report_every == 0]
        last = max([tick - tick % recorder.every, *regular])
        regular = [t for t in regular if t <= last]
        since = recorder.restored_from = recorder._restore(regular)
        # Only the journals' tails are read: what happened from `since` on is replayed,
        # and what happened from `last` on is cut (the state's journal holds it).
        journals = ((BORN, BORN_RECORD, "origin_time"), (DIED, DIED_RECORD, "destruction_time"))
        tails = [_journal_tail(recorder.path / name, record, column, since, recorder.every)
                 for name, record, column in journals]
        parallel.barrier("hca-journals-read")  # every process has read them before they are cut
        if recorder.writes:
            forget_final(recorder.path, after=last)  # phylogeny.csv's final part may end after the cut
        tables = []
        for (name, record, column), (start, table) in zip(journals, tails):
            keep = table[column] < last
            if name == BORN:
                keep |= table["generation"] == 0  # founders: origin 0, never cut
            if recorder.writes:
                _cut_journal(recorder.path / name, record, start, table, keep)
            tables.append({key: value[keep] for key, value in table.items()})
        recorder.started = True
        recorder._replay(*tables, [t for t in regular if t > since], since)
        recorder.reports = regular
        recorder.settled = bool(regular) and regular[-1] == last
        recorder.drained = last
        return recorder

    def save(self, keep: int) -> Path | None:
        """Save the trees as the last regular report left them (``SAVED_TREES``), for a
        resumed run to start from (called at each checkpoint); the newest ``keep`` files
        are kept, as many as the checkpoints. Nothing is saved when the trees were fed
        since (a report at a run's last tick, or ``PENDING_LIMIT`` events waiting), or
        by a process other than the first. Returns the file written, if any."""
        if not (self.writes and self.settled and self.reports):
            return None
        tick = self.reports[-1]
        arrays = {"reports": np.array(self.reports, np.int64)}
        for k, tree in enumerate(self.trees):
            arrays.update({f"{k}.{key}": value for key, value in tree.saved().items()})
        path = self.path / SAVED_TREES.format(tick=tick)
        temporary = path.with_name(f".{path.name}.tmp")
        with open(temporary, "wb") as out:
            np.savez(out, **arrays)
        os.replace(temporary, path)
        for old in sorted(self._saved_ticks())[:-keep]:
            (self.path / SAVED_TREES.format(tick=old)).unlink(missing_ok=True)
        return path

    def _saved_ticks(self) -> list[int]:
        prefix, suffix = SAVED_TREES.split("{tick}")
        ticks = []
        for path in self.path.glob(SAVED_TREES.format(tick="*")):
            number = path.name[len(prefix):-len(suffix)]
            if number.isdigit():
                ticks.append(int(number))
        return ticks

    def _restore(self, regular: list[int]) -> int:
        """Restore the trees from the newest saved file taken at one of the ``regular``
        reports (the metrics kept), after the same reports; returns its tick, or -1 when
        there is none (the trees stay empty)."""
        for tick in sorted((t for t in self._saved_ticks() if t in regular), reverse=True):
            try:
                with np.load(self.path / SAVED_TREES.format(tick=tick)) as data:
                    saved = {key: data[key] for key in data.files}
            except (OSError, ValueError, EOFError, zipfile.BadZipFile):
                continue  # cut short by a kill: an older one will do
            trees = [{key.split(".", 1)[1]: value for key, value in saved.items() if key.startswith(f"{k}.")}
                     for k in range(len(self.trees))]
            if any(set(tree) != _SAVED_KEYS for tree in trees) or "reports" not in saved:
                continue
            if saved["reports"].tolist() != [t for t in regular if t <= tick]:
                continue
            for tree, arrays in zip(self.trees, trees):
                tree.restore(arrays, tick)
            return tick
        return -1

    def drain(self, state, tick: int) -> None:
        """Record what happened since the last drain, up to ``tick`` (the state's)."""
        self.finish(self.collect(state, tick))

    def collect(self, state, tick: int) -> tuple[int, Any]:
        """Start reading what a drain at ``tick`` needs from the state, without waiting
        for it: the run can go on stepping (the state may be donated) while the device
        works, and ``finish`` records it later, before the next ``collect``."""
        if tick - self.drained > self.every:
            raise RuntimeError(f"drain at tick {tick}: the state keeps {self.every} ticks, last drain {self.drained}")
        return tick, self.census(state)

    def finish(self, collected: tuple[int, Any]) -> None:
        """Record a collected drain: journals appended. The trees are fed at the next
        ``measure`` (or once ``PENDING_LIMIT`` events wait), so that organisms whose
        subtree has died out by then are left out (see ``_ingest``)."""
        tick, census = collected
        census = parallel.gather(census)
        born_rows, died_rows = [], []
        for k, data in enumerate(census):
            born, died = self._read(k, data, tick)
            born_rows.append(born)
            died_rows.append(died)
        empty = np.zeros(0, np.int64)
        born = {key: np.concatenate([empty] + [rows[key] for rows in born_rows]) for key in BORN_COLUMNS}
        died = {key: np.concatenate([empty] + [rows[key] for rows in died_rows]) for key in DIED_COLUMNS}
        for tree, events in zip(self.trees, self._by_tree(born, died)):
            tree.pending.append(events)
            if sum(len(b["id"]) + len(d["id"]) for b, d in tree.pending) > PENDING_LIMIT:
                self._feed(tree)
                self.settled = False
        for name, record, table in ((BORN, BORN_RECORD, born), (DIED, DIED_RECORD, died)):
            if self.writes:
                with open(self.path / name, "ab") as out:
                    out.write(_records(record, table).tobytes())
        self.started = True
        self.drained = tick

    def measure(self, tick: int, regular: bool = True) -> dict[str, dict[str, Any]]:
        """Each region's phylogeny metrics at a report tick (drained up to it). Only
        ``regular`` reports (on the report grid, not a run's last tick) are kept as
        MODES baselines, so that where a run stops does not change what follows."""
        for tree in self.trees:
            self._feed(tree)
        self.settled = regular
        if regular:
            self.reports.append(tick)
        if not self.track:
            return {tree.name: {"recorded_total": tree.recorded} for tree in self.trees}
        return {
            tree.name: {
                "recorded_total": tree.recorded,
                "phylogenetic_diversity": int(tree.systematics.get_phylogenetic_diversity()),
                "ancestors": int(tree.systematics.get_num_ancestors()),
                "modes": self._measure_tree(tree, tick, regular),
            }
            for tree in self.trees
        }

    # -- inside ------------------------------------------------------------------------

    def birthplace(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The region (its index) each organism was born in, and its cell there."""
        return world_places(self.config, (np.asarray(ids, np.int64) - 1) % self.world_cells)

    def _read(self, k: int, data: dict[str, np.ndarray], tick: int):
        """A drain's births and deaths in the k-th living region, as journal columns."""
        index, _, region = self.living_regions[k]
        cells = region.cells
        # Deaths during ticks [drained, tick): rows tick % J of the state's journal.
        died_id = np.moveaxis(data["died"], -2, 0).reshape(self.every, cells)
        died_parent = np.moveaxis(data["died_parent"], -2, 0).reshape(self.every, cells)
        died_generation = np.moveaxis(data["died_generation"], -2, 0).reshape(self.every, cells)
        ticks = np.arange(self.drained, tick)
        rows = ticks % self.every
        when, cell = np.nonzero(died_id[rows])
        when_tick = ticks[when]
        dead_id = died_id[rows][when, cell]
        dead_parent = died_parent[rows][when, cell]
        dead_generation = died_generation[rows][when, cell]
        order = np.lexsort((cell, when_tick))
        when_tick, cell = when_tick[order], cell[order]
        dead_id, dead_parent, dead_generation = dead_id[order], dead_parent[order], dead_generation[order]
        # Born since the last drain: the living (types known) and those already dead.
        occupied = data["occupied"]
        if not self.started:  # the founders (at tick 0: everyone alive)
            new = occupied
        else:
            new = occupied & (data["generation"] > 0) & (data["birth_tick"] >= self.drained)
        dead_birth = np.maximum((dead_id - 1) // self.world_cells - 1, 0)
        dead_new = (dead_generation > 0) & (dead_birth >= self.drained)
        born = {
            "id": np.concatenate([data["organism_id"][new], dead_id[dead_new]]),
            "parent": np.concatenate([data["parent_id"][new], dead_parent[dead_new]]),
            "origin_time": np.concatenate([data["birth_tick"][new], dead_birth[dead_new]]),
            "generation": np.concatenate([data["generation"][new], dead_generation[dead_new]]),
            "type": np.concatenate([data["type"][new], np.full(dead_new.sum(), -1)]),
            "complexity": np.concatenate([data["complexity"][new], np.full(dead_new.sum(), -1)]),
        }
        born["region"], born["cell"] = self.birthplace(born["id"])
        order = np.argsort(born["id"], kind="stable")
        born = {key: value[order].astype(np.int64) for key, value in born.items()}
        died = {"id": dead_id, "region": np.full(len(dead_id), index), "destruction_time": when_tick, "cell": cell}
        died = {key: value.astype(np.int64) for key, value in died.items()}
        return born, died

    def _by_tree(self, born: dict[str, np.ndarray], died: dict[str, np.ndarray]):
        """Births and deaths split by the living region the organisms were born in."""
        born_in = self.tree_of[self.birthplace(born["id"])[0]]
        died_in = self.tree_of[self.birthplace(died["id"])[0]]
        for k in range(len(self.trees)):
            yield ({key: value[born_in == k] for key, value in born.items()},
                   {key: value[died_in == k] for key, value in died.items()})

    def _feed(self, tree: Tree) -> None:
        """Ingest the tree's pending drains."""
        if tree.pending:
            born = {key: np.concatenate([b[key] for b, _ in tree.pending]) for key in BORN_COLUMNS}
            died = {key: np.concatenate([d[key] for _, d in tree.pending]) for key in DIED_COLUMNS}
            tree.pending = []
            self._ingest(tree, born, died)

    def _ingest(self, tree: Tree, born: dict[str, np.ndarray], died: dict[str, np.ndarray]) -> None:
        """Feed births and deaths to the tracker in the order they happened: by tick,
        deaths before births (an organism dies in ``decide``, is born in ``transfer``),
        founders first of all."""
        tree.recorded += len(born["id"])
        if not self.track:
            return
        # An organism born within these events that is dead at their end, and all of
        # whose descendants born in them are, is in a subtree the tracker would add and
        # prune again: the tree after the events (up to a report) is the same without
        # it (a parent is alive when its child is born, so it is never pruned before).
        # Most organisms die young and childless, and the tracker costs tens of
        # microseconds an organism (plus a step for each ancestor): over reports of 100
        # ticks this leaves out three organisms in four (over drains of 32, three in five).
        kept = with_ancestors(~np.isin(born["id"], died["id"]), rows_of(born["id"], born["parent"]))
        if not kept.all():
            died = {key: value[~np.isin(died["id"], born["id"][~kept])] for key, value in died.items()}
            born = {key: value[kept] for key, value in born.items()}
        n_born = len(born["id"])
        systematics, taxa, living = tree.systematics, tree.taxa, tree.living
        origin = np.where(born["generation"] == 0, -1, born["origin_time"])
        keys = np.concatenate([origin * 2 + 1, died["destruction_time"] * 2])
        order = np.argsort(keys, kind="stable").tolist()
        ids = born["id"].tolist() + died["id"].tolist()
        times = born["origin_time"].tolist() + died["destruction_time"].tolist()
        parents = born["parent"].tolist()
        kinds = list(zip(born["type"].tolist(), born["complexity"].tolist()))
        now = None
        for position in order:
            if times[position] != now:
                now = times[position]
                systematics.set_update(now)
            organism = ids[position]
            if position < n_born:
                parent = taxa.get(parents[position])
                taxa[organism] = systematics.add_org(organism) if parent is None else systematics.add_org(organism, parent)
                living[organism] = kinds[position]
            else:
                living.pop(organism, None)
                taxon = taxa.get(organism)
                if taxon is not None:
                    systematics.remove_org(taxon)

    def _replay(self, born: dict[str, np.ndarray], died: dict[str, np.ndarray], report_ticks: list[int],
                since: int = -1) -> None:
        """Ingest the journals' events from tick ``since`` on (-1: from the founders on),
        in order, measuring at each past report tick."""
        for tree, (b, d) in zip(self.trees, self._by_tree(born, died)):
            o = np.where(b["generation"] == 0, -1, b["origin_time"])
            gone_at = d["destruction_time"]
            start = since
            for tick in [*report_ticks, None]:
                end = np.iinfo(np.int64).max if tick is None else tick
                self._ingest(
                    tree,
                    {key: value[(o >= start) & (o < end)] for key, value in b.items()},
                    {key: value[(gone_at >= start) & (gone_at < end)] for key, value in d.items()},
                )
                if tick is None:
                    break
                start = tick
                if self.track:
                    self._measure_tree(tree, tick)

    def _measure_tree(self, tree: Tree, tick: int, regular: bool = True) -> dict[str, Any] | None:
        """Snapshot the living at a report tick; MODES measured against an older one."""
        if not regular:
            return self._modes(tree, tick, update=False)
        ids = np.fromiter(tree.living, np.int64, len(tree.living))
        values = np.array(list(tree.living.values()), np.int64).reshape(-1, 2)
        tree.snapshots.append(Snapshot(tick, ids, values[:, 0], values[:, 1]))
        return self._modes(tree, tick)

    def _modes(self, tree: Tree, tick: int, update: bool = True) -> dict[str, Any] | None:
        """MODES at ``tick`` from the report that saw the living ``persistence`` ticks
        ago; None until there is one. ``update`` records what passed the filter as seen."""
        old = [snapshot for snapshot in tree.snapshots if snapshot.tick <= tick - self.persistence]
        if not old:
            return None
        base = old[-1]
        # Older snapshots will never be the base again.
        tree.snapshots = [s for s in tree.snapshots if s.tick >= base.tick]
        persists = np.fromiter((int(i) in tree.taxa for i in base.ids), bool, len(base.ids))
        types = base.types[persists]
        distinct = set(np.unique(types).tolist())
        change = len(distinct - tree.previous)
        novelty = len(distinct - tree.seen)
        if update:
            tree.seen |= distinct
            tree.previous = distinct
        return {
            "from_tick": base.tick,
            "persistent": int(persists.sum()),
            "change": change,
            "novelty": novelty,
            "ecology": shannon_bits(np.unique(types, return_counts=True)[1]),
            "complexity": int(base.complexity[persists].max()) if persists.any() else None,
        }


def shannon_bits(counts: np.ndarray) -> float:
    """Shannon entropy in bits of abundances (0 for none or one kind)."""
    counts = np.asarray(counts, np.float64)
    counts = counts[counts > 0]
    if counts.size == 0:
        return 0.0
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum() + 0.0)


# -- the files ----------------------------------------------------------------------------


def read_journals(path: str | os.PathLike[str]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The two journals as columns of int64 (a record cut short by a kill is dropped)."""
    path = Path(path)
    return _records_from(path / BORN, BORN_RECORD, 0)[1], _records_from(path / DIED, DIED_RECORD, 0)[1]


def _journal_tail(path: Path, record: np.dtype, column: str, since: int,
                  every: int) -> tuple[int, dict[str, np.ndarray]]:
    """(start, columns of the records from ``start`` on) of a journal, such that every
    record before ``start`` happened before tick ``since`` (-1: all records). A drain
    appends what happened in at most ``every`` ticks before it, in drains' order, so a
    record before ``since - every`` ends a drain's records before ``since``: the file
    is read from its end back to the last such record only."""
    size = path.stat().st_size // record.itemsize
    start = 0
    if since > 0 and size:
        times = np.memmap(path, record, mode="r", shape=(size,))[column]
        for end in range(size, 0, -TAIL_BLOCK):
            before = np.flatnonzero(times[max(end - TAIL_BLOCK, 0):end] < since - every)
            if len(before):
                start = max(end - TAIL_BLOCK, 0) + int(before[-1]) + 1
                break
        del times
    return start, _records_from(path, record, start)[1]


def _cut_journal(path: Path, record: np.dtype, start: int, table: dict[str, np.ndarray], keep: np.ndarray) -> None:
    """Keep only the ``keep`` records of the tail that starts at record ``start`` (and
    no partial record a kill left). Those cut are the last records, so a truncation does
    it; otherwise (not seen in practice) the journal is written anew."""
    kept = int(np.argmin(keep)) if not keep.all() else len(keep)
    if keep[kept:].any():
        head = path.read_bytes()[:start * record.itemsize]
        tail = _records(record, {key: value[keep] for key, value in table.items()})
        _write_atomic(path, head + tail.tobytes())
    elif path.stat().st_size != (start + kept) * record.itemsize:
        os.truncate(path, (start + kept) * record.itemsize)


def _records_from(path: Path, record: np.dtype, start: int) -> tuple[int, dict[str, np.ndarray]]:
    """(records in the journal, columns of those from record ``start`` on)."""
    size = path.stat().st_size // record.itemsize if path.exists() else 0
    data = b""
    if size > start:
        with open(path, "rb") as journal:
            journal.seek(start * record.itemsize)
            data = journal.read((size - start) * record.itemsize)
    rows = np.frombuffer(data, record)
    return size, {name: rows[name].astype(np.int64) for name in record.names}


def _records_at(path: Path, record: np.dtype, rows: np.ndarray) -> dict[str, np.ndarray]:
    """Columns of the journal's records at ``rows`` (record numbers, in that order)."""
    if not len(rows):
        return {name: np.zeros(0, np.int64) for name in record.names}
    size = path.stat().st_size // record.itemsize
    picked = np.memmap(path, record, mode="r", shape=(size,))[rows]
    return {name: picked[name].astype(np.int64) for name in record.names}


def _records(record: np.dtype, table: dict[str, np.ndarray]) -> np.ndarray:
    rows = np.zeros(len(table[record.names[0]]), record)
    for name in record.names:
        rows[name] = table[name]
    return rows


def _write_atomic(path: Path, content: str | bytes) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    if isinstance(content, bytes):
        temporary.write_bytes(content)
    else:
        temporary.write_text(content, encoding="utf-8")
    os.replace(temporary, path)


def rows_of(ids: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """The row of each wanted id in ``ids`` (in any order), -1 where it is not there
    (a founder's parent 0, an ancestor pruned away)."""
    if not len(ids):
        return np.full(len(wanted), -1, np.int64)
    order = np.argsort(ids, kind="stable")
    where = np.minimum(np.searchsorted(ids[order], wanted), len(ids) - 1)
    return np.where(ids[order][where] == wanted, order[where], -1)


def parent_rows(table: dict[str, np.ndarray]) -> np.ndarray:
    """The row of each organism's parent in a phylogeny table, -1 for roots."""
    return np.where(table["parent"] > 0, rows_of(table["id"], table["parent"]), -1)


def with_ancestors(keep: np.ndarray, parents: np.ndarray) -> np.ndarray:
    """``keep`` (a bool per row) widened to every row that is an ancestor of a kept one;
    ``parents``: each row's parent row, -1 for none (``rows_of``)."""
    keep = keep.copy()
    frontier = keep.copy()
    while frontier.any():
        up = parents[frontier]
        up = up[up >= 0]
        frontier = np.zeros_like(keep)
        frontier[up[~keep[up]]] = True
        keep |= frontier
    return keep


def standard_table(run_path: str | os.PathLike[str], prune: bool = False) -> dict[str, np.ndarray]:
    """The phylogeny as columns: every organism recorded, by id, with its destruction
    time (-1 while alive). ``prune`` keeps only the living and their ancestors."""
    born, died = read_journals(Path(run_path) / DIRECTORY)
    table = _joined(born, died)
    if prune and len(table["id"]):
        keep = with_ancestors(table["destruction_time"] < 0, parent_rows(table))
        table = {key: value[keep] for key, value in table.items()}
    return table


def _joined(born: dict[str, np.ndarray], died: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Born records sorted by id, with each one's destruction time from ``died`` (-1:
    alive, or not in ``died``)."""
    order = np.argsort(born["id"], kind="stable")
    table = {key: value[order] for key, value in born.items()}
    destruction = np.full(len(table["id"]), -1, np.int64)
    where = rows_of(table["id"], died["id"])
    destruction[where[where >= 0]] = died["destruction_time"][where >= 0]
    table["destruction_time"] = destruction
    return table


def file_order(table: dict[str, np.ndarray]) -> np.ndarray:
    """The rows of a phylogeny table in the order ``phylogeny.csv`` lists them: the dead
    in the order they died (by id within a tick), then the living by id."""
    dead = table["destruction_time"] >= 0
    return np.lexsort((table["id"], np.where(dead, table["destruction_time"], np.iinfo(np.int64).max)))


def write_standard(run_path: str | os.PathLike[str], out: str | os.PathLike[str] | None = None,
                   prune: bool = False) -> Path:
    """Write the phylogeny in the ALife data standard (default ``RUN/phylogeny.csv``),
    ``STANDARD_ROWS`` rows at a time: a long run's file is far larger than its tables.
    Rows in ``file_order``: the dead first, in the order they died, then the living.

    The run's own file, unpruned, is written from where its last writing left its
    final part (``FINAL``): the rows of every organism then dead, which never change,
    and a later death is a later row. So that part is kept, and only the organisms
    alive then (``FINAL`` says where their births lie in the journal) and those born
    since are read from the journals and written again, however long any of them
    lives; the file is the same, bytes for bytes, as one written whole."""
    run_path = Path(run_path)
    regions = list(_region_names(run_path))
    if out is not None or prune:
        out = Path(out) if out is not None else run_path / STANDARD
        out.parent.mkdir(parents=True, exist_ok=True)
        temporary = out.with_name(f".{out.name}.tmp")
        table = standard_table(run_path, prune)
        with open(temporary, "wb") as csv:
            csv.write(STANDARD_HEADER.encode())
            _write_rows(csv, table, regions, file_order(table))
        os.replace(temporary, out)
        if out.resolve() == (run_path / STANDARD).resolve():
            forget_final(run_path / DIRECTORY)
        return out
    path, out = run_path / DIRECTORY, run_path / STANDARD
    final = _final_part(path, out)
    # The organisms alive at the last writing, and those born since; the deaths since.
    born_total, born = _records_from(path / BORN, BORN_RECORD, final["born"])
    living = _records_at(path / BORN, BORN_RECORD, final["living"])
    died_total, died = _records_from(path / DIED, DIED_RECORD, final["died"])
    candidates = {key: np.concatenate([living[key], born[key]]) for key in BORN_COLUMNS}
    candidates["at"] = np.concatenate([final["living"], np.arange(final["born"], born_total)])
    table = _joined(candidates, died)
    latest = max(final["tick"], int(born["origin_time"].max(initial=-1)), int(died["destruction_time"].max(initial=-1)))
    order = file_order(table)
    dead = int((table["destruction_time"] >= 0).sum())
    # The final part kept in place, the rest written after it; or a new file, whole.
    written = out if final["bytes"] else out.with_name(f".{out.name}.tmp")
    with open(written, "r+b" if final["bytes"] else "wb") as csv:
        csv.truncate(final["bytes"])
        csv.seek(final["bytes"])
        if not final["bytes"]:
            csv.write(STANDARD_HEADER.encode())
        _write_rows(csv, table, regions, order[:dead])
        csv.flush()
        done = csv.tell()
        _write_rows(csv, table, regions, order[dead:])
    if written != out:
        os.replace(written, out)
    # Written after the file: a writing cut short leaves the part written before final.
    if path.is_dir():
        saved = io.BytesIO()
        np.savez(saved, bytes=done, born=born_total, died=died_total, tick=latest, living=table["at"][order[dead:]])
        _write_atomic(path / FINAL, saved.getvalue())
    return out


def _final_part(path: Path, out: Path) -> dict[str, Any]:
    """What ``FINAL`` says of ``out``, or nothing final (no file, or one that does not
    fit the file and the journals as they are)."""
    nothing = {"bytes": 0, "born": 0, "died": 0, "tick": -1, "living": np.zeros(0, np.int64)}
    try:
        with np.load(path / FINAL, allow_pickle=False) as saved:
            final = {key: int(saved[key]) for key in ("bytes", "born", "died", "tick")}
            final["living"] = saved["living"].astype(np.int64)
        fits = (
            out.stat().st_size >= final["bytes"] > 0
            and (path / BORN).stat().st_size >= final["born"] * BORN_RECORD.itemsize
            and (path / DIED).stat().st_size >= final["died"] * DIED_RECORD.itemsize
            and ((final["living"] >= 0) & (final["living"] < final["born"])).all()
        )
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile):
        return nothing
    return final if fits else nothing


def forget_final(path: Path, after: int | None = None) -> None:
    """Drop ``FINAL`` (if it was written when the journals recorded tick ``after`` or
    later): the journals were started again, or cut back before it."""
    try:
        with np.load(path / FINAL, allow_pickle=False) as saved:
            keep = after is not None and int(saved["tick"]) < after
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile):
        keep = False
    if not keep:
        (path / FINAL).unlink(missing_ok=True)


def _write_rows(csv, table: dict[str, np.ndarray], regions: list[str], rows: np.ndarray) -> None:
    """Write the table's ``rows``, in that order."""
    for first in range(0, len(rows), STANDARD_ROWS):
        part = rows[first:first + STANDARD_ROWS]
        columns = (table[key][part].tolist() for key in
                   ("id", "parent", "origin_time", "destruction_time", "region", "cell", "generation", "type",
                    "complexity"))
        csv.write("".join(
            f"{organism},{'[NONE]' if parent == 0 else f'[{parent}]'},{origin},"
            f"{'inf' if destruction < 0 else destruction},{regions[region]},{cell},{generation},"
            f"{'' if kind < 0 else kind},{'' if complexity < 0 else complexity}\n"
            for organism, parent, origin, destruction, region, cell, generation, kind, complexity in zip(*columns)
        ).encode())


class MissingExtra(Exception):
    """An optional dependency is not installed."""


def require_converter():
    import warnings

    try:
        with warnings.catch_warnings():  # it warns when ete3, which hca does not use, is absent
            warnings.simplefilter("ignore")
            import alifedata_phyloinformatics_convert as converter
    except ImportError:
        raise MissingExtra(
            "Newick export needs alifedata-phyloinformatics-convert: pip install 'hca[phylo]'"
        ) from None
    return converter


def standard_frame(table: dict[str, np.ndarray], regions: list[str]):
    """A phylogeny table as the ALife standard's pandas DataFrame (needs hca[phylo])."""
    import pandas as pd

    return pd.DataFrame({
        "id": table["id"],
        "ancestor_list": ["[NONE]" if p == 0 else f"[{p}]" for p in table["parent"].tolist()],
        "origin_time": table["origin_time"],
        "destruction_time": np.where(table["destruction_time"] < 0, np.inf, table["destruction_time"]),
        "region": [regions[r] for r in table["region"].tolist()],
        "generation": table["generation"],
    })


def write_newick(table: dict[str, np.ndarray], out: str | os.PathLike[str], regions: list[str]) -> int:
    """Write each tree of a (pruned) phylogeny as Newick, one per line, branch lengths
    in ticks, through the ALife standard's own converter; returns how many trees."""
    converter = require_converter()
    frame = standard_frame(table, regions)
    trees = converter.alife_dataframe_to_dendropy_trees(frame, setattrs={"id": "organism"}, setup_edge_lengths=True)
    for tree in trees:  # nodes named by organism id
        for node in tree:
            if node.is_leaf():
                node.taxon = tree.taxon_namespace.new_taxon(str(node.organism))
            else:
                node.label = str(node.organism)
    _write_atomic(Path(out), "".join(tree.as_string(schema="newick") for tree in trees))
    return len(trees)


def _region_names(run_path) -> list[str]:
    from hca.checkpoint import RunDirectory

    return list(RunDirectory(run_path).world().regions)
