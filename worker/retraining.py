"""One retraining run: human labels -> fine-tuned candidate -> gate -> promoted or kept for inspection.

Every candidate gets a `model_versions` row before training starts (status `training`), so a run that dies
leaves a trace; the next run, holding the lock, marks such rows failed. The active version keeps serving
throughout: promotion is one transaction, and workers switch at their next batch boundary. A candidate is promoted
only over the version it was trained from and gated against: after a rollback or promotion meanwhile, it is kept
as rejected. A rejected candidate keeps its directory (it can still be promoted by hand); one that ends failed after
its model was saved loses it, since no row points at it: at once, or, when the run died before it could, at the
start of the next run.
"""

from __future__ import annotations

import logging
import time
import zlib
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, text
from sqlalchemy.exc import SQLAlchemyError

from worker.db import session_scope, unlock_quietly
from worker.evaluation.retrain import score_model
from worker.evaluation.tagging import Labelled
from worker.model_store import remove_model_dir, remove_unsaved, save_model, verify_model_dir
from worker.pipeline.embed import ModelEmbedder, pick_device
from worker.pipeline.promotion_gate import decide
from worker.pipeline.retrain import TrainParams, fine_tune
from worker.pipeline.taxonomy import Taxonomy
from worker.pipeline.training_pairs import ScoredPair, same_tag_pairs
from worker.processes import usable_cores
from worker.retrain_verdict import Candidate, RetrainSummary, conclude, settle_unacknowledged
from worker.settings import Settings
from worker.store.model_versions import (
    active_version,
    build_hnsw_index,
    fail_interrupted,
    finish_candidate,
    start_candidate,
)
from worker.store.tags import current_taxonomy
from worker.store.training import (
    RETRAIN_LOCK,
    LabelledItem,
    labelled_items,
    labels_since,
    last_run_read,
    read_in_one_snapshot,
    read_point,
    scored_pairs,
    try_retrain_lock,
    unsaved_failures,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainingSet:
    """What one run trains and gates on."""

    train: list[LabelledItem]
    holdout: list[LabelledItem]
    pairs: list[tuple[str, str, str]]
    vocabulary: list[ScoredPair]
    taxonomy: Taxonomy | None


def split_holdout(items: list[LabelledItem], share: float) -> tuple[list[LabelledItem], list[LabelledItem]]:
    """A stable split by text: the same text is held out in every run, so the gate never trains on it.

    By the text rather than the item: one text can be stored under several external ids (the same feedback sent
    twice), and copies on both sides would let the gate score texts the candidate was trained on. Case and
    whitespace are ignored for the same reason.
    """
    cut = int(share * 1000)

    def held_out(item: LabelledItem) -> bool:
        key = " ".join(item.text.lower().split())
        return zlib.crc32(key.encode()) % 1000 < cut

    return [i for i in items if not held_out(i)], [i for i in items if held_out(i)]


def as_labelled(items: list[LabelledItem]) -> Labelled:
    return Labelled([i.text for i in items], [i.tags for i in items])


def train_params(settings: Settings) -> TrainParams:
    """The fine-tuning parameters of the training settings (those TrainParams has; the rest keep its defaults)."""
    names = {f.name for f in fields(TrainParams)}
    return TrainParams(**settings.training.model_dump(include=names))


class RetrainService:
    """Runs retraining against one database; one run at a time across all processes."""

    def __init__(self, *, engine: Engine, settings: Settings) -> None:
        self.engine = engine
        self.settings = settings

    def run(self, *, force: bool = False, show_progress: bool = False) -> RetrainSummary:
        started = time.perf_counter()
        with self.engine.connect() as lock:
            if not try_retrain_lock(lock):
                return RetrainSummary("skipped", "another retraining run is in progress")
            lock.commit()
            try:
                summary = self._run(force=force, show_progress=show_progress)
            finally:
                unlock_quietly(lock, RETRAIN_LOCK, "retraining")
        summary.seconds = round(time.perf_counter() - started, 1)
        log.info("retraining: %s (%s)", summary.status, summary.reason)
        return summary

    def _run(self, *, force: bool, show_progress: bool) -> RetrainSummary:
        with session_scope(self.engine) as session:
            if interrupted := fail_interrupted(session):
                log.warning("marked %d interrupted training run(s) failed", interrupted)
            unsaved, recorded = unsaved_failures(session)
            session.commit()
        if removed := remove_unsaved(self.settings.model_store, unsaved, recorded=recorded):
            log.info("removed %d model directories of failed candidates", removed)
        with session_scope(self.engine) as session:
            read_in_one_snapshot(session)  # recorded with the run: what it did not see counts toward the next
            read = read_point(session)
            active = active_version(session)
            new_labels = labels_since(session, last_run_read(session))
            items, vocabulary, taxonomy = labelled_items(session), scored_pairs(session), current_taxonomy(session)
            session.commit()
        if active is None or not active.path:
            return RetrainSummary("skipped", "no active model version with a directory yet; start a worker first")
        needed = self.settings.training.min_new_labels
        if not force and new_labels < needed:
            return RetrainSummary(
                "skipped", f"{new_labels} new human labels since the last run; {needed} needed (or use --force)"
            )
        train, holdout = split_holdout(items, self.settings.training.holdout_share)
        params = train_params(self.settings)
        pairs = same_tag_pairs(
            [(i.text, i.tags) for i in train], per_text=params.positives_per_text, max_pairs=params.max_pairs,
            seed=params.seed,
        )  # fmt: skip
        if not pairs and not vocabulary:
            return RetrainSummary("skipped", "empty training set: no two labelled items share a tag, and no pairs")
        if not holdout or not train:
            return RetrainSummary("skipped", f"{len(items)} labelled items are too few to hold some out for the gate")
        data = {"labelled_items": len(items), "train_items": len(train), "holdout_items": len(holdout),
                "pairs": len(pairs), "vocabulary_pairs": len(vocabulary), "new_labels": new_labels}  # fmt: skip
        name = f"{active.base_model.rsplit('/', 1)[-1]}-ft-{datetime.now(UTC):%Y%m%d-%H%M%S}"
        with session_scope(self.engine) as session:
            version_id = start_candidate(
                session,
                name=name,
                parent=active,
                params=asdict(params),
                data=data,
                read_at=read.time,
                read_snapshot=read.snapshot,
            )
            session.commit()
        started = time.perf_counter()
        try:
            data_set = TrainingSet(train, holdout, pairs, vocabulary, taxonomy[1] if taxonomy else None)
            candidate = Candidate(version_id, name, active, started)
            return self._train(candidate, data_set, params, show_progress=show_progress)
        except Exception as exc:
            log.exception("retraining candidate %d failed", version_id)
            reason = f"{type(exc).__name__}: {exc}"[:2000]
            self._mark_failed(version_id, seconds=time.perf_counter() - started, reason=reason)
            return RetrainSummary("failed", reason, version_id)

    def _mark_failed(self, version_id: int, *, seconds: float, reason: str) -> None:
        """Record the failure; when the database cannot take it, the row stays `training` for the next run.

        The next run marks such a row failed (interrupted) and removes its directory, so giving up here loses
        nothing. The lock timeout bounds the wait behind a verdict transaction the server still holds for a
        connection it has not yet noticed is gone.
        """
        try:
            with session_scope(self.engine) as session:
                session.execute(text("SELECT set_config('lock_timeout', '30s', true)"))
                finish_candidate(session, version_id, status="failed", seconds=seconds, reason=reason)
                session.commit()
        except SQLAlchemyError as exc:
            log.warning("could not mark candidate %d failed (the next run will): %s", version_id,
                        str(exc).splitlines()[0][:200])  # fmt: skip

    def _train(
        self, candidate: Candidate, data: TrainingSet, params: TrainParams, *, show_progress: bool
    ) -> RetrainSummary:
        import torch
        from sentence_transformers import SentenceTransformer

        device = pick_device(self.settings.model.device)
        model = SentenceTransformer(candidate.parent.path, device=device, trust_remote_code=False)
        # A pool process is pinned to its share of the cores for ingest; training may use all of them.
        threads = torch.get_num_threads()
        torch.set_num_threads(usable_cores())
        try:
            return self._train_model(model, candidate, data, params, show_progress=show_progress)
        finally:
            torch.set_num_threads(threads)

    def _train_model(
        self, model: Any, candidate: Candidate, data: TrainingSet, params: TrainParams, *, show_progress: bool
    ) -> RetrainSummary:
        gate_train, gate_test = as_labelled(data.train), as_labelled(data.holdout)

        def metrics(label: str) -> dict[str, Any]:
            model.eval()
            embedder = ModelEmbedder.from_model(model, version_name=label)
            return score_model(embedder, gate_train, gate_test, seed=params.seed, taxonomy=data.taxonomy)

        before = metrics(candidate.parent.name)
        scratch = self.settings.model_store / ".work"
        result = fine_tune(
            model, data.pairs, scored=data.vocabulary, tagged=[(i.text, i.tags) for i in data.train], params=params,
            output_dir=scratch, show_progress=show_progress,
        )  # fmt: skip
        after = metrics(candidate.name)
        gate = self.settings.training
        decision = decide(
            before, after, min_gain=gate.min_gain, max_ndcg_drop=gate.max_ndcg_drop, min_ndcg_gain=gate.min_ndcg_gain,
            max_accuracy_drop=gate.max_accuracy_drop,
        )  # fmt: skip
        summary_metrics = {"before": before, "after": after, "train_seconds": result.seconds, "steps": result.steps,
                           "device": result.device}  # fmt: skip
        path = save_model(model, self.settings.model_store, candidate.name)
        try:
            verify_model_dir(path, dims=candidate.parent.dims)
        except Exception:  # `_run` marks the row failed, without a path: nothing will ever use the directory
            remove_model_dir(path)
            raise
        if decision.promote:  # before the switch's transaction, where building it would hold back ingest
            build_hnsw_index(self.engine, candidate.version_id, candidate.parent.dims)
        verdict: RetrainSummary | None = None
        try:
            with session_scope(self.engine) as session:
                verdict = conclude(session, candidate, decision, summary_metrics, str(path))
                session.commit()
        except Exception as exc:  # a commit that raised may still have been applied: only the row can tell
            return settle_unacknowledged(self.engine, candidate, path, exc, verdict=verdict)
        summary = verdict
        if summary.status == "failed":  # another run marked the row failed: no row will ever point at `path`
            remove_model_dir(path)
        return summary
