"""Clusters in PostgreSQL: runs, the feedback to cluster, the current themes, writing a run's outcome."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import Select, exists, func, insert, select, text, update
from sqlalchemy.orm import Session

from models import Cluster, ClusterLineage, ClusterMember, ClusterRun, Embedding, Item
from worker.locks import AdvisoryLock

CLUSTER_LOCK = int(AdvisoryLock.CLUSTERING)  # one clustering run at a time


@dataclass(frozen=True)
class Feedback:
    """Feedback to cluster: item ids, texts, (n, dims) vectors and each item's current cluster id."""

    item_ids: list[int]
    texts: list[str]
    vectors: NDArray[np.float32]
    current: list[int | None]


@dataclass(frozen=True)
class Themes:
    """The active clusters of a model version: ids and (k, dims) centroids."""

    ids: list[int]
    centroids: NDArray[np.float32]


def start_run(session: Session, *, model_version_id: int, params: dict[str, Any]) -> int:
    run = ClusterRun(status="running", model_version_id=model_version_id, params=params)
    session.add(run)
    session.flush()
    return run.id


def finish_run(session: Session, run_id: int, *, status: str, seconds: float, **values: Any) -> None:
    session.execute(
        update(ClusterRun)
        .where(ClusterRun.id == run_id)
        .values(status=status, seconds=round(seconds, 3), finished_at=datetime.now(UTC), **values)
    )


def load_feedback(session: Session, *, model_version_id: int, window_days: int) -> Feedback:
    query = (
        select(Item.id, Item.text, Embedding.vector, ClusterMember.cluster_id)
        .join(Embedding, Embedding.item_id == Item.id)
        .outerjoin(ClusterMember, ClusterMember.item_id == Item.id)
        .where(Item.kind == "feedback", Embedding.model_version_id == model_version_id)
        .order_by(Item.id)
    )
    rows = session.execute(_in_window(query, window_days)).all()
    vectors = np.stack([np.asarray(r.vector, dtype=np.float32) for r in rows]) if rows else np.zeros((0, 1), np.float32)
    return Feedback([r.id for r in rows], [r.text for r in rows], vectors, [r.cluster_id for r in rows])


def active_themes(session: Session, model_version_id: int) -> Themes:
    rows = session.execute(
        select(Cluster.id, Cluster.centroid)
        .where(Cluster.retired_at.is_(None), Cluster.model_version_id == model_version_id)
        .order_by(Cluster.id)
    ).all()
    if not rows:
        return Themes([], np.zeros((0, 1), np.float32))
    return Themes([r.id for r in rows], np.stack([np.asarray(r.centroid, dtype=np.float32) for r in rows]))


def members_awaiting_vectors(
    session: Session, *, model_version_id: int, window_days: int, excluding: Sequence[int] = ()
) -> int:
    """Feedback in the window that belongs to a live theme of another version but has no vector under this one.

    After a promotion or a rollback these wait for the backfill; a run that went ahead without them would
    retire their themes, and the themes would lose their ids.
    """
    query = (
        select(func.count())
        .select_from(ClusterMember)
        .join(Cluster, Cluster.id == ClusterMember.cluster_id)
        .join(Item, Item.id == ClusterMember.item_id)
        .where(Cluster.retired_at.is_(None), Cluster.model_version_id != model_version_id)
        .where(~exists().where(Embedding.item_id == Item.id, Embedding.model_version_id == model_version_id))
    )
    if excluding:
        query = query.where(Item.id.not_in(list(excluding)))
    return int(session.scalar(_in_window(query, window_days)) or 0)


def _in_window(query: Select[Any], window_days: int) -> Select[Any]:
    """Only items of the last `window_days` days (0: all), the clustering window.

    An item dated after it arrived (a producer's clock ahead, a survey dated when it is due) counts from its
    arrival: by `occurred_at` it would stay in the window, and in its themes, long after its time.
    """
    if not window_days:
        return query
    dated = func.least(Item.occurred_at, Item.received_at)
    return query.where(dated >= datetime.now(UTC) - timedelta(days=window_days))


def live_themes_elsewhere(session: Session, model_version_id: int) -> list[int]:
    """Ids of themes not retired that belong to other model versions (from before a promotion or rollback)."""
    query = select(Cluster.id).where(Cluster.retired_at.is_(None), Cluster.model_version_id != model_version_id)
    return list(session.scalars(query.order_by(Cluster.id)))


# What a run computes for a theme. A person's name for it (`name`, `named_by`, `named_at`) is never among these:
# a continuing theme keeps its name, a new one (a split included) starts unnamed.
RUN_COLUMNS = frozenset({"label", "keywords", "representative_item_ids", "size", "centroid"})


def save_cluster(session: Session, *, cluster_id: int | None, run_id: int, model_version_id: int,
                 values: dict[str, Any]) -> int:  # fmt: skip
    """Update a continuing theme (it moves to this run's model version) or insert a new one; returns its id."""
    if unexpected := values.keys() - RUN_COLUMNS:
        raise ValueError(f"a clustering run writes only {sorted(RUN_COLUMNS)}, not {sorted(unexpected)}")
    values = {**values, "centroid": np.asarray(values["centroid"], dtype=np.float32), "last_run_id": run_id}
    if cluster_id is not None:
        session.execute(
            update(Cluster)
            .where(Cluster.id == cluster_id)
            .values(retired_at=None, model_version_id=model_version_id, **values)
        )
        return cluster_id
    new_id = session.scalar(
        insert(Cluster).values(model_version_id=model_version_id, first_run_id=run_id, **values).returning(Cluster.id)
    )
    assert new_id is not None
    return new_id


def retire(session: Session, cluster_ids: Sequence[int]) -> None:
    if cluster_ids:
        session.execute(update(Cluster).where(Cluster.id.in_(cluster_ids)).values(retired_at=datetime.now(UTC)))


_UPSERT_MEMBERS = text(
    """
    INSERT INTO cluster_members (item_id, cluster_id, similarity, method, run_id, assigned_at)
    SELECT t.item_id, t.cluster_id, t.similarity, :method, :run_id, now()
    FROM unnest(CAST(:item_ids AS bigint[]), CAST(:cluster_ids AS integer[]), CAST(:similarity AS float8[]))
         AS t(item_id, cluster_id, similarity)
    ON CONFLICT (item_id) DO UPDATE SET cluster_id = excluded.cluster_id, similarity = excluded.similarity,
        method = excluded.method, run_id = excluded.run_id, assigned_at = now()
    """
)


def set_members(
    session: Session,
    *,
    item_ids: Sequence[int],
    cluster_ids: Sequence[int | None],
    similarity: Sequence[float],
    method: str,
    run_id: int | None,
) -> None:
    """Each item's theme (None = noise), replacing what it had."""
    if item_ids:
        session.execute(
            _UPSERT_MEMBERS,
            {"item_ids": list(item_ids), "cluster_ids": list(cluster_ids), "similarity": [float(s) for s in similarity],
             "method": method, "run_id": run_id},
        )  # fmt: skip


def set_live_members(
    session: Session, *, item_ids: Sequence[int], cluster_ids: Sequence[int | None], similarity: Sequence[float]
) -> int:
    """`set_members` for live assignment: a theme retired since the assigner read it is noise instead.

    The assigner reads the themes before the batch's transaction, and a run may retire them meanwhile (or while
    this transaction runs: FOR SHARE waits for that run's commit, then reads the theme as it committed). Returns
    how many items lost their theme that way.
    """
    wanted = sorted({c for c in cluster_ids if c is not None})
    live = set(
        session.scalars(
            select(Cluster.id).where(Cluster.id.in_(wanted), Cluster.retired_at.is_(None)).order_by(Cluster.id)
            .with_for_update(read=True)
        )
    ) if wanted else set()  # fmt: skip
    kept = [c if c in live else None for c in cluster_ids]
    set_members(session, item_ids=item_ids, cluster_ids=kept, similarity=similarity, method="live", run_id=None)
    return sum(a != b for a, b in zip(cluster_ids, kept, strict=True))


def mark_interrupted_runs(session: Session, run_id: int) -> int:
    """Mark other `running` runs failed; call only while holding the clustering lock (so none of them runs)."""
    result = session.execute(
        update(ClusterRun)
        .where(ClusterRun.status == "running", ClusterRun.id != run_id)
        .values(status="failed", message="interrupted: the process running it stopped", finished_at=datetime.now(UTC))
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def record_lineage(session: Session, run_id: int, rows: Sequence[tuple[int, str, list[int]]]) -> None:
    if rows:
        session.execute(
            insert(ClusterLineage),
            [{"run_id": run_id, "cluster_id": c, "event": e, "related_cluster_ids": r} for c, e, r in rows],
        )


def release_members_of(session: Session, cluster_ids: Sequence[int]) -> None:
    """Items of retired themes outside the run's window become noise rather than point at a retired theme."""
    if cluster_ids:
        session.execute(update(ClusterMember).where(ClusterMember.cluster_id.in_(cluster_ids)).values(cluster_id=None))


def try_lock(session: Session) -> bool:
    return bool(session.scalar(text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": CLUSTER_LOCK}))
