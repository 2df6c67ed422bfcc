"""Strict test configuration: fake CPU devices before JAX starts, strict promotion."""

import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()

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
