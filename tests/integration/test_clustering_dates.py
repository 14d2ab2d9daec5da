"""Feedback dated in the future: the clustering window and the dashboard's trend, in a database of its own."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator

import numpy as np
import pytest
from sqlalchemy import Engine, text

from tests.integration.helpers import scratch_database
from worker.clustering import ClusteringService
from worker.db import get_engine, session_scope
from worker.services import ServiceUrls
from worker.settings import ClusteringSettings
from worker.store.clusters import load_feedback
from worker.store.model_versions import register_model_version

pytestmark = pytest.mark.integration

DIMS, PER_THEME = 32, 20
SETTINGS = ClusteringSettings(min_cluster_size=6, min_items=10, window_days=30)


@pytest.fixture
def engine(stack: ServiceUrls) -> Iterator[Engine]:
    for url in scratch_database(stack.database_url, prefix="clusterdates"):
        yield get_engine(url)


def store(engine: Engine, version: int, vectors: np.ndarray, *, occurred: str, received: str = "now()") -> list[int]:
    """Feedback items with these vectors, dated by SQL expressions; their ids."""
    ids = []
    with engine.begin() as conn:
        for vector in vectors:
            body = f"message {uuid.uuid4().hex}"
            ids.append(conn.scalar(
                text(f"""INSERT INTO items (kind, external_id, event_id, text, content_sha256, occurred_at,
                                            received_at, metadata)
                         VALUES ('feedback', :x, :e, :x, :h, {occurred}, {received}, '{{}}') RETURNING id"""),
                {"x": body, "e": uuid.uuid4(), "h": hashlib.sha256(body.encode()).hexdigest()},
            ))  # fmt: skip
            conn.execute(
                text("""INSERT INTO embeddings (item_id, model_version_id, vector, chunks_total, chunks_used)
                        VALUES (:i, :v, :vec, 1, 1)"""),
                {"i": ids[-1], "v": version, "vec": str(vector.tolist())},
            )
    return ids


def theme(seed: int, n: int = PER_THEME) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centre = rng.normal(size=DIMS)
    points = centre + rng.normal(scale=0.05 * np.linalg.norm(centre), size=(n, DIMS))
    return points / np.linalg.norm(points, axis=1, keepdims=True)


def version(engine: Engine) -> int:
    with engine.begin() as conn:
        return register_model_version(conn, name="dates@clusters", base_model="fake", path=None, dims=DIMS)


def test_feedback_dated_in_the_future_leaves_the_window_a_window_after_it_arrived(engine: Engine) -> None:
    """By `occurred_at` alone, an item dated a year ahead stayed in a 30-day window (and its theme) for 13 months."""
    v = version(engine)
    recent = store(engine, v, theme(1, 2), occurred="now()")
    stale = store(engine, v, theme(2, 2), occurred="now() + interval '1 year'", received="now() - interval '60 days'")
    with session_scope(engine) as session:
        ids = load_feedback(session, model_version_id=v, window_days=30).item_ids
    assert set(recent) <= set(ids) and not set(stale) & set(ids)


def test_feedback_dated_in_the_future_is_no_rising_theme_and_not_seen_after_now(engine: Engine) -> None:
    """A theme whose feedback was sent with tomorrow's date counted it in 'last 7 days' for a week too long."""
    v = version(engine)
    store(engine, v, theme(1), occurred="now() - interval '10 days'")
    store(engine, v, theme(1, 5)[:5], occurred="now() + interval '30 days'", received="now() - interval '10 days'")
    assert ClusteringService(engine=engine, model_version_id=v, settings=SETTINGS).run().status == "succeeded"
    with engine.connect() as conn:
        row = conn.execute(text("SELECT items, last_7_days, previous_7_days, trend, last_seen <= now() AS past "
                                "FROM dashboard.clusters")).one()  # fmt: skip
    assert row.items == PER_THEME + 5
    assert (row.last_7_days, row.previous_7_days, row.trend, row.past) == (0, PER_THEME + 5, -(PER_THEME + 5), True)
    with engine.connect() as conn:
        latest = conn.scalar(text("SELECT max(day) <= current_date FROM dashboard.cluster_trend_daily"))
    assert latest, "no day that has not come yet"
