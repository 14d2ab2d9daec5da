"""A worker that has not switched yet, after a promotion, against real Postgres in a database of its own.

Workers look for a new active version between batches, at most every check interval; a batch already being
embedded finishes on the old model. Its write must not land after the new version's backfill has finished.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError

from tests.integration.helpers import feedback, scratch_database
from tests.integration.test_backfill_race import DIMS, TextHashEmbedder, vector_of
from tests.integration.test_ingest_race import messages, service
from worker.backfill import BackfillService
from worker.db import get_engine, session_scope
from worker.errors import ModelLoadError, ModelVersionRetired
from worker.pipeline.embed import resolve_model_path, version_name_for
from worker.runtime import check_serves_active, load_serving_model
from worker.services import ServiceUrls
from worker.settings import ModelSettings, Settings
from worker.store.model_versions import activate, check_not_retired, register_model_version
from worker.store.tags import TAGGING_LOCK

pytestmark = pytest.mark.integration


@pytest.fixture
def engine(stack: ServiceUrls) -> Iterator[Engine]:
    for url in scratch_database(stack.database_url, prefix="switchwindow"):
        yield get_engine(url)


def versions(engine: Engine) -> tuple[int, int]:
    """(old, new): the old one active."""
    with engine.begin() as conn:
        old = register_model_version(conn, name="old@window", base_model="fake", path=None, dims=DIMS)
        new = register_model_version(conn, name="new@window", base_model="fake", path=None, dims=DIMS)
    return old, new


def switch_to(engine: Engine, version_id: int) -> None:
    with session_scope(engine) as session:
        activate(session, version_id)
        session.commit()


def text_of(engine: Engine, feedback_id: str) -> str | None:
    with engine.connect() as conn:
        query = "SELECT text FROM items WHERE kind = 'feedback' AND external_id = :f"
        return conn.scalar(text(query), {"f": feedback_id})


def item_id(engine: Engine, feedback_id: str) -> int:
    with engine.connect() as conn:
        return int(conn.scalar(text("SELECT id FROM items WHERE external_id = :f"), {"f": feedback_id}))


def test_a_batch_of_the_retired_version_after_the_backfill_is_handed_back_not_written(engine: Engine) -> None:
    """It was written: an edit dropped the item's vector under the active version (of the old text, rightly),
    the finished backfill never came back for it, and the item vanished from search and themes."""
    old, new = versions(engine)
    not_switched = service(engine, old, TextHashEmbedder(lambda: None))  # type: ignore[arg-type]
    first = feedback("Coupon code WELCOME10 is rejected", feedback_id="fb-window")
    assert not_switched.run(messages([first])).stored == 1
    switch_to(engine, new)
    backfilled = BackfillService(engine=engine, embedder=TextHashEmbedder(lambda: None), model_version_id=new,  # type: ignore[arg-type]
                                 chunk=10).run()  # fmt: skip
    assert (backfilled.status, backfilled.embedded) == ("done", 1)

    edit = feedback("Coupon code WELCOME10 is rejected at checkout", feedback_id="fb-window")
    summary = not_switched.run(messages([edit]))

    assert summary.requeue and summary.stored == 0 and summary.failed == 0, summary
    assert not_switched.version_retired, "the runtime switches before the next batch, not after the interval"
    assert text_of(engine, "fb-window") == "Coupon code WELCOME10 is rejected", "the batch comes back instead"
    assert vector_of(engine, item_id(engine, "fb-window"), new) is not None


def test_a_switch_waits_for_a_batch_that_found_its_version_active_until_it_commits(engine: Engine) -> None:
    """Otherwise the switch, and the backfill after it, could run between the check and the batch's commit."""
    old, new = versions(engine)
    batch = engine.connect()
    check_not_retired(batch, old)  # the last step of a batch's write; its commit follows
    try:
        with session_scope(engine) as session:
            session.execute(text("SET LOCAL lock_timeout = '300ms'"))
            with pytest.raises(OperationalError, match="lock timeout"):
                activate(session, new)
    finally:
        batch.commit()
        batch.close()
    switch_to(engine, new)  # once the batch committed
    with engine.connect() as conn, pytest.raises(ModelVersionRetired, match="was retired while this batch ran"):
        check_not_retired(conn, old)


def torch_settings(tmp_path: Path, database_url: str = "", broker_url: str = "") -> Settings:
    urls = {"database": {"url": database_url}, "broker": {"url": broker_url}} if database_url else {}
    return Settings(data_dir=tmp_path, model=ModelSettings(device="cpu", backend="torch"), **urls)  # type: ignore[arg-type]


def test_a_worker_whose_configured_model_is_not_the_active_version_does_not_start(
    engine: Engine, tmp_path: Path, stack: ServiceUrls
) -> None:
    """It served the configured model as a candidate: vectors nobody searched; now each batch would be refused,
    and the worker (checked only for its model directory at start) looped on loading the model."""
    with engine.begin() as conn:
        register_model_version(conn, name="someone-else@window", base_model="other", path=None, dims=384)
    message = r"model version \d+ \(someone-else@window\) is active, but this worker's configured model .* is not it"
    settings = torch_settings(tmp_path, engine.url.render_as_string(hide_password=False), stack.broker_url)
    with pytest.raises(ModelLoadError, match=message):
        check_serves_active(settings)  # at worker start, before consuming: no model load
    with pytest.raises(ModelLoadError, match=message):
        load_serving_model(engine, settings)


def test_the_configured_directory_promoted_under_its_own_name_is_served(engine: Engine, tmp_path: Path) -> None:
    """`tagworker model promote <the configured directory>` names the version after the directory."""
    path = resolve_model_path("all-MiniLM-L6-v2")
    promoted = version_name_for(path, path)
    with engine.begin() as conn:
        version = register_model_version(conn, name=promoted, base_model=path, path=path, dims=384)
    embedder, serving = load_serving_model(engine, torch_settings(tmp_path))
    assert (serving, embedder.version_name) == (version, promoted)


def test_a_restart_serves_the_configured_model_under_its_active_versions_name(engine: Engine, tmp_path: Path) -> None:
    """The name comes from the weights hash that chose it; the restart registers no other version."""
    first, registered = load_serving_model(engine, torch_settings(tmp_path))  # the first start registers it
    embedder, serving = load_serving_model(engine, torch_settings(tmp_path))
    with engine.connect() as conn:
        names = conn.scalars(text("SELECT name FROM model_versions")).all()
    assert (serving, embedder.version_name) == (registered, first.version_name)
    assert names == [first.version_name]


def test_a_tagger_fit_holds_back_no_ingest_write(engine: Engine) -> None:
    """The fit's advisory lock had the switch's key, so each batch's last statement waited for a whole fit."""
    old, _ = versions(engine)
    with engine.connect() as fit, engine.connect() as batch:
        fit.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": TAGGING_LOCK})
        batch.execute(text("SET LOCAL lock_timeout = '300ms'"))
        check_not_retired(batch, old)
        batch.rollback()
        fit.rollback()
