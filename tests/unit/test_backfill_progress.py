"""The backfill's progress row (`model_versions.backfill`) read back, and as `status` / `model list` show it."""

from __future__ import annotations

import pytest

from worker.backfill import BackfillProgress
from worker.cli.common import backfill_text
from worker.store.status import backfill_summary

FINISHED = "2026-11-28T00:00:00+00:00"
STARTED = "2026-11-27T23:00:00+00:00"


def test_an_empty_row_reads_as_no_run_and_writes_back_only_failed_and_finished_at() -> None:
    """{} is what activating a version leaves; a backfill that then finds nothing to re-embed just finishes."""
    progress = BackfillProgress.from_row({})

    assert progress == BackfillProgress(total=0, done=0, failed=[], started_at=None, finished_at=None)
    assert progress.as_json() == {"failed": []}
    progress.finished_at = FINISHED
    assert progress.as_json() == {"failed": [], "finished_at": FINISHED}


def test_a_row_from_before_failed_items_were_kept_reads_as_none_failed() -> None:
    progress = BackfillProgress.from_row({"total": 12, "done": 7, "started_at": STARTED})

    assert (progress.total, progress.done, progress.failed, progress.finished_at) == (12, 7, [], None)
    assert progress.as_json() == {"total": 12, "done": 7, "failed": [], "started_at": STARTED}


@pytest.mark.parametrize(
    "row",
    [
        {"total": 28, "done": 5, "failed": [3, 9], "started_at": STARTED},
        {"total": 28, "done": 5, "failed": [3, 9], "started_at": STARTED, "finished_at": FINISHED},
    ],
)
def test_a_row_reads_back_as_it_was_written(row: dict[str, object]) -> None:
    assert BackfillProgress.from_row(row).as_json() == row


def test_reading_a_row_does_not_share_its_failed_list() -> None:
    row = {"total": 2, "done": 1, "failed": [4], "started_at": STARTED}
    BackfillProgress.from_row(row).failed.append(5)
    assert row["failed"] == [4]


@pytest.mark.parametrize(
    ("row", "active", "shown"),
    [
        ({}, True, ""),
        ({"failed": [], "finished_at": FINISHED}, True, "0 / 0 done"),
        ({"total": 28, "done": 5, "failed": [3, 9], "started_at": STARTED, "finished_at": FINISHED}, False,
         "5 / 28 done, 2 failed"),
        ({"total": 28, "done": 5, "failed": [], "started_at": STARTED}, True, "5 / 28 running"),
        ({"total": 28, "done": 5, "failed": [3], "started_at": STARTED}, False, "5 / 28 stopped, 1 failed"),
        ({"total": 12, "done": 7, "started_at": STARTED}, True, "7 / 12 running"),
    ],
)  # fmt: skip
def test_a_backfill_reads_as_done_running_or_stopped(row: dict[str, object], active: bool, shown: str) -> None:
    """`tagworker status` (the active version) and `tagworker model list` (every version) say it alike."""
    assert backfill_text(backfill_summary(row), active=active) == shown
