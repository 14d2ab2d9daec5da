"""The backfill against an edit that lands while it embeds a chunk, in a database of its own."""

from __future__ import annotations

import hashlib
import threading
import uuid
from collections.abc import Callable, Iterator

import numpy as np
import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError

from tests.integration.helpers import scratch_database
from worker import backfill
from worker.backfill import BackfillService
from worker.db import get_engine, session_scope
from worker.errors import ModelLoadError
from worker.pipeline.embed import Embeddings
from worker.services import ServiceUrls
from worker.store.model_versions import activate, register_model_version

pytestmark = pytest.mark.integration

DIMS = 8


class TextHashEmbedder:
    """A vector per text (so a stale vector shows); runs `meanwhile` once, after reading, before writing."""

    version_name = "hash@backfill"
    dims = DIMS

    def __init__(self, meanwhile: Callable[[], None]) -> None:
        self.meanwhile: Callable[[], None] | None = meanwhile

    @staticmethod
    def vector(body: str) -> np.ndarray:
        raw = np.frombuffer(hashlib.sha256(body.encode()).digest()[: DIMS * 4], dtype=np.uint32).astype(np.float32)
        return raw / np.linalg.norm(raw)

    def embed(self, texts: list[str]) -> Embeddings:
        vectors = np.stack([self.vector(t) for t in texts])
        if self.meanwhile is not None:
            hook, self.meanwhile = self.meanwhile, None
            hook()
        return Embeddings(vectors, [1] * len(texts), [1] * len(texts))


@pytest.fixture
def engine(stack: ServiceUrls) -> Iterator[Engine]:
    for url in scratch_database(stack.database_url, prefix="backfillrace"):
        yield get_engine(url)


def store_item(engine: Engine, body: str, version_id: int) -> int:
    with engine.begin() as conn:
        item_id = int(conn.scalar(
            text("""INSERT INTO items (kind, external_id, event_id, text, content_sha256, occurred_at, metadata)
                    VALUES ('feedback', :x, :e, :t, :h, now(), '{}') RETURNING id"""),
            {"x": body, "e": uuid.uuid4(), "t": body, "h": hashlib.sha256(body.encode()).hexdigest()},
        ))  # fmt: skip
        write_vector(conn, item_id, version_id, body)
    return item_id


def write_vector(conn, item_id: int, version_id: int, body: str) -> None:  # type: ignore[no-untyped-def]
    conn.execute(
        text("""INSERT INTO embeddings (item_id, model_version_id, vector, chunks_total, chunks_used)
                VALUES (:i, :v, :vec, 1, 1)"""),
        {"i": item_id, "v": version_id, "vec": str(TextHashEmbedder.vector(body).tolist())},
    )


def promoted_with_one_item(engine: Engine, body: str) -> tuple[int, int, int]:
    """An item embedded under the old version, just after the new one became active: (old, new, item id)."""
    with engine.begin() as conn:
        old = register_model_version(conn, name="old@backfill", base_model="fake", path=None, dims=DIMS)
        new = register_model_version(conn, name="new@backfill", base_model="fake", path=None, dims=DIMS)
    item = store_item(engine, body, old)
    with session_scope(engine) as session:
        activate(session, new)
        session.commit()
    return old, new, item


def vector_of(engine: Engine, item_id: int, version_id: int) -> np.ndarray | None:
    with engine.connect() as conn:
        found = conn.scalar(
            text("SELECT vector FROM embeddings WHERE item_id = :i AND model_version_id = :v"),
            {"i": item_id, "v": version_id},
        )
    return None if found is None else np.asarray(found.to_list(), dtype=np.float32)


def test_an_edit_while_the_backfill_embeds_does_not_leave_a_vector_of_the_old_text(engine: Engine) -> None:
    """The backfill wrote the vector of the text it had read over the item's new text: stale for good, since
    the backfill only fills in missing vectors."""
    old, new, item = promoted_with_one_item(engine, "The invoice PDF is blank")

    def edit_by_a_worker_still_on_the_old_version() -> None:
        with engine.begin() as conn:
            conn.execute(text("UPDATE items SET text = :t, event_id = :e WHERE id = :i"),
                         {"t": "The invoice PDF is blank on Safari only", "e": uuid.uuid4(), "i": item})  # fmt: skip
            conn.execute(text("DELETE FROM embeddings WHERE item_id = :i"), {"i": item})
            write_vector(conn, item, old, "The invoice PDF is blank on Safari only")

    embedder = TextHashEmbedder(edit_by_a_worker_still_on_the_old_version)
    summary = BackfillService(engine=engine, embedder=embedder, model_version_id=new, chunk=10).run()  # type: ignore[arg-type]

    assert summary.status == "done", summary
    stored = vector_of(engine, item, new)
    assert stored is not None, "the next chunk embeds the new text"
    np.testing.assert_allclose(stored, TextHashEmbedder.vector("The invoice PDF is blank on Safari only"), atol=1e-6)


def test_an_item_locked_by_an_edit_in_progress_is_waited_for_not_embedded_over_and_over(engine: Engine) -> None:
    """With SKIP LOCKED the backfill re-read and re-embedded the locked item's chunk in a hot loop."""
    _, new, item = promoted_with_one_item(engine, "Unsubscribe link is broken")
    edit = engine.connect()
    edit.execute(text("SELECT 1 FROM items WHERE id = :i FOR UPDATE"), {"i": item})  # a correction in progress
    embedder = TextHashEmbedder(lambda: None)
    calls = 0
    real_embed = embedder.embed

    def counting(texts: list[str]) -> Embeddings:
        nonlocal calls
        calls += 1
        return real_embed(texts)

    embedder.embed = counting  # type: ignore[method-assign]
    timer = threading.Timer(1.5, edit.commit)
    timer.start()
    try:
        summary = BackfillService(engine=engine, embedder=embedder, model_version_id=new, chunk=10).run()  # type: ignore[arg-type]
    finally:
        timer.join()
        edit.close()

    assert summary.status == "done" and summary.embedded == 1, summary
    assert calls == 1, f"the chunk was embedded {calls} times while the item was locked"


class Deadlock(Exception):
    pgcode = "40P01"


def test_a_chunk_cancelled_by_a_deadlock_is_retried_and_counted_once(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Waiting for item locks can deadlock with an ingest batch; the backfill task used to fail on it."""
    _, new, item = promoted_with_one_item(engine, "Checkout button overlaps the footer")
    real_fill = backfill.fill_embeddings
    attempts = []

    def deadlocked_once(*args, **kwargs):  # type: ignore[no-untyped-def]
        attempts.append(1)
        written = real_fill(*args, **kwargs)
        if len(attempts) == 1:
            raise OperationalError("INSERT INTO embeddings ...", {}, Deadlock("deadlock detected"))
        return written

    monkeypatch.setattr(backfill, "fill_embeddings", deadlocked_once)
    summary = BackfillService(engine=engine, embedder=TextHashEmbedder(lambda: None), model_version_id=new,
                              chunk=10).run()  # type: ignore[arg-type]  # fmt: skip

    assert (summary.status, summary.embedded, summary.remaining) == ("done", 1, 0), summary
    assert len(attempts) == 2
    assert vector_of(engine, item, new) is not None


class PoisonOnce(TextHashEmbedder):
    def embed(self, texts: list[str]) -> Embeddings:
        if any("POISON" in t for t in texts):
            raise RuntimeError("model choked on a poison text")
        return super().embed(texts)


@pytest.mark.parametrize("chunk", [10, 1], ids=["in a chunk with others", "a chunk of its own"])
def test_a_text_the_new_model_fails_on_fails_alone_and_the_backfill_finishes(engine: Engine, chunk: int) -> None:
    """One such text failed the whole chunk on every run: the backfill never finished, and clustering waits
    for the backfill. Alone in its chunk, it was taken for a broken model."""
    _, new, first = promoted_with_one_item(engine, "Promo code field rejects lowercase")
    poison = store_item(engine, "POISON for the new model", first_version(engine))
    last = store_item(engine, "Delivery estimate was wrong", first_version(engine))

    summary = BackfillService(engine=engine, embedder=PoisonOnce(lambda: None), model_version_id=new,
                              chunk=chunk).run()  # type: ignore[arg-type]  # fmt: skip

    assert (summary.status, summary.embedded, summary.failed, summary.remaining) == ("done", 2, 1, 0), summary
    assert vector_of(engine, first, new) is not None and vector_of(engine, last, new) is not None
    assert vector_of(engine, poison, new) is None
    with engine.connect() as conn:
        progress = conn.scalar(text("SELECT backfill FROM model_versions WHERE id = :v"), {"v": new})
    assert progress["failed"] == [poison] and "finished_at" in progress

    again = BackfillService(engine=engine, embedder=PoisonOnce(lambda: None), model_version_id=new,
                            chunk=chunk).run()  # type: ignore[arg-type]  # fmt: skip
    assert (again.status, again.embedded, again.failed) == ("done", 0, 1), "the next run does not try it again"


def test_a_model_that_fails_on_every_text_stops_the_backfill(engine: Engine) -> None:
    class Broken(TextHashEmbedder):
        def embed(self, texts: list[str]) -> Embeddings:
            raise RuntimeError("CUDA error: device-side assert triggered")

    _, new, _ = promoted_with_one_item(engine, "Login page loops back to itself")
    service = BackfillService(engine=engine, embedder=Broken(lambda: None), model_version_id=new, chunk=10)  # type: ignore[arg-type]
    with pytest.raises(ModelLoadError, match="fails on every text"):
        service.run()


def first_version(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.scalar(text("SELECT min(id) FROM model_versions")))
