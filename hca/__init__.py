"""hca: hyperspace cellular automata on the geometry of a GPU cluster."""

from hca._xla import configure_environment, configure_jax

configure_environment()
configure_jax()

from hca.config import WorldConfig, WorldFileError, load_world  # noqa: E402
from hca.world import Simulation, build  # noqa: E402

__all__ = ["Simulation", "WorldConfig", "WorldFileError", "build", "load_world"]
