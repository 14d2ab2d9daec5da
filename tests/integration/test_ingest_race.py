"""Two batches at once against real Postgres: an event id stored by the other batch fails only that event.

The race (both batches read "not stored yet", one commits first) is made deterministic here: the second
batch's embedder, which runs between that read and the write, lets the first batch commit.
"""

from __future__ import annotations

import uuid

import numpy as np
import pytest
from sqlalchemy import Engine, text

from tests.integration.helpers import feedback
from worker.ingest import IngestService
from worker.pipeline.embed import Embeddings
from worker.pipeline.validate import RawMessage
from worker.settings import BatchingSettings, IngestSettings
from worker.store.model_versions import register_model_version

pytestmark = pytest.mark.integration

DIMS = 8


class FakeEmbedder:
    """Fixed unit vectors; runs `before_first` once, where a concurrent batch would slip in."""

    def __init__(self, before_first=None) -> None:  # type: ignore[no-untyped-def]
        self.before_first = before_first

    version_name = "fake-race@1"
    dims = DIMS

    def embed(self, texts: list[str]) -> Embeddings:
        if self.before_first is not None:
            hook, self.before_first = self.before_first, None
            hook()
        vectors = np.full((len(texts), DIMS), 1 / np.sqrt(DIMS), dtype=np.float32)
        return Embeddings(vectors, [1] * len(texts), [1] * len(texts))


def service(engine: Engine, version_id: int, embedder: FakeEmbedder) -> IngestService:
    return IngestService(
        engine=engine, embedder=embedder, model_version_id=version_id, limits=IngestSettings(),
        batching=BatchingSettings(db_retries=1, db_retry_base_s=0.01),
    )  # fmt: skip


def messages(events: list[dict[str, object]]) -> list[RawMessage]:
    return [RawMessage(str(uuid.uuid4()), (e,), {}) for e in events]


def test_an_event_id_another_batch_stored_meanwhile_fails_alone(engine: Engine) -> None:
    with engine.begin() as conn:
        version = register_model_version(conn, name="fake-race@1", base_model="fake", path=None, dims=DIMS)
    reused = str(uuid.uuid4())
    first = feedback("The export button does nothing", event_id=reused)
    second_batch = [feedback(f"Race test message {i}") for i in range(5)]
    second_batch.append(feedback("A different text under the same event id", event_id=reused))

    def other_batch_commits() -> None:
        assert service(engine, version, FakeEmbedder()).run(messages([first])).stored == 1

    summary = service(engine, version, FakeEmbedder(other_batch_commits)).run(messages(second_batch))
    assert summary.stored == 5 and summary.rejected == 1 and summary.failed == 0, summary
    with engine.connect() as conn:
        reason = conn.scalar(text("SELECT reason FROM rejected_events WHERE event_id = :e"), {"e": reused})
    assert "was already used by a stored event" in reason
