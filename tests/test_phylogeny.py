"""The phylogeny: every birth and death in the ALife data standard, consistent with the
state and with resumes; diversity and MODES measured as defined."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from test_life import living_world

from hca import phylogeny
from hca.config import parse_world
from hca.phylogeny import Recorder, shannon_bits
from hca.runner import Run, read_metrics
from hca.world import build

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


def phylo_world(drain_every=8, persistence=20):
    config = living_world()
    config["regions"]["grid"]["placement"] = ["a", "b"]  # tiles: the journal is tile-major
    config["run"] = {"phylogeny": {"drain_every": drain_every, "persistence": persistence}}
    return parse_world(config)


def read_standard(path):
    import pandas as pd

    return pd.read_csv(path)


def alive_cells(state, regions):
    """{id: cell} of everyone alive (ids are unique in the world)."""
    out = {}
    for index in regions:
        life = state.regions[index].life
        occupied = np.asarray(life.occupied).reshape(-1)
        for cell in np.flatnonzero(occupied):
            out[int(np.asarray(life.organism_id).reshape(-1)[cell])] = int(cell)
    return out


def alive_ids(state, regions):
    """{id: (parent id, birth tick, generation)} of everyone alive."""
    out = {}
    for index in regions:
        life = state.regions[index].life
        occupied = np.asarray(life.occupied).reshape(-1)
        ids = np.asarray(life.organism_id).reshape(-1)[occupied]
        parents = np.asarray(life.parent_id).reshape(-1)[occupied]
        births = np.asarray(life.birth_tick).reshape(-1)[occupied]
        generations = np.asarray(life.generation).reshape(-1)[occupied]
        for i, p, b, g in zip(ids, parents, births, generations):
            assert int(i) not in out
            out[int(i)] = (int(p), int(b), int(g))
    return out


def test_phylogeny_records_every_birth_and_death_as_the_state_saw_them(tmp_path):
    world = phylo_world()
    ticks = 61  # ends off the drain and report grid
    run = Run.start(world, tmp_path / "r", ticks, report_every=10, checkpoint_every=100)
    run.advance(handle_signals=False)

    # The same world stepped one tick at a time: who appears and who disappears.
    simulation = build(world)
    state = simulation.init()
    living = [index for index, region in enumerate(world.regions.values()) if region.organisms is not None]
    before = alive_ids(state, living)
    origin = {i: (p, 0, g) for i, (p, b, g) in before.items()}
    destroyed, died_at = {}, {}
    for tick in range(ticks):
        cells = alive_cells(state, living)
        state = simulation.run(state, 1)
        now = alive_ids(state, living)
        for i in before.keys() - now.keys():
            destroyed[i] = tick
            died_at[i] = cells[i]  # organisms die in decide, before anyone moves
        for i in now.keys() - before.keys():
            origin[i] = now[i]
            assert now[i][1] == tick  # born during this tick
        before = now

    table = read_standard(tmp_path / "r" / "phylogeny.csv")
    assert list(table.columns[:4]) == ["id", "ancestor_list", "origin_time", "destruction_time"]
    assert table["id"].is_unique
    assert set(table["id"]) == set(origin)
    assert len(destroyed) > 50 and sum(g > 0 for _, _, g in origin.values()) > 50
    rows = table.set_index("id")
    for organism, (parent, birth, generation) in origin.items():
        row = rows.loc[organism]
        assert row["ancestor_list"] == ("[NONE]" if parent == 0 else f"[{parent}]")
        assert row["origin_time"] == birth and row["generation"] == generation
        assert row["destruction_time"] == destroyed.get(organism, float("inf"))
    # The living have their types; every organism traces back to a founder.
    assert rows.loc[list(before), "type"].notna().all()
    parent_of = {i: p for i, (p, _, _) in origin.items()}
    for organism in origin:
        steps = 0
        while parent_of[organism]:
            organism = parent_of[organism]
            steps += 1
        assert origin[organism][2] == 0
    # Each death is journaled in the cell it happened in.
    _, died = phylogeny.read_journals(tmp_path / "r" / "phylogeny")
    assert dict(zip(died["id"].tolist(), died["cell"].tolist())) == died_at
    # The deaths the state counted are the deaths recorded.
    counted = sum(int(state.regions[index].life.deaths.sum()) for index in living)
    assert counted == len(destroyed) == np.isfinite(table["destruction_time"]).sum()


def test_the_standard_file_opens_in_the_fields_tools(tmp_path):
    converter = pytest.importorskip("alifedata_phyloinformatics_convert")
    run = Run.start(phylo_world(), tmp_path / "r", 40, report_every=10)
    run.advance(handle_signals=False)
    table = read_standard(tmp_path / "r" / "phylogeny.csv")
    graph = converter.alife_dataframe_to_networkx_digraph(table)
    assert graph.number_of_nodes() == len(table)
    pruned = read_standard(phylogeny.write_standard(tmp_path / "r", tmp_path / "pruned.csv", prune=True))
    assert len(pruned) < len(table)
    assert (pruned["destruction_time"] == float("inf")).sum() == (table["destruction_time"] == float("inf")).sum()
    # Every kept organism's ancestor is kept: a tree of the living.
    kept = set(pruned["id"])
    parents = pruned["ancestor_list"].str.strip("[]")
    assert all(p == "NONE" or int(p) in kept for p in parents)
    trees = converter.alife_dataframe_to_dendropy_trees(pruned, setup_edge_lengths=True)
    # One tree per surviving founder lineage (of both regions), leaves the living.
    roots = (pruned["ancestor_list"] == "[NONE]").sum()
    assert len(trees) == roots >= 2
    leaves = sum(len(tree.leaf_nodes()) for tree in trees)
    assert 0 < leaves <= (pruned["destruction_time"] == float("inf")).sum()


def test_the_standard_file_is_written_in_pieces(tmp_path, monkeypatch):
    Run.start(phylo_world(), tmp_path / "r", 40, report_every=10).advance(handle_signals=False)
    whole = (tmp_path / "r" / "phylogeny.csv").read_bytes()
    rows = len(phylogeny.standard_table(tmp_path / "r")["id"])
    assert whole.count(b"\n") == rows + 1 and rows > 3 * 7
    monkeypatch.setattr(phylogeny, "STANDARD_ROWS", 7)
    assert phylogeny.write_standard(tmp_path / "r", tmp_path / "pieces.csv").read_bytes() == whole


def test_the_standard_file_keeps_its_final_part_and_writes_the_rest(tmp_path, monkeypatch):
    """phylogeny.csv lists the dead in the order they died, then the living; a writing
    keeps the rows of those dead at the last one and formats only the organisms alive
    then or born since, however long ago the oldest of them was born."""
    written = []  # rows formatted by each call, in order
    rows = phylogeny._write_rows
    monkeypatch.setattr(phylogeny, "_write_rows", lambda out, table, regions, order: (
        written.append(len(order)), rows(out, table, regions, order)))
    world, run = phylo_world(), tmp_path / "r"
    Run.start(world, run, 40, report_every=10).advance(handle_signals=False)
    at_40 = phylogeny.standard_table(run)
    living_40 = at_40["destruction_time"] < 0
    assert written == [(~living_40).sum(), living_40.sum()]  # the first writing: whole
    written.clear()
    Run.resume(run, steps=20).advance(handle_signals=False)
    table = phylogeny.standard_table(run)
    born_since = (table["origin_time"] >= 40) & ~np.isin(table["id"], at_40["id"])
    # Only those alive at tick 40 and those born since were formatted, though dead
    # organisms were born after the oldest of those alive (the rows of an order by id
    # from the oldest living on).
    assert sum(written) == living_40.sum() + born_since.sum() < len(table["id"])
    oldest_living = at_40["id"][living_40].min()
    assert ((at_40["id"] > oldest_living) & ~living_40).sum() > 0
    csv = (run / "phylogeny.csv").read_bytes()
    assert list(read_standard(run / "phylogeny.csv")["id"]) == list(table["id"][phylogeny.file_order(table)])
    with np.load(run / "phylogeny" / phylogeny.FINAL) as final:
        final = {key: final[key] for key in final.files}
    dead = table["destruction_time"] >= 0
    assert csv[:int(final["bytes"])].count(b"\n") == dead.sum() + 1 and len(final["living"]) == (~dead).sum()
    whole = tmp_path / "whole.csv"
    assert phylogeny.write_standard(run, whole).read_bytes() == csv

    # A final part that does not fit the file (here: the file cut short) is written anew.
    (run / "phylogeny.csv").write_bytes(csv[:int(final["bytes"]) // 2])
    written.clear()
    assert phylogeny.write_standard(run).read_bytes() == csv
    assert sum(written) == len(table["id"])
    # Journals cut back before the final part's last tick forget it; a new run too.
    phylogeny.forget_final(run / "phylogeny", after=int(final["tick"]) + 1)
    assert (run / "phylogeny" / phylogeny.FINAL).exists()
    phylogeny.forget_final(run / "phylogeny", after=int(final["tick"]))
    assert not (run / "phylogeny" / phylogeny.FINAL).exists()


@pytest.mark.parametrize("cut", [27, 40])  # off and on the drain grid
def test_resume_writes_the_same_phylogeny_and_metrics(tmp_path, cut):
    world = phylo_world()
    whole = Run.start(world, tmp_path / "whole", 90, report_every=10, checkpoint_every=100)
    whole.advance(handle_signals=False)

    # Stopped at `cut` with a checkpoint, but its journals ran on to tick 70 before a kill.
    part = Run.start(world, tmp_path / "part", cut, report_every=10, checkpoint_every=cut)
    part.advance(handle_signals=False)
    further = Run.resume(tmp_path / "part", steps=70 - cut)
    further.advance(handle_signals=False)
    for saved in (tmp_path / "part" / "checkpoints").iterdir():
        if int(saved.name) > cut:
            shutil.rmtree(saved)
    assert (tmp_path / "part" / "phylogeny" / phylogeny.FINAL).exists()
    resumed = Run.resume(tmp_path / "part", steps=90 - cut)
    assert resumed.start_tick == cut
    assert not (tmp_path / "part" / "phylogeny" / phylogeny.FINAL).exists()  # it ended after the cut
    resumed.advance(handle_signals=False)

    same = (tmp_path / "whole" / "phylogeny.csv").read_bytes() == (tmp_path / "part" / "phylogeny.csv").read_bytes()
    assert same
    journals = [phylogeny.read_journals(tmp_path / run / "phylogeny") for run in ("whole", "part")]
    for whole_table, part_table in zip(*journals):  # the same records, whatever order the drains wrote them in
        order = [np.lexsort(tuple(table[key] for key in reversed(list(table)))) for table in (whole_table, part_table)]
        for key in whole_table:
            assert (whole_table[key][order[0]] == part_table[key][order[1]]).all(), key
    # The part run also reported where it stopped (tick `cut`); every other line agrees.
    lines = [
        {line["tick"]: line["regions"]["grid"]["phylogeny"] for line in read_metrics(tmp_path / run / "metrics.jsonl")}
        for run in ("whole", "part")
    ]
    assert set(lines[1]) - set(lines[0]) <= {cut}
    assert [lines[0][tick] for tick in sorted(lines[0])] == [lines[1][tick] for tick in sorted(lines[0])]
    assert lines[0][90]["modes"]["persistent"] > 0


def test_the_tree_is_the_same_as_one_fed_every_organism(tmp_path):
    # The recorder feeds its tracker at each report, and leaves out the organisms born
    # since the last that are dead by then with every descendant born since; a tracker
    # fed every birth and death, in order, must agree with it at every report
    # (diversity, ancestors) and at the end (the taxa left).
    from phylotrackpy import systematics

    world = phylo_world(drain_every=64)
    run = Run.start(world, tmp_path / "r", 300, report_every=60, checkpoint_every=1000)
    run.advance(handle_signals=False)
    born, died = phylogeny.read_journals(tmp_path / "r" / "phylogeny")
    reports_at = np.arange(0, 301, 60)  # the reports, where the tracker is fed (founders at 0)
    origin = np.where(born["generation"] == 0, -1, born["origin_time"])
    window = dict(zip(born["id"].tolist(), np.searchsorted(reports_at, origin, side="right").tolist()))
    death = dict(zip(died["id"].tolist(), died["destruction_time"].tolist()))
    children = {}
    for organism, parent in zip(born["id"].tolist(), born["parent"].tolist()):
        children.setdefault(parent, []).append(organism)

    def left_out(organism):
        w = window[organism]
        return (organism in death and np.searchsorted(reports_at, death[organism], side="right") == w
                and all(left_out(c) for c in children.get(organism, []) if window[c] == w))

    out = [organism for organism in window if left_out(organism)]
    assert len(out) >= 50  # organisms left out of the recorder's tree
    assert sum(any(window[c] == window[o] for c in children.get(o, [])) for o in out) >= 5  # parents among them

    replayed = Recorder(world, tmp_path / "r")  # as a resumed run rebuilds it
    reports = {line["tick"]: line["regions"] for line in read_metrics(tmp_path / "r" / "metrics.jsonl")}
    for tree, again, (b, d) in zip(run.recorder.trees, replayed.trees, replayed._by_tree(born, died)):
        tracker = systematics.Systematics(lambda organism: organism, True, True, False, False)
        taxa = {}
        tracker.on_prune(lambda taxon: taxa.pop(taxon.get_info(), None))
        origin = np.where(b["generation"] == 0, -1, b["origin_time"])
        happened = sorted([(2 * t + 1, i, p) for t, i, p in zip(origin.tolist(), b["id"].tolist(), b["parent"].tolist())]
                          + [(2 * t, i, None) for t, i in zip(d["destruction_time"].tolist(), d["id"].tolist())])
        position = 0
        for tick in sorted(reports):
            while position < len(happened) and happened[position][0] < 2 * tick:
                _, organism, parent = happened[position]
                position += 1
                if parent is None:
                    if organism in taxa:
                        tracker.remove_org(taxa[organism])
                else:
                    above = taxa.get(parent)
                    taxa[organism] = tracker.add_org(organism) if above is None else tracker.add_org(organism, above)
            measured = reports[tick][tree.name]["phylogeny"]
            assert measured["phylogenetic_diversity"] == tracker.get_phylogenetic_diversity(), tick
            assert measured["ancestors"] == tracker.get_num_ancestors(), tick
        # The same taxa left, and a taxon made for each organism not left out, in the
        # run and in a replay of its journals.
        replayed._replay(b, d, list(reports_at[:-1]))
        for recorded in (tree, again):
            assert set(recorded.taxa) == set(taxa)
            assert recorded.systematics.get_next_id() == len(set(b["id"].tolist()) - set(out))


# -- MODES and diversity on hand-made histories ----------------------------------------


def hand_recorder(persistence):
    recorder = Recorder(phylo_world(persistence=persistence), "/nonexistent")
    return recorder, recorder.trees[0]


def events(born=(), died=()):
    """born: (id, parent, tick, type, complexity); died: (id, tick)."""
    b = {key: np.zeros(0, np.int64) for key in phylogeny.BORN_COLUMNS}
    if born:
        ids, parents, ticks, types, complexity = map(np.asarray, zip(*born))
        b.update(id=ids, parent=parents, origin_time=ticks, type=types, complexity=complexity,
                 generation=(parents > 0).astype(np.int64), region=np.zeros(len(ids), np.int64),
                 cell=np.zeros(len(ids), np.int64))
    d = {key: np.zeros(0, np.int64) for key in phylogeny.DIED_COLUMNS}
    if died:
        ids, ticks = map(np.asarray, zip(*died))
        d.update(id=ids, destruction_time=ticks, region=np.zeros(len(ids), np.int64), cell=np.zeros(len(ids), np.int64))
    return b, d


def test_a_population_that_never_changes_shows_no_change_or_novelty():
    recorder, tree = hand_recorder(persistence=10)
    recorder._ingest(tree, *events(born=[(1, 0, 0, 7, 3), (2, 0, 0, 7, 3), (3, 0, 0, 9, 5)]))
    measured = [recorder._measure_tree(tree, tick) for tick in range(0, 60, 10)]
    assert measured[0] is None  # nothing old enough yet
    assert measured[1] == {"from_tick": 0, "persistent": 3, "change": 2, "novelty": 2,
                           "ecology": pytest.approx(shannon_bits([2, 1])), "complexity": 5}
    for later in measured[2:]:
        assert (later["change"], later["novelty"], later["persistent"]) == (0, 0, 3)


def test_modes_by_hand():
    # Founders 1 (type 1) and 2 (type 2). 1 has child 3 (type 3) at tick 4 and dies at
    # tick 6; 2 dies at tick 15 without offspring; 3 has child 4 (type 1 again) at 25;
    # 3 dies at 28. Reports every 10 ticks, persistence 10.
    recorder, tree = hand_recorder(persistence=10)
    history = [
        (0, events(born=[(1, 0, 0, 1, 2), (2, 0, 0, 2, 4)])),
        (10, events(born=[(3, 1, 4, 3, 6)], died=[(1, 6)])),
        (20, events(died=[(2, 15)])),
        (30, events(born=[(4, 3, 25, 1, 1)], died=[(3, 28)])),
        (40, events()),
    ]
    results = {}
    for tick, (born, died) in history:
        recorder._ingest(tree, born, died)
        results[tick] = recorder._measure_tree(tree, tick)
    assert results[0] is None
    # At 10, from tick 0 (1 and 2 alive): 1 has a living descendant (3), 2 lives.
    assert results[10] == {"from_tick": 0, "persistent": 2, "change": 2, "novelty": 2,
                           "ecology": 1.0, "complexity": 4}
    # At 20, from tick 10 (2 and 3 alive): 2 is gone without descendants; 3 lives.
    assert results[20] == {"from_tick": 10, "persistent": 1, "change": 1, "novelty": 1,
                           "ecology": 0.0, "complexity": 6}
    # At 30, from tick 20 (3 alive): 3 died, but its child 4 lives.
    assert results[30] == {"from_tick": 20, "persistent": 1, "change": 0, "novelty": 0,
                           "ecology": 0.0, "complexity": 6}
    # At 40, from tick 30 (4 alive): type 1 is back: a change, but nothing novel.
    assert results[40] == {"from_tick": 30, "persistent": 1, "change": 1, "novelty": 0,
                           "ecology": 0.0, "complexity": 1}
    # Phylogenetic diversity of the living's tree: 4 <- 3 <- 1, three nodes, two edges.
    assert tree.systematics.get_phylogenetic_diversity() == 2


def test_shannon_bits():
    assert shannon_bits([]) == 0.0
    assert shannon_bits([5]) == 0.0
    assert shannon_bits([1, 1, 1, 1]) == pytest.approx(2.0)
    assert shannon_bits([3, 1]) == pytest.approx(-(0.75 * np.log2(0.75) + 0.25 * np.log2(0.25)))


def test_tree_and_inspect_commands(tmp_path, capsys):
    from hca.cli import main

    path = tmp_path / "r"
    Run.start(phylo_world(), path, 60, report_every=10).advance(handle_signals=False)
    assert main(["inspect", str(path)]) == 0
    printed = capsys.readouterr().out
    assert "phylogeny:" in printed and "MODES (persistent since tick 40:" in printed
    living = tmp_path / "living.csv"
    assert main(["tree", str(path), "--csv", str(living), "--prune"]) == 0
    expected = phylogeny.write_standard(path, tmp_path / "expected.csv", prune=True)
    assert living.read_bytes() == expected.read_bytes()
    if pytest.importorskip("matplotlib"):
        picture = tmp_path / "tree.png"
        assert main(["tree", str(path), "--out", str(picture)]) == 0
        from matplotlib.image import imread

        pixels = imread(picture)
        assert pixels.shape[1] == 900 and (pixels[..., :3] < 0.9).any()  # something drawn
    pytest.importorskip("alifedata_phyloinformatics_convert")
    newick = tmp_path / "living.nwk"
    assert main(["tree", str(path), "--newick", str(newick)]) == 0
    trees = newick.read_text().splitlines()
    roots = (read_standard(living)["ancestor_list"] == "[NONE]").sum()
    assert len(trees) == roots and all(tree.endswith(";") for tree in trees)
    capsys.readouterr()
    assert main(["tree", str(path)]) == 2
    assert "say what to make" in capsys.readouterr().err
    assert main(["tree", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x.png")]) == 2


def test_tree_layout_places_parents_between_children():
    from hca.pictures import tree_layout

    # 1 -> (2 -> (4, 5), 3); 6 alone.
    table = {
        "id": np.array([1, 2, 3, 4, 5, 6]),
        "parent": np.array([0, 1, 1, 2, 2, 0]),
        "origin_time": np.array([0, 1, 2, 3, 4, 0]),
    }
    y = tree_layout(table)
    leaves = sorted(y[[2, 3, 4, 5]])
    assert leaves == [0, 1, 2, 3]
    assert y[1] == (y[3] + y[4]) / 2 and y[0] == (y[1] + y[2]) / 2


def test_a_pruned_run_writes_only_the_living_and_their_ancestors(tmp_path):
    config = living_world()
    config["run"] = {"phylogeny": {"drain_every": 8, "prune": True}}
    Run.start(parse_world(config), tmp_path / "r", 40, report_every=10).advance(handle_signals=False)
    written = read_standard(tmp_path / "r" / "phylogeny.csv")
    everyone = phylogeny.standard_table(tmp_path / "r")
    pruned = phylogeny.standard_table(tmp_path / "r", prune=True)
    assert len(written) == len(pruned["id"]) < len(everyone["id"])
    assert list(written["id"]) == list(pruned["id"][phylogeny.file_order(pruned)])


def test_untracked_runs_keep_the_same_phylogeny_without_tree_metrics(tmp_path):
    tracked = Run.start(phylo_world(), tmp_path / "tracked", 40, report_every=10)
    tracked.advance(handle_signals=False)
    config = living_world()
    config["run"] = {"phylogeny": {"drain_every": 8, "persistence": 20, "track": False}}
    untracked = Run.start(parse_world(config), tmp_path / "untracked", 40, report_every=10)
    untracked.advance(handle_signals=False)
    files = [(tmp_path / name / "phylogeny.csv").read_bytes() for name in ("tracked", "untracked")]
    assert files[0] == files[1]
    last = read_metrics(tmp_path / "untracked" / "metrics.jsonl")[-1]["regions"]["grid"]["phylogeny"]
    assert last == {"recorded_total": read_metrics(tmp_path / "tracked" / "metrics.jsonl")[-1]["regions"]["grid"][
        "phylogeny"]["recorded_total"]}


def test_a_tree_fed_before_its_report_measures_the_same(tmp_path, monkeypatch):
    # Drained events wait for the next report, or until PENDING_LIMIT of them wait: fed
    # early, fewer organisms are left out, and every report reads the same.
    runs = {}
    for name, limit in (("at_reports", phylogeny.PENDING_LIMIT), ("early", 20)):
        monkeypatch.setattr(phylogeny, "PENDING_LIMIT", limit)
        runs[name] = Run.start(phylo_world(), tmp_path / name, 90, report_every=30)
        runs[name].advance(handle_signals=False)
    metrics = [(tmp_path / name / "metrics.jsonl").read_bytes() for name in runs]
    assert metrics[0] == metrics[1]
    made = [sum(tree.systematics.get_next_id() for tree in run.recorder.trees) for run in runs.values()]
    assert made[0] < made[1]


def tree_contents(tree):
    """Everything a tree holds that later reports read."""
    return {
        "taxa": {organism: (None if taxon.get_parent() is None else taxon.get_parent().get_info(),
                            taxon.get_num_orgs()) for organism, taxon in tree.taxa.items()},
        "living": list(tree.living.items()),
        "snapshots": [(s.tick, s.ids.tolist(), s.types.tolist(), s.complexity.tolist()) for s in tree.snapshots],
        "sets": (tree.seen, tree.previous, tree.recorded),
        "measured": (tree.systematics.get_phylogenetic_diversity(), tree.systematics.get_num_ancestors(),
                     tree.systematics.get_num_active()),
    }


def test_a_resumed_run_rebuilds_its_trees_from_the_newest_saved_file(tmp_path):
    world = phylo_world()
    path = tmp_path / "r"
    Run.start(world, path, 95, report_every=10, checkpoint_every=20).advance(handle_signals=False)
    saved = sorted(p.name for p in (path / "phylogeny").glob("trees-*.npz"))
    # Saved at each checkpoint on a report; the newest 3 kept, as many as the checkpoints
    # (`keep`). At tick 95, the run's last, the trees were fed past their last regular
    # report: nothing saved.
    assert saved == ["trees-40.npz", "trees-60.npz", "trees-80.npz"]
    reports = [line["tick"] for line in read_metrics(path / "metrics.jsonl")]
    state = build(world).init()  # the recorder reads the state only from tick 0

    def resumed(tick):
        return Recorder.resume(world, path, state, tick, [t for t in reports if t <= tick], 10)

    restored = resumed(80)
    assert restored.restored_from == 80
    hidden = tmp_path / "hidden"
    hidden.mkdir()
    for name in saved:
        (path / "phylogeny" / name).rename(hidden / name)
    replayed = resumed(80)  # from the journals alone, as before any file was saved
    assert replayed.restored_from == -1
    for a, b in zip(restored.trees, replayed.trees):
        assert tree_contents(a) == tree_contents(b)
        assert len(a.taxa) > 10 and a.seen and a.snapshots
        # One taxon made per organism in the tree, where the replay made one per organism
        # that lived through a report.
        assert a.systematics.get_next_id() == len(a.taxa) < b.systematics.get_next_id()
    # A file cut short by a kill is passed over for the one before it.
    (hidden / "trees-80.npz").write_bytes((hidden / "trees-80.npz").read_bytes()[:1000])
    for name in saved:
        (hidden / name).rename(path / "phylogeny" / name)
    older = resumed(80)
    assert older.restored_from == 60
    for a, b in zip(older.trees, replayed.trees):
        assert tree_contents(a) == tree_contents(b)
    # A file taken after other reports than the metrics kept (here one line lost) is not used.
    assert Recorder.resume(world, path, state, 80, [t for t in reports if t <= 80 and t != 30], 10).restored_from == -1
    # Resumed from an earlier checkpoint, the newest file at or before it.
    assert resumed(55).restored_from == 40


def test_trees_fed_since_their_last_report_are_not_saved(tmp_path, monkeypatch):
    # Reports every 20, checkpoints every 25: at 50 the trees are saved as the report at
    # 40 left them, unless events drained since were fed to them.
    for name, limit in (("at_reports", phylogeny.PENDING_LIMIT), ("early", 0)):  # 0: fed at each drain
        monkeypatch.setattr(phylogeny, "PENDING_LIMIT", limit)
        Run.start(phylo_world(), tmp_path / name, 100, report_every=20, checkpoint_every=25).advance(
            handle_signals=False)
    born, died = phylogeny.read_journals(tmp_path / "early" / "phylogeny")
    assert ((born["origin_time"] >= 40) & (born["origin_time"] < 48)).any()  # drained at 48
    assert sorted(p.name for p in (tmp_path / "at_reports" / "phylogeny").glob("trees-*")) == [
        "trees-100.npz", "trees-40.npz", "trees-60.npz"]
    early = sorted(p.name for p in (tmp_path / "early" / "phylogeny").glob("trees-*"))
    assert "trees-40.npz" not in early and "trees-100.npz" in early


def test_a_resume_reads_and_cuts_only_the_journals_tails(tmp_path, monkeypatch):
    # A journal as drains append it: each drain the events of at most `every` ticks
    # before it, in any order within the drain; a kill may leave a partial record.
    monkeypatch.setattr(phylogeny, "TAIL_BLOCK", 7)  # so that the scan crosses blocks
    generator = np.random.default_rng(5)
    every, times, drains, tick = 8, [], [], 0
    while tick < 300:
        drain = tick + int(generator.integers(1, every + 1))
        times += generator.integers(tick, drain, int(generator.integers(0, 6))).tolist()
        drains.append(drain)
        tick = drain
    times = np.array(times)
    table = {key: np.zeros(len(times), np.int64) for key in phylogeny.DIED_COLUMNS}
    table["destruction_time"], table["id"] = times, np.arange(1, len(times) + 1)
    record = phylogeny.DIED_RECORD
    path = tmp_path / "died.bin"
    whole = phylogeny._records(record, table).tobytes()
    for since in (-1, 0, 5, 50, 51, 200, 299, 400):
        path.write_bytes(whole)
        start, tail = phylogeny._journal_tail(path, record, "destruction_time", since, every)
        assert (times[:start] < since).all() and (tail["id"] == table["id"][start:]).all()
        # Read from no earlier than two drains' spans before `since`.
        assert since <= 0 and start == 0 or (times[start:] >= since - 2 * every).all()
    assert start == len(times)
    # At a drain's tick the records cut are the last: the file is truncated in place.
    # Within a drain (not seen in practice) it is written anew.
    interleaved = next(t for t in range(100, 300) if (np.diff((times < t).astype(int)) > 0).any())
    for last, in_place in ((drains[10], True), (interleaved, False)):
        path.write_bytes(whole + b"\x01\x02")  # and a record cut short by a kill
        inode = path.stat().st_ino
        start, tail = phylogeny._journal_tail(path, record, "destruction_time", last - 20, every)
        keep = tail["destruction_time"] < last
        phylogeny._cut_journal(path, record, start, tail, keep)
        assert path.read_bytes() == phylogeny._records(record, {k: v[times < last] for k, v in table.items()}).tobytes()
        assert start > 0 and not keep.all() and (path.stat().st_ino == inode) == in_place
