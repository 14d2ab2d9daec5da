"""`tagworker eval retrieval`: BEIR-format evaluation through the product's own store and search path.

The corpus is embedded and written with the worker's store functions into a fresh embedded database, and every
query goes through `Searcher.search` (HNSW index, optional hybrid), so the numbers describe what users get.
"""

from __future__ import annotations

import math
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
from worker.errors import ConfigurationError
from worker.jsonl import json_lines, utf8_line
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
    expected = 'a JSON object with "_id" and a "text" string'
    docs: dict[str, str] = {}
    for number, row in json_lines(path, expected):
        if not isinstance(row, dict) or row.get("_id") in (None, "") or not isinstance(row.get("text"), str):
            raise ConfigurationError(f"{path}:{number}: expected {expected}")
        title = row.get("title") or ""
        docs[str(row["_id"])] = f"{title}. {row['text']}" if title else row["text"]
    if not docs:
        raise ConfigurationError(f"{path} has no lines")
    return docs


def read_qrels(path: Path) -> dict[str, dict[str, float]]:
    """BEIR qrels: `query-id<TAB>corpus-id<TAB>score` per line, after an optional header line.

    A line that is not three tab-separated columns with a numeric score is an error naming it: a file in another
    format (TREC's four columns, commas) must not be read as no judgements and score 0.
    """
    qrels: dict[str, dict[str, float]] = {}
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, 1):
            line = utf8_line(path, number, raw).rstrip("\r\n")
            if not line.strip():
                continue
            columns = line.split("\t")
            score = _score(columns[2]) if len(columns) == 3 else None
            if score is None:
                if number == 1 and len(columns) == 3:
                    continue  # the header: query-id, corpus-id, score
                raise ConfigurationError(
                    f"{path}:{number}: expected query-id<TAB>corpus-id<TAB>score, got {len(columns)} column(s): "
                    f"{line[:80]!r}"
                )
            qrels.setdefault(columns[0], {})[columns[1]] = score
    if not qrels:
        raise ConfigurationError(f"{path} has no judgements (query-id<TAB>corpus-id<TAB>score lines)")
    return qrels


def _score(value: str) -> float | None:
    try:
        score = float(value)
    except ValueError:
        return None
    return score if math.isfinite(score) else None


def judged_queries(queries: dict[str, str], qrels: dict[str, dict[str, float]]) -> list[str]:
    """The query ids that have judgements; none is an error (the ids of the two files do not match)."""
    judged = [q for q in queries if q in qrels]
    if not judged:
        raise ConfigurationError(
            f"none of the {len(queries)} queries has a judgement in the qrels ({len(qrels)} query ids there, e.g. "
            f"{next(iter(qrels))!r}); the qrels must use the queries' _id values"
        )
    return judged


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
    judged = judged_queries(queries, qrels)  # before minutes of embedding, not after
    started = time.perf_counter()
    data_dir = Path(tempfile.mkdtemp(prefix="tagworker-eval-"))
    servers = embedded.ensure_running(data_dir)
    try:
        upgrade(servers.database_url)
        engine = get_engine(servers.database_url)
        embedder = load_embedder(settings.model, cache_dir=settings.data_dir / "onnx")
        _store_corpus(engine, embedder, corpus, progress)
        searcher = Searcher(engine=engine, settings=settings, _embedder=embedder)
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
