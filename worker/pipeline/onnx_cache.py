"""One checked ONNX export per model version on disk, so that workers load it without torch.

A folder per version name (which carries the weights' hash) holds `model.onnx`, the model's fast tokenizer
(`tokenizer.json`) and `encoder.json`. The first process to load a version exports it, checks it against torch
on probe texts, and publishes the folder with one rename; every later start (a restart, a new pool process, a
CLI search) builds its encoder from these files alone. That skips importing torch, transformers and
sentence-transformers: here about 10 s and 470 MB per process.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from worker.pipeline.onnx_backend import OnnxEncoder, export, supported

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

log = logging.getLogger(__name__)

MANIFEST = "encoder.json"
PROBE = ["organic traffic from SEO", "Customer acquisition cost went up after the price change", "ok"]
MAX_PROBE_GAP = 1e-4  # largest 1 - cosine to torch on the probe texts


def version_folder(cache_dir: Path, version_name: str) -> Path:
    return cache_dir / version_name.replace("/", "_")


def cached_encoder(cache_dir: Path, version_name: str, threads: int) -> OnnxEncoder | None:
    """The encoder of a checked export of this version, or None when there is none (or it cannot be read)."""
    folder = version_folder(cache_dir, version_name)
    if not (folder / MANIFEST).is_file():
        return None
    from tokenizers import Tokenizer

    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        max_length = int(manifest["max_seq_length"])
        return OnnxEncoder(folder / "model.onnx", tokenizer, max_length=max_length, threads=threads)
    except Exception as exc:  # a damaged cache is rebuilt from the weights, never fatal
        log.warning("the ONNX cache %s cannot be read (%s); exporting %s again", folder, exc, version_name)
        shutil.rmtree(folder, ignore_errors=True)
        return None


def build_encoder(model: SentenceTransformer, cache_dir: Path, version_name: str, threads: int) -> OnnxEncoder | None:
    """Export `model`, check it against torch, publish it in the cache; None (torch stays in charge) otherwise."""
    if not supported(model):
        log.info("model layout not covered by the ONNX backend; using torch")
        return None
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        log.info("onnxruntime is not installed; using torch")
        return None
    from tokenizers import Tokenizer

    folder = version_folder(cache_dir, version_name)
    # Unique across containers that share the volume (their process ids may be equal).
    staging = folder.with_name(f"{folder.name}.{os.getpid()}-{secrets.token_hex(4)}.partial")
    shutil.rmtree(staging, ignore_errors=True)
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
        if gap > MAX_PROBE_GAP:
            log.warning("ONNX export disagrees with torch (cosine gap %.2g); using torch", gap)
            return None
        manifest = {"version": version_name, "max_seq_length": max_length, "dims": encoder.dims, "probe_gap": gap}
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2))
        _publish(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return cached_encoder(cache_dir, version_name, threads)


def _publish(staging: Path, folder: Path) -> None:
    """Rename into place; another process that got there first already published the same export."""
    try:
        staging.rename(folder)
    except OSError:
        if not (folder / MANIFEST).is_file():
            shutil.rmtree(folder, ignore_errors=True)  # a half-written folder from an older layout or a crash
            staging.rename(folder)
