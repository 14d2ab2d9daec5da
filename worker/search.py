"""Semantic search and similar-item lookup: the Python API behind `tagworker search` and `tagworker similar`.

    from worker.search import Searcher
    searcher = Searcher.from_settings()
    for hit in searcher.search("email landing in spam", kind="feedback", k=5):
        print(hit.score, hit.text)

Queries are embedded by the active model version and compared only with vectors of that version.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Engine

from worker.db import get_engine, session_scope
from worker.errors import SearchError
from worker.pipeline.embed import Embedder, load_embedder
from worker.pipeline.ranking import reciprocal_rank_fusion
from worker.services import resolve
from worker.settings import Settings, get_settings
from worker.store import search as store
from worker.store.items import vector_literals
from worker.store.search import Hit

MAX_K = 1000
MAX_QUERY_CHARS = 2000

__all__ = ["MAX_K", "Hit", "Searcher"]


def check_k(k: int) -> None:
    if not 1 <= k <= MAX_K:
        raise SearchError(f"k must be between 1 and {MAX_K}, got {k}")


@dataclass
class Searcher:
    """Searches one database; the query embedder is loaded on first use."""

    engine: Engine
    settings: Settings
    ef_search: int = 100
    _embedder: Embedder | None = field(default=None, repr=False)

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> Searcher:
        settings = settings or get_settings()
        return cls(engine=get_engine(resolve(settings).database_url), settings=settings)

    def _version(self) -> tuple[int, str, int]:
        with session_scope(self.engine) as session:
            version = store.active_version(session)
        if version is None:
            raise SearchError("no active model version yet: start a worker and ingest something first")
        return version

    def embed_query(self, query: str) -> tuple[str, int, int]:
        """The query's vector literal, with the active version's id and dims."""
        if not query.strip():
            raise SearchError("the query is empty")
        if len(query) > MAX_QUERY_CHARS:
            raise SearchError(f"the query has {len(query)} characters; the limit is {MAX_QUERY_CHARS}")
        version_id, name, dims = self._version()
        if self._embedder is None:
            self._embedder = load_embedder(self.settings.model, cache_dir=self.settings.data_dir / "onnx")
        if self._embedder.version_name != name:
            raise SearchError(
                f"the active model version is {name} but TAGWORKER_MODEL__NAME_OR_PATH loads "
                f"{self._embedder.version_name}; queries must be embedded by the active version"
            )
        return vector_literals(self._embedder.embed([query]).vectors)[0], version_id, dims

    def search(
        self,
        query: str,
        *,
        k: int = 10,
        kind: str | None = None,
        tag: str | None = None,
        since: datetime | None = None,
        hybrid: bool = False,
    ) -> list[Hit]:
        """Top-k items for a text query; `hybrid` fuses vector and full-text rankings (RRF)."""
        check_k(k)
        if kind not in (None, "content", "feedback"):
            raise SearchError(f"kind must be content or feedback, got {kind!r}")
        vector, version_id, dims = self.embed_query(query)
        depth = max(k, 50) if hybrid else k
        with session_scope(self.engine) as session:
            tag_id = None
            if tag is not None:
                tag_id = store.tag_id_by_name(session, tag)
                if tag_id is None:
                    raise SearchError(
                        f"unknown tag {tag!r} (or a retired one): `tagworker tags list` shows the current tags"
                    )
            dense = store.nearest(
                session, vector=vector, model_version_id=version_id, dims=dims, k=depth,
                ef_search=self.ef_search, kind=kind, since=since, tag_id=tag_id,
            )  # fmt: skip
            if not hybrid:
                return dense
            lexical = store.full_text(
                session, query=query, model_version_id=version_id, k=depth, kind=kind, since=since, tag_id=tag_id
            )
        by_id = {hit.item_id: hit for hit in [*lexical, *dense]}
        fused = reciprocal_rank_fusion([[h.item_id for h in dense], [h.item_id for h in lexical]])
        return [_rescored(by_id[item_id], score) for item_id, score in fused[:k]]

    def similar(self, item: str, *, k: int = 10) -> list[Hit]:
        """The k items most like a stored one (`content/blog-001`, `blog-001` or a numeric id)."""
        check_k(k)
        version_id, _, dims = self._version()
        with session_scope(self.engine) as session:
            item_id = store.find_item(session, item)
            if item_id is None:
                raise SearchError(f"unknown item {item!r}: use kind/external_id, e.g. content/blog-001")
            vector = store.item_vector(session, item_id=item_id, model_version_id=version_id)
            if vector is None:
                raise SearchError(f"item {item!r} has no vector under the active model version yet")
            return store.nearest(
                session, vector=vector, model_version_id=version_id, dims=dims, k=k,
                ef_search=self.ef_search, exclude_item=item_id,
            )  # fmt: skip


def _rescored(hit: Hit, score: float) -> Hit:
    return Hit(hit.item_id, hit.kind, hit.external_id, hit.title, hit.text, hit.occurred_at, score)
