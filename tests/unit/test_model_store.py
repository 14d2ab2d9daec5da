"""Writing a model version into the store: whole or not at all."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from worker.model_store import remove_unsaved, save_model


class FakeModel:
    """Writes what SentenceTransformer.save writes first, then fails like a full disk when told to."""

    def __init__(self, *, disk_full: bool = False) -> None:
        self.disk_full = disk_full

    def save(self, path: str, *, safe_serialization: bool) -> None:
        directory = Path(path)
        directory.mkdir(parents=True)
        (directory / "modules.json").write_text("[]")
        if self.disk_full:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(directory / "model.safetensors"))
        (directory / "model.safetensors").write_bytes(b"weights")


def test_a_saved_version_is_renamed_into_place(tmp_path: Path) -> None:
    final = save_model(FakeModel(), tmp_path, "v2")
    assert final == tmp_path / "v2" and (final / "model.safetensors").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v2"]


def test_a_save_that_fails_leaves_no_partial_directory(tmp_path: Path) -> None:
    """A full disk used to leave `.v2.partial` behind: a half-written model no one would ever delete."""
    with pytest.raises(OSError, match="No space left on device"):
        save_model(FakeModel(disk_full=True), tmp_path, "v2")
    assert list(tmp_path.iterdir()) == []


def test_failed_candidates_lose_their_directories_but_recorded_and_outside_ones_stay(tmp_path: Path) -> None:
    store, outside = tmp_path / "models", tmp_path / "elsewhere"
    for directory in (store / "killed", store / ".killed.partial", store / "promoted-by-hand", store / "sub", outside):
        directory.mkdir(parents=True)
        (directory / "model.safetensors").write_bytes(b"weights")
    (store / "link").symlink_to(outside)
    recorded = {str(store / "sub" / ".." / "promoted-by-hand")}  # another spelling of the same directory
    names = ["killed", "promoted-by-hand", "never-saved", "..", "../elsewhere", "sub/../link", "link", "."]
    assert remove_unsaved(store, names, recorded=recorded) == 2
    assert sorted(p.name for p in store.iterdir()) == ["link", "promoted-by-hand", "sub"]
    assert (outside / "model.safetensors").is_file(), "nothing outside the store is followed"
