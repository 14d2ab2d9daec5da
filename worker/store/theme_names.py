"""Names people give themes: set or cleared on a current theme; clustering runs never write them."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from models import Cluster, ClusterLineage
from worker.errors import ThemeError


@dataclass(frozen=True)
class ThemeName:
    """A theme's name after the change (None: it shows its automatic label) and that automatic label."""

    cluster_id: int
    name: str | None
    auto_label: str


def set_theme_name(session: Session, *, cluster_id: int, name: str | None, actor: str) -> ThemeName:
    """Name a current theme, or with `name` None go back to its automatic label; does not commit.

    `name` and `actor` are already checked (`worker.pipeline.theme_names`). One UPDATE that skips retired themes:
    a run that retires the theme meanwhile makes it wait and then find none, never name a retired theme.
    Raises ThemeError for an unknown or retired theme.
    """
    named = name is not None
    row = session.execute(
        update(Cluster)
        .where(Cluster.id == cluster_id, Cluster.retired_at.is_(None))
        .values(name=name, named_by=actor if named else None, named_at=func.now() if named else None)
        .returning(Cluster.id, Cluster.name, Cluster.label)
    ).one_or_none()
    if row is None:
        raise ThemeError(_not_current(session, cluster_id))
    return ThemeName(row.id, row.name, row.label)


def _not_current(session: Session, cluster_id: int) -> str:
    """Why a theme cannot be named: it does not exist, or which run retired it."""
    show = "tagworker cluster show"
    if session.scalar(select(Cluster.id).where(Cluster.id == cluster_id)) is None:
        return f"no theme {cluster_id}; the current themes and their ids: {show}"
    run_id = session.scalar(
        select(func.max(ClusterLineage.run_id))
        .where(ClusterLineage.cluster_id == cluster_id, ClusterLineage.event == "retired")
    )  # fmt: skip
    by = f" by run {run_id}" if run_id is not None else ""
    return f"theme {cluster_id} was retired{by}; name a current theme: {show}"
