"""What `tagworker status` and `tagworker model list` say about items a backfill's model failed on."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator

import numpy as np
import pytest
from sqlalchemy import Engine, text

from tests.integration.helpers import scratch_database
from worker.backfill import BackfillService
from worker.db import get_engine, session_scope
from worker.pipeline.embed import Embeddings
from worker.processes import service_env
from worker.services import ServiceUrls
from worker.store.model_versions import activate, register_model_version, set_backfill

pytestmark = pytest.mark.integration

DIMS = 8
POISONED = 23  # more than `tagworker status` lists, fewer than stop a backfill


class PoisonEmbedder:
    """A vector per text; raises on any batch with a text that says POISON."""

    version_name = "poison@status"
    dims = DIMS

    def embed(self, texts: list[str]) -> Embeddings:
        if any("POISON" in t for t in texts):
            raise RuntimeError("model choked on a poison text")
        raw = [np.frombuffer(hashlib.sha256(t.encode()).digest()[: DIMS * 4], dtype=np.uint32) for t in texts]
        vectors = np.stack(raw).astype(np.float32)
        return Embeddings(vectors / np.linalg.norm(vectors, axis=1, keepdims=True), [1] * len(texts), [1] * len(texts))


@pytest.fixture
def own_db(stack: ServiceUrls) -> Iterator[str]:
    yield from scratch_database(stack.database_url, prefix="backfillstatus")


def store_items(engine: Engine, bodies: list[str]) -> list[int]:
    """Items with no vector under any version yet, as the backfill finds them after a promotion."""
    with engine.begin() as conn:
        return [int(conn.scalar(
            text("""INSERT INTO items (kind, external_id, event_id, text, content_sha256, occurred_at, metadata)
                    VALUES ('feedback', :x, :e, :t, :h, now(), '{}') RETURNING id"""),
            {"x": body, "e": uuid.uuid4(), "t": body, "h": hashlib.sha256(body.encode()).hexdigest()},
        )) for body in bodies]  # fmt: skip


def backfilled_with_failures(engine: Engine, *, poisoned: int) -> tuple[int, list[int]]:
    """A new version made active, and its backfill run, which failed on `poisoned` items: (version, their ids)."""
    with engine.begin() as conn:
        register_model_version(conn, name="old@status", base_model="fake", path=None, dims=DIMS)
        new = register_model_version(conn, name="new@status", base_model="fake", path=None, dims=DIMS)
    with session_scope(engine) as session:
        activate(session, new)
        session.commit()
    ids = store_items(engine, [f"feedback {i}" for i in range(5)] + [f"POISON {i}" for i in range(poisoned)])
    summary = BackfillService(engine=engine, embedder=PoisonEmbedder(), model_version_id=new, chunk=10).run()  # type: ignore[arg-type]
    assert (summary.status, summary.embedded, summary.failed) == ("done", 5, poisoned), summary
    return new, ids[5:]


def tagworker(*args: str, database_url: str, broker_url: str) -> subprocess.CompletedProcess[str]:
    env = {**service_env(ServiceUrls(database_url=database_url, broker_url=broker_url)), "COLUMNS": "250"}
    env.pop("TAGWORKER_LOG_LEVEL", None)
    result = subprocess.run([sys.executable, "-m", "worker.cli", *args], env=env, capture_output=True, text=True,
                            timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result


def test_status_json_counts_the_failed_items_and_lists_the_first_ids(own_db: str, stack: ServiceUrls) -> None:
    """The JSON carried the ids as `failed`, every one of them, with no count; now a count and the first 20."""
    _, poisoned = backfilled_with_failures(get_engine(own_db), poisoned=POISONED)

    fill = json.loads(tagworker("status", "--json", database_url=own_db, broker_url=stack.broker_url).stdout)[
        "backfill"
    ]

    assert (fill["total"], fill["done"], fill["failed"]) == (5 + POISONED, 5, POISONED), fill
    assert fill["failed_ids"] == poisoned[:20] and fill["finished_at"], fill


def test_status_says_how_many_items_failed_and_which(own_db: str, stack: ServiceUrls) -> None:
    """The table said `5 / 28 done`: 23 items with no vector under the active version, and nothing about them."""
    _, poisoned = backfilled_with_failures(get_engine(own_db), poisoned=POISONED)

    shown = tagworker("status", database_url=own_db, broker_url=stack.broker_url).stderr

    assert f"5 / {5 + POISONED} done, {POISONED} failed" in shown, shown
    assert f"items {', '.join(map(str, poisoned[:20]))} (the first 20 of {POISONED})" in shown, shown
    assert "stay without a vector under this version" in shown and "worker log" in shown, shown


def test_status_of_a_backfill_that_failed_on_nothing_says_nothing_of_failures(own_db: str, stack: ServiceUrls) -> None:
    backfilled_with_failures(get_engine(own_db), poisoned=0)

    fill = json.loads(tagworker("status", "--json", database_url=own_db, broker_url=stack.broker_url).stdout)[
        "backfill"
    ]
    shown = tagworker("status", database_url=own_db, broker_url=stack.broker_url).stderr

    assert (fill["done"], fill["failed"], fill["failed_ids"]) == (5, 0, []), fill
    assert "5 / 5 done" in shown and "failed" not in shown.split("backfill", 1)[1].split("\n", 1)[0], shown
    assert "without a vector" not in shown, shown


def test_model_list_shows_the_failed_count_of_each_version(own_db: str, stack: ServiceUrls) -> None:
    """The backfill column said `5/28` for a version that had left 23 items without a vector."""
    engine = get_engine(own_db)
    backfilled_with_failures(engine, poisoned=2)
    with engine.begin() as conn:  # what a backfill of `old` that the switch to `new` cut short leaves
        cut_short = {"total": 9, "done": 4, "failed": [], "started_at": "2026-11-27T00:00:00+00:00"}
        query = "UPDATE model_versions SET backfill = CAST(:row AS jsonb) WHERE name = 'old@status'"
        conn.execute(text(query), {"row": json.dumps(cut_short)})

    shown = tagworker("model", "list", database_url=own_db, broker_url=stack.broker_url).stderr
    listed = json.loads(tagworker("model", "list", "--json", database_url=own_db, broker_url=stack.broker_url).stdout)

    new_row = next(line for line in shown.splitlines() if "new@status" in line)
    old_row = next(line for line in shown.splitlines() if "old@status" in line)
    assert "5 / 7 done, 2 failed" in new_row, shown
    assert "4 / 9 stopped" in old_row, shown  # not `running`: a retired version's backfill gave up
    assert "they stay without a vector under it" in shown, shown
    assert [len(r["backfill"].get("failed", [])) for r in listed] == [0, 2], listed


@pytest.mark.parametrize(
    ("row", "written"),
    [
        ({}, {"failed": []}),  # the version was just activated, and every item has a vector under it already
        (  # left by a release that did not keep failed items, by a run that stopped before it could say it finished
            {"total": 3, "done": 3, "started_at": "2026-11-27T00:00:00+00:00"},
            {"total": 3, "done": 3, "failed": [], "started_at": "2026-11-27T00:00:00+00:00"},
        ),
    ],
)
def test_a_backfill_with_nothing_to_embed_marks_the_row_finished(
    own_db: str, row: dict[str, object], written: dict[str, object]
) -> None:
    engine = get_engine(own_db)
    with engine.begin() as conn:
        version = register_model_version(conn, name="empty@status", base_model="fake", path=None, dims=DIMS)
    with session_scope(engine) as session:
        activate(session, version)
        set_backfill(session, version, row)
        session.commit()

    summary = BackfillService(engine=engine, embedder=PoisonEmbedder(), model_version_id=version, chunk=10).run()  # type: ignore[arg-type]

    with engine.connect() as conn:
        stored = conn.scalar(text("SELECT backfill FROM model_versions WHERE id = :v"), {"v": version})
    assert (summary.status, summary.embedded) == ("done", 0), summary
    assert stored.pop("finished_at") and stored == written, stored
