"""Migration 0012: corrections rejected earlier for an item not stored yet wait for it; down and up again work."""

from __future__ import annotations

import json
import uuid

import pytest
from alembic import command
from sqlalchemy import create_engine, text

from tests.integration.helpers import scratch_database
from worker.migrate import alembic_config, upgrade
from worker.services import ServiceUrls

pytestmark = pytest.mark.integration

_ITEM = """INSERT INTO items (kind, external_id, event_id, content_sha256, text, occurred_at, metadata)
           VALUES ('content', 'arrived', :e, 'x', 'x', now(), '{}')"""
_REJECT = """INSERT INTO rejected_events (message_id, event_id, kind, status, reason, raw, attempts)
             VALUES (:m, gen_random_uuid(), :k, 'invalid', :r, :raw, 1)"""


def old_rejection(external_id: str) -> dict[str, str]:
    event = {"kind": "tag.corrected", "item": {"kind": "content", "external_id": external_id}, "added": ["email"]}
    reason = f"tag correction names unknown item content/{external_id}"
    return {"m": f"m-{external_id}", "k": "tag.corrected", "r": reason, "raw": json.dumps(event)}


def test_old_rejections_wait_for_items_still_missing_and_the_migration_goes_down_and_up(stack: ServiceUrls) -> None:
    for url in scratch_database(stack.database_url, prefix="mig0012", migrated=False):
        upgrade(url, "0011")
        engine = create_engine(url)
        with engine.begin() as conn:
            conn.execute(text(_ITEM), {"e": uuid.uuid4()})
            for external_id in ("missing", "arrived"):
                conn.execute(text(_REJECT), old_rejection(external_id))
            conn.execute(text(_REJECT), {"m": "m-junk", "k": None, "r": "not JSON", "raw": "{not json"})

        upgrade(url)
        with engine.connect() as conn:
            query = "SELECT message_id, item_kind, item_external_id FROM rejected_events ORDER BY message_id"
            rows = conn.execute(text(query)).tuples().all()
        assert rows == [("m-arrived", None, None), ("m-junk", None, None), ("m-missing", "content", "missing")]

        command.downgrade(alembic_config(url), "0011")
        with engine.connect() as conn:
            columns = set(conn.scalars(text("SELECT column_name FROM information_schema.columns "
                                            "WHERE table_name = 'rejected_events'")))  # fmt: skip
            assert conn.scalar(text("SELECT count(*) FROM rejected_events")) == 3
        assert not columns & {"item_kind", "item_external_id"}
        upgrade(url)
        engine.dispose()
