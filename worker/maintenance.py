"""Beat's maintenance messages (tagger refit, clustering) that waited behind an ingest backlog.

They share the ingest queue and never expire (worker/celery_config.py), so a backlog delays them instead of
dropping them. When it drains, the messages beat sent meanwhile arrive one after another: each one skips when
a run started less than half its interval ago, so a backlog of N periods costs one run and N cheap reads, not
N runs.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from worker.db import session_scope
from worker.store.run_ages import seconds_since_cluster_run, seconds_since_tagger_fit

# Under a steady backlog messages still arrive a whole interval apart; only a draining backlog bunches them up.
MIN_GAP_SHARE = 0.5


def ran_recently(age_s: float | None, *, interval_s: float) -> bool:
    """Whether the last run started less than `MIN_GAP_SHARE` of the beat interval ago (`age_s`; None: never)."""
    return age_s is not None and age_s < MIN_GAP_SHARE * interval_s


def recent_cluster_run(engine: Engine, *, model_version_id: int, interval_s: float) -> str | None:
    """Why a beat clustering message may skip (a run started recently), or None when it should run."""
    return _recent(engine, seconds_since_cluster_run, model_version_id=model_version_id, interval_s=interval_s,
                   what="a clustering run of model version {v} started", setting="CLUSTERING__INTERVAL_S")  # fmt: skip


def recent_tagger_fit(engine: Engine, *, model_version_id: int, interval_s: float) -> str | None:
    """Why a beat refit message may skip (a tagger was fitted recently), or None when it should run."""
    return _recent(engine, seconds_since_tagger_fit, model_version_id=model_version_id, interval_s=interval_s,
                   what="a tagger of model version {v} was fitted", setting="TAGGING__REFIT_INTERVAL_S")  # fmt: skip


def _recent(
    engine: Engine,
    age_of: Callable[[Session, int], float | None],
    *,
    model_version_id: int,
    interval_s: float,
    what: str,
    setting: str,
) -> str | None:
    with session_scope(engine) as session:
        age = age_of(session, model_version_id)
    if not ran_recently(age, interval_s=interval_s):
        return None
    return (f"{what.format(v=model_version_id)} {age:.0f}s ago, less than half of "
            f"TAGWORKER_{setting}={interval_s:g}")  # fmt: skip
