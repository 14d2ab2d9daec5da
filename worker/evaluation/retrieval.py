"""`tagworker eval retrieval`: BEIR-format evaluation through the product's own store and search path.

The corpus is embedded and written with the worker's store functions into a fresh embedded database, and every
query goes through `Searcher.search` (HNSW index, optional hybrid), so the numbers describe what users get.
"""

from __future__ import annotations

import csv
import json
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from schemas import ContentCreated
from worker import embedded
from worker.db import get_engine, session_scope
from worker.migrate import upgrade
from worker.pipeline.batch import item_values
from worker.pipeline.embed import ModelEmbedder, load_embedder
from worker.pipeline.ranking import mrr_at_k, ndcg_at_k, recall_at_k
from worker.search import Searcher
from worker.settings import Settings
from worker.store.items import ItemRow, upsert_items
from worker.store.model_versions import build_hnsw_index, register_model_version

Progress = Callable[[str, int, int], None]


def read_jsonl_docs(path: Path) -> dict[str, str]:
    """BEIR corpus or queries: `{"_id", "text"}` per line (a corpus `title` is prepended when present)."""
    docs: dict[str, str] = {}
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                row = json.loads(line)
                title = row.get("title") or ""
                docs[str(row["_id"])] = f"{title}. {row['text']}" if title else str(row["text"])
    return docs


def read_qrels(path: Path) -> dict[str, dict[str, float]]:
    """BEIR qrels: `query-id<TAB>corpus-id<TAB>score` with a header line."""
    qrels: dict[str, dict[str, float]] = {}
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle, delimiter="\t")
        next(reader, None)
        for row in reader:
            if len(row) >= 3:
                qrels.setdefault(row[0], {})[row[1]] = float(row[2])
    return qrels


def _store_corpus(engine: Any, embedder: ModelEmbedder, corpus: dict[str, str], progress: Progress) -> None:
    with engine.begin() as connection:
        version_id = register_model_version(
            connection, name=embedder.version_name, base_model=embedder.version_name, path=None, dims=embedder.dims
        )
    ids = list(corpus)
    now = datetime.now(UTC)
    for start in range(0, len(ids), 256):
        chunk = ids[start : start + 256]
        vectors = embedder.embed([corpus[i] for i in chunk])
        rows = [
            ItemRow(
                values=item_values(
                    ContentCreated(event_id=uuid.uuid4(), content_id=doc_id, text=corpus[doc_id], occurred_at=now)
                ),
                vector=vectors.vectors[n],
                chunks_total=vectors.chunks_total[n],
                chunks_used=vectors.chunks_used[n],
            )
            for n, doc_id in enumerate(chunk)
        ]
        with session_scope(engine) as session:
            upsert_items(session, rows, version_id)
            session.commit()
        progress("embedding corpus", min(start + 256, len(ids)), len(ids))
    build_hnsw_index(engine, version_id, embedder.dims)  # once, over the loaded corpus, as the worker has it


def evaluate(
    settings: Settings,
    corpus: dict[str, str],
    queries: dict[str, str],
    qrels: dict[str, dict[str, float]],
    *,
    hybrid: bool,
    progress: Progress,
) -> dict[str, Any]:
    """Mean nDCG@10, MRR@10 and recall@100 over the queries that have judgements."""
    started = time.perf_counter()
    data_dir = Path(tempfile.mkdtemp(prefix="tagworker-eval-"))
    servers = embedded.ensure_running(data_dir)
    try:
        upgrade(servers.database_url)
        engine = get_engine(servers.database_url)
        embedder = load_embedder(settings.model, cache_dir=settings.data_dir / "onnx")
        _store_corpus(engine, embedder, corpus, progress)
        searcher = Searcher(engine=engine, settings=settings, _embedder=embedder)
        judged = [q for q in queries if q in qrels]
        scores: dict[str, list[float]] = {"ndcg10": [], "mrr10": [], "recall100": []}
        for n, query_id in enumerate(judged, start=1):
            ranked = [hit.external_id for hit in searcher.search(queries[query_id], k=100, hybrid=hybrid)]
            scores["ndcg10"].append(ndcg_at_k(ranked, qrels[query_id], 10))
            scores["mrr10"].append(mrr_at_k(ranked, qrels[query_id], 10))
            scores["recall100"].append(recall_at_k(ranked, qrels[query_id], 100))
            progress("queries", n, len(judged))
        result: dict[str, Any] = {k: round(statistics.fmean(v), 4) if v else 0.0 for k, v in scores.items()}
        result.update(
            model=embedder.version_name,
            hybrid=hybrid,
            corpus=len(corpus),
            queries=len(judged),
            seconds=round(time.perf_counter() - started, 1),
        )
        return result
    finally:
        embedded.stop(data_dir)
        shutil.rmtree(data_dir, ignore_errors=True)
