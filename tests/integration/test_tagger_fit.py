"""A forced tagger fit (the one after a backfill) waits for a fit running elsewhere instead of skipping."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import Engine, text

from tests.integration.test_ingest_race import DIMS, FakeEmbedder
from worker.migrate import seed_taxonomy
from worker.pipeline.taxonomy import DEFAULT_TAXONOMY
from worker.services import ServiceUrls
from worker.settings import TaggingSettings
from worker.store.model_versions import register_model_version
from worker.store.tags import TAGGING_LOCK
from worker.tagging import TaggingService

pytestmark = pytest.mark.integration


def test_a_forced_fit_waits_for_the_other_fit_and_then_fits(stack: ServiceUrls, engine: Engine) -> None:
    """It returned None at once, so after a backfill the tagger fitted on partial vectors stayed in use."""
    seed_taxonomy(stack.database_url, DEFAULT_TAXONOMY)
    with engine.begin() as conn:
        version = register_model_version(conn, name="fake-fit@1", base_model="fake", path=None, dims=DIMS)
    tagging = TaggingService(engine=engine, embedder=FakeEmbedder(), model_version_id=version,
                             settings=TaggingSettings())  # fmt: skip
    held, release = threading.Event(), threading.Event()

    def other_fit() -> None:
        with engine.begin() as conn:
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": TAGGING_LOCK})
            held.set()
            release.wait(10)

    other = threading.Thread(target=other_fit)
    other.start()
    assert held.wait(10)
    assert tagging.fit() is None  # an unforced fit still gives way
    threading.Timer(1.0, release.set).start()
    started = time.monotonic()
    fitted = tagging.fit(force=True)
    other.join()

    assert fitted is not None and time.monotonic() - started >= 0.9
