"""Which model a worker serves, from the active version's row and the configured model (no database)."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from worker.errors import ModelLoadError
from worker.pipeline.embed import version_name_for
from worker.serving import choose_serving
from worker.store.model_versions import VersionInfo


def model_dir(path: Path, weights: bytes = b"weights v1") -> str:
    path.mkdir(parents=True)
    (path / "model.safetensors").write_bytes(weights)
    return str(path)


def version(name: str, path: str | None) -> VersionInfo:
    return VersionInfo(id=7, name=name, base_model="base", path=path, dims=384, status="active", parent_id=None,
                       created_at=datetime.now(UTC), activated_at=datetime.now(UTC))  # fmt: skip


def test_no_active_version_or_the_configured_one_registers_the_configured_model(tmp_path: Path) -> None:
    configured = model_dir(tmp_path / "m")
    assert choose_serving(None, configured, configured) == "configured"
    assert choose_serving(version(version_name_for(configured, configured), configured), configured, configured) == (
        "configured"
    )
    hub = "sentence-transformers/all-MiniLM-L6-v2"  # not a directory here: compared as written
    assert choose_serving(version(version_name_for(hub, hub), hub), hub, hub) == "configured"


def test_the_configured_model_is_chosen_only_when_its_weights_hash_to_the_active_versions_name(
    tmp_path: Path,
) -> None:
    """The runtime then loads it under that name, without hashing the weights a second time."""
    configured = model_dir(tmp_path / "m")
    registered = version(version_name_for(configured, configured), None)
    assert choose_serving(registered, configured, configured) == "configured"
    (Path(configured) / "model.safetensors").write_bytes(b"weights v2")
    with pytest.raises(ModelLoadError, match="the active version has no directory"):
        choose_serving(registered, configured, configured)


def test_a_fine_tuned_version_elsewhere_is_served_from_its_own_directory(tmp_path: Path) -> None:
    configured = model_dir(tmp_path / "m")
    tuned = model_dir(tmp_path / "store" / "m-ft-20261128", b"tuned")
    assert choose_serving(version("m-ft-20261128", tuned), configured, configured) == "active"


def test_a_fine_tuned_versions_own_directory_configured_directly_is_served(tmp_path: Path) -> None:
    """Its name has no weights hash; it was refused, though the refusal told operators to configure this."""
    tuned = model_dir(tmp_path / "store" / "m-ft-20261128", b"tuned")
    assert choose_serving(version("m-ft-20261128", tuned), tuned, tuned) == "active"


def test_the_configured_directory_promoted_under_its_own_name_is_served(tmp_path: Path) -> None:
    configured = model_dir(tmp_path / "m")
    promoted = "m@" + version_name_for(configured, configured).rpartition("@")[2]
    assert choose_serving(version(promoted, configured), configured, "all-MiniLM-L6-v2") == "active"


def test_replaced_weights_are_refused_also_when_the_row_stores_a_relative_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A relative store path never equalled the resolved configured one, so the check was skipped."""
    configured = model_dir(tmp_path / "store" / "m")
    registered = version_name_for(configured, configured)
    (Path(configured) / "model.safetensors").write_bytes(b"weights v2")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelLoadError, match="its files were replaced since"):
        choose_serving(version(registered, os.path.join("store", "m")), configured, configured)


def test_an_active_directory_this_machine_cannot_read_is_refused_at_once(tmp_path: Path) -> None:
    configured = model_dir(tmp_path / "m")
    with pytest.raises(ModelLoadError, match="which this machine cannot read; share the model store"):
        choose_serving(version("m-ft-1", str(tmp_path / "elsewhere")), configured, configured)
