"""The ages the maintenance skip rule reads, from the real database (worker/store/run_ages.py)."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from sqlalchemy import Engine, func

from models import ClusterRun, ModelVersion
from worker.db import session_scope
from worker.store.run_ages import seconds_since_cluster_run, seconds_since_tagger_fit

pytestmark = [pytest.mark.integration]


def test_only_runs_that_did_the_work_count_and_ages_use_the_database_clock(engine: Engine) -> None:
    with session_scope(engine) as session:
        version = ModelVersion(name=f"run-ages-{uuid.uuid4().hex[:8]}", base_model="x", dims=3, status="retired")
        session.add(version)
        session.flush()
        assert seconds_since_cluster_run(session, version.id) is None
        session.add_all([
            ClusterRun(status="succeeded", model_version_id=version.id, params={},
                       started_at=func.now() - timedelta(minutes=10)),
            ClusterRun(status="skipped", model_version_id=version.id, params={}, started_at=func.now()),
        ])  # fmt: skip
        session.flush()
        age = seconds_since_cluster_run(session, version.id)
        session.rollback()  # shared database: leave nothing behind for other tests
    assert age == pytest.approx(600, abs=1)


def test_a_version_without_runs_or_taggers_has_no_age(engine: Engine) -> None:
    with session_scope(engine) as session:
        assert seconds_since_cluster_run(session, -1) is None
        assert seconds_since_tagger_fit(session, -1) is None
