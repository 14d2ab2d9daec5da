"""What a worker process holds: settings, engine, model, model version. Built lazily, once per process."""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from dataclasses import dataclass

from sqlalchemy import Engine, create_engine
from sqlalchemy.pool import NullPool

from worker.backfill import BackfillService
from worker.clustering import ClusteringService, ThemeAssigner
from worker.db import get_engine, session_scope
from worker.errors import ModelLoadError
from worker.ingest import IngestService
from worker.pipeline.embed import ModelEmbedder, load_embedder, resolve_model_path
from worker.services import resolve
from worker.serving import choose_serving, not_active_message
from worker.settings import Settings, get_settings
from worker.store.model_versions import active_version, active_version_id, build_hnsw_index, register_model_version
from worker.tagging import TaggingService

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    embedder: ModelEmbedder
    model_version_id: int
    ingest: IngestService
    tagging: TaggingService
    clustering: ClusteringService
    backfill: BackfillService


_lock = threading.Lock()
_runtimes: dict[int, Runtime] = {}


def build_runtime(settings: Settings) -> Runtime:
    """Load the model, register its version, and wire the ingest service."""
    urls = resolve(settings)
    engine = get_engine(
        urls.database_url, pool_size=settings.database.pool_size, connect_timeout_s=settings.database.connect_timeout_s
    )
    embedder, version_id = load_serving_model(engine, settings)
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
    backfill = BackfillService(
        engine=engine, embedder=embedder, model_version_id=version_id, chunk=settings.training.backfill_chunk
    )
    return Runtime(
        settings=settings,
        embedder=embedder,
        model_version_id=version_id,
        ingest=service,
        tagging=tagging,
        clustering=clustering,
        backfill=backfill,
    )


def load_serving_model(engine: Engine, settings: Settings) -> tuple[ModelEmbedder, int]:
    """The active version from Postgres when there is one (a promotion may have replaced the configured
    model); otherwise the configured model, registered as the first active version (`worker.serving`)."""
    cache_dir = settings.data_dir / "onnx"
    configured = resolve_model_path(settings.model.name_or_path)
    with session_scope(engine) as session:
        active = active_version(session)
    if choose_serving(active, configured, settings.model.name_or_path) == "active":
        assert active is not None and active.path is not None
        # A version fine-tuned from the configured model is the normal case; another base model is worth a warning.
        level = logging.INFO if active.base_model == settings.model.name_or_path else logging.WARNING
        log.log(level, "serving the active model version %s from %s (configured: %s)", active.name, active.path,
                settings.model.name_or_path)  # fmt: skip
        model = settings.model.model_copy(update={"name_or_path": active.path})
        return load_embedder(model, cache_dir=cache_dir, version_name=active.name), active.id
    # The configured model. When it is the active version, `choose_serving` hashed its weights to tell: it is
    # loaded under that version's name rather than hashed again (about a second per load of a 90 MB file).
    embedder = load_embedder(settings.model, cache_dir=cache_dir, version_name=active.name if active else None)
    with engine.begin() as connection:
        version_id = register_model_version(
            connection, name=embedder.version_name, base_model=settings.model.name_or_path, path=configured,
            dims=embedder.dims,
        )  # fmt: skip
        serving = active_version_id(connection)  # under the registration's lock: another start may have won
    if serving != version_id:  # vectors nobody would search, and batches refused
        with session_scope(engine) as session:
            active = active_version(session)
        assert active is not None
        raise ModelLoadError(not_active_message(active, configured, "another worker registered its model first"))
    # After the registration's commit, concurrently: a first worker of a new model must not hold back ingest.
    build_hnsw_index(engine, version_id, embedder.dims)
    return embedder, version_id


def check_serves_active(settings: Settings) -> None:
    """Refuse to start a worker that can serve no active version (`worker.serving`): each batch would load a
    model, be refused, and come back. One query and a hash of the weights file, no model load; a database that
    cannot be reached yet is left to the first batch, which retries it."""
    configured = resolve_model_path(settings.model.name_or_path)
    try:
        engine = create_engine(  # nothing pooled across the fork
            resolve(settings).database_url, poolclass=NullPool,
            connect_args={"connect_timeout": settings.database.connect_timeout_s},
        )  # fmt: skip
        try:
            with session_scope(engine) as session:
                active = active_version(session)
        finally:
            engine.dispose()
    except Exception as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        log.warning("could not check the active model version before starting: %s", first[:200])
        return
    choose_serving(active, configured, settings.model.name_or_path)


def get_runtime() -> Runtime:
    """This process's runtime, built in the process that uses it (never before a fork: CUDA is not fork-safe).

    Tasks call this at the start of each batch: when another version became active (a promotion or a
    rollback), the runtime is rebuilt around it here, at a batch boundary, without a restart.
    """
    pid = os.getpid()
    with _lock:
        if pid not in _runtimes:
            _runtimes[pid] = build_runtime(get_settings())
        elif _version_changed(_runtimes[pid]):
            _runtimes[pid] = build_runtime(_runtimes[pid].settings)
        runtime = _runtimes[pid]
    _pin_torch_threads(runtime.settings.model.torch_threads)
    return runtime


_last_check: dict[int, float] = {}


def _version_changed(runtime: Runtime) -> bool:
    """At most every check interval, one indexed query: is the active version still the one we serve?"""
    now = time.monotonic()
    retired = runtime.ingest.version_retired  # a batch was refused for it: check now, not at the interval
    if not retired and now - _last_check.get(os.getpid(), 0.0) < runtime.settings.tagging.check_interval_s:
        return False
    _last_check[os.getpid()] = now
    try:
        with runtime.ingest.engine.connect() as connection:
            active = active_version_id(connection)
    except Exception:  # the database being away is the batch's problem, handled there with retries
        return False
    runtime.ingest.clear_version_retired()  # checked; a rollback may have made it active again
    if active is not None and active != runtime.model_version_id:
        log.info("model version %d became active (was %d); switching at this batch boundary", active,
                 runtime.model_version_id)  # fmt: skip
        return True
    return False


_pinned: dict[int, int] = {}


def _pin_torch_threads(threads: int) -> None:
    """Set torch's CPU threads from the thread that runs batches (OpenMP keeps this per calling thread).

    Only where torch is loaded: a worker serving an ONNX export never imports it (its session has its threads).
    """
    torch = sys.modules.get("torch")
    if threads and torch is not None and _pinned.get(os.getpid()) != threads:
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
