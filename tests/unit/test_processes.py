"""How worker processes share the machine's cores (used by the Celery app's worker_init handler)."""

from __future__ import annotations

import pytest
from celery.concurrency.solo import TaskPool as SoloPool

from worker.processes import EXIT_RESULT_WAIT_S, bound_exit_wait, is_prefork, most_processes, threads_per_process


@pytest.mark.parametrize(
    ("pool", "prefork"),
    [("prefork", True), ("processes", True), ("solo", False), ("threads", False), (SoloPool, False)],
)
def test_only_prefork_runs_tasks_in_child_processes(pool: str | type, prefork: bool) -> None:
    assert is_prefork(pool) is prefork


@pytest.mark.parametrize(
    ("prefork", "concurrency", "threads"),
    [(True, 4, 2), (True, 1, 8), (True, 16, 1), (False, 8, 8), (False, 1, 8)],
)
def test_prefork_processes_share_the_cores_and_one_process_gets_them_all(
    prefork: bool, concurrency: int, threads: int
) -> None:
    assert threads_per_process(cores=8, prefork=prefork, concurrency=concurrency) == threads


@pytest.mark.parametrize(
    ("autoscale", "processes"),
    [(None, 4), ("10,3", 10), ("6", 6), ([8, 2], 8), ((12, 0), 12), ("", 4), ("x,1", 4)],
    ids=["no-autoscale", "max-min", "max-only", "list", "tuple", "empty", "malformed"],
)
def test_an_autoscaled_pool_shares_the_cores_among_its_most_processes(autoscale: object, processes: int) -> None:
    assert most_processes(concurrency=4, autoscale=autoscale) == processes


def test_a_pool_process_waits_at_most_a_few_seconds_at_exit_for_its_last_result_to_be_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """billiard's 30 s made a worker outlive a 30 s SIGTERM grace when Celery dropped an unacknowledged job
    that the pool process ran anyway (caught with the stacks dump in the chaos suite)."""
    import billiard.pool

    monkeypatch.setattr(billiard.pool, "GUARANTEE_MESSAGE_CONSUMPTION_RETRY_LIMIT", 300)

    bound_exit_wait()

    interval = billiard.pool.GUARANTEE_MESSAGE_CONSUMPTION_RETRY_INTERVAL
    assert billiard.pool.GUARANTEE_MESSAGE_CONSUMPTION_RETRY_LIMIT * interval == pytest.approx(EXIT_RESULT_WAIT_S)
    assert EXIT_RESULT_WAIT_S <= 5
