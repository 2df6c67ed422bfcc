"""Regression test for the jaxlib CPU "ynn" fusion crash on rank-7/8 contractions."""

from __future__ import annotations

import os
import subprocess
import sys

SCRIPT = """
import os
import hca
import jax.numpy as jnp
import jax
flags = os.environ["XLA_FLAGS"]
assert "--xla_cpu_experimental_ynn_fusion_type=" in flags.split(), flags
assert "--xla_force_host_platform_device_count=2" in flags.split(), flags
x = (jnp.arange(2 * 2 * 2 * 2 * 4 * 8 * 16) % 7).astype(jnp.float32).reshape(2, 2, 2, 2, 4, 8, 16, 1)
w = jnp.ones((2, 2, 2, 2, 4, 8, 16, 6, 5), jnp.float32)
y = jax.jit(lambda x, w: (x[..., None] * w).sum(axis=-2))(x, w)
print(float(y.sum()), jax.device_count())
"""


def test_workaround_flag_appended_and_rank8_contraction_runs():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"}
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, result.stderr
    total, devices = result.stdout.split()
    n = 2 * 2 * 2 * 2 * 4 * 8 * 16
    # Each of the 5 outputs sums 6 copies of x.
    assert float(total) == 30.0 * sum(i % 7 for i in range(n)) and devices == "2"
