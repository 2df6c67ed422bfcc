"""Run directories and their checkpoints (orbax).

A run directory holds ``world.yaml`` (the resolved world), ``run.json`` (the run's
settings), ``metrics.jsonl`` and ``checkpoints/``, where orbax keeps one directory per
saved tick. Each checkpoint holds the whole state (the tick and seed are part of it,
and every random draw is a hash of them, so nothing else is needed to continue) and a
JSON item with the world it belongs to and a digest of the state.

A save is atomic (orbax writes to a temporary directory and renames it when done). On
reading, a checkpoint whose files fail to restore, or whose arrays no longer match
their digest, is reported in one line and skipped for the previous good one;
temporary directories left by an interrupted save are reported and left alone.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
import yaml

from hca.config import WorldConfig, WorldFileError, parse_world
from hca.state import WorldState

# The layout of the saved state; checkpoints of another format are skipped, not guessed at.
# 2: the ledger's counters are kept per tile. 3: tasks (brains see task inputs and
# answer; regions count what their tasks pay). 4: tasks count a group's partial results.
# 5: the state keeps the deaths of the last ticks until the phylogeny drains them.
# 6: organisms cross beaches: ids and lineages unique in the world, beaches count crossings.
# 7: the head's weights and the plastic weights are (outputs, hidden units).
FORMAT = 7
WORLD_FILE = "world.yaml"
SETTINGS_FILE = "run.json"
METRICS_FILE = "metrics.jsonl"
CHECKPOINTS = "checkpoints"
_TMP_MARK = ".orbax-checkpoint-tmp"


class RunDirectoryError(Exception):
    """A run directory or checkpoint that cannot be used; one line for the user."""


def state_digest(state: WorldState) -> str:
    """sha256 over every array of the state: its path, dtype, shape and bytes."""
    from hca.parallel import gather

    digest = hashlib.sha256()
    leaves = jax.tree_util.tree_flatten_with_path(gather(state))[0]
    for path, leaf in leaves:
        value = np.asarray(leaf)
        digest.update(jax.tree_util.keystr(path).encode())
        digest.update(f"{value.dtype}{value.shape}".encode())
        digest.update(np.ascontiguousarray(value).tobytes())
    return digest.hexdigest()


@dataclass
class Checkpoint:
    tick: int
    state: WorldState
    meta: dict[str, Any]


class RunDirectory:
    """The files of one run."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)

    @property
    def world_file(self) -> Path:
        return self.path / WORLD_FILE

    @property
    def metrics_file(self) -> Path:
        return self.path / METRICS_FILE

    @property
    def settings_file(self) -> Path:
        return self.path / SETTINGS_FILE

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINTS

    # -- creating ------------------------------------------------------------------

    def create(self, world: WorldConfig, settings: dict[str, Any]) -> None:
        """Make a new run directory (it must not exist or be empty); with several
        processes the first writes it and the others wait for it. All or nothing: it is
        made beside its place and renamed there, so a run stopped meanwhile (Ctrl-C)
        leaves no half-made directory in the way of the next."""
        from hca.parallel import barrier, writer

        barrier("hca-run-directory-checked")
        if writer():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            staging = self.path.with_name(f".{self.path.name}.new")
            shutil.rmtree(staging, ignore_errors=True)  # left by a run stopped here before
            staging.mkdir()
            (staging / WORLD_FILE).write_text(world.to_yaml(), encoding="utf-8")
            (staging / SETTINGS_FILE).write_text(_settings_text(settings), encoding="utf-8")
            (staging / CHECKPOINTS).mkdir()
            os.replace(staging, self.path)  # onto no directory or an empty one
        barrier("hca-run-directory-made")

    def write_settings(self, settings: dict[str, Any]) -> None:
        from hca.parallel import writer

        if writer():
            _write_atomic(self.settings_file, _settings_text(settings))

    # -- reading -------------------------------------------------------------------

    def check(self) -> None:
        if not self.path.exists():
            raise RunDirectoryError(f"{self.path}: no such run directory")
        if not self.path.is_dir() or not self.world_file.is_file():
            raise RunDirectoryError(f"{self.path}: not a run directory (no {WORLD_FILE})")

    def world(self) -> WorldConfig:
        self.check()
        try:
            data = yaml.safe_load(self.world_file.read_text(encoding="utf-8"))
        except yaml.YAMLError as error:
            raise RunDirectoryError(f"{self.world_file}: not valid YAML ({error})") from None
        try:
            return parse_world(data, self.world_file)
        except WorldFileError as error:
            raise RunDirectoryError(str(error).replace("\n", ";")) from None

    def settings(self) -> dict[str, Any]:
        try:
            return json.loads(self.settings_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}

    def interrupted_saves(self) -> list[Path]:
        if not self.checkpoints.is_dir():
            return []
        return sorted(p for p in self.checkpoints.iterdir() if _TMP_MARK in p.name)

    def saved_ticks(self) -> list[int]:
        """Ticks of the completed checkpoints, oldest first."""
        if not self.checkpoints.is_dir():
            return []
        return sorted(int(p.name) for p in self.checkpoints.iterdir() if p.name.isdigit() and p.is_dir())

    def manager(self, keep: int | None = None, asynchronous: bool = False) -> ocp.CheckpointManager:
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep,
            create=True,
            enable_async_checkpointing=asynchronous,
            cleanup_tmp_directories=False,
        )
        return ocp.CheckpointManager(self.checkpoints.absolute(), options=options)

    def load(
        self,
        world: WorldConfig,
        target: Any,
        tick: int | None = None,
        report: Callable[[str], None] = lambda line: None,
    ) -> Checkpoint:
        """The newest good checkpoint (or the one at ``tick``), restored into ``target``:
        ShapeDtypeStructs with shardings (``Simulation.abstract_state()``), so that a
        checkpoint written on any number of devices loads onto the current layout.

        Damaged checkpoints and interrupted saves are reported through ``report``, one
        line each, and skipped; nothing is deleted.
        """
        self.check()
        for partial in self.interrupted_saves():
            report(f"{partial}: incomplete save (the run was stopped while saving); ignored")
        ticks = self.saved_ticks()
        if not ticks:
            raise RunDirectoryError(f"{self.path}: no checkpoint in {self.checkpoints}")
        if tick is not None:
            if tick not in ticks:
                raise RunDirectoryError(
                    f"{self.path}: no checkpoint at tick {tick} (saved ticks: {', '.join(map(str, ticks))})"
                )
            ticks = [tick]
        # orbax logs (with tracebacks) what it cannot read; the report below says it once.
        absl_logger = logging.getLogger("absl")
        level = absl_logger.level
        absl_logger.setLevel(logging.CRITICAL)
        manager = self.manager()
        try:
            for candidate in reversed(ticks):
                where = self.checkpoints / str(candidate)
                meta = self._read_meta(candidate)
                if meta is not None and meta.get("format") != FORMAT:
                    report(
                        f"{where}: saved in state format {meta.get('format')!r} by another version "
                        f"of hca (this one reads format {FORMAT}); skipped"
                    )
                    continue
                if meta is not None and not _same_world(meta.get("world"), world):
                    raise RunDirectoryError(
                        f"{where}: written for a different world "
                        f"({meta.get('world', {}).get('name')!r}) than {self.world_file}"
                    )
                try:
                    restored = manager.restore(
                        candidate,
                        args=ocp.args.Composite(
                            state=ocp.args.StandardRestore(target),
                            meta=ocp.args.JsonRestore(),
                        ),
                    )
                except Exception as error:  # orbax raises many kinds for damaged files
                    report(f"{where}: damaged ({_first_line(error)}); skipped")
                    continue
                meta, state = dict(restored["meta"]), restored["state"]
                if state_digest(state) != meta.get("state_digest"):
                    report(f"{where}: damaged (arrays do not match their digest); skipped")
                    continue
                return Checkpoint(candidate, state, meta)
        finally:
            absl_logger.setLevel(level)
            manager.close()
        raise RunDirectoryError(f"{self.path}: no readable checkpoint (all damaged)")

    def _read_meta(self, tick: int) -> dict[str, Any] | None:
        """The checkpoint's JSON item, read directly (None if unreadable)."""
        try:
            return json.loads((self.checkpoints / str(tick) / "meta" / "metadata").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None


class Saver:
    """Saves checkpoints of a running world, keeping the newest ``keep``."""

    def __init__(self, run_dir: RunDirectory, world: WorldConfig, keep: int):
        self.run_dir = run_dir
        self.world = world.model_dump(mode="json")
        self.manager = run_dir.manager(keep=keep, asynchronous=True)

    def save(self, state: WorldState, extra: dict[str, Any] | None = None) -> int:
        """Save ``state`` (and ``extra`` in its JSON item) unless its tick is saved already."""
        tick = int(state.tick)
        if tick in self.manager.all_steps():
            return tick
        meta = {"format": FORMAT, "tick": tick, "world": self.world, "state_digest": state_digest(state),
                **(extra or {})}
        self.manager.save(
            tick,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)
            ),
            force=True,
        )
        return tick

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def _same_world(saved: Any, world: WorldConfig) -> bool:
    """Whether a checkpoint's recorded world is ``world``, compared after validation so
    that keys added later with their defaults do not tell them apart."""
    try:
        return parse_world(saved) == world
    except WorldFileError:
        return False


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return (text[0] if text else type(error).__name__)[:200]


def _settings_text(settings: dict[str, Any]) -> str:
    return json.dumps(settings, indent=2) + "\n"


def _write_atomic(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)
