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
from worker.runtime import load_serving_model
from worker.services import ServiceUrls
from worker.settings import ModelSettings, Settings
from worker.store.model_versions import activate, check_not_retired, register_model_version

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


def test_a_worker_whose_configured_model_is_not_the_active_version_does_not_start(
    engine: Engine, tmp_path: Path
) -> None:
    """It served the configured model as a candidate: vectors nobody searched, and now every batch refused."""
    with engine.begin() as conn:
        register_model_version(conn, name="someone-else@window", base_model="other", path=None, dims=384)
    settings = Settings(data_dir=tmp_path, model=ModelSettings(device="cpu", backend="torch"))
    with pytest.raises(ModelLoadError, match=r"version \d+ is active, but the configured model .* is version \d+"):
        load_serving_model(engine, settings)
