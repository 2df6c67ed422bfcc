"""The ``hca`` command line: validate, run, inspect and draw worlds; trees, competition
assays and experiments."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

EXIT_BAD_INPUT = 2


class UsageError(Exception):
    """A problem with what the user asked for, reported in one line with exit status 2."""


def _whole_number(minimum: int):
    """An argparse type for whole numbers >= ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected a number >= {minimum}, got {value}")
        return value

    return parse


_positive_int = _whole_number(1)
_count = _whole_number(0)


def _versions() -> str:
    from hca._xla import versions

    v = versions()
    return f"hca {v['hca']} (jax {v['jax']}, jaxlib {v['jaxlib']}, Python {v['python']})"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hca",
        description="Hyperspace cellular automata: worlds shaped like a GPU cluster.",
    )
    parser.add_argument("--version", action="version", version=_versions(),
                        help="print the versions of hca, JAX, jaxlib and Python, and exit")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    validate = commands.add_parser(
        "validate",
        help="check a world file and summarise it",
        description="Check a world file and print its regions, axes, cells, state size "
        "and how often each axis ticks. With --devices N, also compile the step for N "
        "devices and print what crosses each mesh axis. Exit status 2 if the file has "
        "problems.",
    )
    validate.add_argument("world", metavar="WORLD.yaml", help="the world file to check")
    validate.add_argument("--seed", type=_count, help="check with this seed instead of the file's")
    validate.add_argument(
        "--devices",
        type=_positive_int,
        metavar="N",
        help="compile the step for N devices and print, per mesh axis, the exchanges per "
        "1,000 ticks and the bytes per exchange",
    )

    run = commands.add_parser(
        "run",
        help="run a world and record its metrics",
        description="Run a world for a number of ticks, or resume a run. Writes "
        "RUN_DIR/world.yaml (the resolved world), RUN_DIR/metrics.jsonl (one JSON line per "
        "report) and RUN_DIR/checkpoints/. Ctrl-C or SIGTERM saves a checkpoint and stops; "
        "a second stops at once, without it.",
    )
    run.add_argument("world", metavar="WORLD.yaml", nargs="?", help="the world file to run")
    run.add_argument(
        "--steps",
        type=_count,
        help="ticks to run (with --resume: ticks to add; default: up to the first run's target)",
    )
    run.add_argument(
        "--out", metavar="RUN_DIR", help="directory for the run's files; must not exist or be empty"
    )
    run.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue a run from its latest good checkpoint (Ctrl-C, SIGTERM or a crash stopped it)",
    )
    run.add_argument(
        "--checkpoint-every",
        type=_positive_int,
        metavar="K",
        help="ticks between checkpoints (default: the file's run.checkpoint_every); one is "
        "always saved at the end",
    )
    run.add_argument(
        "--keep", type=_positive_int, metavar="N", help="checkpoints to keep (default: run.keep)"
    )
    run.add_argument("--seed", type=_count, help="seed for every random draw (default: the file's)")
    run.add_argument(
        "--report-every",
        type=_positive_int,
        metavar="K",
        help="ticks between metrics lines (default: the file's run.report_every)",
    )
    run.add_argument(
        "--devices",
        type=_positive_int,
        metavar="N",
        help="spread the world over N devices along its placed axes (default: as many as "
        "are present and can be placed; on a CPU at most one per core)",
    )
    run.add_argument(
        "--serve",
        nargs="?",
        const=8765,
        type=_count,
        metavar="PORT",
        help="serve the live page of the run on PORT (default 8765; 0: any free port): watch every "
        "region, meet the organisms, and in interactive regions ask questions and pay tokens. "
        "The address printed carries the secret that actions need. The page stays up after the "
        "run ends, until Ctrl-C",
    )
    run.add_argument(
        "--coordinator",
        metavar="HOST:PORT",
        help="run as one of several processes (hosts) joined by JAX's multi-controller runtime, "
        "whose coordinator listens at HOST:PORT; every process runs the same command with its own "
        "--process-id. The first writes the run directory and metrics; all write checkpoints",
    )
    run.add_argument("--processes", type=_positive_int, metavar="K", help="with --coordinator: how many processes")
    run.add_argument("--process-id", type=_count, metavar="I", help="with --coordinator: this process, 0..K-1")
    run.add_argument(
        "--host",
        default="127.0.0.1",
        help="the address the live page listens on (default 127.0.0.1: this machine only)",
    )
    run.add_argument("--quiet", action="store_true", help="no progress bar")

    inspect = commands.add_parser(
        "inspect",
        help="summarise a run's checkpoint",
        description="Read a checkpoint (the newest good one, or --tick T) without running "
        "anything: population, ledger, lineages, genome statistics and a digest of the state.",
    )
    inspect.add_argument("run_dir", metavar="RUN_DIR")
    inspect.add_argument("--tick", type=_count, help="the checkpoint at this tick")
    inspect.add_argument("--json", action="store_true", help="print one JSON object")

    render = commands.add_parser(
        "render",
        help="draw the lattice at a checkpoint (needs hca[viz])",
        description="Draw a region at a checkpoint: one panel per outer-level cell (per GPU "
        "in the default world), each a heat map of its organisms' energy over the last two "
        "axes (SM x warp), and a map of population per server.",
    )
    render.add_argument("run_dir", metavar="RUN_DIR")
    render.add_argument("--tick", type=_count, help="the checkpoint at this tick")
    render.add_argument("--region", help="draw only this region (default: every region, one under another; "
                        "with --show tasks, the first region with organisms)")
    render.add_argument(
        "--show",
        choices=("energy", "tasks"),
        default="energy",
        help="colour cells by their organism's energy (default), or by the task each shows",
    )
    render.add_argument("--out", required=True, metavar="PNG", help="the picture to write")

    plot = commands.add_parser(
        "plot",
        help="draw population, births/deaths and the ledger over time (needs hca[viz])",
        description="Draw RUN_DIR/metrics.jsonl: population and lineages, births, deaths "
        "and moves per report, and the energy ledger.",
    )
    plot.add_argument("run_dir", metavar="RUN_DIR")
    plot.add_argument("--out", required=True, metavar="PNG", help="the picture to write")

    tree = commands.add_parser(
        "tree",
        help="the run's phylogeny: a picture, the ALife-standard CSV, Newick",
        description="Read RUN_DIR's phylogeny journals and draw the living and their "
        "ancestors against time (--out, needs hca[viz]), write the whole phylogeny or only "
        "the living's ancestry (--prune) in the ALife data standard (--csv), or as Newick "
        "(--newick, needs hca[phylo]).",
    )
    tree.add_argument("run_dir", metavar="RUN_DIR")
    tree.add_argument("--out", metavar="PNG", help="draw the living's ancestry")
    tree.add_argument("--csv", metavar="FILE", help="write the phylogeny in the ALife data standard")
    tree.add_argument("--newick", metavar="FILE", help="write the living's ancestry as Newick trees")
    tree.add_argument("--prune", action="store_true", help="--csv keeps only the living and their ancestors")
    tree.add_argument("--colour", choices=("founder", "type", "complexity"), default="founder",
                      help="colour the picture by founder lineage (default), coarse genotype or active units")

    compete = commands.add_parser(
        "compete",
        help="competition assay: relative fitness of two sources of organisms",
        description="Place organisms from sources A and B (RUN_DIR for its newest checkpoint, "
        "RUN_DIR@TICK for another; @0 is the run's founders) in equal numbers, interleaved, "
        "in a fresh copy of a world, run it, and report A's relative fitness against B "
        "(Lenski's W, 1 for equal) and selection rate (0 for equal) with 95% intervals over seeds.",
    )
    compete.add_argument("a", metavar="A", help="RUN_DIR or RUN_DIR@TICK")
    compete.add_argument("b", metavar="B", help="RUN_DIR or RUN_DIR@TICK")
    compete.add_argument("--ticks", type=_positive_int, required=True, metavar="N", help="ticks each assay runs")
    compete.add_argument("--seeds", type=_count, nargs="+", default=[1, 2, 3, 4, 5], metavar="S",
                         help="one assay per seed (default: 1 2 3 4 5)")
    compete.add_argument("--world", metavar="WORLD.yaml", help="the world to compete in (default: A's)")
    compete.add_argument("--region", help="the region whose founders are replaced (default: A's)")
    compete.add_argument("--json", metavar="FILE", help="also write the result as JSON")

    experiment = commands.add_parser(
        "experiment",
        help="a world as treatment against a control, over seeds",
        description="Run WORLD.yaml (treatment) and a control (the same world with something "
        "switched off) for each seed, each an ordinary run directory under --out, and "
        "summarise metrics: late means per arm with 95% intervals, and the paired "
        "difference. Run again to continue an interrupted experiment.",
    )
    experiment.add_argument("world", metavar="WORLD.yaml")
    experiment.add_argument("--steps", type=_positive_int, required=True, metavar="N")
    experiment.add_argument("--out", required=True, metavar="DIR")
    experiment.add_argument("--control", nargs="+", default=["mutation-off"], metavar="CHANGE",
                            help="mutation-off (default), learning-off, tasks-off, or key.path=value")
    experiment.add_argument("--seeds", type=_count, nargs="+", default=[1, 2, 3], metavar="S")
    experiment.add_argument("--metric", action="append", metavar="PATH",
                            help="a dotted path into metrics lines, e.g. regions.gpu.tasks.sine.mean_quality "
                            "(repeatable; default: population, lineage entropy, phylogenetic diversity, "
                            "MODES and task qualities)")
    experiment.add_argument("--report-every", type=_positive_int, metavar="K")
    experiment.add_argument("--late", type=float, default=0.1, metavar="F",
                            help="summarise the last F of each run (default 0.1)")
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
        if region.placement:
            lines.append(
                f"  placed on devices: {', '.join(region.placement)} (hca run --devices N; "
                f"hca validate --devices N shows what crosses between them)"
            )
        if region.organisms is not None:
            from hca.organisms import Life

            life = Life(region, 0)
            size = life.layout.size
            lines.append(
                f"  organisms: density {region.organisms.density:g}, genome {size:,} parameters "
                f"({size * 4:,} bytes), upkeep {life.upkeep} quanta/tick + "
                f"{region.organisms.metabolism.per_active_unit:g} per active hidden unit"
            )
            costs = ", ".join(
                f"{axis.name} {life.move_cost[k]}/{life.birth_cost[k]}"
                for k, axis in enumerate(region.axes)
            )
            lines.append(f"  cost to move/give birth across each axis: {costs}")
        if region.tasks:
            from hca.tasks import describe

            lines.extend(describe(region, list(world.regions).index(name), world.seed))
        if region.people is not None:
            people = region.people
            lines.append(
                f"  people: interactive (hca run --serve); each person starts with {people.tokens:,} tokens, "
                f"pays at most {people.max_payment:,} at once; at most {people.max_open} questions open, "
                f"{people.ticks} ticks each by default"
            )
        lines.append(f"  {'axis':<12}{'size':>6}{'stretch':>9}  {'curled':<8}{'diffusion':>10}  ticks")
        for axis, rate in zip(region.axes, diffusion_rates(region)):
            often = "every tick" if axis.stretch == 1 else f"every {axis.stretch} ticks"
            lines.append(
                f"  {axis.name:<12}{axis.size:>6}{axis.stretch:>9}  {'yes' if axis.curled else 'no':<8}"
                f"{rate / RATE_ONE:>10.4g}  {often} ({geometry.ticks_per_thousand(axis)} per 1000)"
            )
    for name, beach in zip(world.beach_names(), world.beaches):
        shores = []
        for shore in beach.shores:
            region = world.regions[shore.region]
            block = [
                f"{axis.name} {r.start}" if len(r) == 1 else f"{axis.name} {r.start}..{r.stop - 1}"
                for axis, r in zip(region.axes, shore.ranges(region))
                if axis.name in shore.at
            ]
            shores.append(f"{shore.region} ({', '.join(block) or 'all'})")
        cells = len(beach.shores[0].cells(world.regions[beach.shores[0].region]))
        often = "every tick" if beach.stretch == 1 else f"every {beach.stretch} ticks"
        lines.append(
            f"beach {name}: {shores[0]} <-> {shores[1]}, {cells:,} cells; {often} "
            f"({-(-1000 // beach.stretch)} per 1000), diffusion {beach.diffusion:g}"
        )
        lives = [simulation.tick.lives[list(world.regions).index(shore.region)] for shore in beach.shores]
        if None in lives:
            lines.append("  organisms do not cross it (a region without organisms)")
        else:
            costs = []
            for shore, life in zip(beach.shores, lives):
                cell = shore.cells(life.region)[0]  # a beach's cells all cost the same
                move, birth = life.beach_move_cost.reshape(-1)[cell], life.beach_birth_cost.reshape(-1)[cell]
                costs.append(f"from {shore.region} {move}/{birth}")
            lines.append(f"  organisms sense, move and give birth across; cost to move/give birth: {', '.join(costs)}")
    schedule = simulation.schedule
    lines.append(
        f"super-step: {schedule.period} tick{'s' if schedule.period != 1 else ''}, "
        f"{len(schedule.ticking)} distinct sets of ticking axes" + (" and beaches" if world.beaches else "")
    )
    living = [region for region in shapes.regions if region.life is not None]
    if living:
        phylo = world.run.phylogeny
        journal = sum(
            leaf.size * leaf.dtype.itemsize
            for region in living
            for leaf in (region.life.died, region.life.died_parent, region.life.died_generation)
        )
        lines.append(
            f"phylogeny: births and deaths drained every {phylo.drain_every} ticks and at reports "
            f"({journal:,} bytes of state); MODES persistence {phylo.persistence} ticks"
            + ("" if phylo.track else "; trees not tracked (no phylogenetic diversity or MODES)")
            + ("; phylogeny.csv pruned to the living and their ancestors" if phylo.prune else "")
        )
    return "\n".join(lines)


def _validate(args: argparse.Namespace) -> int:
    from hca.config import load_world

    world = load_world(args.world, seed=args.seed)
    mesh = None
    if args.devices is not None:
        from hca.parallel import make_mesh

        mesh = make_mesh(world, args.devices)
    print(_summary(world, args.world))
    if args.devices is not None:
        print(_exchange_summary(world, mesh))
    return 0


def _exchange_summary(world, mesh) -> str:
    from hca.parallel import describe, exchanges
    from hca.world import build

    if mesh is None:
        return "on 1 device nothing crosses between devices"
    simulation = build(world, mesh)
    per_axis, every_tick = exchanges(simulation, simulation.abstract_state())
    lines = [
        f"between devices on {describe(mesh)}, read from the compiled step (per 1,000 ticks):",
        f"  {'mesh axis':<12}{'devices':>8}{'stretch':>9}{'ticks':>8}{'exchanges':>11}{'bytes/exchange':>16}"
        f"{'bytes/device':>14}",
    ]
    for axis in per_axis:
        lines.append(
            f"  {axis.axis:<12}{axis.devices:>8}{axis.stretch:>9}{axis.ticks:>8}{axis.exchanges:>11,}"
            f"{axis.bytes_per_exchange:>16,}{axis.bytes:>14,}"
        )
    if every_tick:
        lines.append(f"  every tick, outside the stretch schedule: {len(every_tick)} collectives")
    else:
        lines.append("  every tick, outside the stretch schedule: none")
    return "\n".join(lines)


def _run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from hca.config import load_world
    from hca.parallel import describe
    from hca.runner import Run

    options = {"report_every": args.report_every, "checkpoint_every": args.checkpoint_every, "keep": args.keep,
               "devices": args.devices}
    several = [args.coordinator, args.processes, args.process_id]
    if any(value is not None for value in several):
        if None in several:
            raise UsageError("several processes need all of --coordinator, --processes and --process-id")
        if args.process_id >= args.processes:
            raise UsageError(f"--process-id: expected 0..{args.processes - 1}, got {args.process_id}")
        if args.serve is not None and args.processes > 1:
            raise UsageError("--serve runs in a single process (the live page acts on the world between chunks)")
        world = load_world(args.world) if args.world is not None else None
        if world is None and args.resume is not None:
            from hca.checkpoint import RunDirectory

            world = RunDirectory(args.resume).world()
        if world is not None and args.processes > 1 and any(r.people for r in world.regions.values()):
            raise UsageError("a world with people in it (an interactive region) runs in a single process")
        from hca.parallel import initialize_hosts

        initialize_hosts(args.coordinator, args.processes, args.process_id)
        if args.process_id:
            args.quiet = True  # the first process reports
    listening = None
    if args.serve is not None:  # the port first: a taken one stops us before anything is written
        from hca.live import bind

        listening = bind(args.host, args.serve)
    if args.resume is not None:
        if args.world is not None:
            raise UsageError("give either WORLD.yaml or --resume RUN_DIR, not both")
        run = Run.resume(args.resume, steps=args.steps, report=_report_line, **options)
        print(f"hca: resuming {run.run_dir.path} from tick {run.start_tick} to tick {run.target}", file=sys.stderr)
    else:
        if args.world is None:
            raise UsageError("give a WORLD.yaml to run, or --resume RUN_DIR")
        if args.steps is None or args.out is None:
            raise UsageError("a new run needs --steps N and --out RUN_DIR")
        world = load_world(args.world, seed=args.seed)
        out = Path(args.out)
        args.out_was_free = not out.exists() or (out.is_dir() and not any(out.iterdir()))
        run = Run.start(world, args.out, args.steps, **options)
    first = run.start_tick
    if run.simulation.mesh is not None:
        print(f"hca: running on {describe(run.simulation.mesh)}", file=sys.stderr)
    live = None
    if args.serve is not None:
        from hca.live import Live

        from hca.runner import read_metrics

        live = Live(run.simulation, run.people, listening)
        live.seed_history(read_metrics(run.run_dir.metrics_file))  # a resumed run's past
        print(f"hca: live page at {live.start()}", file=sys.stderr)
        live.observe(run.state, run.start_tick, force=True)
    if not args.quiet:
        print("hca: compiling the step ...", end="", file=sys.stderr, flush=True)
    resume = _continue(run.run_dir.path, " from the last checkpoint")
    # After the line "compiling the step ...", which waits for its end.
    seconds = run.compile(on_signal=_signal_notice("when the compiler is done, before the first tick", args, resume,
                                                   pending=True))
    if not args.quiet and run.interrupted is None:  # else the line was ended by the notice
        print(f" {seconds:.1f} s", file=sys.stderr)
    if run.interrupted is not None:  # Ctrl-C while compiling: nothing stepped, nothing more written
        if live is not None:
            live.close()
        if not args.process_id:
            name = signal.Signals(run.interrupted).name  # the first process stops on its own signal
            print(f"hca: {name}: stopped before tick {run.start_tick} was stepped; {_continue(run.run_dir.path)}",
                  file=sys.stderr)
        return 128 + run.interrupted
    with tqdm(total=run.target - run.start_tick, unit="tick", disable=args.quiet, file=sys.stderr,
              dynamic_ncols=True) as progress:

        def on_chunk(ticks: int, line: dict[str, Any] | None) -> None:
            progress.update(ticks)
            if line is not None:
                postfix = {"population": f"{line['life']['population']:,}"} if "life" in line else {}
                progress.set_postfix(**postfix, total=f"{line['ledger']['total']:,}", refresh=False)

        outcome = run.advance(on_chunk, observer=None if live is None else live.observe,
                              on_signal=_signal_notice("after this chunk of ticks, with a checkpoint", args, resume,
                                                       progress=progress))
    if live is not None:
        live.observe(run.state, outcome.tick, force=True)
        if outcome.stopped_by is None:
            _serve_until_interrupted(live)
        live.close()
    if args.process_id:  # the first process reports
        return 128 + outcome.stopped_by if outcome.stopped_by is not None else (0 if outcome.balanced else 1)
    if outcome.stopped_by is not None:
        name = signal.Signals(outcome.stopped_by).name
        print(f"hca: {name}: stopped at tick {outcome.tick} with a checkpoint; {_continue(run.run_dir.path)}",
              file=sys.stderr)
        return 128 + outcome.stopped_by
    ledger = outcome.line["ledger"]
    verdict = "balanced" if ledger["balanced"] else "NOT BALANCED"
    print(
        f"{run.run_dir.path}: ticks {first}..{outcome.tick} in {outcome.elapsed:.1f} s; ledger {verdict}: total "
        f"{ledger['total']:,} = initial + injected {ledger['injected']:,} - dissipated {ledger['dissipated']:,}"
    )
    recorded = sum(region.get("phylogeny", {}).get("recorded_total", 0) for region in outcome.line["regions"].values())
    if recorded:
        pruned = " (pruned to the living and their ancestors)" if run.simulation.config.run.phylogeny.prune else ""
        print(f"{run.run_dir.path}: {recorded:,} organisms recorded since tick 0, in phylogeny.csv{pruned}; "
              f"hca tree {run.run_dir.path} --out tree.png draws them")
    return 0 if ledger["balanced"] else 1


def _signal_notice(when: str, args: argparse.Namespace, resume: str, progress=None, pending: bool = False) -> Any:
    """``Run``'s ``on_signal``: the first SIGINT or SIGTERM is acknowledged at once (the
    run stops ``when``), above the ``progress`` bar if there is one, after the ``pending``
    line (one not yet ended) if there is one; a second stops the process at once, as a
    kill would, saying ``resume``: how to continue from the last checkpoint."""
    quiet = getattr(args, "quiet", False)

    def say(text: str) -> None:
        if not quiet:
            sys.stderr.write(text)
            sys.stderr.flush()

    def notice(number: int, count: int) -> None:
        name = signal.Signals(number).name
        if count == 1:
            text = f"hca: {name}: stopping {when} ({name} again: at once)"
            if progress is None:
                say(("\n" if pending else "") + text + "\n")
            elif not quiet:
                progress.write(text, file=sys.stderr)
            return
        # After the progress bar's line, which is not drawn again.
        say(("\n" if progress is not None else "") + f"hca: {name} again: stopped at once; {resume}\n")
        os._exit(128 + number)

    return notice


def _serve_until_interrupted(live) -> None:
    """Keep the live page up after the run has ended, until Ctrl-C or SIGTERM."""
    import threading

    done = threading.Event()
    previous = {number: signal.signal(number, lambda *_: done.set()) for number in (signal.SIGINT, signal.SIGTERM)}
    print(f"hca: the run has ended; the live page stays up at {live.url} until Ctrl-C", file=sys.stderr)
    try:
        while not done.is_set():
            done.wait(0.5)  # a timeout, so that the signal handler gets to run
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None:  # the program itself (not a call from Python): glibc's malloc on huge pages
        from hca._xla import restart_with_huge_pages

        restart_with_huge_pages()
    args = _parser().parse_args(argv)
    try:
        return _command(args)
    except KeyboardInterrupt:  # Ctrl-C before a run's loop holds it (loading JAX, building, restoring)
        print(f"hca: SIGINT: stopped{_interrupted_run(args)}", file=sys.stderr)
        return 128 + signal.SIGINT


def _command(args: argparse.Namespace) -> int:
    """Run the command ``args`` asks for; a problem with the input is one line on stderr
    and exit status 2."""
    from hca._xla import configure_compilation_cache

    configure_compilation_cache()
    try:
        return COMMANDS[args.command](args)
    except BrokenPipeError:  # the reader went away (e.g. `hca inspect RUN | head`)
        sys.stdout = open(os.devnull, "w")
        return 0
    except Exception as error:
        if not _bad_input(error):
            raise
        print(f"hca: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT


# The errors that report bad input (a world file, a run directory, an option), by module:
# a module that has not been imported raised none of its own.
_INPUT_ERRORS = (
    ("hca.config", "WorldFileError"),
    ("hca.checkpoint", "RunDirectoryError"),
    ("hca.live", "Unavailable"),
    ("hca.parallel", "PlacementError"),
    ("hca.phylogeny", "MissingExtra"),
    ("hca.pictures", "MissingViz"),
)


def _bad_input(error: Exception) -> bool:
    if isinstance(error, UsageError):
        return True
    kinds = (getattr(sys.modules.get(module), name, None) for module, name in _INPUT_ERRORS)
    return any(kind is not None and isinstance(error, kind) for kind in kinds)


def _interrupted_run(args: argparse.Namespace) -> str:
    """How to go on after Ctrl-C stopped ``hca run`` early: resume the run directory if
    it was made (it is made whole or not at all), else nothing was written."""
    if args.command == "experiment":
        return "; run the same command again to continue"
    if args.command != "run":
        return ""
    from hca.checkpoint import RunDirectory

    path = args.resume
    if path is None:
        if not getattr(args, "out_was_free", False):  # stopped before the new run's checks
            return ""
        if not RunDirectory(args.out).world_file.is_file():
            return "; nothing was written"
        path = args.out
    return f"; {_continue(RunDirectory(path).path)}"


def _continue(path, whence: str = "") -> str:
    """How to continue the run in ``path`` (``whence``: e.g. " from the last checkpoint"),
    the command on a line of its own."""
    return f"continue{whence} with:\n  hca run --resume {path}"


def _report_line(line: str) -> None:
    print(f"hca: {line}", file=sys.stderr)


def _inspect(args: argparse.Namespace) -> int:
    from hca import inspect
    from hca.checkpoint import RunDirectory

    simulation, checkpoint = inspect.load(RunDirectory(args.run_dir), args.tick, _report_line)
    report = inspect.summary(simulation, checkpoint, args.run_dir)
    print(json.dumps(report) if args.json else inspect.describe(report))
    return 0


def _render(args: argparse.Namespace) -> int:
    from hca import inspect, pictures
    from hca.checkpoint import RunDirectory

    pictures._pyplot()  # fail before any work if matplotlib is missing
    run_dir = RunDirectory(args.run_dir)
    simulation, checkpoint = inspect.load(run_dir, args.tick, _report_line)
    if args.region is not None and args.region not in simulation.config.regions:
        raise UsageError(f"no region {args.region!r}; the world has {list(simulation.config.regions)}")
    if args.region is None and args.show == "energy" and len(simulation.config.regions) > 1:
        out = pictures.render_all(simulation, checkpoint, args.out)
        print(f"{out}: tick {int(checkpoint.state.tick)}, every region")
        return 0
    region = args.region or next(
        (n for n, r in zip(simulation.config.regions, checkpoint.state.regions) if r.life is not None),
        next(iter(simulation.config.regions)),
    )
    if args.show == "tasks" and not simulation.config.regions[region].tasks:
        raise UsageError(f"region {region!r} has no tasks to show")
    out = pictures.render(simulation, checkpoint, args.out, region, args.show)
    print(f"{out}: tick {int(checkpoint.state.tick)}")
    return 0


def _plot(args: argparse.Namespace) -> int:
    from hca import pictures
    from hca.checkpoint import RunDirectory
    from hca.runner import read_metrics

    pictures._pyplot()
    run_dir = RunDirectory(args.run_dir)
    world = run_dir.world()
    lines = read_metrics(run_dir.metrics_file)
    if not lines:
        raise UsageError(f"{run_dir.metrics_file}: no metrics to plot")
    shores = {name: tuple(shore.region for shore in beach.shores)
              for name, beach in zip(world.beach_names(), world.beaches)}
    out = pictures.plot(lines, args.out, f"{world.name}: {run_dir.path}", shores)
    print(f"{out}: ticks {lines[0]['tick']}..{lines[-1]['tick']}")
    return 0


def _tree(args: argparse.Namespace) -> int:
    from hca import phylogeny, pictures
    from hca.checkpoint import RunDirectory, RunDirectoryError
    from hca.runner import read_metrics

    if not (args.out or args.csv or args.newick):
        raise UsageError("say what to make: --out PNG, --csv FILE and/or --newick FILE")
    run_dir = RunDirectory(args.run_dir)
    run_dir.check()
    if not (run_dir.path / phylogeny.DIRECTORY / phylogeny.BORN).exists():
        raise RunDirectoryError(f"{run_dir.path}: no phylogeny (made by hca runs of this version)")
    if args.out:
        pictures._pyplot()
    if args.newick:
        phylogeny.require_converter()
    world = run_dir.world()
    lines = read_metrics(run_dir.metrics_file)
    end = lines[-1]["tick"] if lines else 0
    if args.csv:
        out = phylogeny.write_standard(run_dir.path, args.csv, prune=args.prune)
        print(f"{out}: the phylogeny in the ALife data standard{' (the living and their ancestors)' * args.prune}")
    table = phylogeny.standard_table(run_dir.path, prune=True)
    if args.newick:
        count = phylogeny.write_newick(table, args.newick, list(world.regions))
        print(f"{args.newick}: {count} Newick trees (one per surviving founder lineage)")
    if args.out:
        pictures.tree(table, args.out, f"{world.name}: {run_dir.path}, tick {end}", end, list(world.regions),
                      args.colour)
        print(f"{args.out}: {len(table['id']):,} organisms drawn")
    return 0


def _compete(args: argparse.Namespace) -> int:
    from hca import assay
    from hca.config import load_world

    a = assay.load_source(args.a, args.region, _report_line)
    b = assay.load_source(args.b, args.region, _report_line)
    world = load_world(args.world) if args.world else a.world
    print(f"hca: competing {a.label} ({a.count:,} living) against {b.label} ({b.count:,} living) "
          f"for {args.ticks:,} ticks, seeds {' '.join(map(str, args.seeds))}", file=sys.stderr)
    result = assay.compete(
        world, a, b, args.ticks, args.seeds, args.region,
        on_seed=lambda row: print(f"hca: seed {row['seed']}: A {row['a_start']} -> {row['a_end']}, "
                                  f"B {row['b_start']} -> {row['b_end']}", file=sys.stderr),
    )
    print(assay.describe(result))
    if args.json:
        assay.write_json(result, args.json)
    return 0


def _experiment(args: argparse.Namespace) -> int:
    from hca import experiment
    from hca.config import load_world

    if not 0 < args.late <= 1:
        raise UsageError("--late must be in (0, 1]")
    world = load_world(args.world)
    control = experiment.control_world(world, args.control, f"{args.world} with --control")
    try:
        summary = experiment.experiment(
            world, control, args.out, args.steps, args.seeds, args.metric, args.report_every, args.late,
            report=_report_line, description=", ".join(args.control),
            on_signal=_signal_notice("after this chunk of ticks, with a checkpoint", args,
                                     "run the same command again to continue from the last checkpoints"),
        )
    except experiment.Stopped as stop:
        print(f"hca: {signal.Signals(stop.signal).name}: stopped with a checkpoint; run the same command "
              f"again to continue", file=sys.stderr)
        return 128 + stop.signal
    print((Path(args.out) / "summary.md").read_text(encoding="utf-8"), end="")
    return 0 if summary["metrics"] else 1


COMMANDS = {"validate": _validate, "run": _run, "inspect": _inspect, "render": _render, "plot": _plot,
            "tree": _tree, "compete": _compete, "experiment": _experiment}


if __name__ == "__main__":
    sys.exit(main())
