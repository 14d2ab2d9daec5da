"""Model versions, and the per-version HNSW index over their vectors."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, Row, func, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from models import ModelVersion
from worker.db import session_scope
from worker.errors import ModelVersionError, ModelVersionRetired
from worker.locks import AdvisoryLock

log = logging.getLogger(__name__)

# Serializes registration and every switch of the active version; ingest writes take it shared.
_SWITCH_LOCK = int(AdvisoryLock.MODEL_SWITCH)


def hnsw_index_name(model_version_id: int) -> str:
    return f"ix_embeddings_hnsw_v{model_version_id}"


def register_model_version(connection: Connection, *, name: str, base_model: str, path: str | None, dims: int) -> int:
    """The id of the named version, registering it when new (active if no version is).

    Its HNSW index is the caller's to build after committing, with `build_hnsw_index`: built here, under the
    switch lock, the build would wait for the batches writing `embeddings` while they wait for that lock (a
    deadlock), and hold back every later write. The `embeddings.vector` column has no fixed dimension, so each
    version's index casts to its own dimension and covers only its rows: `((vector::vector(dims))
    vector_cosine_ops) WHERE model_version_id = id`. Searches must use the same cast and filter to hit it.
    """
    connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SWITCH_LOCK})
    has_active = connection.scalar(select(ModelVersion.id).where(ModelVersion.status == "active").limit(1))
    connection.execute(
        insert(ModelVersion)
        .values(
            name=name,
            base_model=base_model,
            path=path,
            dims=dims,
            status="candidate" if has_active else "active",
            activated_at=None if has_active else text("now()"),
            metrics={},
            params={},
        )
        .on_conflict_do_nothing(index_elements=["name"])
    )
    return int(connection.scalar(select(ModelVersion.id).where(ModelVersion.name == name)))  # type: ignore[arg-type]


def hnsw_index_sql(version_id: int, dims: int, *, concurrently: bool = True) -> str:
    """The version's own partial HNSW index (ids are integers from our table, never user text).

    Plainly (not concurrently) only where nothing else writes: inside a test's transaction, a benchmark's load.
    """
    how = "CONCURRENTLY " if concurrently else ""
    return (
        f"CREATE INDEX {how}IF NOT EXISTS {hnsw_index_name(int(version_id))} ON embeddings "
        f"USING hnsw ((vector::vector({int(dims)})) vector_cosine_ops) WHERE model_version_id = {int(version_id)}"
    )


def _index_state(connection: Connection, version_id: int) -> str:
    """`valid`, `missing`, `building` (another session's concurrent build runs) or `failed` (one stopped half-way)."""
    row = connection.execute(
        text("""SELECT i.indisvalid, EXISTS (SELECT 1 FROM pg_stat_progress_create_index p
                                             WHERE p.index_relid = i.indexrelid) AS building
                FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
                WHERE c.relname = :name AND i.indrelid = 'embeddings'::regclass"""),
        {"name": hnsw_index_name(int(version_id))},
    ).first()
    if row is None:
        return "missing"
    return "valid" if row.indisvalid else "building" if row.building else "failed"


def build_hnsw_index(engine: Engine, version_id: int, dims: int, *, lock_timeout_s: float = 600) -> bool:
    """Build the version's index CONCURRENTLY, outside any transaction, so that ingest writes on meanwhile.

    Cheap when the index exists. A build that failed half-way left an invalid index: it is dropped and built
    again. Returns False (logged) when the build could not finish, for instance because a transaction stayed
    open past `lock_timeout_s` (each wait of the build is bounded by it) or another session is building it;
    searches of the version then scan exactly until the next call (the backfill makes one) builds it.
    """
    name = hnsw_index_name(int(version_id))
    try:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            state = _index_state(connection, version_id)
            if state in ("valid", "building"):
                return state == "valid"
            connection.execute(text("SELECT set_config('lock_timeout', :t, false)"), {"t": f"{int(lock_timeout_s)}s"})
            try:
                if state == "failed":
                    connection.execute(text(f"DROP INDEX CONCURRENTLY IF EXISTS {name}"))
                connection.execute(text(hnsw_index_sql(version_id, dims)))
            finally:  # the connection goes back to the pool: ingest must not inherit the timeout
                _reset_lock_timeout(connection)
            return True
    except SQLAlchemyError as exc:
        log.warning("could not build index %s of model version %d: %s", name, version_id,
                    str(exc).splitlines()[0][:200])  # fmt: skip
        return False


def _reset_lock_timeout(connection: Connection) -> None:
    try:
        connection.execute(text("RESET lock_timeout"))
    except SQLAlchemyError:  # a broken connection: the pool discards it, and the build's own error is reported
        connection.invalidate()


@dataclass(frozen=True)
class VersionInfo:
    """A model version as the worker and the CLI need it."""

    id: int
    name: str
    base_model: str
    path: str | None
    dims: int
    status: str
    parent_id: int | None
    created_at: datetime
    activated_at: datetime | None


def _info(row: ModelVersion) -> VersionInfo:
    return VersionInfo(
        row.id, row.name, row.base_model, row.path, row.dims, row.status, row.parent_id, row.created_at,
        row.activated_at,
    )  # fmt: skip


def active_version(session: Session) -> VersionInfo | None:
    row = session.execute(select(ModelVersion).where(ModelVersion.status == "active")).scalar_one_or_none()
    return _info(row) if row else None


def active_version_id(connection: Session | Connection) -> int | None:
    """The cheap check a worker runs between batches."""
    return connection.scalar(select(ModelVersion.id).where(ModelVersion.status == "active"))


def version_status(connection: Session | Connection, version_id: int) -> str | None:
    """`active`, `candidate`, `retired`, `training`, `rejected` or `failed`; None for an unknown id."""
    return connection.scalar(select(ModelVersion.status).where(ModelVersion.id == version_id))


def check_not_retired(connection: Session | Connection, version_id: int) -> None:
    """Raise `ModelVersionRetired` if the version was retired; otherwise it stays unretired until the caller commits.

    The check holds the switch lock shared, and every switch (`activate`, via `lock_versions`) takes it
    exclusively. So a switch either committed before this check, which then sees the version retired, or waits
    for the caller's commit, and the new version's backfill (queued after its switch) sees what the caller wrote.
    Without this, a worker that had not switched yet could write items after that backfill finished, and they
    would stay without a vector under the active version. Call it last before the commit: a switch waits on it.
    """
    connection.execute(text("SELECT pg_advisory_xact_lock_shared(:key)"), {"key": _SWITCH_LOCK})
    if version_status(connection, version_id) == "retired":
        raise ModelVersionRetired(f"model version {version_id} was retired while this batch ran")


def find_version(session: Session, ref: str) -> VersionInfo:
    """A version by id or name; raises ModelVersionError naming the ref otherwise."""
    query = select(ModelVersion)
    query = query.where(ModelVersion.id == int(ref)) if ref.isdigit() else query.where(ModelVersion.name == ref)
    row = session.execute(query).scalar_one_or_none()
    if row is None:
        raise ModelVersionError(f"no model version {ref!r}; `tagworker model list` shows them")
    return _info(row)


def list_versions(session: Session) -> list[ModelVersion]:
    return list(session.execute(select(ModelVersion).order_by(ModelVersion.id)).scalars())


def start_candidate(
    session: Session, *, name: str, parent: VersionInfo, params: dict[str, Any], data: dict[str, Any],
    read_at: datetime, read_snapshot: str | None,
) -> int:  # fmt: skip
    """Record a version being trained (status `training`), before any work, so a crash leaves a trace.

    `read_at` and `read_snapshot` are when and in which snapshot the run read its labels (`store.training.
    read_point`): labels that snapshot did not see count toward the next run (`labels_since`).
    """
    row = ModelVersion(
        name=name, base_model=parent.base_model, path=None, dims=parent.dims, status="training", parent_id=parent.id,
        params=params, data=data, metrics={}, created_at=read_at, read_snapshot=read_snapshot,
    )  # fmt: skip
    session.add(row)
    session.flush()
    return row.id


def finish_candidate(
    session: Session, version_id: int, *, status: str, seconds: float, metrics: dict[str, Any] | None = None,
    path: str | None = None, reason: str | None = None,
) -> bool:  # fmt: skip
    """Record how a run ended; False, with nothing written, when its row is no longer `training`.

    That happens when the run lost the retrain lock (its connection dropped) and the next run, taking the
    lock, marked the row failed: that verdict stands, and the run must not promote.
    """
    values: dict[str, Any] = {"status": status, "seconds": round(seconds, 1), "reason": reason}
    values["finished_at"] = func.now()
    if metrics is not None:
        values["metrics"] = metrics
    if path is not None:
        values["path"] = path
    result = session.execute(
        update(ModelVersion).where(ModelVersion.id == version_id, ModelVersion.status == "training").values(**values)
    )
    return result.rowcount == 1  # type: ignore[attr-defined]


def fail_interrupted(session: Session) -> int:
    """Mark `training` rows failed; call only while holding the retrain lock (so no run owns them)."""
    result = session.execute(
        update(ModelVersion)
        .where(ModelVersion.status == "training")
        .values(status="failed", reason="interrupted: the process training it stopped", finished_at=func.now())
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def lock_versions(session: Session) -> None:
    """Wait for, then hold until the transaction ends, the lock every change of the active version takes.

    Registration, promotion and rollback take it, so a check of the active version made after this call
    stays true until the caller commits. Ingest batches take it shared (`check_not_retired`).
    """
    session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SWITCH_LOCK})


def activate(session: Session, version_id: int) -> None:
    """Make one version active and retire the one that was, in the caller's transaction.

    It never builds the version's index: that would hold back every write (and, to replace a failed build,
    every read) of `embeddings` until the switch commits. Callers run `build_hnsw_index` first.
    """
    lock_versions(session)
    session.execute(update(ModelVersion).where(ModelVersion.status == "active").values(status="retired"))
    session.execute(
        update(ModelVersion)
        .where(ModelVersion.id == version_id)
        .values(status="active", activated_at=func.now(), backfill={})
    )


def previous_active(session: Session) -> VersionInfo | None:
    """The version that was active before the current one: what `model rollback` goes back to."""
    current = active_version(session)
    query = select(ModelVersion).where(ModelVersion.status == "retired", ModelVersion.activated_at.is_not(None))
    if current and current.activated_at:
        query = query.where(ModelVersion.activated_at < current.activated_at)
    row = session.execute(query.order_by(ModelVersion.activated_at.desc()).limit(1)).scalar_one_or_none()
    return _info(row) if row else None


def backfill_progress(session: Session, version_id: int) -> dict[str, Any]:
    """The version's backfill progress since it last became active ({} before any): total, done, failed
    (ids of items the model raised on), started_at, finished_at."""
    return dict(session.scalar(select(ModelVersion.backfill).where(ModelVersion.id == version_id)) or {})


def set_backfill(session: Session, version_id: int, progress: dict[str, Any]) -> None:
    session.execute(update(ModelVersion).where(ModelVersion.id == version_id).values(backfill=progress))


def verdict_as_committed(engine: Engine, version_id: int) -> Row[Any] | None:
    """The candidate's status, path, reason and metrics as committed, in a fresh session; None when unreadable.

    FOR SHARE waits for the row lock of a verdict transaction the server is still committing (its client gave
    up, the server carries on), so that a commit landing just after this read cannot be missed. The lock
    timeout bounds the wait for one whose dropped connection the server has not noticed yet.
    """
    query = (
        select(ModelVersion.status, ModelVersion.path, ModelVersion.reason, ModelVersion.metrics)
        .where(ModelVersion.id == version_id)
        .with_for_update(read=True)
    )
    try:
        with session_scope(engine) as session:
            session.execute(text("SELECT set_config('lock_timeout', :t, true)"), {"t": "30s"})
            row = session.execute(query).first()
            session.commit()
    except SQLAlchemyError:
        log.warning("could not read candidate %d back after its verdict's transaction raised", version_id,
                    exc_info=True)  # fmt: skip
        return None
    return row
