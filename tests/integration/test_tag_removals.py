"""A tag people take off items stops coming back on similar items after a refit, in a database of its own."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator

import numpy as np
import pytest
from sqlalchemy import Engine, text

from tests.integration.helpers import correct, scratch_database
from tests.integration.test_ingest_race import DIMS, FakeEmbedder
from worker.db import get_engine, session_scope
from worker.pipeline.taxonomy import parse_taxonomy
from worker.services import ServiceUrls
from worker.settings import TaggingSettings
from worker.store.model_versions import register_model_version
from worker.store.tags import save_taxonomy
from worker.tagging import TaggingService

pytestmark = pytest.mark.integration
TOPICS = ["pricing", "onboarding", "brand"]
TAXONOMY = {"facets": [{"name": "topic", "multi_label": True, "tags": [{"name": t} for t in TOPICS]}]}


@pytest.fixture
def topics(stack: ServiceUrls) -> Iterator[tuple[Engine, TaggingService]]:
    """A migrated database with one multi-label facet (pricing, onboarding, brand) and one model version."""
    for url in scratch_database(stack.database_url, prefix="tagremovals"):
        engine = get_engine(url)
        with session_scope(engine) as session:
            save_taxonomy(session, parse_taxonomy(TAXONOMY))
            version = register_model_version(session.connection(), name="fake-removals@1", base_model="fake",
                                             path=None, dims=DIMS)  # fmt: skip
            session.commit()
        yield engine, TaggingService(engine=engine, embedder=FakeEmbedder(), model_version_id=version,
                                     settings=TaggingSettings())  # fmt: skip


def direction(*axes: int) -> np.ndarray:
    v = np.zeros(DIMS)
    v[list(axes)] = 1.0
    return v / np.linalg.norm(v)


def store_items(engine: Engine, version: int, near: np.ndarray, n: int, rng: np.random.Generator) -> list[int]:
    """`n` feedback items embedded close to `near`."""
    ids = []
    with engine.begin() as conn:
        for _ in range(n):
            body = f"feedback {uuid.uuid4().hex}"
            vector = near + rng.normal(0, 0.05, DIMS)
            vector = vector / np.linalg.norm(vector)
            item_id = int(conn.scalar(
                text("""INSERT INTO items (kind, external_id, event_id, text, content_sha256, occurred_at, metadata)
                        VALUES ('feedback', :x, :e, :x, :h, now(), '{}') RETURNING id"""),
                {"x": body, "e": uuid.uuid4(), "h": hashlib.sha256(body.encode()).hexdigest()},
            ))  # fmt: skip
            conn.execute(text("INSERT INTO embeddings (item_id, model_version_id, vector, chunks_total, chunks_used) "
                              "VALUES (:i, :v, :vec, 1, 1)"),
                         {"i": item_id, "v": version, "vec": str(vector.tolist())})  # fmt: skip
            ids.append(item_id)
    return ids


def model_tags(engine: Engine, item_id: int) -> set[str]:
    with engine.connect() as conn:
        rows = conn.scalars(text("SELECT t.name FROM item_tags it JOIN tags t ON t.id = it.tag_id "
                                 "WHERE it.item_id = :i AND it.source = 'model'"), {"i": item_id})  # fmt: skip
        return set(rows)


def test_a_tag_people_removed_from_similar_items_is_not_put_on_the_next_one(
    topics: tuple[Engine, TaggingService],
) -> None:
    """The removals were stored (present = false) but not read by the fit: `pricing` came back after every refit."""
    engine, service = topics
    rng = np.random.default_rng(0)
    version = service.model_version_id
    for j, tag in enumerate(TOPICS):
        with session_scope(engine) as session:
            for item_id in store_items(engine, version, direction(j), 6, rng):
                correct(session, item_id, added=[tag])
            session.commit()
    wrong = store_items(engine, version, direction(0, 3), 6, rng)  # near pricing, but not about it
    fresh = store_items(engine, version, direction(0, 3), 1, rng)[0]  # nobody corrects this one
    assert service.fit(force=True) is not None and service.retag_pending() > 0
    assert all("pricing" in model_tags(engine, item_id) for item_id in [*wrong, fresh]), "the mistake to correct"

    with session_scope(engine) as session:
        for item_id in wrong:
            correct(session, item_id, removed=["pricing"])
        session.commit()
    refit = service.fit()
    assert refit is not None and refit.heads == {"topic": "supervised"}
    service.retag_pending()

    assert "pricing" not in model_tags(engine, fresh)
    assert refit.labelled_items == 24, "the six items people only took `pricing` off are training data"
