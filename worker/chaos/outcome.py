"""A fault's result: the checker's counts, the seconds it took, and what else the fault had to show."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import text

from worker.chaos.checker import Counts, wait_settled
from worker.chaos.ledger import Ledger
from worker.chaos.stack import ChaosStack, wait_until

Progress = Callable[[str, int, int], None]
_REFUSED = ("Received invalid task message", "Can't decode message body")
_RECORD_START = re.compile(r"^(?=\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)", re.MULTILINE)


@dataclass
class FaultResult:
    """Per-fault numbers for `tagworker chaos --json`; `checks` holds the fault's own evidence."""

    counts: Counts
    seconds: float
    checks: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {**self.counts.as_dict(), "seconds": self.seconds, **self.checks}


@dataclass
class Watch:
    """What a scenario needs to remember from its start to count re-executions at the end."""

    stack: ChaosStack
    name: str
    report: Progress
    marks: dict[Path, int] = field(default_factory=dict)
    warmups: int = 0
    started: float = field(default_factory=time.monotonic)

    @classmethod
    def begin(cls, stack: ChaosStack, name: str, report: Progress) -> Watch:
        return cls(stack, name, report, stack.log_marks(), stack.warmups)

    def settle(self, ledger: Ledger, *, timeout_s: float, **checks: Any) -> FaultResult:
        """Wait until every message is accounted for (or the timeout), then count."""
        counts = wait_settled(
            self.stack.engine, ledger, timeout_s=timeout_s, progress=lambda d, t: self.report(self.name, d, t),
            logged_refusals=lambda: self.logged_refusals(ledger),
        )  # fmt: skip
        # Deliveries that a completed batch processed, beyond one per message (warm-ups included in both).
        receipts = self.stack.batch_receipts(since=self.marks)
        counts.re_executions = max(0, receipts - ledger.task_messages - (self.stack.warmups - self.warmups))
        return FaultResult(counts, round(time.monotonic() - self.started, 1), checks)

    def logged_refusals(self, ledger: Ledger) -> set[str]:
        """Ids of the ledger's refusable messages that a worker logged as refused (Celery names them in the line)."""
        records = _RECORD_START.split(self.stack.log_text(since=self.marks))
        refusals = [r for r in records if any(phrase in r for phrase in _REFUSED)]
        refusable = [e for e in ledger.entries if not e.reaches_task]
        return {e.message_id for e in refusable if any((e.log_token or e.message_id) in r for r in refusals)}

    def log_lines(self, needle: str) -> int:
        """Lines of the workers' logs, since the start, that contain `needle`."""
        return self.stack.log_text(since=self.marks).count(needle)


def stored_count(stack: ChaosStack, ledger: Ledger) -> int:
    ids = [e.event_id for e in ledger.entries if e.event_id]
    with stack.engine.connect() as conn:
        sql = text("SELECT count(*) FROM items WHERE event_id::text = ANY(:ids)")
        return int(conn.execute(sql, {"ids": ids}).scalar_one())


def wait_stored(stack: ChaosStack, ledger: Ledger, n: int, *, timeout_s: float = 300) -> None:
    """Until at least `n` of the ledger's events are stored: the moment to inject the next fault."""
    wait_until(lambda: stored_count(stack, ledger) >= n, timeout_s=timeout_s, what=f"{n} stored events")
