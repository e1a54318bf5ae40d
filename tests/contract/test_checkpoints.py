"""Atomic checkpoints: a manifest makes a checkpoint complete; incomplete ones are never resumed from."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlrunner.contract.checkpoints import MANIFEST, CheckpointStore, Progress, checkpoint_name


def fake_rllib_checkpoint(folder: Path, payload: str = "state") -> None:
    (folder / "learner_group").mkdir()
    (folder / "learner_group" / "state.pkl").write_text(payload)
    (folder / "rllib_checkpoint.json").write_text("{}")


def test_checkpoint_store_writes_atomically_and_keeps_newest(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path, keep=2)
    for iteration in (1, 2, 3):
        saved = store.save(Progress(iteration, iteration * 500, float(iteration)), fake_rllib_checkpoint)
        assert saved.path.name == checkpoint_name(iteration)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_000002", "checkpoint_000003"]
    newest = store.newest()
    assert newest is not None and newest.progress == Progress(3, 1500, 3.0)
    manifest = json.loads((newest.path / MANIFEST).read_text())
    assert manifest["files"] == {"learner_group/state.pkl": 5, "rllib_checkpoint.json": 2}


def test_checkpoint_store_ignores_incomplete_and_corrupt_checkpoints(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path, keep=5)
    store.save(Progress(1, 500, 1.0), fake_rllib_checkpoint)
    good = store.save(Progress(2, 1000, 2.0), fake_rllib_checkpoint)
    truncated = store.save(Progress(3, 1500, 3.0), fake_rllib_checkpoint)
    (truncated.path / "learner_group" / "state.pkl").write_text("st")  # a partial S3 sync
    no_manifest = tmp_path / checkpoint_name(4)
    no_manifest.mkdir()
    fake_rllib_checkpoint(no_manifest)  # a kill before the manifest was written
    partial = tmp_path / ".partial-checkpoint_000005-123"
    partial.mkdir()
    assert store.newest() == good
    removed = store.clean()
    assert sorted(p.name for p in removed) == [".partial-checkpoint_000005-123", "checkpoint_000003", "checkpoint_000004"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_000001", "checkpoint_000002"]


def test_checkpoint_store_failed_write_leaves_previous_checkpoint(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path, keep=3)
    first = store.save(Progress(1, 500, 1.0), fake_rllib_checkpoint)

    def crash(folder: Path) -> None:
        fake_rllib_checkpoint(folder)
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        store.save(Progress(2, 1000, 2.0), crash)
    assert store.newest() == first
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint_000001"]
