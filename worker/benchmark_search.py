"""Search latency and recall through the HNSW index, on N stored items, against exact search.

The N vectors are synthetic (a mixture of Gaussian clusters on the unit sphere, like topic clusters of real
embeddings) so that 100,000 items do not need 10 minutes of embedding first; the query embedding is timed
separately with the real model and added for the end-to-end figure.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import Engine, text

from worker import embedded
from worker.db import get_engine, session_scope
from worker.migrate import upgrade
from worker.pipeline.embed import load_embedder
from worker.settings import Settings
from worker.store.items import vector_literals
from worker.store.model_versions import hnsw_index_sql, register_model_version
from worker.store.search import nearest

Progress = Callable[[str, int, int], None]
DIMS = 384


def synthetic_vectors(n: int, *, clusters: int = 500, spread: float = 0.6, seed: int = 0) -> NDArray[np.float32]:
    """(n, 384) unit vectors around `clusters` random centres."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, DIMS))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    points = centres[rng.integers(0, clusters, n)] + spread * rng.standard_normal((n, DIMS)) / np.sqrt(DIMS)
    return (points / np.linalg.norm(points, axis=1, keepdims=True)).astype(np.float32)


def _load(engine: Engine, vectors: NDArray[np.float32], progress: Progress) -> int:
    """Insert items and vectors in bulk, then build the version's HNSW index once (faster than row by row)."""
    with engine.begin() as connection:
        version_id = register_model_version(connection, name="synthetic-384", base_model="synthetic", path=None,
                                            dims=DIMS)  # fmt: skip
    chunk = 5000
    for start in range(0, len(vectors), chunk):
        part = vectors[start : start + chunk]
        with engine.begin() as connection:
            connection.execute(
                text(
                    """
                    WITH new AS (
                        INSERT INTO items (kind, external_id, event_id, content_sha256, text, metadata, occurred_at)
                        SELECT CASE WHEN n % 2 = 0 THEN 'feedback' ELSE 'content' END, 'syn-' || n,
                               gen_random_uuid(), '', 'synthetic item ' || n, '{}', now()
                        FROM generate_series(CAST(:first AS bigint), CAST(:last AS bigint)) AS n
                        RETURNING id, external_id
                    )
                    INSERT INTO embeddings (item_id, model_version_id, vector, chunks_total, chunks_used)
                    SELECT new.id, :version, CAST(v.vector AS vector), 1, 1
                    FROM new JOIN unnest(CAST(:vectors AS text[])) WITH ORDINALITY AS v(vector, n)
                      ON new.external_id = 'syn-' || (CAST(:first AS bigint) + v.n - 1)
                    """
                ),
                {"first": start, "last": start + len(part) - 1, "version": version_id,
                 "vectors": vector_literals(list(part))},
            )  # fmt: skip
        progress("storing vectors", start + len(part), len(vectors))
    progress("building HNSW index", 0, 1)
    with engine.begin() as connection:
        connection.exec_driver_sql("SET maintenance_work_mem = '1GB'")
        connection.exec_driver_sql(hnsw_index_sql(version_id, DIMS, concurrently=False))  # nothing else writes
        connection.exec_driver_sql("ANALYZE embeddings")
        connection.exec_driver_sql("ANALYZE items")
    progress("building HNSW index", 1, 1)
    return version_id


def _percentiles(values: list[float]) -> tuple[float, float]:
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return round(cuts[49], 2), round(cuts[94], 2)


def bench_search(settings: Settings, n: int, queries: int, ef_search: int, progress: Progress) -> dict[str, Any]:
    """Latency (p50/p95) and recall@10 against exact search, for k=10 over n items."""
    data_dir = Path(tempfile.mkdtemp(prefix="tagworker-bench-search-"))
    servers = embedded.ensure_running(data_dir)
    try:
        upgrade(servers.database_url)
        engine = get_engine(servers.database_url)
        vectors = synthetic_vectors(n + queries)
        corpus, probes = vectors[:n], vectors[n:]
        started = time.perf_counter()
        version_id = _load(engine, corpus, progress)
        load_seconds = time.perf_counter() - started
        exact = np.argsort(-(probes @ corpus.T), axis=1)[:, :10]
        latencies, recalls = [], []
        literals = vector_literals(list(probes))
        with session_scope(engine) as session:
            nearest(session, vector=literals[0], model_version_id=version_id, dims=DIMS, k=10, ef_search=ef_search)
            for i, literal in enumerate(literals):
                t0 = time.perf_counter()
                hits = nearest(session, vector=literal, model_version_id=version_id, dims=DIMS, k=10,
                               ef_search=ef_search)  # fmt: skip
                latencies.append((time.perf_counter() - t0) * 1000)
                found = {int(h.external_id.removeprefix("syn-")) for h in hits}
                recalls.append(len(found.intersection(exact[i].tolist())) / 10)
                progress("queries", i + 1, len(literals))
        embedder = load_embedder(settings.model, cache_dir=settings.data_dir / "onnx")
        embedder.embed(["warm-up"])
        embed_ms = []
        for i in range(queries):
            t0 = time.perf_counter()
            embedder.embed([f"why do our campaign emails land in spam, case {i}"])
            embed_ms.append((time.perf_counter() - t0) * 1000)
        end_to_end = [a + b for a, b in zip(embed_ms, latencies, strict=True)]
        p50, p95 = _percentiles(latencies)
        e2e_p50, e2e_p95 = _percentiles(end_to_end)
        return {
            "n": n,
            "k": 10,
            "queries": queries,
            "ef_search": ef_search,
            "vectors": "synthetic, 500 clusters on the unit sphere, 384-d",
            "p50_ms": p50,
            "p95_ms": p95,
            "recall_at_10": round(statistics.fmean(recalls), 4),
            "end_to_end_p50_ms": e2e_p50,
            "end_to_end_p95_ms": e2e_p95,
            "query_embedding_backend": embedder.backend,
            "load_and_index_seconds": round(load_seconds, 1),
        }
    finally:
        embedded.stop(data_dir)
        shutil.rmtree(data_dir, ignore_errors=True)
