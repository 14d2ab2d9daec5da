"""One throwaway stack (embedded PostgreSQL + Redis, real workers) for the whole chaos suite.

The numbers are small enough for `make test` on the 2-core machine; `tagworker chaos` runs the same scenarios
with bigger ones.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from worker.chaos.runner import FAULTS
from worker.chaos.stack import ChaosStack
from worker.chaos.stream_faults import ChaosParams

# One pool process per worker: a restart after each kill then costs one model load (about 15 s here) instead of
# two in parallel (about 25 s), which is what keeps the suite within its few minutes.
PARAMS = ChaosParams(events=600, kills=2, side_events=300, poisons=3, fuzz=2000, grace_s=30, concurrency=1)


@pytest.fixture(scope="session")
def chaos_stack() -> Iterator[ChaosStack]:
    stack = ChaosStack.start(concurrency=PARAMS.concurrency)
    yield stack
    stack.close()


@pytest.fixture(scope="session")
def fault_results() -> dict[str, dict[str, Any]]:
    """Each fault's result, by name, as the tests of this session ran them."""
    return {}


@pytest.fixture
def run_fault(chaos_stack: ChaosStack, fault_results: dict[str, dict[str, Any]]):  # type: ignore[no-untyped-def]
    """Run one fault on the shared stack; returns its counts and checks (lost and duplicates already checked)."""

    def run(name: str, params: ChaosParams = PARAMS) -> dict[str, Any]:
        result = fault_results[name] = FAULTS[name](chaos_stack, params, lambda *_: None).as_dict()
        assert result["lost"] == 0, result
        assert result["duplicate_effects"] == 0, result
        return result

    return run
