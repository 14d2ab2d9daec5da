"""Beat's maintenance messages (tagger refit, clustering) that waited behind an ingest backlog.

They share the ingest queue and never expire (worker/celery_config.py), so a backlog delays them instead of
dropping them. When it drains, the messages beat sent meanwhile arrive one after another: each one skips when
a run started less than half its interval ago, so a backlog of N periods costs one run and N cheap reads, not
N runs.
"""

from __future__ import annotations

from sqlalchemy import Engine

from worker.db import session_scope
from worker.store.run_ages import seconds_since_cluster_run, seconds_since_tagger_fit

# Under a steady backlog messages still arrive a whole interval apart; only a draining backlog bunches them up.
MIN_GAP_SHARE = 0.5


def ran_recently(age_s: float | None, *, interval_s: float) -> bool:
    """Whether the last run started less than `MIN_GAP_SHARE` of the beat interval ago (`age_s`; None: never)."""
    return age_s is not None and age_s < MIN_GAP_SHARE * interval_s


def recent_cluster_run(engine: Engine, *, model_version_id: int, interval_s: float) -> str | None:
    """Why a beat clustering message may skip (a run started recently), or None when it should run."""
    with session_scope(engine) as session:
        age = seconds_since_cluster_run(session, model_version_id)
    if not ran_recently(age, interval_s=interval_s):
        return None
    return (f"a clustering run of model version {model_version_id} started {age:.0f}s ago, less than half of "
            f"TAGWORKER_CLUSTERING__INTERVAL_S={interval_s:g}")  # fmt: skip


def recent_tagger_fit(engine: Engine, *, model_version_id: int, interval_s: float) -> str | None:
    """Why a beat refit message may skip (a tagger was fitted recently), or None when it should run."""
    with session_scope(engine) as session:
        age = seconds_since_tagger_fit(session, model_version_id)
    if not ran_recently(age, interval_s=interval_s):
        return None
    return (f"a tagger of model version {model_version_id} was fitted {age:.0f}s ago, less than half of "
            f"TAGWORKER_TAGGING__REFIT_INTERVAL_S={interval_s:g}")  # fmt: skip
