"""Clustering while a backfill re-embeds the feedback under a new model version, in a database of its own."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator

import numpy as np
import pytest
from sqlalchemy import Engine, text

from tests.integration.helpers import scratch_database
from worker import clustering
from worker.clustering import ClusteringService
from worker.db import get_engine, session_scope
from worker.services import ServiceUrls
from worker.settings import ClusteringSettings
from worker.store.clusters import retire, set_live_members, start_run
from worker.store.model_versions import activate, register_model_version, set_backfill

pytestmark = pytest.mark.integration

DIMS, THEMES, PER_THEME = 32, 3, 20


@pytest.fixture
def engine(stack: ServiceUrls) -> Iterator[Engine]:
    for url in scratch_database(stack.database_url, prefix="clusterversions"):
        yield get_engine(url)


def store_feedback(engine: Engine, version_id: int) -> list[int]:
    """THEMES tight groups of feedback vectors on the unit sphere, stored under one version; their item ids."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(THEMES, DIMS))
    ids = []
    with engine.begin() as conn:
        for t in range(THEMES):
            for i in range(PER_THEME):
                vector = centres[t] + rng.normal(scale=0.05, size=DIMS)
                body = f"theme {t} message {i}"
                ids.append(conn.scalar(
                    text("""INSERT INTO items (kind, external_id, event_id, text, content_sha256, occurred_at, metadata)
                            VALUES ('feedback', :x, :e, :t, :h, now(), '{}') RETURNING id"""),
                    {"x": body, "e": uuid.uuid4(), "t": body, "h": hashlib.sha256(body.encode()).hexdigest()},
                ))  # fmt: skip
                conn.execute(
                    text("""INSERT INTO embeddings (item_id, model_version_id, vector, chunks_total, chunks_used)
                            VALUES (:i, :v, :vec, 1, 1)"""),
                    {"i": ids[-1], "v": version_id, "vec": str((vector / np.linalg.norm(vector)).tolist())},
                )
    return ids


def backfill(engine: Engine, item_ids: list[int], *, source: int, target: int) -> None:
    """What the backfill writes for these items (the same vectors: the weights did not change here)."""
    with engine.begin() as conn:
        conn.execute(text("""INSERT INTO embeddings (item_id, model_version_id, vector, chunks_total, chunks_used)
                             SELECT item_id, :target, vector, chunks_total, chunks_used FROM embeddings
                             WHERE model_version_id = :source AND item_id = ANY(:ids)"""),
                     {"target": target, "source": source, "ids": item_ids})  # fmt: skip


def live_themes(engine: Engine) -> dict[int, int]:
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT id, model_version_id FROM clusters WHERE retired_at IS NULL"))
        return dict(rows.tuples().all())


SETTINGS = ClusteringSettings(min_cluster_size=6, min_items=10)


def clustered_then_promoted(engine: Engine) -> tuple[int, int, list[int]]:
    """Feedback clustered under an old version, and a new version to backfill: (old, new, item ids)."""
    with engine.begin() as conn:
        old = register_model_version(conn, name="old@clusters", base_model="fake", path=None, dims=DIMS)
        new = register_model_version(conn, name="new@clusters", base_model="fake", path=None, dims=DIMS)
    items = store_feedback(engine, old)
    assert ClusteringService(engine=engine, model_version_id=old, settings=SETTINGS).run().status == "succeeded"
    return old, new, items


def test_a_run_during_the_backfill_waits_so_the_themes_keep_their_ids(engine: Engine) -> None:
    """The run clustered the half already re-embedded and retired every theme whose members it could not see."""
    old, new, items = clustered_then_promoted(engine)
    themes = live_themes(engine)
    assert len(themes) == THEMES

    backfill(engine, items[: 2 * PER_THEME], source=old, target=new)  # two themes of three
    during = ClusteringService(engine=engine, model_version_id=new, settings=SETTINGS).run()

    assert during.status == "skipped" and "backfill" in (during.message or ""), during
    assert live_themes(engine) == themes, "the old version's themes stay live, with their ids"

    backfill(engine, items[2 * PER_THEME :], source=old, target=new)
    after = ClusteringService(engine=engine, model_version_id=new, settings=SETTINGS).run()

    assert after.status == "succeeded", after
    assert live_themes(engine) == dict.fromkeys(themes, new), "every theme continues under the new version"


def test_after_a_finished_backfill_items_the_model_failed_on_do_not_stop_clustering(engine: Engine) -> None:
    old, new, items = clustered_then_promoted(engine)
    backfill(engine, items[1:], source=old, target=new)  # the model failed on the first item
    with session_scope(engine) as session:
        set_backfill(session, new, {"total": len(items), "done": len(items) - 1, "failed": items[:1],
                                    "finished_at": "2026-11-27T00:00:00+00:00"})  # fmt: skip
        session.commit()

    assert ClusteringService(engine=engine, model_version_id=new, settings=SETTINGS).run().status == "succeeded"
    assert set(live_themes(engine).values()) == {new}


def switch_to(engine: Engine, version_id: int) -> None:
    with session_scope(engine) as session:
        activate(session, version_id)
        session.commit()


def test_a_run_of_a_version_retired_before_or_during_it_writes_nothing(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker that had not switched yet, or `cluster run` reading the active version before a switch, took
    every theme back to the retired version, and the active version's live assignment found none."""
    old, new, items = clustered_then_promoted(engine)
    switch_to(engine, new)
    backfill(engine, items, source=old, target=new)
    assert ClusteringService(engine=engine, model_version_id=new, settings=SETTINGS).run().status == "succeeded"
    themes = live_themes(engine)

    late = ClusteringService(engine=engine, model_version_id=old, settings=SETTINGS).run()
    assert late.status == "skipped" and "is retired" in (late.message or ""), late
    assert live_themes(engine) == themes

    real = clustering.cluster_vectors

    def switch_meanwhile(*args: object, **kwargs: object) -> object:
        switch_to(engine, old)  # a rollback while the new version's run computes
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(clustering, "cluster_vectors", switch_meanwhile)
    during = ClusteringService(engine=engine, model_version_id=new, settings=SETTINGS).run()
    assert during.status == "skipped" and "retired during the run" in (during.message or ""), during
    assert live_themes(engine) == themes


def test_live_assignment_to_a_theme_retired_meanwhile_makes_noise(engine: Engine) -> None:
    """The assigner reads themes before the batch's transaction; the dashboards showed items in a retired theme."""
    _, _, items = clustered_then_promoted(engine)
    theme, other = sorted(live_themes(engine))[:2]
    with session_scope(engine) as session:
        retire(session, [theme])
        dropped = set_live_members(session, item_ids=items[:2], cluster_ids=[theme, other], similarity=[0.9, 0.8])
        session.commit()
    assert dropped == 1
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT item_id, cluster_id FROM cluster_members WHERE item_id = ANY(:i)"),
                            {"i": items[:2]})  # fmt: skip
        assert dict(rows.tuples().all()) == {items[0]: None, items[1]: other}


def test_a_run_that_died_is_marked_failed_by_the_next(engine: Engine) -> None:
    """Its row stayed `running` in `dashboard.cluster_runs` for good."""
    old, _, _ = clustered_then_promoted(engine)
    with session_scope(engine) as session:
        dead = start_run(session, model_version_id=old, params={})
        session.commit()
    assert ClusteringService(engine=engine, model_version_id=old, settings=SETTINGS).run().status == "succeeded"
    with engine.connect() as conn:
        row = conn.execute(text("SELECT status, message FROM cluster_runs WHERE id = :i"), {"i": dead}).one()
    assert row.status == "failed" and "interrupted" in row.message
