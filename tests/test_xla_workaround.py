"""hca's XLA CPU flags: the "ynn" fusion crash on rank-7/8 contractions stays avoided, the
conditional copy analysis and the full vector width are on, and flags a user gives are kept."""

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
assert "--xla_cpu_copy_insertion_use_region_analysis=true" in flags.split(), flags
assert "--xla_cpu_prefer_vector_width=512" in flags.split(), flags
assert "--xla_force_host_platform_device_count=2" in flags.split(), flags
x = (jnp.arange(2 * 2 * 2 * 2 * 4 * 8 * 16) % 7).astype(jnp.float32).reshape(2, 2, 2, 2, 4, 8, 16, 1)
w = jnp.ones((2, 2, 2, 2, 4, 8, 16, 6, 5), jnp.float32)
y = jax.jit(lambda x, w: (x[..., None] * w).sum(axis=-2))(x, w)
print(float(y.sum()), jax.device_count())
"""


def _run(script: str, flags: str) -> str:
    """What ``script`` prints, run in a new Python with ``XLA_FLAGS=flags`` on the CPU."""
    env = {**os.environ, "XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu"}
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
    assert flags == [given, "--xla_cpu_experimental_ynn_fusion_type=", "--xla_cpu_prefer_vector_width=512"], flags


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
