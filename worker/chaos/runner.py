"""Run the chaos scenarios on one throwaway stack and return the checker's counts per fault."""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from typing import Any

from worker.chaos.guard_faults import fuzz, model_missing
from worker.chaos.lock_faults import concurrent_retrains, concurrent_runs
from worker.chaos.outcome import FaultResult, Progress
from worker.chaos.security import security
from worker.chaos.stack import ChaosStack
from worker.chaos.stream_faults import ChaosParams, poison, postgres_restart, redis_restart, sigkill, sigterm

log = logging.getLogger(__name__)
Fault = Callable[[ChaosStack, ChaosParams, Progress], FaultResult]

# In this order: clustering needs the feedback the streams stored; security ends with no worker running.
FAULTS: dict[str, Fault] = {
    "sigkill": sigkill,
    "sigterm": sigterm,
    "redis_restart": redis_restart,
    "postgres_restart": postgres_restart,
    "poison": poison,
    "model_missing": model_missing,
    "fuzz": fuzz,
    "concurrent_runs": concurrent_runs,
    "concurrent_retrains": concurrent_retrains,
    "security": security,
}


def run_chaos(
    params: ChaosParams, *, only: Collection[str] = (), report: Progress = lambda *_: None
) -> dict[str, dict[str, Any]]:
    """Each selected fault's counts (plus `seconds` and its own checks); a fault that errors reports `error`."""
    unknown = set(only) - set(FAULTS)
    if unknown:
        raise ValueError(f"unknown fault(s) {sorted(unknown)}; choose from {', '.join(FAULTS)}")
    stack = ChaosStack.start(concurrency=params.concurrency)
    results: dict[str, dict[str, Any]] = {}
    try:
        for name, fault in FAULTS.items():
            if only and name not in only:
                continue
            try:
                results[name] = fault(stack, params, report).as_dict()
            except Exception as exc:
                log.exception("chaos fault %s did not complete", name)
                results[name] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
            log.info("chaos %s: %s", name, results[name])
    finally:
        failed = len(results) < len([n for n in FAULTS if not only or n in only]) or any(
            "error" in r or r.get("lost") or r.get("duplicate_effects") for r in results.values()
        )
        stack.close(keep=failed)
        if failed:
            log.warning("chaos: kept %s (worker logs, database) for inspection", stack.data_dir)
    return results
