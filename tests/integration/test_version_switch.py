"""Switching the active model version while ingest writes vectors: the switch must not hold the writes back."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import OperationalError

from tests.integration.helpers import scratch_database, wait_for
from worker.db import get_engine, session_scope
from worker.pipeline.embed import resolve_model_path
from worker.processes import service_env
from worker.services import ServiceUrls
from worker.store.model_versions import activate, build_hnsw_index, hnsw_index_name, register_model_version

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DIMS = 384


@pytest.fixture
def own_db(stack: ServiceUrls) -> Iterator[str]:
    yield from scratch_database(stack.database_url, prefix="switch")


def write_vector(connection: Connection, version_id: int) -> None:
    """What an ingest batch does: an item and its vector (the caller decides when to commit)."""
    body = f"feedback {uuid.uuid4()}"
    item_id = connection.scalar(
        text("""INSERT INTO items (kind, external_id, event_id, text, content_sha256, occurred_at, metadata)
                VALUES ('feedback', :x, :e, :t, :h, now(), '{}') RETURNING id"""),
        {"x": body, "e": uuid.uuid4(), "t": body, "h": hashlib.sha256(body.encode()).hexdigest()},
    )
    connection.execute(
        text("""INSERT INTO embeddings (item_id, model_version_id, vector, chunks_total, chunks_used)
                VALUES (:i, :v, :vec, 1, 1)"""),
        {"i": item_id, "v": version_id, "vec": str([1 / DIMS**0.5] * DIMS)},
    )


def switch_waits_on_a_lock(engine: Engine) -> bool:
    with engine.connect() as conn:
        query = """SELECT count(*) FROM pg_stat_activity
                   WHERE datname = current_database() AND wait_event_type = 'Lock' AND query ILIKE '%CREATE INDEX%'"""
        return bool(conn.scalar(text(query)))


@pytest.mark.parametrize("by", ["version id", "model directory"])
def test_a_promotion_lets_ingest_write_while_it_builds_the_index(by: str, own_db: str, stack: ServiceUrls) -> None:
    """The new version's HNSW index was built inside the switch's transaction (or, for a directory, inside
    its registration): its lock queued every later write to `embeddings` behind the slowest batch in flight,
    and held them until the scan finished."""
    engine = get_engine(own_db)
    path = resolve_model_path("all-MiniLM-L6-v2")
    with engine.begin() as conn:
        stock = register_model_version(conn, name="stock@switch", base_model="stock", path=path, dims=DIMS)
        if by == "version id":
            target = str(register_model_version(conn, name="target@switch", base_model="stock", path=path, dims=DIMS))
        else:
            target = path
    in_flight = engine.connect()
    write_vector(in_flight, stock)  # a batch that has written and not committed yet
    promote = subprocess.Popen(
        [sys.executable, "-m", "worker.cli", "model", "promote", target],
        env=service_env(ServiceUrls(own_db, stack.broker_url)), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        wait_for(lambda: switch_waits_on_a_lock(engine), timeout_s=120, what="the promotion to wait for the batch")
        with engine.connect() as next_batch:
            next_batch.execute(text("SET lock_timeout = '3s'"))
            started = time.monotonic()
            try:
                write_vector(next_batch, stock)
                next_batch.commit()
            except OperationalError as exc:
                pytest.fail(f"the next batch's write waited behind the promotion: {exc}")
            assert time.monotonic() - started < 3
    finally:
        in_flight.commit()
        in_flight.close()
        _, err = promote.communicate(timeout=120)
    assert promote.returncode == 0, err
    with engine.connect() as conn:
        active = conn.scalar(text("SELECT id FROM model_versions WHERE status = 'active'"))
        assert active != stock
        assert index_valid(engine, active) is True


def index_valid(engine: Engine, version_id: int) -> bool | None:
    with engine.connect() as conn:
        query = "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname = :n"
        return conn.scalar(text(query), {"n": hnsw_index_name(version_id)})  # type: ignore[no-any-return]


def test_a_switch_over_a_failed_index_build_holds_back_no_reader_and_the_next_build_replaces_it(own_db: str) -> None:
    """The switch replaced a failed build's invalid index itself: DROP INDEX locked out readers and writers of
    `embeddings` until the switch committed, and waited for the very transactions that failed the build."""
    engine = get_engine(own_db)
    with engine.begin() as conn:
        stock = register_model_version(conn, name="stock@failed", base_model="stock", path=None, dims=DIMS)
        target = register_model_version(conn, name="target@failed", base_model="stock", path=None, dims=DIMS)
        write_vector(conn, stock)
    assert build_hnsw_index(engine, target, DIMS)
    with engine.begin() as conn:
        conn.execute(  # what a concurrent build that ran into its lock timeout leaves behind
            text("UPDATE pg_index SET indisvalid = false WHERE indexrelid = CAST(:n AS regclass)"),
            {"n": hnsw_index_name(target)},
        )
    reader = engine.connect()
    reader.execute(text("SELECT count(*) FROM embeddings"))  # a dashboard query still running
    try:
        with session_scope(engine) as session:
            session.execute(text("SET LOCAL lock_timeout = '3s'"))
            activate(session, target)
            session.commit()
    finally:
        reader.rollback()
        reader.close()
    assert index_valid(engine, target) is False, "the switch leaves the index to build_hnsw_index"

    assert build_hnsw_index(engine, target, DIMS) is True
    assert index_valid(engine, target) is True
    with engine.connect() as conn:
        assert conn.scalar(text("SHOW lock_timeout")) == "0", "the pooled connection keeps no lock timeout"


def test_registering_a_known_version_again_waits_for_no_batch(own_db: str) -> None:
    """Every worker start registers its version; CREATE INDEX IF NOT EXISTS took its lock before finding the
    index, so a start queued behind any batch in flight, and every later batch behind the start."""
    engine = get_engine(own_db)
    with engine.begin() as conn:
        version = register_model_version(conn, name="known@switch", base_model="stock", path=None, dims=DIMS)
    in_flight = engine.connect()
    write_vector(in_flight, version)
    try:
        with engine.connect() as starting:
            starting.execute(text("SET LOCAL lock_timeout = '2s'"))
            again = register_model_version(starting, name="known@switch", base_model="stock", path=None, dims=DIMS)
            starting.commit()
    finally:
        in_flight.rollback()
        in_flight.close()
    assert again == version
