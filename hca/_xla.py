"""Process-wide JAX settings that must be in place before JAX starts its backend."""

import os

# jaxlib 0.10-0.11 on x86 CPU can crash or hang on rank-7/8 broadcast-multiply-reduce
# through its "ynn" fusion; an empty fusion type turns that fusion off.
YNN_WORKAROUND = "--xla_cpu_experimental_ynn_fusion_type="


def configure_environment() -> None:
    """Append the CPU fusion workaround to XLA_FLAGS, keeping whatever is already there."""
    flags = os.environ.get("XLA_FLAGS", "")
    if "--xla_cpu_experimental_ynn_fusion_type" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} {YNN_WORKAROUND}".strip()


def configure_jax() -> None:
    """Integer ledgers need int64; random draws must not depend on the device layout."""
    import jax

    jax.config.update("jax_enable_x64", True)
    jax.config.update("jax_threefry_partitionable", True)
