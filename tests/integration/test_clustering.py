"""Clustering against real PostgreSQL, Redis and a worker: runs, stable ids, live assignment, dashboard role."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import ProgrammingError

from tests.integration.helpers import count_items, feedback, publish, wait_for
from worker.clustering import ClusteringService, RunSummary
from worker.errors import ConfigurationError
from worker.publish import to_event
from worker.services import ServiceUrls
from worker.settings import ClusteringSettings
from worker.store.dashboard import grant_dashboard
from worker.store.search import active_version

pytestmark = [pytest.mark.integration, pytest.mark.slow]
SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "feedback.jsonl"


@pytest.fixture(scope="module")
def sample_feedback(engine: Engine, producer, worker) -> list[dict[str, object]]:  # type: ignore[no-untyped-def]
    events = [to_event(json.loads(line), "feedback") for line in SAMPLES.read_text(encoding="utf-8").splitlines()]
    publish(producer, events)
    ids = [str(e["event_id"]) for e in events]
    wait_for(lambda: count_items(engine, ids) == len(ids), what="the sample feedback")
    return events


def service(engine: Engine, **overrides: object) -> ClusteringService:
    with engine.connect() as conn:
        version = conn.execute(text("SELECT id FROM model_versions WHERE status = 'active'")).scalar_one()
    settings = ClusteringSettings(min_cluster_size=6, **overrides)  # type: ignore[arg-type]
    return ClusteringService(engine=engine, model_version_id=version, settings=settings)


def themes_of(engine: Engine, external_ids: list[str]) -> dict[str, int | None]:
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT i.external_id, m.cluster_id FROM items i JOIN cluster_members m ON m.item_id = i.id "
                 "WHERE i.kind = 'feedback' AND i.external_id = ANY(:x)"),
            {"x": external_ids},
        )  # fmt: skip
        return dict(rows.tuples().all())


def test_too_few_items_is_a_clean_skipped_run(engine: Engine, sample_feedback) -> None:  # type: ignore[no-untyped-def]
    summary = service(engine, min_items=1_000_000).run()
    assert summary.status == "skipped" and "at least 1000000 are needed" in (summary.message or "")
    with engine.connect() as conn:
        status = conn.execute(text("SELECT status FROM cluster_runs WHERE id = :i"), {"i": summary.run_id}).scalar()
    assert status == "skipped"


def test_a_run_groups_themes_keeps_ids_and_new_feedback_is_assigned_live(
    engine: Engine,
    producer,
    sample_feedback,  # type: ignore[no-untyped-def]
) -> None:
    first = service(engine).run()
    assert first.status == "succeeded" and first.clusters >= 3, first
    deliverability = [f"fb-{i:04d}" for i in range(1, 16)]
    themes = themes_of(engine, deliverability)
    top = max(set(themes.values()), key=list(themes.values()).count)
    assert top is not None and list(themes.values()).count(top) >= 10, themes
    second = service(engine).run()
    assert second.status == "succeeded"
    assert themes_of(engine, deliverability) == themes, "a re-run on the same data must keep theme ids"
    with engine.connect() as conn:
        continued = conn.execute(
            text("SELECT count(*) FROM cluster_lineage WHERE run_id = :r AND event = 'continued'"),
            {"r": second.run_id},
        ).scalar_one()
    assert continued == second.clusters
    fresh = feedback("Our newsletters land in the spam folder at Gmail and the open rate collapsed")
    publish(producer, [fresh])
    wait_for(lambda: fresh["feedback_id"] in themes_of(engine, [fresh["feedback_id"]]), what="live assignment")
    assert themes_of(engine, [fresh["feedback_id"]])[fresh["feedback_id"]] == top


def test_two_runs_at_once_only_one_runs(engine: Engine, sample_feedback) -> None:  # type: ignore[no-untyped-def]
    results: list[RunSummary] = []
    threads = [threading.Thread(target=lambda: results.append(service(engine).run())) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r.status for r in results) == ["skipped", "succeeded"], results


def test_a_failed_run_leaves_the_previous_clusters(engine: Engine, sample_feedback) -> None:  # type: ignore[no-untyped-def]
    assert service(engine).run().status == "succeeded"
    with engine.connect() as conn:
        before = conn.execute(text("SELECT id, label FROM clusters WHERE retired_at IS NULL ORDER BY id")).all()

    class FailsAfterWriting(ClusteringService):
        def _write(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
            super()._write(*args, **kwargs)
            raise RuntimeError("disk full")

    base = service(engine)
    failing = FailsAfterWriting(engine=engine, model_version_id=base.model_version_id, settings=base.settings)
    failed = failing.run()
    assert failed.status == "failed" and "disk full" in (failed.message or "")
    with engine.connect() as conn:
        after = conn.execute(text("SELECT id, label FROM clusters WHERE retired_at IS NULL ORDER BY id")).all()
    assert after == before


@pytest.fixture
def secret_content_item(engine: Engine) -> Iterator[None]:
    """A content item the dashboard must never show, deleted afterwards: later tests count items."""
    with engine.begin() as conn:
        item_id = conn.scalar(text("INSERT INTO items (kind, external_id, event_id, content_sha256, text, "
                                   "occurred_at, metadata) VALUES ('content', 'secret-1', gen_random_uuid(), 'x', "
                                   "'SECRET unreleased campaign', now(), '{}') RETURNING id"))  # fmt: skip
    yield
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM items WHERE id = :id"), {"id": item_id})


@pytest.mark.usefixtures("new_roles_dropped")
def test_the_dashboard_role_reads_views_and_nothing_else(stack: ServiceUrls, engine: Engine, sample_feedback) -> None:  # type: ignore[no-untyped-def]
    with engine.begin() as conn:
        grant_dashboard(conn, "dash_test", "pw")
    url = engine.url.set(username="dash_test", password="pw")
    dash = create_engine(url)
    with dash.connect() as conn:
        for view in ("feedback_clusters", "clusters", "cluster_trend_daily", "tag_counts_daily", "cluster_runs"):
            conn.execute(text(f"SELECT * FROM dashboard.{view} LIMIT 1")).all()
    for statement in (
        "SELECT * FROM items LIMIT 1",
        "SELECT * FROM public.embeddings LIMIT 1",
        "DELETE FROM dashboard.cluster_runs",
        "CREATE TABLE dashboard.x (a int)",
        "CREATE TABLE public.x (a int)",
    ):
        with dash.connect() as conn, pytest.raises(ProgrammingError, match="permission denied"):
            conn.execute(text(statement))
    dash.dispose()
    with engine.connect() as conn:
        assert active_version(conn) is not None  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("setup", "role", "problem"),
    [
        ("", "CURRENT", "is the role this command connects as"),
        ("CREATE ROLE dash_reads_all; GRANT pg_read_all_data TO dash_reads_all", "dash_reads_all", "member of"),
        ("CREATE ROLE dash_owner; CREATE TABLE public.dash_owned (a int); ALTER TABLE public.dash_owned "
         "OWNER TO dash_owner", "dash_owner", "owns or has rights on tables"),
        ("", "dash_newline\n", "use lower-case letters"),
        ("CREATE ROLE dash_app_user; GRANT SELECT, INSERT ON items TO dash_app_user", "dash_app_user", "has rights"),
    ],
    ids=["itself", "member-of-pg_read_all_data", "owns-a-table", "trailing-newline", "granted-a-table"],
)  # fmt: skip
@pytest.mark.usefixtures("new_roles_dropped")
def test_grant_dashboard_refuses_a_role_that_can_do_more(engine: Engine, setup: str, role: str, problem: str) -> None:
    """It used to revoke an application role's own table rights, or report a superuser as read-only."""
    with engine.begin() as conn:
        if setup:
            conn.execute(text(setup))
        role = conn.scalar(text("SELECT current_user")) if role == "CURRENT" else role
    with engine.begin() as conn, pytest.raises(ConfigurationError, match=problem):
        grant_dashboard(conn, role, None)


@pytest.mark.usefixtures("new_roles_dropped", "secret_content_item")
def test_the_dashboard_role_cannot_see_past_a_views_filter(stack: ServiceUrls, engine: Engine, sample_feedback) -> None:  # type: ignore[no-untyped-def]
    """A function of the reader's own, cheaper than the view's `kind = 'feedback'`, used to see content rows."""
    with engine.begin() as conn:
        grant_dashboard(conn, "dash_leak", "pw")
    dash = create_engine(engine.url.set(username="dash_leak", password="pw"))
    with dash.connect() as conn:
        conn.execute(text("SET enable_indexscan = off; SET enable_bitmapscan = off; CREATE TEMP TABLE seen (t text)"))
        conn.execute(text("CREATE FUNCTION pg_temp.leak(text) RETURNS boolean LANGUAGE plpgsql COST 0.0000001 "
                          "AS $$ BEGIN INSERT INTO seen VALUES ($1); RETURN true; END $$"))  # fmt: skip
        conn.execute(text("SELECT item_id FROM dashboard.feedback_clusters WHERE pg_temp.leak(text)")).all()
        seen = list(conn.scalars(text("SELECT t FROM seen")))
    dash.dispose()
    assert seen, "the function ran"
    assert not any("SECRET" in t for t in seen), "a content item's text reached the reader's function"


def test_the_dashboard_tests_leave_no_role_or_item_behind(engine: Engine) -> None:
    """Runs after the dashboard tests above (file order): the session's database is shared with later tests."""
    with engine.connect() as conn:
        roles = list(conn.scalars(text(r"SELECT rolname FROM pg_roles WHERE rolname LIKE 'dash\_%' ORDER BY 1")))
        items = conn.scalar(text("SELECT count(*) FROM items WHERE external_id = 'secret-1'"))
    assert (roles, items) == ([], 0)


def test_after_a_version_change_the_themes_keep_their_ids_under_the_new_version(
    engine: Engine,
    sample_feedback,  # type: ignore[no-untyped-def]
) -> None:
    """Theme ids used to carry over while the rows stayed under the old version: the new version's live
    assignment saw no theme, and the old version's themes were never retired."""
    first = service(engine)
    assert first.run().status == "succeeded"
    with engine.begin() as conn:
        before = set(conn.scalars(text("SELECT id FROM clusters WHERE retired_at IS NULL")))
        new = conn.execute(
            text(
                "INSERT INTO model_versions (name, base_model, dims, status, metrics, params) "
                "VALUES ('same-weights-v2', 'test', 384, 'candidate', '{}', '{}') RETURNING id"
            )
        ).scalar_one()
        conn.execute(text("INSERT INTO embeddings (item_id, model_version_id, vector, chunks_total, chunks_used) "
                          "SELECT item_id, :new, vector, chunks_total, chunks_used FROM embeddings "
                          "WHERE model_version_id = :old"), {"new": new, "old": first.model_version_id})  # fmt: skip
    second = ClusteringService(engine=engine, model_version_id=new, settings=first.settings)
    assert second.run().status == "succeeded"

    with engine.connect() as conn:
        live: dict[int, int] = dict(
            conn.execute(text("SELECT id, model_version_id FROM clusters WHERE retired_at IS NULL")).all()
        )
    assert set(live.values()) == {new}, "only the new version's themes are live"
    assert len(before & set(live)) >= len(before) - 1, (before, live)  # the same vectors keep (nearly) every id
    assert first.run().status == "succeeded"  # and back, as a rollback would
    with engine.connect() as conn:
        versions = set(conn.scalars(text("SELECT DISTINCT model_version_id FROM clusters WHERE retired_at IS NULL")))
    assert versions == {first.model_version_id}
