"""Atomic checkpoints in the checkpoint dir: write aside, add a manifest, rename; keep the newest N.

A checkpoint is `checkpoint_<iteration:06d>/` holding RLlib's files plus `rlrunner_checkpoint.json`,
written last, with the training progress and the size of every file. A folder without that manifest,
or whose files do not match it (a kill during the write, a partial S3 sync), is not complete and is
never resumed from. No Ray import here. A multi-agent run's manifest meta also carries `policies`
(`POLICIES_META`): every policy (RLModule id under `learner_group/learner/rl_module/`) mapped to the
behaviours it serves, as the scene names them, for exporters.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

MANIFEST = "rlrunner_checkpoint.json"
DISK_RESERVE_BYTES = 1024 * 1024
"""Free space kept beyond the size of a checkpoint before one is written (logs and records need some too)."""
PREFIX = "checkpoint_"
_NAME = re.compile(rf"^{PREFIX}(\d{{6,}})$")
POLICIES_META = "policies"
"""Manifest meta key of a multi-agent checkpoint: {policy id: [behaviour names]}."""
_PARTIAL_PREFIX = ".partial-"
_TRASH_PREFIX = ".trash-"


@dataclass(frozen=True)
class Progress:
    """Where training stands: what a resumed run continues from."""

    iteration: int
    timesteps: int
    time_s: float
    episode_return_mean: float | None = None


@dataclass(frozen=True)
class Checkpoint:
    """A complete checkpoint on disk."""

    path: Path
    progress: Progress
    meta: dict[str, Any] = field(default_factory=dict)
    """Who wrote it: the experiment's run id and spec hash."""


def checkpoint_name(iteration: int) -> str:
    """The folder name of the checkpoint after `iteration` iterations."""
    return f"{PREFIX}{iteration:06d}"


def _manifest_files(folder: Path) -> dict[str, int]:
    return {
        str(path.relative_to(folder)): path.stat().st_size
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != MANIFEST
    }


def read_checkpoint(folder: Path) -> Checkpoint | None:
    """The checkpoint in `folder` if it is complete (manifest present and every file as listed)."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        progress = Progress(**manifest["progress"])
        files: dict[str, int] = manifest["files"]
        meta: dict[str, Any] = dict(manifest.get("meta") or {})
    except (OSError, ValueError, KeyError, TypeError):
        return None
    for name, size in files.items():
        try:
            if (folder / name).stat().st_size != size:
                return None
        except OSError:
            return None
    return Checkpoint(folder, progress, meta)


class CheckpointStore:
    """The checkpoint dir: list, write atomically, prune."""

    def __init__(self, root: Path, keep: int) -> None:
        self.root = root
        self.keep = keep

    def complete(self) -> list[Checkpoint]:
        """Complete checkpoints, oldest first."""
        if not self.root.is_dir():
            return []
        found = []
        for folder in self.root.iterdir():
            if folder.is_dir() and _NAME.match(folder.name):
                checkpoint = read_checkpoint(folder)
                if checkpoint is not None:
                    found.append(checkpoint)
        return sorted(found, key=lambda c: (c.progress.iteration, c.path.name))

    def newest(self) -> Checkpoint | None:
        """The newest complete checkpoint, or None."""
        complete = self.complete()
        return complete[-1] if complete else None

    def clean(self) -> list[Path]:
        """Remove leftovers of interrupted writes and incomplete checkpoints; return what was removed."""
        removed: list[Path] = []
        if not self.root.is_dir():
            return removed
        for folder in self.root.iterdir():
            leftover = folder.name.startswith((_PARTIAL_PREFIX, _TRASH_PREFIX))
            incomplete = bool(_NAME.match(folder.name)) and folder.is_dir() and read_checkpoint(folder) is None
            if leftover or incomplete:
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(folder)
        return removed

    def space_problem(self, previous: Checkpoint | None) -> str | None:
        """Why a checkpoint the size of `previous` would not fit (free space below its size plus a reserve), or None."""
        if previous is None:
            return None
        size = sum(_manifest_files(previous.path).values())
        free = shutil.disk_usage(self.root).free
        if free >= size + DISK_RESERVE_BYTES:
            return None
        return f"only {free:,} bytes free, and a checkpoint needs about {size:,} plus a {DISK_RESERVE_BYTES:,}-byte reserve"

    def save(self, progress: Progress, write: Callable[[Path], object], *, meta: Mapping[str, Any] | None = None) -> Checkpoint:
        """Write a checkpoint with `write(folder)` beside the others, add the manifest, rename it in place."""
        self.root.mkdir(parents=True, exist_ok=True)
        name = checkpoint_name(progress.iteration)
        partial = self.root / f"{_PARTIAL_PREFIX}{name}-{os.getpid()}"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir()
        try:
            write(partial)
            manifest = {"progress": asdict(progress), "meta": dict(meta or {}), "files": _manifest_files(partial)}
            _write_synced(partial / MANIFEST, json.dumps(manifest, indent=2))
            _sync_tree(partial)
            final = self.root / name
            if final.exists():  # the same iteration again (e.g. a resume that stopped at once)
                trash = self.root / f"{_TRASH_PREFIX}{name}-{os.getpid()}"
                final.rename(trash)
                shutil.rmtree(trash, ignore_errors=True)
            partial.rename(final)
            _sync_dir(self.root)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        self.prune()
        return Checkpoint(final, progress, dict(meta or {}))

    def prune(self) -> None:
        """Delete all but the newest `keep` complete checkpoints."""
        complete = self.complete()
        for checkpoint in complete[: max(len(complete) - self.keep, 0)]:
            trash = self.root / f"{_TRASH_PREFIX}{checkpoint.path.name}-{os.getpid()}"
            checkpoint.path.rename(trash)
            shutil.rmtree(trash, ignore_errors=True)


def _write_synced(path: Path, text: str) -> None:
    with open(path, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def _sync_tree(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    _sync_dir(folder)


def _sync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
