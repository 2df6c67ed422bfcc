"""hca: hyperspace cellular automata on the geometry of a GPU cluster.

``import hca`` sets up the process for JAX (``hca._xla``) without importing it; the
names below are imported when first used, so that the command line answers at once
(``hca --help``, a world file's errors) and a Ctrl-C while JAX loads is heard."""

from typing import TYPE_CHECKING

from hca._xla import configure_environment

configure_environment()

_PUBLIC = {
    "Simulation": "hca.world",
    "build": "hca.world",
    "WorldConfig": "hca.config",
    "WorldFileError": "hca.config",
    "load_world": "hca.config",
}
__all__ = ["Simulation", "WorldConfig", "WorldFileError", "build", "load_world"]

if TYPE_CHECKING:
    from hca.config import WorldConfig, WorldFileError, load_world
    from hca.world import Simulation, build


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'hca' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(_PUBLIC[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))
