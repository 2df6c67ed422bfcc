"""Bad world files: the file, one line per problem with its key path, exit 2, nothing written."""

from __future__ import annotations

import copy
import os
import subprocess
import sys

import pytest
import yaml

from hca.cli import main


def base():
    return {
        "name": "bad",
        "regions": {
            "gpu": {
                "axes": [
                    {"name": "cluster", "size": 2, "stretch": 8},
                    {"name": "row", "size": 2, "stretch": 4},
                    {"name": "gpu", "size": 4, "stretch": 2, "curled": True},
                    {"name": "sm", "size": 4, "stretch": 1, "curled": True},
                ],
                "energy": {
                    "initial": {"mean": 10, "jitter": 5},
                    "diffusion": 0.05,
                    "sources": [{"kind": "uniform", "amount": 1}],
                },
            }
        },
    }


def edit(change):
    def make():
        world = base()
        change(world)
        return yaml.safe_dump(world)

    return make


def gpu(world):
    return world["regions"]["gpu"]


def set_in(path, value):
    def change(world):
        node = world
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return edit(change)


def tasks(*entries):
    """The base world with organisms and these tasks."""
    return edit(lambda w: gpu(w).update(organisms={"density": 0.5}, tasks=list(entries)))


AXES = ("regions", "gpu", "axes")
ENERGY = ("regions", "gpu", "energy")

CASES = {
    "unknown top-level key": (set_in(("colour",), "red"), ["colour: unknown key"]),
    "unknown axis key": (set_in((*AXES, 1, "colour"), 1), ["regions.gpu.axes[1].colour: unknown key"]),
    "size not a number": (set_in((*AXES, 0, "size"), "big"), ["regions.gpu.axes[0].size", "integer"]),
    "size below 1": (set_in((*AXES, 0, "size"), 0), ["regions.gpu.axes[0].size", ">= 1"]),
    "stretch not integer": (set_in((*AXES, 3, "stretch"), 2.5), ["regions.gpu.axes[3].stretch", "integer"]),
    "stretch zero": (set_in((*AXES, 3, "stretch"), 0), ["regions.gpu.axes[3].stretch", ">= 1"]),
    "stretch negative": (set_in((*AXES, 2, "stretch"), -3), ["regions.gpu.axes[2].stretch", ">= 1"]),
    "curled not a bool": (set_in((*AXES, 0, "curled"), "maybe"), ["regions.gpu.axes[0].curled", "true or false"]),
    "duplicate axis": (set_in((*AXES, 2, "name"), "row"), ["regions.gpu.axes[2].name", "duplicate axis name 'row'"]),
    "bad axis name": (set_in((*AXES, 2, "name"), "2nd gpu"), ["regions.gpu.axes[2].name", "letters"]),
    "negative rate": (set_in((*ENERGY, "diffusion"), -0.1), ["regions.gpu.energy.diffusion", ">= 0"]),
    "rate sends too much": (set_in((*ENERGY, "diffusion"), 0.3), ["regions.gpu.energy.diffusion", "> 1"]),
    "axis rate sends too much": (
        set_in((*AXES, 3, "diffusion"), 0.9),
        ["regions.gpu.energy.diffusion", "0.9 (sm)"],
    ),
    "negative decay": (set_in((*ENERGY, "decay"), -0.5), ["regions.gpu.energy.decay", ">= 0"]),
    "missing axes": (edit(lambda w: gpu(w).pop("axes")), ["regions.gpu.axes: missing required key"]),
    "too many axes": (
        edit(lambda w: gpu(w)["axes"].extend({"name": f"x{i}", "size": 1} for i in range(4))),
        ["regions.gpu.axes", "at most 7"],
    ),
    "no regions": (set_in(("regions",), {}), ["regions", "at least 1"]),
    "unknown source kind": (
        set_in((*ENERGY, "sources", 0, "kind"), "geyser"),
        ["regions.gpu.energy.sources[0]", "uniform"],
    ),
    "misspelt source key": (
        set_in((*ENERGY, "sources", 0, "amout"), 3),
        ["regions.gpu.energy.sources[0].amout: unknown key"],
    ),
    "band on unknown axis": (
        set_in((*ENERGY, "sources", 0), {"kind": "band", "axis": "warp", "stop": 1, "amount": 1}),
        ["regions.gpu.energy.sources[0].axis", "'warp'"],
    ),
    "band past the end": (
        set_in((*ENERGY, "sources", 0), {"kind": "band", "axis": "sm", "start": 2, "stop": 9, "amount": 1}),
        ["regions.gpu.energy.sources[0].stop", "<= 4"],
    ),
    "spot outside": (
        set_in((*ENERGY, "sources", 0), {"kind": "spots", "at": [[0, 0, 0, 4]], "amount": 1}),
        ["regions.gpu.energy.sources[0].at[0]", "inside"],
    ),
    "spots without positions": (
        set_in((*ENERGY, "sources", 0), {"kind": "spots", "amount": 1}),
        ["regions.gpu.energy.sources[0]", "exactly one of"],
    ),
    "placement on an unknown axis": (
        set_in(("regions", "gpu", "placement"), ["cluster", "rack"]),
        ["regions.gpu.placement[1]", "'rack'"],
    ),
    "axis placed twice": (
        set_in(("regions", "gpu", "placement"), ["cluster", "cluster"]),
        ["regions.gpu.placement[1]", "twice"],
    ),
    "placement skips an outer axis": (
        set_in(("regions", "gpu", "placement"), ["cluster", "gpu"]),
        ["regions.gpu.placement[1]", "leading axes in order (['cluster', 'row'])", "'gpu'"],
    ),
    "jitter above mean": (set_in((*ENERGY, "initial", "jitter"), 50), ["regions.gpu.energy.initial.jitter"]),
    "seed too large": (set_in(("seed",), 1 << 40), ["seed: expected a value < 4294967296"]),
    "two problems at once": (
        edit(lambda w: (gpu(w)["axes"][0].update(size=0), gpu(w)["axes"][1].update(stretch=0))),
        ["2 problems", "regions.gpu.axes[0].size", "regions.gpu.axes[1].stretch"],
    ),
    "unknown task kind": (
        tasks({"kind": "riddle", "sites": {"fraction": 0.5}, "amount": 5}),
        ["regions.gpu.tasks[0].kind", "'function', 'logic', 'product', 'parity'", "'riddle'"],
    ),
    "task without a kind": (
        tasks({"sites": {"fraction": 0.5}, "amount": 5}),
        ["regions.gpu.tasks[0].kind: missing required key"],
    ),
    "task site outside": (
        tasks({"kind": "logic", "sites": {"at": [[0, 0, 0, 4]]}, "amount": 5}),
        ["regions.gpu.tasks[0].sites.at[0]", "inside the region's shape [2, 2, 4, 4]"],
    ),
    "task block past the end": (
        tasks({"kind": "logic", "sites": {"axis": "gpu", "start": 1, "stop": 5}, "amount": 5}),
        ["regions.gpu.tasks[0].sites.stop", "<= 4"],
    ),
    "task sites given twice": (
        tasks({"kind": "logic", "sites": {"fraction": 0.5, "at": [[0, 0, 0, 0]]}, "amount": 5}),
        ["regions.gpu.tasks[0].sites", "exactly one of"],
    ),
    "negative task amount": (
        tasks({"kind": "logic", "sites": {"fraction": 0.5}, "amount": -3}),
        ["regions.gpu.tasks[0].amount", ">= 1"],
    ),
    "unknown function": (
        tasks({"kind": "function", "function": "cosh", "sites": {"fraction": 0.5}, "amount": 5}),
        ["regions.gpu.tasks[0].function", "'cosh'"],
    ),
    "unknown logic function": (
        tasks({"kind": "logic", "functions": ["XOR", "IMPLIES"], "sites": {"fraction": 0.5}, "amount": 5}),
        ["regions.gpu.tasks[0].functions[1]", "'IMPLIES'"],
    ),
    "deadline longer than every": (
        tasks({"kind": "logic", "sites": {"fraction": 0.5}, "amount": 5, "every": 2, "deadline": 3}),
        ["regions.gpu.tasks[0].deadline", "deadline <= every (2)"],
    ),
    "deadline too short for the stretch": (
        tasks({"kind": "product", "axis": "row", "n": 2, "sites": {"fraction": 1.0}, "amount": 5,
               "every": 8, "deadline": 4}),
        ["regions.gpu.tasks[0].deadline", "(n - 1) x stretch + 1 = 5", "axis 'row' (stretch 4)"],
    ),
    "group larger than its axis": (
        tasks({"kind": "parity", "axis": "sm", "n": 5, "sites": {"fraction": 1.0}, "amount": 5, "every": 8,
               "deadline": 8}),
        ["regions.gpu.tasks[0].n", "n <= 4", "axis 'sm' (size 4)"],
    ),
    "group on an unknown axis": (
        tasks({"kind": "parity", "axis": "warp", "n": 2, "sites": {"fraction": 1.0}, "amount": 5}),
        ["regions.gpu.tasks[0].axis", "'warp'"],
    ),
    "group site not a first cell": (
        tasks({"kind": "parity", "axis": "sm", "n": 2, "sites": {"at": [[0, 0, 0, 1]]}, "amount": 5, "deadline": 2}),
        ["regions.gpu.tasks[0].sites.at[0]", "multiple of n = 2"],
    ),
    "product levels not 2**k + 1": (
        tasks({"kind": "product", "axis": "sm", "n": 2, "levels": 10, "sites": {"fraction": 1.0}, "amount": 5,
               "deadline": 2}),
        ["regions.gpu.tasks[0].levels", "2**k + 1"],
    ),
    "tolerance not below levels": (
        tasks({"kind": "function", "function": "sine", "levels": 4, "tolerance": 4, "sites": {"fraction": 1.0},
               "amount": 5}),
        ["regions.gpu.tasks[0].tolerance", "tolerance < levels (4)"],
    ),
    "duplicate task names": (
        tasks({"kind": "logic", "name": "quiz", "sites": {"fraction": 0.5}, "amount": 5},
              {"kind": "logic", "name": "quiz", "sites": {"fraction": 0.5}, "amount": 5}),
        ["regions.gpu.tasks[1].name", "duplicate task name 'quiz'"],
    ),
    "tasks without organisms": (
        edit(lambda w: gpu(w).update(tasks=[{"kind": "logic", "sites": {"fraction": 0.5}, "amount": 5}])),
        ["regions.gpu.tasks", "expected organisms in the region"],
    ),
    "learning rate the brain cannot hold": (
        edit(lambda w: gpu(w).update(organisms={"learning_rate": 10.0})),
        ["regions.gpu.organisms.learning_rate", "<= 7.389", "(got 10.0)"],
    ),
    "mutation scale the brain cannot hold": (
        edit(lambda w: gpu(w).update(organisms={"mutation": {"initial_scale": 1e-9}})),
        ["regions.gpu.organisms.mutation.initial_scale", ">= 6.1"],
    ),
    "not YAML": (lambda: "regions: [unclosed\n  - a: {", ["not valid YAML", "line"]),
    "top level is a list": (lambda: "- 1\n- 2\n", ["expected a mapping"]),
    "empty file": (lambda: "", ["expected a mapping"]),
}


@pytest.mark.parametrize("command", ["validate", "run"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_world_file(tmp_path, capsys, command, case):
    make, expected = CASES[case]
    world = tmp_path / "world.yaml"
    world.write_text(make())
    out = tmp_path / "run"
    argv = [command, str(world)] + (["--steps", "5", "--out", str(out)] if command == "run" else [])
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert str(world) in captured.err
    for fragment in expected:
        assert fragment in captured.err, (fragment, captured.err)
    assert "Traceback" not in captured.err
    assert not out.exists()


@pytest.mark.parametrize("command", ["validate", "run"])
def test_missing_file(tmp_path, capsys, command):
    world = tmp_path / "nope.yaml"
    out = tmp_path / "run"
    argv = [command, str(world)] + (["--steps", "5", "--out", str(out)] if command == "run" else [])
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert str(world) in err and "no such file" in err
    assert not out.exists()


def test_every_problem_has_its_own_line(tmp_path, capsys):
    world = base()
    gpu(world)["axes"][0]["size"] = 0
    gpu(world)["axes"][1]["stretch"] = 1.5
    gpu(world)["axes"][2]["colour"] = "red"
    gpu(world)["energy"]["decay"] = -1
    path = tmp_path / "w.yaml"
    path.write_text(yaml.safe_dump(world))
    assert main(["validate", str(path)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[0] == f"hca: error: {path}: 4 problems"
    assert [line.split(":")[0].strip() for line in lines[1:]] == [
        "regions.gpu.axes[0].size",
        "regions.gpu.axes[1].stretch",
        "regions.gpu.axes[2].colour",
        "regions.gpu.energy.decay",
    ]


def test_run_refuses_a_non_empty_run_dir(tmp_path, capsys, worlds_dir):
    out = tmp_path / "run"
    out.mkdir()
    keep = out / "precious.txt"
    keep.write_text("data")
    assert main(["run", str(worlds_dir / "mixed.yaml"), "--steps", "3", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "not empty" in err and str(out) in err
    assert sorted(p.name for p in out.iterdir()) == ["precious.txt"]


def test_bad_arguments_exit_2(capsys, worlds_dir, tmp_path):
    for argv in (
        ["run", str(worlds_dir / "mixed.yaml"), "--steps", "-1", "--out", str(tmp_path / "r")],
        ["run", str(worlds_dir / "mixed.yaml"), "--steps", "ten", "--out", str(tmp_path / "r")],
        ["validate", str(worlds_dir / "mixed.yaml"), "--seed", "-4"],
        ["run", str(worlds_dir / "mixed.yaml"), "--steps", "3", "--keep", "0", "--out", str(tmp_path / "r")],
    ):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
    capsys.readouterr()
    for argv, message in (
        (["run", str(worlds_dir / "mixed.yaml"), "--out", str(tmp_path / "r")], "--steps"),
        (["run", "--steps", "3", "--out", str(tmp_path / "r")], "WORLD.yaml"),
        (["run", str(worlds_dir / "mixed.yaml"), "--resume", str(tmp_path / "r")], "not both"),
    ):
        assert main(argv) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_command_line_process_has_no_traceback(tmp_path):
    world = copy.deepcopy(base())
    gpu(world)["axes"][3]["stretch"] = 0
    path = tmp_path / "w.yaml"
    path.write_text(yaml.safe_dump(world))
    result = subprocess.run(
        [sys.executable, "-m", "hca", "run", str(path), "--steps", "3", "--out", str(tmp_path / "r")],
        capture_output=True,
        text=True,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    assert "regions.gpu.axes[3].stretch" in result.stderr
    assert not (tmp_path / "r").exists()
