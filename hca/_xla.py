"""Process-wide JAX settings that must be in place before JAX starts its backend, and
the versions of what a run's results depend on."""

import os
import sys

# jaxlib 0.10-0.11 on x86 CPU can crash or hang on rank-7/8 broadcast-multiply-reduce
# through its "ynn" fusion; an empty fusion type turns that fusion off.
YNN_WORKAROUND = "--xla_cpu_experimental_ynn_fusion_type="
# XLA CPU copies what a conditional's branches update (the halo, in each branch of the
# stretch schedule) into every branch unless its copy insertion analyses the branches
# as regions: with it, the copies a branch does not need are left out.
REGION_COPIES = "--xla_cpu_copy_insertion_use_region_analysis=true"
# XLA CPU vectorises for 256-bit registers unless told otherwise; where the machine has
# AVX-512 the tick runs faster at 512 bits (5-16% on the benchmark worlds, the same state
# bit for bit). A machine without AVX-512 keeps its widest registers.
VECTOR_WIDTH = "--xla_cpu_prefer_vector_width=512"
CPU_FLAGS = (YNN_WORKAROUND, REGION_COPIES, VECTOR_WIDTH)
# LLVM unrolls XLA CPU's loop over a short innermost axis (the 16 cells of a warp, the
# 16 hidden units) in full before it vectorises, and then leaves the unrolled body
# scalar: an elementwise kernel on (..., 16) float32 took 3-4 times as long as on the
# same values seen flat. Loops of up to 15 iterations are still unrolled in full; longer
# ones are vectorised. LLVM's options also reach XLA GPU's code generation, so this is
# given only where JAX runs on the CPU alone (see ``_cpu_only``). It changes the last
# bits of some floats (they depend on the code LLVM makes of a kernel), so a world's
# states differ from those of a process without it.
UNROLL_LIMIT = "--xla_backend_extra_options=-unroll-full-max-count=15"
# XLA GPU times candidate kernels for a fusion as it compiles (the native and the
# Triton emitters of a reduction, a GEMM's algorithms) and keeps the fastest. Which one
# wins can vary from one compilation to the next, and they sum in different orders: two
# processes that compiled the default world apart on an H200 had different totals by
# tick 224, though each run was bitwise repeatable within its process. Level 0 compiles
# each fusion with its default kernel, so that a resumed run (a new process) computes
# the floats the interrupted one did. Given only where JAX may run on an accelerator.
NO_AUTOTUNING = "--xla_gpu_autotune_level=0"


# On the CPU alone, one JAX device per core (a user's count is kept): ``hca run`` then
# spreads a world over them (``hca.parallel.make_mesh``), each device's tick on a core
# of its own. One device with XLA's threads split each kernel over the cores and waited
# for the others at its end; on 2 cores the default world's tick took 0.75 of the time
# on two devices (the same state bit for bit).
DEVICE_COUNT = "--xla_force_host_platform_device_count"


def cpu_cores() -> int:
    """The CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


# Integer ledgers need int64; random draws must not depend on the device layout.
JAX_SETTINGS = {"jax_enable_x64": True, "jax_threefry_partitionable": True}


def configure_environment() -> None:
    """Append hca's flags to XLA_FLAGS, keeping whatever is already there: a flag
    already given, with any value, is left as given; and make JAX_SETTINGS. JAX itself
    is not imported here, so that ``import hca`` takes no time."""
    flags = os.environ.get("XLA_FLAGS", "")
    extra = (UNROLL_LIMIT, f"{DEVICE_COUNT}={cpu_cores()}") if _cpu_only() else (NO_AUTOTUNING,)
    for flag in CPU_FLAGS + extra:
        if flag.split("=")[0] not in flags:
            flags = f"{flags} {flag}".strip()
    os.environ["XLA_FLAGS"] = flags
    for name, value in JAX_SETTINGS.items():
        _set(name, value)


def _cpu_only() -> bool:
    """Whether JAX will run on the CPU alone: ``$JAX_PLATFORMS`` names only ``cpu``, or,
    unset, no accelerator JAX could use is installed: no ``libtpu``, and no plugin in
    ``jax_plugins`` (where JAX's CUDA and ROCm plugins live) but a CUDA or ROCm one on a
    Linux machine that shows no such device (a CPU node with JAX's CUDA wheels, where JAX
    falls back to the CPU). Found without importing JAX or the plugins."""
    platforms = os.environ.get("JAX_PLATFORMS", "").strip()
    if platforms:
        return {name.strip().lower() for name in platforms.split(",")} == {"cpu"}
    return all(not _may_run(plugin) for plugin in _accelerator_plugins())


# The device files through which Linux shows a process an accelerator of each kind of
# JAX plugin (NVIDIA's driver; AMD's for ROCm); WSL shows either through /dev/dxg.
PLUGIN_DEVICES = {
    "cuda": ("/dev/nvidiactl", "/dev/nvidia0", "/dev/dxg"),
    "rocm": ("/dev/kfd", "/dev/dxg"),
}


def _accelerator_plugins() -> list[str]:
    """The accelerator plugins installed: ``libtpu``, and the modules of the
    ``jax_plugins`` namespace package (e.g. ``xla_cuda12``), by name, not imported."""
    from importlib.util import find_spec

    found = ["libtpu"] if find_spec("libtpu") is not None else []
    spec = find_spec("jax_plugins")
    locations = spec.submodule_search_locations if spec is not None else None
    for location in locations or []:
        try:
            names = sorted(os.listdir(location))
        except OSError:
            continue
        found += [name for name in names if not name.startswith(("_", ".")) and not name.endswith(".dist-info")]
    return found


def _may_run(plugin: str) -> bool:
    """Whether JAX may run on the accelerator of ``plugin``: on Linux, a CUDA or ROCm
    plugin only where a device file of its kind exists; any other plugin, and on other
    systems any plugin, is taken to have its accelerator."""
    kind = next((kind for kind in PLUGIN_DEVICES if kind in plugin.lower()), None)
    if kind is None or not sys.platform.startswith("linux"):
        return True
    return any(os.path.exists(path) for path in PLUGIN_DEVICES[kind])


def _set(name: str, value: bool | float | str) -> None:
    """A JAX option: in JAX if it has been imported, else in the environment, from which
    JAX reads it when it is imported (``jax_enable_x64``: ``$JAX_ENABLE_X64``)."""
    config = getattr(sys.modules.get("jax"), "config", None)  # None: JAX not (yet wholly) imported
    if config is not None:
        config.update(name, value)
    else:
        os.environ[name.upper()] = str(value)


def configure_compilation_cache() -> str | None:
    """Keep compiled steps on disk (JAX's persistent compilation cache), so that a second
    run of the same world starts without compiling. The directory is
    ``$JAX_COMPILATION_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/hca/jax`` (by default
    ``~/.cache/hca/jax``); ``HCA_COMPILATION_CACHE=off`` turns it off. Returns the
    directory, or None when off or when it cannot be created."""
    if os.environ.get("HCA_COMPILATION_CACHE", "").lower() in ("off", "0", "no", "false"):
        return None
    directory = os.environ.get("JAX_COMPILATION_CACHE_DIR")
    if not directory:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        directory = os.path.join(base, "hca", "jax")
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError:
        return None
    _set("jax_compilation_cache_dir", directory)
    _set("jax_persistent_cache_min_compile_time_secs", 0.5)
    return directory


# XLA CPU allocates a run's intermediate arrays afresh on every call of ``run``, and on
# Linux each 4 KiB page of them is faulted in and zeroed when first written: on the
# 131,072-cell world a call spent 59-65 ms so, and 27 ms where glibc's malloc asks the
# kernel for transparent huge pages (2 MiB) for its large blocks. glibc reads this when
# the process starts, so ``restart_with_huge_pages`` starts the program again with it.
HUGE_PAGES = "glibc.malloc.hugetlb=1"
TRANSPARENT_HUGE_PAGES = "/sys/kernel/mm/transparent_hugepage/enabled"


def huge_pages_environment(environ: dict[str, str]) -> dict[str, str] | None:
    """``environ`` with glibc's malloc set to ask for transparent huge pages, or None
    where that is not needed or cannot be had: not Linux with glibc 2.35 or later, the
    kernel's transparent huge pages not given on request (``madvise``: with ``always``
    every large block has them already, with ``never`` none can), the setting already
    in ``GLIBC_TUNABLES``, or ``HCA_HUGE_PAGES=off``."""
    import platform

    if not sys.platform.startswith("linux"):
        return None
    if environ.get("HCA_HUGE_PAGES", "").lower() in ("off", "0", "no", "false"):
        return None
    tunables = environ.get("GLIBC_TUNABLES", "")
    if "glibc.malloc.hugetlb" in tunables:
        return None
    name, version = platform.libc_ver()
    try:
        if name != "glibc" or tuple(int(part) for part in version.split(".")[:2]) < (2, 35):
            return None
        with open(TRANSPARENT_HUGE_PAGES) as file:
            if "[madvise]" not in file.read():
                return None
    except (OSError, ValueError):
        return None
    return {**environ, "GLIBC_TUNABLES": ":".join(filter(None, (tunables, HUGE_PAGES)))}


def restart_with_huge_pages() -> None:
    """Start this program again in this process (``os.execve``, the same command line)
    with glibc's malloc on transparent huge pages (``huge_pages_environment``); returns
    where that is not needed, cannot be had, or the restart fails. For a program's entry
    point only, before it has done anything: what the process holds is replaced."""
    environ = huge_pages_environment(dict(os.environ))
    if environ is None or getattr(sys, "frozen", False):  # frozen: no interpreter to start
        return
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], environ)
    except OSError:
        return


# XLA flags that cannot change a run's floats: the fake CPU device count (the device
# count does not) and where XLA writes what it compiled.
_FLOAT_NEUTRAL = ("--xla_force_host_platform_device_count", "--xla_dump")


def float_flags() -> str:
    """The flags of ``$XLA_FLAGS`` that a run's floats may depend on (hca's own among
    them: LLVM's unrolling limit changes the last bits), in their order; "" if none."""
    flags = os.environ.get("XLA_FLAGS", "").split()
    return " ".join(flag for flag in flags if not flag.startswith(_FLOAT_NEUTRAL))


def versions() -> dict[str, str]:
    """The versions a run's floats depend on (hca, JAX, jaxlib), and Python's: read from
    the installed packages, without importing JAX."""
    import platform
    from importlib import metadata

    def version(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "not installed"

    return {"hca": version("hca"), "jax": version("jax"), "jaxlib": version("jaxlib"),
            "python": platform.python_version()}
