"""The scripts in scripts/ run and report what they promise (on a small world)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
import yaml

from conftest import ROOT
from hca._xla import cpu_cores
from test_life import living_world


@pytest.fixture(scope="module")
def small_world(tmp_path_factory):
    world = living_world()
    world["regions"]["grid"]["placement"] = ["a", "b"]
    path = tmp_path_factory.mktemp("scripts") / "small.yaml"
    path.write_text(yaml.safe_dump(world))
    return path


MODULES = {path.stem for path in (ROOT / "hca").glob("*.py")}


def run_script(name, *args, devices=1) -> subprocess.CompletedProcess:
    """``scripts/NAME ARGS`` on ``devices`` fake CPU devices, which must succeed."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / name), *map(str, args)],
        capture_output=True, text=True, env=env, timeout=600, check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def script(name, *args, devices=1):
    return run_script(name, *args, devices=devices).stdout


def resized_cells(path, axis, size):
    world = yaml.safe_load(path.read_text())
    return sum(math.prod(size if a["name"] == axis else a["size"] for a in region["axes"])
               for region in world["regions"].values())


# Both bench tests run the same resized world, so that the second finds the step the
# first compiled in the persistent compilation cache (or the other way round).
BENCHED = ("--resize", "a=6", "--warm", "3")


def test_bench_reports_speed_bandwidth_memory_and_phases(small_world):
    # Two CPU devices present: the bench runs the world as `hca run` would, on a CPU one
    # device per core (this world's placed axis `a` takes two).
    report = json.loads(
        script("bench.py", small_world, *BENCHED, "--ticks", "5", "--json", devices=2).strip().splitlines()[-1]
    )
    assert report["cells"] == resized_cells(small_world, "a", 6) and report["warm_ticks"] == 3
    assert report["device_count"] == min(2, cpu_cores())
    assert report["devices"] == ("1 device" if report["device_count"] == 1 else "2 devices (a 2)")
    # Its peak memory is one device's, against the state one device holds.
    assert report["state_device_bytes"] * report["device_count"] >= report["state_bytes"]
    # What the figures depend on besides the code: hca's own XLA flags, the versions.
    assert "--xla_cpu_prefer_vector_width=512" in report["xla_flags"].split()
    assert "device_count" not in report["xla_flags"]
    assert report["versions"]["jax"] == metadata.version("jax")
    # And the processor: its widest vector instructions and its last-level cache.
    processor = report["processor"]
    assert set(processor) == {"model", "vector", "cache_bytes"}
    if Path("/proc/cpuinfo").exists():
        assert processor["vector"] in {"AVX-512", "AVX2", "AVX", "SSE2", "SVE", "NEON"}
        assert processor["model"]
    if list(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size")):
        assert processor["cache_bytes"] >= 1 << 20
    assert report["genome_bytes_per_tick"] > 0 and report["measured_read_bandwidth"] > 0
    # The floor's rate is the best of every way of reading tried, column sums included.
    rates = report["read_rates"]
    assert {"sum", "columns of 1024", "columns of 4096"} <= set(rates)
    assert all(rate > 0 for rate in rates.values())
    assert report["measured_read_bandwidth"] == max(rates.values())
    expected = report["genome_bytes_per_second"] / report["measured_read_bandwidth"]
    assert report["bandwidth_ratio"] == pytest.approx(expected)
    assert report["cell_ticks_per_second"] == pytest.approx(report["ticks_per_second"] * report["cells"])
    assert 1.0 <= report["peak_over_state"] < 10
    # Must move: the genomes once, and more (plastic weights, hidden state, ... twice).
    assert report["must_move_bytes_per_tick"] > report["genome_bytes_per_tick"]
    moved = report["must_move_bytes_per_tick"] * report["ticks_per_second"] / report["measured_read_bandwidth"]
    assert report["must_move_ratio"] == pytest.approx(moved)
    # The timed runs each stepped the same ticks from the state after the warm-up; the
    # figures are the best run, and each run is also set against the reading after it.
    runs = report["runs"]
    assert len(runs) == 3 and all(run["end_tick"] == 3 + 5 for run in runs)
    assert 1 / report["ticks_per_second"] == pytest.approx(min(run["seconds_per_tick"] for run in runs))
    assert report["measured_read_bandwidth"] == max(run["read_bandwidth"] for run in runs)
    for run in runs:
        paired = report["must_move_bytes_per_tick"] / run["seconds_per_tick"] / run["read_bandwidth"]
        assert run["must_move_ratio"] == pytest.approx(paired)
    # The brain alone, against the genomes read and the plastic weights read and written.
    assert report["genome_bytes_per_tick"] < report["brain_bytes"] < report["must_move_bytes_per_tick"]
    brain = report["brain_bytes"] / report["brain_seconds"] / report["measured_read_bandwidth"]
    assert report["brain_ratio"] == pytest.approx(brain)
    phases = report["phase_seconds"]
    assert list(phases) == ["inflow", "sense", "decide", "settle", "transfer", "decay"]
    # The phases and the kernels start where the timed runs did: they show those ticks.
    assert report["phase_ticks"][0] == 3 < report["phase_ticks"][1]
    assert report["kernel_ticks"] == [3, 3 + 5]
    assert all(seconds > 0 for seconds in phases.values())
    # The fused tick's kernels, each counted to the hca function it was compiled from,
    # largest first: the brain's forward pass is one of them, and each origin appears once.
    kernels = report["kernel_seconds"]
    origins = [row["origin"] for row in kernels]
    assert "brain.think" in origins and "decide.act" in origins and len(set(origins)) == len(origins)
    assert all(row["seconds"] > 0 and row["kernels"] > 0 for row in kernels)
    assert [row["seconds"] for row in kernels] == sorted((row["seconds"] for row in kernels), reverse=True)
    assert all(origin.split(".")[0] in MODULES for origin in origins if not origin.startswith("("))
    # The traced tick's wall time: a kernel running, or none; the kernels' summed time
    # counts the time two run at once twice.
    timeline = report["kernel_timeline"]
    assert 0 < timeline["busy"] <= timeline["span"] and timeline["parallel"] <= timeline["busy"]
    assert timeline["idle"] == pytest.approx(timeline["span"] - timeline["busy"])
    assert sum(row["seconds"] for row in kernels) >= (timeline["busy"] + timeline["parallel"]) * (1 - 1e-9)
    # Kernels split over the cores, and how late a second thread took up its part.
    assert timeline["splits"] >= 0
    if timeline["splits"]:
        assert 0 <= timeline["split_delay"] <= timeline["split_delay_p90"]
        # Half the delays at least are as long as the median.
        assert timeline["split_delay_total"] >= timeline["splits"] / 2 * timeline["split_delay"] * (1 - 1e-9)


def _bench_module():
    """scripts/bench.py as a module, for its helpers."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench", ROOT / "scripts" / "bench.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_bench_names_the_processor_in_one_line():
    bench = _bench_module()
    line = bench.describe_processor({"model": "AMD EPYC", "vector": "AVX2", "cache_bytes": 32 << 20})
    assert line == "AMD EPYC, AVX2, 32 MiB last-level cache"
    assert bench.describe_processor({"model": None, "vector": None, "cache_bytes": None}) == "unknown CPU"
    assert bench.describe_processor(bench.processor()).startswith(bench.processor()["model"] or "unknown CPU")


def test_kernel_timeline_splits_wall_time_into_busy_idle_and_parallel():
    bench = _bench_module()
    # Two kernels overlapping for 1 s, a gap of 2 s, a third kernel; over 2 ticks.
    timeline = bench.kernel_timeline([(1.0, 3.0), (0.0, 2.0), (5.0, 6.0)], 2)
    assert timeline == {"span": 3.0, "busy": 2.0, "idle": 1.0, "parallel": 0.5}
    # Nested and touching intervals: one runs throughout, never two after the first ends.
    assert bench.kernel_timeline([(0.0, 4.0), (1.0, 2.0), (4.0, 5.0)], 1) == {
        "span": 5.0, "busy": 5.0, "idle": 0.0, "parallel": 1.0}


def test_split_delays_time_a_part_from_the_kernel_running_elsewhere():
    bench = _bench_module()
    # Thread 1 runs a kernel over [0, 10] and one over [12, 20]; thread 2 one over [3, 5].
    kernels = [(12.0, 20.0, 1), (0.0, 10.0, 1), (3.0, 5.0, 2)]
    # Thread 2 takes up parts at 2 (the kernel of [0, 10]) and 4 (its own kernel runs then,
    # and thread 1's of [0, 10]: 4 after it began); thread 1 at 4.5 (thread 2's, 1.5
    # after), thread 2 at 11 (nothing runs elsewhere: left out) and at 19 (7 after 12).
    parts = [(2.0, 2), (4.0, 2), (4.5, 1), (11.0, 2), (19.0, 2)]
    assert bench.split_delays(kernels, parts) == [2.0, 4.0, 1.5, 7.0]
    assert bench.split_delays(kernels, []) == []


def test_split_summary_counts_sums_and_ranks_the_delays_per_tick():
    bench = _bench_module()
    summary = bench.split_summary([2.0, 4.0, 1.5, 7.0], ticks=2)
    assert summary == {
        "splits": 2.0,
        "split_delay": 3.0,
        "split_delay_p90": pytest.approx(6.1),
        "split_delay_total": 7.25,
    }
    assert bench.split_summary([], ticks=3) == {
        "splits": 0.0, "split_delay": None, "split_delay_p90": None, "split_delay_total": 0.0
    }


def test_bench_resizes_axes(small_world):
    report = json.loads(script("bench.py", small_world, *BENCHED, "--ticks", "2", "--no-phases", "--no-kernels",
                               "--json").strip().splitlines()[-1])
    assert report["cells"] == resized_cells(small_world, "a", 6) and report["warm_ticks"] == 3
    # What the figures depend on besides the code: hca's own XLA flags, the versions.
    assert "--xla_cpu_prefer_vector_width=512" in report["xla_flags"].split()
    assert "device_count" not in report["xla_flags"]
    assert report["versions"]["jax"] == metadata.version("jax")
    assert report["phase_seconds"] is None and report["kernel_seconds"] is None
    assert report["phase_ticks"] is None and report["kernel_ticks"] is None
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench.py"), str(small_world), "--resize", "z=4"],
                            capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode != 0 and "no axis named 'z'" in result.stderr
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench.py"), str(small_world), "--warm", "0"],
                            capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 2 and "--warm 0: expected a whole number of ticks >= 1" in result.stderr
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench.py"), str(small_world), "--repeats", "0"],
                            capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 2 and "--repeats 0: expected a whole number of runs >= 1" in result.stderr
    for devices, message in (("0", "--devices 0: expected a whole number of devices >= 1"),
                             ("64", "--devices 64: asked for 64 devices")):
        result = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench.py"), str(small_world), "--devices",
                                 devices], capture_output=True, text=True, timeout=600, check=False)
        assert result.returncode == 2 and message in result.stderr, result.stderr



def test_run_world_prints_a_balanced_ledger(small_world):
    lines = script("run_world.py", small_world, "--steps", "20", "--every", "10").splitlines()
    assert lines[0].split()[0] == "tick" and len(lines) == 4
    assert all(line.split()[-1] == "True" for line in lines[1:])


def test_bench_scaling_reads_collectives_from_the_program(small_world):
    result = run_script("bench_scaling.py", small_world, "--devices", "2", "4", "--ticks", "3", "--json", devices=2)
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    by = {(row["world"], row["devices"]): row for row in rows}
    # Device counts beyond those present are skipped, saying so once.
    assert set(by) == {("life", 2), ("life_unstretched", 2)}
    assert result.stderr.count("bench_scaling: 4 devices asked, 2 present: skipped") == 1
    for name in ("life", "life_unstretched"):
        spread = by[(name, 2)]
        assert spread["collectives_per_tick"] > 0 and spread["bytes_sent_per_device_per_tick"] > 0
        assert spread["by_kind_per_tick"].get("collective-permute", 0) > 0  # the halos
        assert set(spread["bytes_per_tick_by_axis"]) == {"b"}
    # b (stretch 2) is split over the 2 devices: it exchanges on half the ticks, or on
    # every tick without stretch.
    assert by[("life", 2)]["every_tick_collectives"] == 0
    assert by[("life", 2)]["fraction_of_ticks_exchanging"] == 0.5
    assert by[("life_unstretched", 2)]["fraction_of_ticks_exchanging"] == 1.0
    assert by[("life", 2)]["bytes_per_tick_by_axis"]["b"] < by[("life_unstretched", 2)]["bytes_per_tick_by_axis"]["b"]


def test_evolve_tasks_runs_both_arms_and_summarises(tmp_path):
    pytest.importorskip("matplotlib", reason="the viz extra (matplotlib) is not installed")
    from test_tasks import tasks_world

    world = tmp_path / "tasks.yaml"
    world.write_text(yaml.safe_dump(tasks_world()))
    out = tmp_path / "evolve"
    args = (world, "--ticks", 60, "--seeds", 2, 3, "--report-every", 20, "--out", out)
    printed = script("evolve_tasks.py", *args)
    runs = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert runs == ["control-s2", "control-s3", "evolving-s2", "evolving-s3"]
    control = yaml.safe_load((out / "control-s2" / "world.yaml").read_text())
    assert control["regions"]["grid"]["organisms"]["mutation"]["enabled"] is False
    assert control["seed"] == 2
    for run in runs:  # no tree on the host, the journals all the same
        assert yaml.safe_load((out / run / "world.yaml").read_text())["run"]["phylogeny"]["track"] is False
        assert (out / run / "phylogeny" / "born.bin").stat().st_size > 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["seeds"] == [2, 3]
    groups = {"product", "parity"}  # and their later cells' partial results:
    assert set(summary["tasks"]) == groups | {f"{g}, passed on" for g in groups} | {"logic", "function_1", "function_2"}
    entry = summary["tasks"]["logic"]["evolving"]["2"]
    assert 0.0 <= entry["quality_early"] <= 1.0 and entry["earned_late"] >= 0.0
    relay = summary["tasks"]["parity, passed on"]["evolving"]["2"]
    assert 0.0 <= relay["quality_late"] <= 1.0 and relay["earned_late"] is None
    assert "| logic | evolving |" in printed and (out / "evolution.png").stat().st_size > 10_000
    # Run again: the runs are complete, so nothing is run and the summary is the same.
    assert script("evolve_tasks.py", *args) == printed


def test_bench_live_compares_a_watched_run_with_one_alone(tmp_path):
    from test_live import WORLD

    path = tmp_path / "agora_small.yaml"
    path.write_text(yaml.safe_dump(WORLD))
    out = script("bench_live.py", path, "--warm", "20", "--ticks", "200", "--rounds", "2")
    rounds = [line for line in out.splitlines() if line.startswith("round ")]
    assert len(rounds) == 2 and "ticks 20..220" in rounds[0] and "ticks 220..420" in rounds[1]
    for line in rounds:
        frames = int(line.split("(")[2].split(" frames")[0])
        assert frames >= 1  # the client got frames while the watched run stepped
    ratio = float(out.strip().splitlines()[-1].rsplit(" ", 1)[1])
    assert 0.1 < ratio < 10


def test_bench_recording_times_a_run_with_and_without_its_tree(small_world):
    out = json.loads(script("bench_recording.py", small_world, "--warm", "64", "--ticks", "256"))
    assert out["ticks"] == 256 and out["births_and_deaths_per_tick"] > 0
    # The tree was fed at the reports: some births reached it, and some died out unseen.
    assert 0 < out["births_fed_to_the_tree"] < 1
    assert out["ticks_per_second_plain"] > 0 and out["ticks_per_second_recorded"] > 0


def test_kernel_origins_count_a_rewritten_cumulative_sum_to_its_function():
    """XLA rewrites a running count along a tile into kernels of its own that keep no
    stack (``wrapped_reduce-window``): they are counted to the function whose values
    they read, not to XLA."""
    import jax
    import jax.numpy as jnp

    from hca.geometry import Tiling

    bench = _bench_module()
    tiling = Tiling((4, 8, 16), 1)
    mask = jnp.arange(4 * 8 * 16).reshape(4, 128) % 3 == 0
    hlo = jax.jit(lambda m: tiling.first(m, 5)).lower(mask).compile().as_text()
    origins = bench.kernel_origins(hlo)
    wrapped = {name: origin for name, origin in origins.items() if name.startswith("wrapped_reduce-window")}
    assert wrapped and set(wrapped.values()) == {"geometry.Tiling.first"}, origins
