"""Strict test configuration: fake CPU devices before JAX starts, strict promotion."""

import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
# One compilation cache for the session (and the processes it starts): tests build the
# same worlds many times, and each build would otherwise compile its step again.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    import atexit
    import shutil
    import tempfile

    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="hca-test-jax-cache-")
    atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], True)
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"

import jax  # noqa: E402
import pytest  # noqa: E402

import hca  # noqa: E402,F401  (configures JAX: int64 ledgers, partitionable random)

jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")

from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
WORLDS = ROOT / "worlds"


@pytest.fixture
def worlds_dir() -> Path:
    return WORLDS
