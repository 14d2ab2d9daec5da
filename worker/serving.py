"""Which model a worker serves: the active version, either from that version's own directory or as the
configured model (registered under its name), and when a worker must refuse instead."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from worker.errors import ModelLoadError
from worker.pipeline.embed import version_name_for
from worker.store.model_versions import VersionInfo

Choice = Literal["configured", "active"]


def choose_serving(active: VersionInfo | None, configured: str, name_or_path: str) -> Choice:
    """`configured`: load and register the configured model (it is the active version: its weights hash to that
    version's name, so it can be loaded under that name without hashing them again; or none is active);
    `active`: load the active version from its own directory.

    Args:
        configured: the configured model resolved to its directory (or a hub name), as `resolve_model_path` gives.
        name_or_path: the configured setting itself, which names the configured model's version.

    Raises:
        ModelLoadError: the active version cannot be served here: its directory is unreadable from this machine,
            or it lives in the configured directory, whose weights changed since it was registered.
    """
    if active is None:
        return "configured"
    same_place = bool(active.path) and _same_path(str(active.path), configured)
    if active.path and not same_place:
        return _readable(active)
    try:  # hashes the weights file; the start-up check runs this too, and must fail with a message, not a trace
        name = version_name_for(name_or_path, configured)
    except OSError as exc:
        raise ModelLoadError(f"cannot read the model weights in {configured}: {exc}") from exc
    if name == active.name:
        return "configured"
    if same_place:
        # The same directory under another name: promoted by directory (named after it), or a fine-tuned
        # version's own directory configured directly (named without a weights hash). Only a hash in the
        # name that differs from the files' means they were replaced.
        _, has_hash, fingerprint = active.name.rpartition("@")
        if not has_hash or fingerprint == name.rpartition("@")[2]:
            return _readable(active)
    why = "its files were replaced since" if same_place else "the active version has no directory"
    raise ModelLoadError(not_active_message(active, configured, why))


def not_active_message(active: VersionInfo, configured: str, why: str) -> str:
    return (
        f"model version {active.id} ({active.name}) is active, but this worker's configured model {configured} is "
        f"not it ({why}); `tagworker model promote {configured}` makes the configured files the active version "
        "(stored items are then re-embedded), or set TAGWORKER_MODEL__NAME_OR_PATH to the active version's directory"
    )


def _readable(active: VersionInfo) -> Choice:
    if not Path(str(active.path)).is_dir():
        raise ModelLoadError(
            f"the active model version {active.name} is at {active.path}, which this machine cannot read; "
            "share the model store (TAGWORKER_TRAINING__STORE_DIR) with every worker, or `tagworker model rollback`"
        )
    return "active"


def _same_path(a: str, b: str) -> bool:
    """Two spellings of one directory (a relative store path, a symlink); hub names compare as written."""
    return a == b or Path(a).resolve() == Path(b).resolve()
