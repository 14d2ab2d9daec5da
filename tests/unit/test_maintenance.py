"""Beat's maintenance messages run behind an ingest backlog, and those that bunched up skip cheaply."""

from __future__ import annotations

import pytest

from worker.celery_config import celery_config
from worker.maintenance import ran_recently
from worker.settings import Settings


def test_maintenance_on_the_ingest_queue_never_expires_behind_a_backlog() -> None:
    """Refit and clustering messages expired after one period: behind a longer ingest backlog none ever ran."""
    config = celery_config(Settings(), "redis://cache:6379/0")
    routes, schedule = config["task_routes"], config["beat_schedule"]
    assert isinstance(routes, dict) and isinstance(schedule, dict)
    for entry in ("refit-tags", "cluster-feedback"):
        assert routes[schedule[entry]["task"]]["queue"] == "ingest"
        assert "expires" not in schedule[entry]["options"], entry
        # Only beat's messages may skip; one a person sends runs.
        assert schedule[entry]["kwargs"] == {"scheduled": True}, entry


def test_the_training_queue_checks_still_expire_after_one_period() -> None:
    settings = Settings()
    schedule = celery_config(settings, "redis://cache:6379/0")["beat_schedule"]
    assert isinstance(schedule, dict)
    assert schedule["retrain"]["options"] == {"expires": settings.training.interval_s}
    assert schedule["backfill"]["options"] == {"expires": settings.training.backfill_interval_s}


@pytest.mark.parametrize(
    ("age_s", "skips"),
    [(None, False), (0.0, True), (1799.0, True), (1800.0, False), (3600.0, False), (86_400.0, False)],
    ids=["never-ran", "just-started", "under-half", "half", "one-interval", "a-day"],
)
def test_a_message_skips_only_within_half_an_interval_of_the_last_run(age_s: float | None, skips: bool) -> None:
    assert ran_recently(age_s, interval_s=3600) is skips


def test_messages_a_whole_interval_apart_all_run() -> None:
    """Under a steady backlog the messages still arrive one interval apart: none of them may skip."""
    assert not ran_recently(30.0, interval_s=30)
    assert ran_recently(14.9, interval_s=30)
