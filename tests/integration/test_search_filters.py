"""Filtered vector search returns k rows even when the HNSW scan gives up before reaching the matches."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from worker.store.items import vector_literals
from worker.store.model_versions import hnsw_index_sql, register_model_version
from worker.store.search import nearest

pytestmark = [pytest.mark.integration]

DIMS = 8
OLD, RECENT = datetime(2025, 1, 1, tzinfo=UTC), datetime(2026, 6, 1, tzinfo=UTC)
QUERY = np.eye(DIMS, dtype=np.float32)[0]


@pytest.fixture
def session(engine: Engine) -> Iterator[Session]:
    """One transaction, rolled back: the synthetic version, its index and items never reach other tests."""
    with Session(engine) as session:
        yield session
        session.rollback()


def _unit(points: NDArray[np.float64]) -> NDArray[np.float32]:
    return (points / np.linalg.norm(points, axis=1, keepdims=True)).astype(np.float32)


def _store(session: Session, version_id: int, vectors: NDArray[np.float32], *, kind: str, when: datetime) -> None:
    """Items `filters-<kind>-<n>` with one vector each under `version_id`."""
    session.execute(
        text(
            """
            WITH new AS (
                INSERT INTO items (kind, external_id, event_id, content_sha256, text, metadata, occurred_at)
                SELECT :kind, 'filters-' || :kind || '-' || n, gen_random_uuid(), '', 'synthetic', '{}', :when
                FROM generate_series(0, :n - 1) AS n
                RETURNING id, external_id
            )
            INSERT INTO embeddings (item_id, model_version_id, vector, chunks_total, chunks_used)
            SELECT new.id, :version, CAST(v.vector AS vector), 1, 1
            FROM new JOIN unnest(CAST(:vectors AS text[])) WITH ORDINALITY AS v(vector, n)
              ON new.external_id = 'filters-' || :kind || '-' || (v.n - 1)
            """
        ),
        {"kind": kind, "when": when, "n": len(vectors), "version": version_id, "vectors": vector_literals(vectors)},
    )


@pytest.fixture
def corpus(session: Session) -> dict[str, Any]:
    """300 old feedback items next to the query and 20 recent, tagged content items far from it.

    Every filter below keeps only the far items, so the HNSW scan meets 300 non-matching neighbours first.
    """
    rng = np.random.default_rng(0)
    near = _unit(QUERY + 0.05 * rng.standard_normal((300, DIMS)))
    far = _unit(-QUERY + 0.5 * rng.standard_normal((20, DIMS)))
    version_id = register_model_version(
        session.connection(), name="test-search-filters", base_model="synthetic", path=None, dims=DIMS
    )
    session.execute(text(hnsw_index_sql(version_id, DIMS, concurrently=False)))  # in the test's transaction
    _store(session, version_id, near, kind="feedback", when=OLD)
    _store(session, version_id, far, kind="content", when=RECENT)
    tag_id = int(session.execute(text("SELECT min(id) FROM tags")).scalar_one())
    session.execute(
        text(
            "INSERT INTO item_tags (item_id, tag_id, score, source, head) "
            "SELECT id, :tag, 1.0, 'human', 'test' FROM items WHERE kind = 'content' AND external_id LIKE 'filters-%'"
        ),
        {"tag": tag_id},
    )
    similarity = far @ QUERY
    order = np.argsort(-similarity)
    return {
        "version_id": version_id,
        "tag_id": tag_id,
        "far_by_similarity": [f"filters-content-{n}" for n in order],
        "far_scores": similarity[order].tolist(),
    }


def _as_if_large(session: Session) -> None:
    """Make 320 rows behave like 42,000: the planner takes the HNSW index and its scan gives up early.

    On a small table the planner rightly sorts the few matching rows instead, which would hide the bug; the
    scan limit of 50 visited tuples runs out before the 300 near neighbours, as the default 20,000 does at scale.
    """
    session.execute(text("SELECT set_config('enable_sort', 'off', true)"))
    session.execute(text("SELECT set_config('hnsw.max_scan_tuples', '50', true)"))


@pytest.mark.parametrize("which", ["since", "kind", "tag"])
def test_a_filter_still_returns_the_exact_top_k_when_the_index_scan_runs_out(
    session: Session, corpus: dict[str, Any], which: str
) -> None:
    _as_if_large(session)
    filters: dict[str, Any] = {
        "since": {"since": RECENT},
        "kind": {"kind": "content"},
        "tag": {"tag_id": corpus["tag_id"]},
    }
    hits = nearest(
        session, vector=vector_literals([QUERY])[0], model_version_id=corpus["version_id"], dims=DIMS, k=5,
        ef_search=5, **filters[which],
    )  # fmt: skip
    assert [h.external_id for h in hits] == corpus["far_by_similarity"][:5]
    assert [h.score for h in hits] == pytest.approx(corpus["far_scores"][:5], abs=1e-5)


def test_a_filter_with_fewer_matches_than_k_returns_them_all(session: Session, corpus: dict[str, Any]) -> None:
    _as_if_large(session)
    hits = nearest(
        session, vector=vector_literals([QUERY])[0], model_version_id=corpus["version_id"], dims=DIMS, k=30,
        ef_search=5, kind="content",
    )  # fmt: skip
    assert [h.external_id for h in hits] == corpus["far_by_similarity"]
