"""hca's XLA flags: the "ynn" fusion crash on rank-7/8 contractions stays avoided, the
conditional copy analysis and the full vector width are on, loops over a short innermost
axis are vectorised where JAX runs on the CPU alone, XLA GPU's autotuning is off where it
may run on an accelerator, and flags a user gives are kept; and the programs start again
with glibc's malloc on transparent huge pages where the machine offers them on request."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys

from hca._xla import cpu_cores

SCRIPT = """
import os
import hca
import jax.numpy as jnp
import jax
flags = os.environ["XLA_FLAGS"]
assert "--xla_cpu_experimental_ynn_fusion_type=" in flags.split(), flags
assert "--xla_cpu_copy_insertion_use_region_analysis=true" in flags.split(), flags
assert "--xla_cpu_prefer_vector_width=512" in flags.split(), flags
assert "--xla_backend_extra_options=-unroll-full-max-count=15" in flags.split(), flags
assert "--xla_force_host_platform_device_count=2" in flags.split(), flags
x = (jnp.arange(2 * 2 * 2 * 2 * 4 * 8 * 16) % 7).astype(jnp.float32).reshape(2, 2, 2, 2, 4, 8, 16, 1)
w = jnp.ones((2, 2, 2, 2, 4, 8, 16, 6, 5), jnp.float32)
y = jax.jit(lambda x, w: (x[..., None] * w).sum(axis=-2))(x, w)
print(float(y.sum()), jax.device_count())
"""


def _run(script: str, flags: str, platforms: str = "cpu") -> str:
    """What ``script`` prints, run in a new Python with ``XLA_FLAGS=flags`` and
    ``JAX_PLATFORMS=platforms``."""
    env = {**os.environ, "XLA_FLAGS": flags, "JAX_PLATFORMS": platforms}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_workaround_flag_appended_and_rank8_contraction_runs():
    total, devices = _run(SCRIPT, "--xla_force_host_platform_device_count=2").split()
    n = 2 * 2 * 2 * 2 * 4 * 8 * 16
    # Each of the 5 outputs sums 6 copies of x.
    assert float(total) == 30.0 * sum(i % 7 for i in range(n)) and devices == "2"


def test_flags_a_user_gives_are_kept():
    script = "import os, hca; print(os.environ['XLA_FLAGS'])"
    given = "--xla_cpu_copy_insertion_use_region_analysis=false"
    flags = _run(script, given).split()
    assert flags == [given, "--xla_cpu_experimental_ynn_fusion_type=", "--xla_cpu_prefer_vector_width=512",
                     "--xla_backend_extra_options=-unroll-full-max-count=15",
                     f"--xla_force_host_platform_device_count={cpu_cores()}"], flags
    given = "--xla_backend_extra_options=-unroll-threshold=100"
    assert _run(script, given).split()[0] == given and "-unroll-full-max-count=15" not in _run(script, given)


def test_on_the_cpu_alone_jax_has_one_device_per_core():
    """So that ``hca run`` can spread a world over the cores (``make_mesh``); a count the
    user gives is kept, and where JAX may run on an accelerator none is given."""
    script = "import hca, jax; print(jax.device_count())"
    assert int(_run(script, "")) == cpu_cores()
    assert int(_run(script, "--xla_force_host_platform_device_count=3")) == 3
    script = "import os, hca; print(os.environ['XLA_FLAGS'])"
    assert "device_count" not in _run(script, "", "cuda")


def test_the_flags_a_run_records_leave_out_what_cannot_change_its_floats():
    """``float_flags`` (run.json's ``xla_flags``): XLA_FLAGS less the fake device count
    and dumps, hca's own included, in their order."""
    script = "import hca._xla as x; print(x.float_flags())"
    given = "--xla_force_host_platform_device_count=2 --xla_dump_to=/tmp/nowhere --xla_cpu_enable_fast_math=false"
    assert _run(script, given).split() == [
        "--xla_cpu_enable_fast_math=false", "--xla_cpu_experimental_ynn_fusion_type=",
        "--xla_cpu_copy_insertion_use_region_analysis=true", "--xla_cpu_prefer_vector_width=512",
        "--xla_backend_extra_options=-unroll-full-max-count=15"]


def test_where_jax_may_run_on_an_accelerator_llvm_is_left_alone_and_autotuning_is_off():
    """LLVM's options reach XLA GPU's code generation too: with an accelerator named in
    JAX_PLATFORMS the unrolling limit is not given, and XLA GPU's autotuning is turned
    off, so that every compilation of a step makes the same kernels (JAX is not started
    here). A level the user gives is kept; on the CPU alone the flag is not given, and
    XLA accepts it (it stops a process at an unknown flag)."""
    script = "import os, hca; print(os.environ['XLA_FLAGS'])"
    for platforms in ("cuda", "cuda,cpu", "tpu"):
        flags = _run(script, "", platforms).split()
        assert "--xla_cpu_prefer_vector_width=512" in flags and not any("unroll" in f for f in flags), flags
        assert "--xla_gpu_autotune_level=0" in flags, flags
    flags = _run(script, "--xla_gpu_autotune_level=4", "cuda").split()
    assert flags[0] == "--xla_gpu_autotune_level=4" and "--xla_gpu_autotune_level=0" not in flags, flags
    assert not any("autotune" in f for f in _run(script, "").split())
    started = "import hca, jax.numpy as jnp; print(float(jnp.arange(4.0).sum()))"
    assert _run(started, "--xla_gpu_autotune_level=0").split() == ["6.0"]


def test_a_cuda_or_rocm_plugin_counts_only_where_the_machine_shows_such_a_device(monkeypatch, tmp_path):
    """With ``JAX_PLATFORMS`` unset, JAX's CUDA wheels on a Linux machine without an
    NVIDIA device (a cluster's CPU node) leave JAX on the CPU alone: the unrolling limit
    is given there, as on a CPU-only install, so the two compute the same floats. Where
    the device files exist, or the plugin is of another kind, JAX may run on it."""
    from hca import _xla

    monkeypatch.delenv("JAX_PLATFORMS", raising=False)
    monkeypatch.setattr(_xla.sys, "platform", "linux")
    devices = set()
    monkeypatch.setattr(_xla.os.path, "exists", lambda path: path in devices)
    plugins = []
    monkeypatch.setattr(_xla, "_accelerator_plugins", lambda: plugins)
    assert _xla._cpu_only()  # nothing installed
    plugins[:] = ["xla_cuda12"]
    assert _xla._cpu_only()
    devices.add("/dev/nvidiactl")
    assert not _xla._cpu_only()
    plugins[:] = ["xla_rocm7"]
    assert _xla._cpu_only()  # an NVIDIA device, a ROCm plugin
    devices.add("/dev/kfd")
    assert not _xla._cpu_only()
    devices.clear()
    for plugin in ("libtpu", "metal_plugin"):  # kinds whose devices are not looked for
        plugins[:] = [plugin]
        assert not _xla._cpu_only()
    plugins[:] = ["xla_cuda12"]
    monkeypatch.setattr(_xla.sys, "platform", "darwin")
    assert not _xla._cpu_only()
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    assert _xla._cpu_only()
    monkeypatch.undo()
    # The plugins are listed from the namespace package's folders, not imported.
    namespace = tmp_path / "jax_plugins"
    (namespace / "xla_cuda12").mkdir(parents=True)
    (namespace / "__pycache__").mkdir()
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    assert "xla_cuda12" in _xla._accelerator_plugins() and "__pycache__" not in _xla._accelerator_plugins()


def test_a_loop_over_a_short_innermost_axis_is_vectorised(tmp_path):
    """An elementwise kernel over (..., 16) float32, its loop over the 16 unrolled in
    full by LLVM, is scalar code unless LLVM's full unrolling stops below 16 iterations:
    read in the kernel's optimized LLVM IR."""
    script = """
import hca, jax, jax.numpy as jnp
x = jnp.ones((4096, 16), jnp.float32)
jax.jit(lambda c, x: c * 0.5 + x).lower(x, x).compile()
"""

    def vector_lines(name: str, flags: str) -> int:
        dump = tmp_path / name
        _run(script, f"--xla_dump_to={dump} {flags}".strip())
        kernels = [path for path in dump.glob("*ir-with-opt.ll") if "lambda" in path.name]
        assert len(kernels) == 1, sorted(path.name for path in dump.iterdir())
        return sum("x float>" in line for line in kernels[0].read_text().splitlines())

    assert vector_lines("hca", "") > 0
    assert vector_lines("unrolled", "--xla_backend_extra_options=-unroll-full-max-count=16") == 0


def test_the_copy_analysis_leaves_out_copies_a_branch_does_not_need():
    """A conditional whose branches update a large operand in place (as the stretch
    schedule's branches update the halo) copies it fewer times with hca's flags than
    without the copy analysis."""
    script = """
import hca, jax, jax.numpy as jnp
def step(x, i):
    branches = [lambda x, k=k: x.at[..., k, :].set(x[..., k, :] + 1.0) for k in range(3)]
    return jax.lax.switch(i, branches, x)
x = jnp.zeros((64, 64, 4, 5), jnp.float32)
text = jax.jit(step, donate_argnums=0).lower(x, 1).compile().as_text()
print(sum(" copy(" in line and "f32[64,64,4,5]" in line for line in text.splitlines()))
"""
    off = "--xla_cpu_copy_insertion_use_region_analysis=false"
    assert int(_run(script, "")) < int(_run(script, off))


def _huge_pages_machine(monkeypatch, tmp_path, mode="always [madvise] never", libc=("glibc", "2.36")):
    """hca._xla, on a Linux machine with ``libc`` and transparent huge pages in ``mode``."""
    import platform

    from hca import _xla

    enabled = tmp_path / "enabled"
    enabled.write_text(mode + "\n")
    monkeypatch.setattr(_xla, "TRANSPARENT_HUGE_PAGES", str(enabled))
    monkeypatch.setattr(platform, "libc_ver", lambda: libc)
    monkeypatch.setattr(sys, "platform", "linux")
    return _xla


def test_huge_pages_are_asked_for_only_where_the_kernel_gives_them_on_request(monkeypatch, tmp_path):
    xla = _huge_pages_machine(monkeypatch, tmp_path)
    assert xla.huge_pages_environment({"A": "1"}) == {"A": "1", "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}
    # Other tunables are kept; one already given, or HCA_HUGE_PAGES=off, leaves it all.
    kept = xla.huge_pages_environment({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"})
    assert kept["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"
    assert xla.huge_pages_environment({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}) is None
    assert xla.huge_pages_environment({"HCA_HUGE_PAGES": "off"}) is None
    for mode, libc in (("[always] madvise never", ("glibc", "2.36")), ("always madvise [never]", ("glibc", "2.36")),
                       ("always [madvise] never", ("glibc", "2.31")), ("always [madvise] never", ("", ""))):
        xla = _huge_pages_machine(monkeypatch, tmp_path, mode, libc)
        assert xla.huge_pages_environment({}) is None, (mode, libc)
    monkeypatch.setattr(xla, "TRANSPARENT_HUGE_PAGES", str(tmp_path / "absent"))
    assert xla.huge_pages_environment({}) is None


def test_a_program_starts_again_with_huge_pages_once():
    """``restart_with_huge_pages`` runs the same command line again with the setting (and
    then goes on), on this machine where it can be had; off, it does nothing."""
    from hca._xla import huge_pages_environment

    script = (
        "import os; from hca._xla import restart_with_huge_pages; restart_with_huge_pages(); "
        "print(os.environ.get('GLIBC_TUNABLES', ''))"
    )
    for setting in ("", "off"):
        env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "HCA_HUGE_PAGES")}
        env["HCA_HUGE_PAGES"] = setting
        result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
        assert result.returncode == 0, result.stderr
        tunables = result.stdout.split()
        expected = [] if setting == "off" or huge_pages_environment(env) is None else ["glibc.malloc.hugetlb=1"]
        assert tunables == expected, result.stdout


def test_the_command_line_starts_again_with_huge_pages_only_as_a_program(monkeypatch, capsys):
    """``hca`` (``main()``, its arguments from the command line) asks for the restart;
    ``main([...])`` called from Python, as the tests and scripts do, never does."""
    import pytest

    from hca import _xla
    from hca.cli import main

    asked = []
    monkeypatch.setattr(_xla, "restart_with_huge_pages", lambda: asked.append(True))
    monkeypatch.setattr(sys, "argv", ["hca", "--version"])
    with pytest.raises(SystemExit):
        main()
    assert asked == [True]
    with pytest.raises(SystemExit):
        main(["--version"])
    assert asked == [True]

