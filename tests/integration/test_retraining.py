"""Retraining against real Postgres: gate, promotion, rollback, failures; and the loop end to end with a worker.

Each test gets its own database (and the end-to-end test its own Redis db), because promoting a model changes
what every worker on a database serves, and the other modules share theirs.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event, func, select, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from models import Item, ItemLabel, ModelVersion, Tag, TagCorrection
from tests.integration.conftest import WORKER_ENV
from tests.integration.helpers import (
    count_items,
    feedback,
    processes_with_torch,
    producer_app,
    publish,
    scratch_database,
    wait_for,
)
from worker import retrain_verdict, retraining
from worker.backfill import BACKFILL_LOCK, BackfillService
from worker.db import get_engine, session_scope
from worker.errors import ModelLoadError
from worker.pipeline.embed import ModelEmbedder, load_embedder, resolve_model_path
from worker.processes import service_env, start_worker, stop
from worker.retraining import RetrainService, RetrainSummary
from worker.services import ServiceUrls
from worker.settings import ModelSettings, Settings, TrainingSettings, get_settings
from worker.store.model_versions import activate, active_version, register_model_version
from worker.store.training import RETRAIN_LOCK, read_in_one_snapshot, read_point

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TOPICS = {
    "pricing": ["The price went up again", "Your plans cost too much for a small team", "Is there a discount"],
    "email_deliverability": ["Our newsletter lands in spam", "Open rates fell after the DNS change", "Bounces"],
    "onboarding": ["Setup took me two days", "The first-run tutorial is confusing", "I could not import contacts"],
}
FAST = {"max_steps": 4, "batch_size": 8, "positives_per_text": 2, "holdout_share": 0.3}


@pytest.fixture
def own_db(stack: ServiceUrls) -> Iterator[str]:
    """A fresh database on the embedded server, migrated (default taxonomy seeded)."""
    yield from scratch_database(stack.database_url, prefix="retrain")


def settings_for(tmp_path: Path, **training: object) -> Settings:
    return Settings(data_dir=tmp_path, training=TrainingSettings(store_dir=tmp_path / "models", **(FAST | training)))


def stock_version(engine: Engine) -> int:
    with engine.begin() as conn:
        return register_model_version(
            conn, name="all-MiniLM-L6-v2@test", base_model="all-MiniLM-L6-v2",
            path=resolve_model_path("all-MiniLM-L6-v2"), dims=384,
        )  # fmt: skip


def label_items(engine: Engine, per_topic: int = 6, *, decided_at: datetime | None = None, first: int = 0) -> None:
    """Feedback items with one human-confirmed topic tag each, written the way a correction leaves them.

    `decided_at` is the producer's clock (the event's `corrected_at`); the server stamps `applied_at` itself.
    `first` numbers the items, so that a second call adds new ones.
    """
    decided_at = decided_at or datetime.now(UTC)
    with session_scope(engine) as session:
        tags = dict(session.execute(select(Tag.name, Tag.id)).tuples().all())
        for topic, phrases in TOPICS.items():
            for i in range(first, first + per_topic):
                body = f"{phrases[i % len(phrases)]} (ticket {i})"
                digest = hashlib.sha256(body.encode()).hexdigest()
                item = Item(kind="feedback", external_id=f"{topic}-{i}", event_id=uuid.uuid4(), text=body,
                            content_sha256=digest, occurred_at=decided_at)  # fmt: skip
                session.add(item)
                session.flush()
                fix = TagCorrection(event_id=uuid.uuid4(), item_id=item.id, added=[topic], removed=[], actor="qa",
                                    corrected_at=decided_at, applied_at=func.now())  # fmt: skip
                session.add(fix)
                session.flush()
                session.add(ItemLabel(item_id=item.id, tag_id=tags[topic], present=True, actor="qa",
                                      correction_id=fix.id, decided_at=decided_at))  # fmt: skip
        session.commit()


def labelled_stock(database_url: str) -> tuple[Engine, int]:
    """The database's engine with the stock version registered and human labels stored; (engine, stock id)."""
    engine = get_engine(database_url)
    stock = stock_version(engine)
    label_items(engine)
    return engine, stock


def versions(engine: Engine) -> list[ModelVersion]:
    with session_scope(engine) as session:
        return list(session.execute(select(ModelVersion).order_by(ModelVersion.id)).scalars())


def test_an_empty_training_set_is_a_noop_with_a_reason(own_db: str, tmp_path: Path) -> None:
    engine = get_engine(own_db)
    stock_version(engine)
    summary = RetrainService(engine=engine, settings=settings_for(tmp_path)).run(force=True)
    assert summary.status == "skipped" and "empty training set" in summary.reason
    assert [v.status for v in versions(engine)] == ["active"]


def test_without_enough_new_labels_nothing_trains(own_db: str, tmp_path: Path) -> None:
    engine = get_engine(own_db)
    stock_version(engine)
    label_items(engine, per_topic=2)
    summary = RetrainService(engine=engine, settings=settings_for(tmp_path, min_new_labels=50)).run()
    assert summary.status == "skipped" and "6 new human labels" in summary.reason


def test_the_gate_rejects_a_candidate_that_is_not_better_and_keeps_it(
    own_db: str, tmp_path: Path, stack: ServiceUrls
) -> None:
    engine, stock = labelled_stock(own_db)
    pairs = Path(__file__).parents[2] / "samples" / "marketing-pairs.jsonl"
    env = service_env(ServiceUrls(own_db, stack.broker_url))
    added = subprocess.run([sys.executable, "-m", "worker.cli", "train", "pairs", "add", str(pairs)], env=env,
                           capture_output=True, text=True, timeout=120)  # fmt: skip
    assert added.returncode == 0 and "stored 12 vocabulary pairs" in added.stderr, added.stderr
    summary = RetrainService(engine=engine, settings=settings_for(tmp_path, min_gain=50, min_ndcg_gain=100)).run(
        force=True
    )
    assert summary.status == "rejected", summary
    assert "below the margin 50" in summary.reason
    rows = versions(engine)
    candidate = rows[-1]
    assert candidate.status == "rejected" and candidate.parent_id == stock and Path(candidate.path or "").is_dir()
    assert {"before", "after"} <= set(candidate.metrics) and candidate.data["pairs"] > 0 and candidate.seconds
    assert candidate.data["vocabulary_pairs"] == 12
    with session_scope(engine) as session:
        assert active_version(session).id == stock  # type: ignore[union-attr]


def test_promotion_rollback_and_a_corrupt_model_directory(own_db: str, tmp_path: Path, stack: ServiceUrls) -> None:
    engine, stock = labelled_stock(own_db)
    summary = RetrainService(engine=engine, settings=settings_for(tmp_path, min_gain=-100)).run(force=True)
    assert summary.status == "promoted", summary
    with session_scope(engine) as session:
        assert active_version(session).id == summary.version_id  # type: ignore[union-attr]

    env = service_env(ServiceUrls(own_db, stack.broker_url))
    listed = subprocess.run([sys.executable, "-m", "worker.cli", "model", "list", "--json"], env=env,
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert [r["status"] for r in json.loads(listed.stdout)] == ["retired", "active"], listed.stderr
    rolled = subprocess.run([sys.executable, "-m", "worker.cli", "model", "rollback"], env=env, capture_output=True,
                            text=True, timeout=120)  # fmt: skip
    assert rolled.returncode == 0, rolled.stderr
    with session_scope(engine) as session:
        assert active_version(session).id == stock  # type: ignore[union-attr]

    candidate = Path(versions(engine)[-1].path or "")
    next(candidate.rglob("*.safetensors")).unlink()
    broken = subprocess.run([sys.executable, "-m", "worker.cli", "model", "promote", str(summary.version_id)],
                            env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert broken.returncode == 2 and "has no .safetensors weights" in broken.stderr
    with session_scope(engine) as session:
        assert active_version(session).id == stock, "a failed promotion changes nothing"  # type: ignore[union-attr]


def test_an_interrupted_run_is_marked_failed_and_runs_never_overlap(own_db: str, tmp_path: Path) -> None:
    engine = get_engine(own_db)
    stock = stock_version(engine)
    with session_scope(engine) as session:
        session.add(ModelVersion(name="killed-mid-training", base_model="x", dims=384, status="training",
                                 parent_id=stock, metrics={}, params={}))  # fmt: skip
        session.commit()
    service = RetrainService(engine=engine, settings=settings_for(tmp_path))
    with engine.connect() as holder:
        holder.execute(text("SELECT pg_advisory_lock(:k)"), {"k": RETRAIN_LOCK})
        assert service.run(force=True).reason == "another retraining run is in progress"
        holder.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": RETRAIN_LOCK})
    service.run(force=True)
    killed = next(v for v in versions(engine) if v.name == "killed-mid-training")
    assert killed.status == "failed" and "interrupted" in (killed.reason or "")


def test_the_next_run_removes_the_directory_of_a_run_killed_after_saving(own_db: str, tmp_path: Path) -> None:
    """Such a directory (hundreds of MB per run) stayed forever: no row pointed at it, so nothing removed it."""
    engine = get_engine(own_db)
    stock = stock_version(engine)
    settings = settings_for(tmp_path, min_new_labels=10_000)
    add_run(engine, stock, "training")  # killed after `save_model`, before its verdict
    add_run(engine, stock, "failed")  # failed, and an operator then registered its directory by hand
    killed, kept = (v.name for v in versions(engine)[-2:])
    for name in (killed, f".{killed}.partial", kept):
        (settings.model_store / name).mkdir(parents=True)
    with session_scope(engine) as session:
        session.add(ModelVersion(name="by-hand", base_model="x", dims=384, status="candidate", metrics={}, params={},
                                 path=str((settings.model_store / kept).resolve())))  # fmt: skip
        session.commit()
    assert RetrainService(engine=engine, settings=settings).run().status == "skipped"
    assert sorted(p.name for p in settings.model_store.iterdir()) == [kept]


def test_a_retraining_killed_with_its_process_is_not_run_again_at_once(stack: ServiceUrls) -> None:
    """With the app's `task_reject_on_worker_lost`, a fine-tune killed for memory came back and was killed again,
    until the message expired a day later."""
    get_settings.cache_clear()  # read again with the stack's URLs, which the app connects to on import
    from worker import tasks

    assert tasks.retrain.acks_late and tasks.retrain.reject_on_worker_lost is False
    # Their beat messages never expire: a redelivered one that kills its process again would come back for ever.
    assert tasks.refit_tags.reject_on_worker_lost is False and tasks.cluster_feedback.reject_on_worker_lost is False
    assert tasks.ingest.app.conf.task_reject_on_worker_lost, "ingest batches are still redelivered"


def test_a_worker_refuses_an_active_version_it_cannot_read(own_db: str, tmp_path: Path) -> None:
    from worker.runtime import load_serving_model

    engine = get_engine(own_db)
    with engine.begin() as conn:
        register_model_version(conn, name="gone@1", base_model="x", path=str(tmp_path / "gone"), dims=384)
    with pytest.raises(ModelLoadError, match="cannot read; share the model store"):
        load_serving_model(engine, settings_for(tmp_path))


def test_a_correction_ends_up_in_a_promoted_model_the_running_worker_uses(
    own_db: str, tmp_path: Path, stack: ServiceUrls
) -> None:
    broker = stack.broker_url.rsplit("/", 1)[0] + "/3"
    urls = ServiceUrls(own_db, broker)
    env = {**WORKER_ENV, "TAGWORKER_DATA_DIR": str(tmp_path), "TAGWORKER_TRAINING__MIN_GAIN": "-100",
           **{f"TAGWORKER_TRAINING__{k.upper()}": str(v) for k, v in FAST.items()}}  # fmt: skip
    worker = start_worker(urls, queues="ingest,training", logfile=tmp_path / "worker.log", extra_env=env)
    producer = producer_app(broker)
    engine = get_engine(own_db)
    try:
        events = [feedback(f"{p} (case {i})", feedback_id=f"{t}-{i}") for t, ps in TOPICS.items()
                  for i, p in enumerate(ps * 2)]  # fmt: skip
        publish(producer, events)
        ids = [e["event_id"] for e in events]
        wait_for(lambda: count_items(engine, ids) == len(ids), timeout_s=180, what="the feedback")
        fixes = [{"kind": "tag.corrected", "event_id": str(uuid.uuid4()), "item": {"kind": "feedback",
                  "external_id": e["feedback_id"]}, "added": [e["feedback_id"].rsplit("-", 1)[0]], "removed": [],
                  "actor": "qa@brightloop.example"} for e in events]  # fmt: skip
        publish(producer, fixes)
        wait_for(lambda: _labels(engine) == len(fixes), what="the corrections")

        retrained = subprocess.run([sys.executable, "-m", "worker.cli", "retrain", "--force"],
                                   env=service_env(urls, env), capture_output=True, text=True, timeout=300)  # fmt: skip
        assert retrained.returncode == 0, retrained.stderr
        summary = json.loads(retrained.stdout)
        assert summary["status"] == "promoted", summary
        new_version = summary["version_id"]

        wait_for(lambda: _vectors(engine, new_version) == len(events), timeout_s=180, what="the backfill")
        late = feedback("Prices are fine but the invoice PDF is blank", feedback_id="late-1")
        publish(producer, [late])
        wait_for(lambda: _vectors(engine, new_version) == len(events) + 1, what="a new item under the new model")
        with session_scope(engine) as session:
            assert (active_version(session) or pytest.fail("no active")).id == new_version
            backfill = session.scalar(select(ModelVersion.backfill).where(ModelVersion.id == new_version))
        assert backfill["done"] == len(events) and backfill["finished_at"]
        assert worker.poll() is None, "the worker switched models without a restart"
        # Both versions were exported in a short-lived child; the worker's own processes never loaded torch.
        assert processes_with_torch(worker.pid) == []
        assert (tmp_path / "worker.log").read_text().count("in a child process (") == 2
    finally:
        stop(worker)


def _labels(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.scalar(text("SELECT count(*) FROM item_labels WHERE present")) or 0)


def _vectors(engine: Engine, version_id: int) -> int:
    with engine.connect() as conn:
        return int(conn.scalar(text("SELECT count(*) FROM embeddings WHERE model_version_id = :v"), {"v": version_id}))


# --- Promotion against what changed during training, lost lock connections, the new-label count, the backfill.


def promoted_copy(engine: Engine, name: str = "v2") -> int:
    """A second version over the stock weights, made active: what a promotion leaves behind."""
    with engine.begin() as conn:
        version_id = register_model_version(
            conn, name=name, base_model="all-MiniLM-L6-v2", path=resolve_model_path("all-MiniLM-L6-v2"), dims=384
        )
    switch_to(engine, version_id)
    return version_id


def switch_to(engine: Engine, version_id: int) -> None:
    """What `tagworker model promote/rollback` does in Postgres."""
    with session_scope(engine) as session:
        activate(session, version_id)
        session.commit()


def active_id(engine: Engine) -> int:
    with session_scope(engine) as session:
        return (active_version(session) or pytest.fail("no active version")).id


def during_training(monkeypatch: pytest.MonkeyPatch, action: Callable[[], None]) -> None:
    """Run `action` once fine-tuning is done and before the promotion: the hour in which anything may happen."""
    real = retraining.fine_tune

    def fine_tune_then(*args: Any, **kwargs: Any) -> Any:
        result = real(*args, **kwargs)
        action()
        return result

    monkeypatch.setattr(retraining, "fine_tune", fine_tune_then)


def drop_lock_connection(engine: Engine, key: int) -> None:
    """End the server session holding advisory lock `key` (a network blip, a restarted pooler), and wait for it."""
    holder = """SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND objid = :k AND granted
                AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"""
    with engine.connect() as conn:
        conn.execute(text(f"SELECT pg_terminate_backend(pid) FROM ({holder}) h"), {"k": key})
        conn.commit()
        wait_for(lambda: conn.execute(text(holder), {"k": key}).first() is None, timeout_s=10, what="the lock")


def add_run(engine: Engine, parent: int, status: str) -> None:
    """A retraining run's row, as one that ended with `status` leaves it."""
    with session_scope(engine) as session:
        session.add(ModelVersion(name=f"run-{uuid.uuid4().hex[:6]}", base_model="x", dims=384, status=status,
                                 parent_id=parent, metrics={}, params={}))  # fmt: skip
        session.commit()


def test_a_rollback_during_training_is_not_undone_by_the_promotion(
    own_db: str, tmp_path: Path, stack: ServiceUrls, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = get_engine(own_db)
    stock = stock_version(engine)
    v2 = promoted_copy(engine)
    label_items(engine)
    env = service_env(ServiceUrls(own_db, stack.broker_url))

    def rollback() -> None:
        rolled = subprocess.run([sys.executable, "-m", "worker.cli", "model", "rollback"], env=env,
                                capture_output=True, text=True, timeout=120)  # fmt: skip
        assert rolled.returncode == 0, rolled.stderr

    during_training(monkeypatch, rollback)
    summary = RetrainService(engine=engine, settings=settings_for(tmp_path, min_gain=-100)).run(force=True)
    assert summary.status == "rejected", summary
    assert "the active version changed from v2 to all-MiniLM-L6-v2@test during training" in summary.reason
    candidate = versions(engine)[-1]
    assert candidate.parent_id == v2 and candidate.status == "rejected" and "not promoted" in (candidate.reason or "")
    assert candidate.metrics["after"] and Path(candidate.path or "").is_dir(), "kept for inspection"
    assert active_id(engine) == stock, "the operator's rollback stands"


def model_dirs(settings: Settings) -> list[str]:
    """The version directories in the model store (the scratch and half-written ones start with a dot)."""
    return sorted(p.name for p in settings.model_store.iterdir() if not p.name.startswith("."))


def test_a_run_another_run_marked_failed_promotes_nothing_and_keeps_no_directory(
    own_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine, stock = labelled_stock(own_db)
    settings = settings_for(tmp_path, min_gain=-100, min_new_labels=10_000)

    def lose_the_lock_to_the_next_run() -> None:
        drop_lock_connection(engine, RETRAIN_LOCK)
        # Beat's next run takes the free lock, marks the `training` row failed, and finds too few labels.
        assert RetrainService(engine=engine, settings=settings).run().status == "skipped"

    during_training(monkeypatch, lose_the_lock_to_the_next_run)
    summary = RetrainService(engine=engine, settings=settings).run(force=True)
    candidate = failed_without_a_directory(engine, settings, stock, summary, "no longer training")
    assert "interrupted" in (candidate.reason or "") and candidate.metrics == {}, "the other run's verdict stands"


def failed_without_a_directory(
    engine: Engine, settings: Settings, stock: int, summary: RetrainSummary, reason: str
) -> ModelVersion:
    """The run failed with `reason`, its row is failed with no path, its saved model is gone, stock serves."""
    assert summary.status == "failed" and reason in summary.reason, summary
    candidate = versions(engine)[-1]
    assert candidate.status == "failed" and candidate.path is None
    assert model_dirs(settings) == [], "no row points at the saved model, so it is removed"
    assert active_id(engine) == stock
    return candidate


def test_a_run_that_fails_after_saving_its_model_keeps_no_directory(
    own_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine, stock = labelled_stock(own_db)
    settings = settings_for(tmp_path, min_gain=-100)

    def saved_but_broken(path: Path, **_: Any) -> int:
        assert model_dirs(settings) == [path.name]
        raise ModelLoadError(f"model directory {path} has no .safetensors weights")

    monkeypatch.setattr(retraining, "verify_model_dir", saved_but_broken)
    summary = RetrainService(engine=engine, settings=settings).run(force=True)
    assert summary.status == "failed" and "has no .safetensors weights" in summary.reason, summary
    candidate = versions(engine)[-1]
    assert candidate.status == "failed" and candidate.path is None
    assert model_dirs(settings) == []
    assert active_id(engine) == stock


@contextmanager
def statements_fail(engine: Engine, marker: str) -> Iterator[None]:
    """Statements of `engine` that contain `marker` fail as they do while the database is away."""

    def fail(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if marker in statement:
            raise OperationalError(statement, None, ConnectionError("could not connect to server"))

    event.listen(engine, "before_cursor_execute", fail)
    try:
        yield
    finally:
        event.remove(engine, "before_cursor_execute", fail)


def verdict_commit_raises(
    monkeypatch: pytest.MonkeyPatch, *, applied: bool, then: Callable[[int], None] = lambda _: None
) -> None:
    """Make the commit of the run's verdict raise as a dropped connection does, after or before it applies.

    After: the COMMIT reached the server, its acknowledgement did not. Before: the database went away first, so
    nothing of the verdict's transaction was committed.
    """
    concluding: list[int] = []
    real_finish, real_commit = retrain_verdict.finish_candidate, Session.commit

    def finish_and_note(session: Session, version_id: int, **row: Any) -> bool:
        written = real_finish(session, version_id, **row)
        if written and row["status"] != "failed":  # the verdict, not `_run` marking the row failed
            concluding.append(version_id)
        return written

    def commit_and_lose_the_connection(session: Session) -> None:
        if not concluding:
            return real_commit(session)
        version_id = concluding.pop()
        if applied:
            real_commit(session)
            then(version_id)
        raise OperationalError("COMMIT", None, ConnectionError("server closed the connection unexpectedly"))

    monkeypatch.setattr(retrain_verdict, "finish_candidate", finish_and_note)
    monkeypatch.setattr(Session, "commit", commit_and_lose_the_connection)


@pytest.mark.parametrize(
    ("gate", "outcome", "status"),
    [({"min_gain": -100}, "promoted", "active"), ({"min_gain": 50, "min_ndcg_gain": 100}, "rejected", "rejected")],
)
def test_a_verdict_whose_commit_raised_after_it_applied_is_reported_and_keeps_its_directory(
    own_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, gate: dict[str, float], outcome: str, status: str
) -> None:
    """Such a run used to report `failed` while its version was active (then no backfill was queued) or rejected."""
    engine, stock = labelled_stock(own_db)
    settings = settings_for(tmp_path, **gate)
    verdict_commit_raises(monkeypatch, applied=True)
    summary = RetrainService(engine=engine, settings=settings).run(force=True)
    assert summary.status == outcome, summary  # `tagworker.retrain` queues the backfill on "promoted"
    assert "acknowledgement was lost" in summary.reason and summary.metrics["after"], summary
    candidate = versions(engine)[-1]
    assert candidate.id == summary.version_id and candidate.status == status
    assert active_id(engine) == (candidate.id if outcome == "promoted" else stock)
    assert model_dirs(settings) == [candidate.name], "the directory the row points at stays"


def test_a_rejection_an_operator_promoted_before_the_read_back_is_still_reported_rejected(
    own_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run reported `promoted` (the row's status by then), and `tagworker.retrain` queued a second backfill."""
    engine, _ = labelled_stock(own_db)
    settings = settings_for(tmp_path, min_gain=50, min_ndcg_gain=100)
    verdict_commit_raises(monkeypatch, applied=True, then=lambda version_id: switch_to(engine, version_id))
    summary = RetrainService(engine=engine, settings=settings).run(force=True)
    assert summary.status == "rejected" and "acknowledgement was lost" in summary.reason, summary
    assert active_id(engine) == summary.version_id, "the operator's promotion stands"


def test_a_verdict_whose_commit_was_not_applied_fails_and_keeps_no_directory(
    own_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Such a run used to leave its saved model on disk, with no row pointing at it."""
    engine, stock = labelled_stock(own_db)
    settings = settings_for(tmp_path, min_gain=-100)
    verdict_commit_raises(monkeypatch, applied=False)
    summary = RetrainService(engine=engine, settings=settings).run(force=True)
    failed_without_a_directory(engine, settings, stock, summary, "server closed the connection")


def test_a_verdict_that_cannot_be_read_back_keeps_its_directory(
    own_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the database stays away, the run cannot tell whether the promotion applied: it keeps the weights."""
    engine, _ = labelled_stock(own_db)
    settings = settings_for(tmp_path, min_gain=-100)
    verdict_commit_raises(monkeypatch, applied=True)
    with statements_fail(engine, "FOR SHARE"):  # reading the verdict back
        summary = RetrainService(engine=engine, settings=settings).run(force=True)
    assert summary.status == "failed" and "server closed the connection" in summary.reason, summary
    candidate = versions(engine)[-1]
    assert candidate.status == "active" and active_id(engine) == candidate.id
    assert model_dirs(settings) == [candidate.name], "the active version's directory stays"


def test_a_failure_the_database_cannot_record_is_left_for_the_next_run(
    own_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Marking the row failed used to raise out of the run (the task crashed) when the database stayed away."""
    engine, stock = labelled_stock(own_db)
    settings = settings_for(tmp_path)

    def database_gone() -> None:
        raise OperationalError("SELECT 1", None, ConnectionError("could not connect to server"))

    during_training(monkeypatch, database_gone)
    with statements_fail(engine, "'30s'"):  # the first statement of recording the failure
        summary = RetrainService(engine=engine, settings=settings).run(force=True)
    assert summary.status == "failed" and "could not connect" in summary.reason, summary
    assert versions(engine)[-1].status == "training", "the next run marks it failed"
    RetrainService(engine=engine, settings=settings_for(tmp_path, min_new_labels=10_000)).run()
    assert versions(engine)[-1].status == "failed" and active_id(engine) == stock


def test_a_lost_lock_connection_does_not_hide_the_promotion(
    own_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine, _ = labelled_stock(own_db)
    during_training(monkeypatch, lambda: drop_lock_connection(engine, RETRAIN_LOCK))
    summary = RetrainService(engine=engine, settings=settings_for(tmp_path, min_gain=-100)).run(force=True)
    assert summary.status == "promoted", summary
    assert active_id(engine) == summary.version_id


def test_labels_before_a_failed_run_still_count_toward_the_next(own_db: str, tmp_path: Path) -> None:
    engine = get_engine(own_db)
    stock = stock_version(engine)
    add_run(engine, stock, "rejected")
    label_items(engine, per_topic=2)
    add_run(engine, stock, "failed")  # killed before it trained on anything
    summary = RetrainService(engine=engine, settings=settings_for(tmp_path, min_new_labels=50)).run()
    assert summary.status == "skipped" and "6 new human labels" in summary.reason, summary


def test_labels_applied_after_a_run_read_its_own_count_toward_the_next(
    own_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine, _ = labelled_stock(own_db)
    real_start = retraining.start_candidate

    def labels_arrive_then_start(session: Session, **row: Any) -> int:
        label_items(engine, per_topic=1, first=100)  # after the run read the labelled items, before its row
        return real_start(session, **row)

    monkeypatch.setattr(retraining, "start_candidate", labels_arrive_then_start)
    settings = settings_for(tmp_path, min_gain=-100, min_new_labels=50)
    first = RetrainService(engine=engine, settings=settings).run(force=True)
    assert first.status == "promoted" and versions(engine)[-1].data["labelled_items"] == 18, first
    monkeypatch.undo()
    summary = RetrainService(engine=engine, settings=settings).run()
    assert summary.status == "skipped" and "3 new human labels" in summary.reason, summary


def test_new_labels_count_by_when_the_server_applied_them(own_db: str, tmp_path: Path) -> None:
    engine = get_engine(own_db)
    stock = stock_version(engine)
    add_run(engine, stock, "rejected")
    label_items(engine, per_topic=1, decided_at=datetime.now(UTC) - timedelta(hours=1))  # a producer's slow clock
    summary = RetrainService(engine=engine, settings=settings_for(tmp_path, min_new_labels=50)).run()
    assert summary.status == "skipped" and "3 new human labels" in summary.reason, summary


def test_a_label_whose_transaction_was_open_across_a_run_s_read_counts_toward_the_next(
    own_db: str, tmp_path: Path
) -> None:
    """It began before the run read (so it was stamped earlier) and committed after: neither run counted it."""
    engine = get_engine(own_db)
    stock = stock_version(engine)
    label_items(engine, per_topic=1)  # seen by the run
    with Session(engine) as open_correction:
        now = datetime.now(UTC)
        item = Item(kind="feedback", external_id="slow", event_id=uuid.uuid4(), text="late", content_sha256="0" * 64,
                    occurred_at=now)  # fmt: skip
        open_correction.add(item)
        open_correction.flush()
        fix = TagCorrection(event_id=uuid.uuid4(), item_id=item.id, added=["pricing"], removed=[], actor="qa",
                            corrected_at=now, applied_at=func.now())  # fmt: skip
        open_correction.add(fix)
        open_correction.flush()
        tag = open_correction.scalar(select(Tag.id).where(Tag.name == "pricing"))
        open_correction.add(ItemLabel(item_id=item.id, tag_id=tag, present=True, actor="qa", correction_id=fix.id,
                                      decided_at=now))  # fmt: skip
        open_correction.flush()
        with session_scope(engine) as session:  # a run reads, as `RetrainService._run` does, and records its row
            read_in_one_snapshot(session)
            read = read_point(session)
            run = ModelVersion(name="run", base_model="x", dims=384, status="rejected", parent_id=stock, metrics={},
                               params={}, created_at=read.time, read_snapshot=read.snapshot)  # fmt: skip
            session.add(run)
            session.commit()
        open_correction.commit()
    summary = RetrainService(engine=engine, settings=settings_for(tmp_path, min_new_labels=50)).run()
    assert summary.status == "skipped" and "1 new human labels" in summary.reason, summary


def test_labels_after_a_run_read_in_another_cluster_count(own_db: str, tmp_path: Path) -> None:
    """After a dump restored into another cluster, the last run's snapshot is far ahead of the new ids: by the
    snapshot alone every new label looked seen, and retraining never triggered again."""
    engine = get_engine(own_db)
    stock = stock_version(engine)
    with session_scope(engine) as session:
        session.add(ModelVersion(name="run", base_model="x", dims=384, status="rejected", parent_id=stock, metrics={},
                                 params={}, created_at=datetime.now(UTC) - timedelta(hours=1),
                                 read_snapshot="9000000000:9000000000:"))  # fmt: skip
        session.commit()
    label_items(engine, per_topic=1)
    summary = RetrainService(engine=engine, settings=settings_for(tmp_path, min_new_labels=50)).run()
    assert summary.status == "skipped" and "3 new human labels" in summary.reason, summary


@pytest.fixture(scope="module")
def embedder() -> ModelEmbedder:
    return load_embedder(ModelSettings(device="cpu", backend="torch"))


def test_a_rollback_stops_the_backfill_of_the_version_it_retired(own_db: str, embedder: ModelEmbedder) -> None:
    engine = get_engine(own_db)
    stock = stock_version(engine)
    label_items(engine, per_topic=4)  # 12 items, no vectors yet
    v2 = promoted_copy(engine)

    def rollback_after_the_first_chunk(done: int, total: int) -> None:
        if done == 5:
            switch_to(engine, stock)

    summary = BackfillService(engine=engine, embedder=embedder, model_version_id=v2, chunk=5).run(
        rollback_after_the_first_chunk
    )
    assert (summary.status, summary.embedded, summary.remaining) == ("superseded", 5, 7)
    assert _vectors(engine, v2) == 5
    again = BackfillService(engine=engine, embedder=embedder, model_version_id=v2, chunk=5).run()
    assert (again.status, again.embedded) == ("superseded", 0), "a retired version's backfill does not start"
    current = BackfillService(engine=engine, embedder=embedder, model_version_id=stock, chunk=50).run()
    assert (current.status, current.embedded) == ("done", 12), "the lock was released for the active version"


def test_a_lost_lock_connection_does_not_hide_a_finished_backfill(own_db: str, embedder: ModelEmbedder) -> None:
    engine = get_engine(own_db)
    stock = stock_version(engine)
    label_items(engine, per_topic=2)
    service = BackfillService(engine=engine, embedder=embedder, model_version_id=stock, chunk=50)
    summary = service.run(lambda *_: drop_lock_connection(engine, BACKFILL_LOCK))
    assert (summary.status, summary.embedded) == ("done", 6)
