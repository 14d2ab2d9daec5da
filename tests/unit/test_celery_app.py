"""The Celery app's process setup: how a bare `celery worker` shares the cores among its pool processes."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from types import ModuleType, SimpleNamespace

import pytest

import worker
from worker.settings import get_settings


@pytest.fixture
def app_module(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """worker.celery_app with 8 usable cores and TORCH_THREADS=0 (restored after the test, whatever it sets)."""
    monkeypatch.setenv("TAGWORKER_BROKER__URL", "redis://127.0.0.1:9/0")  # never contacted: building the app only
    monkeypatch.setenv("TAGWORKER_DATABASE__URL", "postgresql+psycopg2://nobody@127.0.0.1:9/none")
    monkeypatch.setenv("TAGWORKER_MODEL__TORCH_THREADS", "0")
    get_settings.cache_clear()
    imported_before = "worker.celery_app" in sys.modules
    module = importlib.import_module("worker.celery_app")
    monkeypatch.setattr(module, "usable_cores", lambda: 8)
    yield module
    get_settings.cache_clear()
    if not imported_before:  # later tests in this process build the app against the real services
        sys.modules.pop("worker.celery_app")
        delattr(worker, "celery_app")


@pytest.mark.parametrize(("processes", "threads"), [(4, 2), (1, 8), (16, 1)])
def test_auto_threads_become_each_pool_process_share_of_the_cores(
    app_module: ModuleType, processes: int, threads: int
) -> None:
    app_module._share_cores(SimpleNamespace(concurrency=processes))
    assert get_settings().model.torch_threads == threads


def test_threads_set_by_the_operator_are_kept(app_module: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TAGWORKER_MODEL__TORCH_THREADS", "3")
    get_settings.cache_clear()
    app_module._share_cores(SimpleNamespace(concurrency=4))
    assert get_settings().model.torch_threads == 3
