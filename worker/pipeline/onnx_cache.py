"""One checked ONNX export per model version on disk, so that workers load it without torch.

A folder per version name (which carries the weights' hash) holds `model.onnx`, the model's fast tokenizer
(`tokenizer.json`) and `encoder.json`. The first process to load a version exports it, checks it against torch
on probe texts, and publishes the folder with one rename; every later start (a restart, a new pool process, a
CLI search) builds its encoder from these files alone. That skips importing torch, transformers and
sentence-transformers: here about 10 s and 470 MB per process.

The manifest records a fingerprint of the model directory's configuration and tokenizer files: an export made
from other settings (say, a changed `max_seq_length` next to the same weights) is not served, it is replaced.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from worker.pipeline.onnx_backend import OnnxEncoder, export, supported

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

log = logging.getLogger(__name__)

MANIFEST = "encoder.json"
# Texts that exercise what differs between tokenizer setups: plain words, surrounding spaces, and a text longer
# than the model's window (truncation).
PROBE = [
    "organic traffic from SEO",
    "  Customer acquisition cost went up after the price change  ",
    "ok",
    "campaign " * 400,
]
MAX_PROBE_GAP = 1e-4  # largest 1 - cosine to torch on the probe texts
_CONFIG_FILES = (
    "modules.json", "sentence_bert_config.json", "config.json", "tokenizer.json", "tokenizer_config.json",
    "special_tokens_map.json", "vocab.txt",
)  # fmt: skip
_STALE_STAGING_S = 3600  # a staging folder this old belongs to a process that died while exporting


def version_folder(cache_dir: Path, version_name: str) -> Path:
    """Where the export of `version_name` lives (a name may hold `/`, as a hub name does)."""
    return cache_dir / version_name.replace("/", "_")


def source_fingerprint(model_dir: str) -> str:
    """A hash of the model directory's configuration and tokenizer files (not the weights, already in the name)."""
    digest = hashlib.sha256()
    for name in _CONFIG_FILES:
        path = Path(model_dir) / name
        if path.is_file():
            digest.update(name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def cached_encoder(cache_dir: Path, version_name: str, threads: int, fingerprint: str) -> OnnxEncoder | None:
    """The encoder of a checked export of this version, or None when there is none (or it is damaged or stale)."""
    folder = version_folder(cache_dir, version_name)
    if not (folder / MANIFEST).is_file():
        return None
    from tokenizers import Tokenizer

    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        if manifest.get("source") != fingerprint:
            raise ValueError("it was made from other model settings")
        tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        max_length = int(manifest["max_seq_length"])
        return OnnxEncoder(folder / "model.onnx", tokenizer, max_length=max_length, threads=threads)
    except (ImportError, MemoryError):
        raise  # the environment's problem, not the files': leave the export for the processes that can read it
    except Exception as exc:  # a bad file of any kind: set it aside, export again
        log.warning("the ONNX export %s cannot be used (%s); exporting %s again", folder, exc, version_name)
        _discard(folder)
        return None


def build_encoder(
    model: SentenceTransformer, cache_dir: Path, version_name: str, threads: int, fingerprint: str
) -> OnnxEncoder | None:
    """The published export of this version, else export `model`, check it against torch and publish it.

    None (torch stays in charge) when the model cannot be exported or its export disagrees with torch.
    """
    cached = cached_encoder(cache_dir, version_name, threads, fingerprint)
    if cached is not None:  # a GPU node without usable CUDA lands here; so does a process that lost a race
        return cached
    if not supported(model):
        log.info("model layout not covered by the ONNX backend; using torch")
        return None
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        log.info("onnxruntime is not installed; using torch")
        return None
    folder = version_folder(cache_dir, version_name)
    try:
        _export_and_publish(model, folder, version_name, threads, fingerprint)
    except Exception:  # a full disk, a read-only volume, an exporter error: torch can still serve
        log.warning("could not export %s to ONNX in %s; using torch", version_name, folder, exc_info=True)
        return None
    return cached_encoder(cache_dir, version_name, threads, fingerprint)


def _export_and_publish(
    model: SentenceTransformer, folder: Path, version_name: str, threads: int, fingerprint: str
) -> None:
    from tokenizers import Tokenizer

    _remove_stale_staging(folder)
    # Unique across containers that share the volume (their process ids may be equal).
    staging = folder.with_name(f"{folder.name}.{os.getpid()}-{secrets.token_hex(4)}.partial")
    staging.mkdir(parents=True)
    try:
        log.info("exporting %s to ONNX in %s", version_name, folder)
        export(model, staging / "model.onnx")
        tokenizer = Tokenizer.from_str(model.tokenizer.backend_tokenizer.to_str())
        tokenizer.save(str(staging / "tokenizer.json"))
        max_length = int(model.max_seq_length or 256)
        encoder = OnnxEncoder(staging / "model.onnx", tokenizer, max_length=max_length, threads=threads)
        reference = model.encode(PROBE, normalize_embeddings=True, convert_to_numpy=True)
        gap = float(np.max(1 - np.sum(encoder.encode(PROBE, 8) * reference, axis=1)))
        if not gap <= MAX_PROBE_GAP:  # also refuses NaN
            raise ValueError(f"the export disagrees with torch (cosine gap {gap:.2g})")
        manifest = {
            "version": version_name, "source": fingerprint, "max_seq_length": max_length, "dims": encoder.dims,
            "probe_gap": gap,
        }  # fmt: skip
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2))
        _publish(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _publish(staging: Path, folder: Path) -> None:
    """Rename into place; if another process published first, its export (of the same weights) stays."""
    try:
        staging.rename(folder)
    except OSError:
        if (folder / MANIFEST).is_file():
            return
        _discard(folder)  # a folder without a manifest was never published by this module
        staging.rename(folder)


def _discard(folder: Path) -> None:
    """Move the folder out of the way in one rename (readers see it whole or not at all), then delete it."""
    trash = folder.with_name(f"{folder.name}.{secrets.token_hex(4)}.trash")
    try:
        folder.rename(trash)
    except OSError:
        return  # another process moved it already
    shutil.rmtree(trash, ignore_errors=True)


def _remove_stale_staging(folder: Path) -> None:
    """Delete staging folders left by processes that died while exporting (an hour old or more)."""
    if not folder.parent.is_dir():
        return
    for leftover in folder.parent.glob(f"{folder.name}.*.partial"):
        try:
            if time.time() - leftover.stat().st_mtime > _STALE_STAGING_S:
                shutil.rmtree(leftover, ignore_errors=True)
        except OSError:
            continue
