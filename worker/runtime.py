"""What a worker process holds: settings, engine, model, model version. Built lazily, once per process."""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass

from worker.clustering import ClusteringService, ThemeAssigner
from worker.db import get_engine
from worker.ingest import IngestService
from worker.pipeline.embed import SentenceTransformerEmbedder, load_embedder, resolve_model_path
from worker.services import resolve
from worker.settings import Settings, get_settings
from worker.store.model_versions import register_model_version
from worker.tagging import TaggingService

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    embedder: SentenceTransformerEmbedder
    model_version_id: int
    ingest: IngestService
    tagging: TaggingService
    clustering: ClusteringService


_lock = threading.Lock()
_runtimes: dict[int, Runtime] = {}


def build_runtime(settings: Settings) -> Runtime:
    """Load the model, register its version, and wire the ingest service."""
    urls = resolve(settings)
    engine = get_engine(
        urls.database_url, pool_size=settings.database.pool_size, connect_timeout_s=settings.database.connect_timeout_s
    )
    embedder = load_embedder(settings.model, cache_dir=settings.data_dir / "onnx")
    with engine.begin() as connection:
        version_id = register_model_version(
            connection,
            name=embedder.version_name,
            base_model=settings.model.name_or_path,
            path=resolve_model_path(settings.model.name_or_path),
            dims=embedder.dims,
        )
    tagging = TaggingService(engine=engine, embedder=embedder, model_version_id=version_id, settings=settings.tagging)
    service = IngestService(
        engine=engine,
        embedder=embedder,
        model_version_id=version_id,
        limits=settings.ingest,
        batching=settings.batching,
        tagging=tagging,
        themes=ThemeAssigner(
            engine=engine,
            model_version_id=version_id,
            threshold=settings.clustering.noise_similarity,
            check_interval_s=settings.tagging.check_interval_s,
        ),
    )
    clustering = ClusteringService(engine=engine, model_version_id=version_id, settings=settings.clustering)
    return Runtime(
        settings=settings,
        embedder=embedder,
        model_version_id=version_id,
        ingest=service,
        tagging=tagging,
        clustering=clustering,
    )


def get_runtime() -> Runtime:
    """This process's runtime, built in the process that uses it (never before a fork: CUDA is not fork-safe)."""
    pid = os.getpid()
    with _lock:
        if pid not in _runtimes:
            _runtimes[pid] = build_runtime(get_settings())
        runtime = _runtimes[pid]
    _pin_torch_threads(runtime.settings.model.torch_threads)
    return runtime


_pinned: dict[int, int] = {}


def _pin_torch_threads(threads: int) -> None:
    """Set torch's CPU threads from the thread that runs batches (OpenMP keeps this per calling thread)."""
    if threads and _pinned.get(os.getpid()) != threads:
        import torch

        torch.set_num_threads(threads)
        _pinned[os.getpid()] = threads


def preload_in_background() -> None:
    """Start loading the model now, so the first batch does not wait for it; errors surface on that batch."""

    def load() -> None:
        try:
            get_runtime()
        except Exception:
            log.exception("preloading the model failed")

    threading.Thread(target=load, name="tagworker-preload", daemon=True).start()


def check_model_config(settings: Settings) -> None:
    """Fail before consuming anything if the model directory is missing or unreadable (no torch import)."""
    resolve_model_path(settings.model.name_or_path)
