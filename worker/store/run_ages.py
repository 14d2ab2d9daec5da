"""How long ago the last clustering run and the last tagger fit started, by the database's clock.

The database's clock, not the worker's: beat and the workers may run on machines whose clocks disagree.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ColumnElement, Float, cast, extract, func, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from models import ClusterRun, Tagger

# Runs that did the work (or are doing it); a skipped run (too few items, backfill not done) was cheap.
_WORKING_RUNS = ("running", "succeeded", "failed")


def _age_s(started: InstrumentedAttribute[datetime]) -> ColumnElement[float]:
    return cast(extract("epoch", func.now() - func.max(started)), Float)


def seconds_since_cluster_run(session: Session, model_version_id: int) -> float | None:
    """Seconds since the latest clustering run of this model version that was not skipped started; None if none."""
    age = session.scalar(
        select(_age_s(ClusterRun.started_at)).where(
            ClusterRun.model_version_id == model_version_id, ClusterRun.status.in_(_WORKING_RUNS)
        )
    )
    return None if age is None else float(age)


def seconds_since_tagger_fit(session: Session, model_version_id: int) -> float | None:
    """Seconds since the newest tagger of this model version was fitted; None if it has none."""
    age = session.scalar(select(_age_s(Tagger.fitted_at)).where(Tagger.model_version_id == model_version_id))
    return None if age is None else float(age)
