"""The end of a retraining run: record the gate's verdict and promote on it, or settle a verdict whose commit raised."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from worker.model_store import remove_model_dir
from worker.pipeline.promotion_gate import GateDecision
from worker.store.model_versions import (
    VersionInfo,
    activate,
    active_version,
    finish_candidate,
    lock_versions,
    verdict_as_committed,
)

log = logging.getLogger(__name__)

# The statuses a verdict leaves, with the outcome each means when the run lost track of its own verdict. `active`
# or `retired` after a rejection: an operator promoted the candidate before the row was read again.
_APPLIED_VERDICTS = {"active": "promoted", "retired": "promoted", "rejected": "rejected"}


@dataclass
class RetrainSummary:
    """What a run did: skipped (with why), failed, rejected by the gate, or promoted."""

    status: str
    reason: str = ""
    version_id: int | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Candidate:
    """The version being trained: its row, its name, the version it starts from."""

    version_id: int
    name: str
    parent: VersionInfo
    started: float


def conclude(
    session: Session, candidate: Candidate, decision: GateDecision, metrics: dict[str, Any], path: str
) -> RetrainSummary:
    """Record the gate's verdict and promote on it, in the caller's transaction, against the versions as they are now.

    Training takes long. Meanwhile an operator may have rolled back or promoted (the candidate was gated against
    its parent only, so promoting it would undo that), or this run may have lost its lock and the next run marked
    its row failed. The version lock keeps a rollback from slipping between this check and the switch.
    """
    lock_versions(session)
    active = active_version(session)
    promote, reason = decision.promote, decision.reason
    if promote and (active is None or active.id != candidate.parent.id):
        now = active.name if active else "none"
        reason = (
            f"the active version changed from {candidate.parent.name} to {now} during training; not promoted "
            f"(`tagworker model promote {candidate.version_id}` if it should be; the gate said: {decision.reason})"
        )
        promote = False
    seconds = time.perf_counter() - candidate.started
    if not finish_candidate(session, candidate.version_id, status="candidate" if promote else "rejected",
                            metrics=metrics, path=path, seconds=seconds, reason=reason):  # fmt: skip
        reason = (
            f"candidate {candidate.version_id} is no longer training: another run marked it failed after this one "
            "lost the retraining lock; not promoted"
        )
        return RetrainSummary("failed", reason, candidate.version_id, metrics)
    if promote:
        activate(session, candidate.version_id)
    return RetrainSummary("promoted" if promote else "rejected", reason, candidate.version_id, metrics)


def settle_unacknowledged(
    engine: Engine, candidate: Candidate, path: Path, exc: Exception, *, verdict: RetrainSummary | None
) -> RetrainSummary:
    """The run's outcome when its verdict's transaction raised, from the candidate's row as committed.

    A commit whose acknowledgement was lost (the connection dropped after COMMIT reached the server) applied:
    the run reports what it did, and the directory stays, since the row (perhaps the active version) points at
    it. A verdict that was not applied never will be (nothing retries it) and only the verdict writes the row's
    path, so the directory is removed and `exc` raised for `_run` to mark the row failed. When the row cannot
    be read, the directory stays: an orphaned copy costs disk, deleting the active version's weights an outage.
    """
    row = verdict_as_committed(engine, candidate.version_id)
    if row is not None and row.path == str(path) and row.status in _APPLIED_VERDICTS:
        log.warning("candidate %d is %s: its verdict's commit raised after it was applied (%s); keeping %s",
                    candidate.version_id, row.status, exc, path)  # fmt: skip
        reason = f"{row.reason} (the commit's acknowledgement was lost, but it was applied: {type(exc).__name__})"
        # The verdict this run committed; the row may show an operator's later promotion or rollback.
        status = verdict.status if verdict else _APPLIED_VERDICTS[row.status]
        return RetrainSummary(status, reason, candidate.version_id, dict(row.metrics or {}))
    if row is not None and row.path is None and row.status in ("training", "failed"):
        remove_model_dir(path)
    else:
        log.warning("candidate %d: could not tell whether its verdict was applied; keeping %s",
                    candidate.version_id, path)  # fmt: skip
    raise exc
