"""The versioned model store on disk: one directory per fine-tuned version, weights in safetensors.

A version is written to a temporary directory and renamed into place, so a crash never leaves a directory
that looks complete. Before a version is promoted, `verify_model_dir` loads it and encodes a sentence.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from worker.errors import ModelLoadError

log = logging.getLogger(__name__)

_REQUIRED = ("modules.json", "config_sentence_transformers.json")


def save_model(model: Any, root: Path, name: str) -> Path:
    """Save a SentenceTransformer as `root/name` (safetensors); returns the directory."""
    root = root.resolve()  # the row stores the path: workers elsewhere, or in another directory, must find it
    root.mkdir(parents=True, exist_ok=True)
    final = root / name
    partial = root / f".{name}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    try:
        model.save(str(partial), safe_serialization=True)
        os.replace(partial, final)
    except BaseException:
        # A half-written copy (disk full, interrupted) is hundreds of MB that nothing will ever read or reuse.
        shutil.rmtree(partial, ignore_errors=True)
        raise
    log.info("saved model version %s to %s", name, final)
    return final


def remove_model_dir(path: Path) -> None:
    """Delete a version's directory that no row points at; a failure is only logged (it costs disk, not data)."""
    try:
        shutil.rmtree(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        log.warning("could not remove model directory %s, which no model version points at; delete it by hand: %s",
                    path, exc)  # fmt: skip
        return
    log.info("removed model directory %s: no model version points at it", path)


def remove_unsaved(root: Path, names: Iterable[str], *, recorded: Iterable[str]) -> int:
    """Delete the directories (and half-written copies) of failed candidates under `root`; returns how many.

    A directory some version records in `recorded` (in any spelling) stays, and so does anything but a plain
    directory named by one path component: a name like `..` or `a/../b`, or a symbolic link.
    """
    root = root.resolve()
    kept = {Path(p).resolve() for p in recorded}
    removed = 0
    for name in names:
        if name in ("", ".", "..") or Path(name).name != name:
            continue
        for path in (root / name, root / f".{name}.partial"):
            if path.is_symlink() or not path.is_dir() or path.resolve() in kept:
                continue
            remove_model_dir(path)
            removed += not path.exists()
    return removed


def verify_model_dir(path: str | Path, *, dims: int | None = None) -> int:
    """The vector size of the model in `path`; ModelLoadError naming what is wrong unless it loads and encodes."""
    directory = Path(path)
    if not directory.is_dir():
        raise ModelLoadError(f"model directory {directory} does not exist")
    missing = [name for name in _REQUIRED if not (directory / name).is_file()]
    if missing:
        raise ModelLoadError(f"model directory {directory} is incomplete: no {', '.join(missing)}")
    if not any(directory.rglob("*.safetensors")):
        raise ModelLoadError(f"model directory {directory} has no .safetensors weights")
    from sentence_transformers import SentenceTransformer

    try:
        model = SentenceTransformer(str(directory), device="cpu", trust_remote_code=False)
        vector = model.encode(["tagworker model check"], normalize_embeddings=True)
    except Exception as exc:
        raise ModelLoadError(f"model directory {directory} does not load ({type(exc).__name__}: {exc})") from exc
    if dims is not None and vector.shape[1] != dims:
        raise ModelLoadError(f"model directory {directory} makes {vector.shape[1]}-d vectors, expected {dims}")
    return int(vector.shape[1])
