"""Clustering in the worker: full runs (beat or CLI) and live assignment of new feedback between runs."""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import Engine

from worker.db import session_scope
from worker.errors import ModelVersionRetired
from worker.pipeline.cluster import ClusterParams, ClusterResult, assign, cluster_vectors
from worker.pipeline.cluster_labels import ctfidf_keywords, representatives, short_label
from worker.pipeline.cluster_match import match_clusters
from worker.settings import ClusteringSettings
from worker.store.clusters import (
    Feedback,
    Themes,
    active_themes,
    finish_run,
    live_themes_elsewhere,
    load_feedback,
    mark_interrupted_runs,
    members_awaiting_vectors,
    record_lineage,
    release_members_of,
    retire,
    save_cluster,
    set_members,
    start_run,
    try_lock,
)
from worker.store.model_versions import backfill_progress, check_not_retired, version_status

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunSummary:
    run_id: int
    status: str
    items: int = 0
    clusters: int = 0
    noise_share: float | None = None
    seconds: float = 0.0
    message: str | None = None


def params_from(settings: ClusteringSettings) -> ClusterParams:
    names = {f.name for f in dataclasses.fields(ClusterParams)}
    return ClusterParams(**{k: v for k, v in settings.model_dump().items() if k in names})


class ClusteringService:
    """Runs a full clustering of the feedback under one model version; one run at a time across workers."""

    def __init__(self, *, engine: Engine, model_version_id: int, settings: ClusteringSettings) -> None:
        self.engine = engine
        self.model_version_id = model_version_id
        self.settings = settings

    def run(self) -> RunSummary:
        """Cluster, keep theme ids, label, write; a failure leaves the previous clusters as they were."""
        started = time.perf_counter()
        params = params_from(self.settings)
        with session_scope(self.engine) as session:
            run_id = start_run(session, model_version_id=self.model_version_id, params=dataclasses.asdict(params))
            session.commit()
        try:
            summary = self._run(run_id, params, started)
        except Exception as exc:
            log.exception("clustering run %d failed", run_id)
            message = f"{type(exc).__name__}: {exc}"[:2000]
            with session_scope(self.engine) as session:
                finish_run(session, run_id, status="failed", seconds=time.perf_counter() - started, message=message)
                session.commit()
            return RunSummary(run_id, "failed", seconds=time.perf_counter() - started, message=message)
        log.info("clustering run %s", summary)
        return summary

    def _run(self, run_id: int, params: ClusterParams, started: float) -> RunSummary:
        with session_scope(self.engine) as session:
            if not try_lock(session):
                return self._skip(session, run_id, started, 0, "another clustering run is in progress")
            if interrupted := mark_interrupted_runs(session, run_id):
                log.warning("marked %d interrupted clustering run(s) failed", interrupted)
            if version_status(session, self.model_version_id) == "retired":  # a worker that has not switched yet
                why = f"model version {self.model_version_id} is retired; the active version's runs keep the themes"
                return self._skip(session, run_id, started, 0, why)
            # Items the backfill failed to embed (it logged them) will never have a vector: waiting for them
            # would stop clustering for good.
            waiting = members_awaiting_vectors(
                session, model_version_id=self.model_version_id, window_days=self.settings.window_days,
                excluding=backfill_progress(session, self.model_version_id).get("failed", []),
            )  # fmt: skip
            if waiting:
                why = (f"{waiting} feedback items of earlier themes have no vector under this model version yet "
                       "(its backfill is not done); the backfill re-clusters when it is")  # fmt: skip
                return self._skip(session, run_id, started, 0, why)
            feedback = load_feedback(
                session, model_version_id=self.model_version_id, window_days=self.settings.window_days
            )
            n = len(feedback.item_ids)
            if n < self.settings.min_items:
                needed = f"at least {self.settings.min_items} are needed (TAGWORKER_CLUSTERING__MIN_ITEMS)"
                return self._skip(session, run_id, started, n, f"{n} feedback items; {needed}")
            result = cluster_vectors(feedback.vectors, params)
            if result.n_clusters == 0:
                return self._skip(
                    session,
                    run_id,
                    started,
                    n,
                    f"no theme in {n} items: HDBSCAN found none, or none kept enough members",
                )
            self._write(session, run_id, feedback, result)
            try:  # a switch during the run: its themes would take every theme back to the retired version
                check_not_retired(session, self.model_version_id)
            except ModelVersionRetired:
                session.rollback()
                why = f"model version {self.model_version_id} was retired during the run; nothing written"
                return self._skip(session, run_id, started, n, why)
            seconds = time.perf_counter() - started
            finish_run(session, run_id, status="succeeded", seconds=seconds, items=n, clusters=result.n_clusters,
                       noise_share=round(result.noise_share, 4))  # fmt: skip
            session.commit()
        return RunSummary(run_id, "succeeded", n, result.n_clusters, round(result.noise_share, 4), round(seconds, 2))

    def _skip(self, session, run_id: int, started: float, n: int, message: str) -> RunSummary:  # type: ignore[no-untyped-def]
        seconds = time.perf_counter() - started
        finish_run(session, run_id, status="skipped", seconds=seconds, items=n, message=message)
        session.commit()
        return RunSummary(run_id, "skipped", n, 0, None, round(seconds, 2), message)

    def _write(self, session, run_id: int, feedback: Feedback, result: ClusterResult) -> None:  # type: ignore[no-untyped-def]
        # Themes of another version (before a promotion or a rollback) keep their ids by shared members; those
        # that no cluster continues are retired, so one version's themes are live at a time.
        previous = active_themes(session, self.model_version_id)
        match = match_clusters(
            new_labels=result.labels, old_labels=feedback.current, new_centroids=result.centroids,
            old_ids=previous.ids + live_themes_elsewhere(session, self.model_version_id),
            old_centroids=previous.centroids,
        )  # fmt: skip
        keywords = ctfidf_keywords(feedback.texts, result.labels, result.n_clusters)
        closest = representatives(feedback.vectors, result.labels, result.centroids)
        sizes = np.bincount(result.labels[result.labels >= 0], minlength=result.n_clusters)
        ids = [
            save_cluster(
                session,
                cluster_id=match.keeps[j],
                run_id=run_id,
                model_version_id=self.model_version_id,
                values={
                    "label": short_label(keywords[j], f"theme {j + 1}"),
                    "keywords": keywords[j],
                    "representative_item_ids": [feedback.item_ids[r] for r in closest[j]],
                    "size": int(sizes[j]),
                    "centroid": result.centroids[j],
                },
            )
            for j in range(result.n_clusters)
        ]
        retired = [old for old, _ in match.retired]
        retire(session, retired)
        release_members_of(session, retired)
        set_members(
            session, item_ids=feedback.item_ids,
            cluster_ids=[ids[label] if label >= 0 else None for label in result.labels.tolist()],
            similarity=result.similarity.tolist(), method="run", run_id=run_id,
        )  # fmt: skip
        lineage = [(ids[j], event, related) for j, event, related in match.events]
        lineage += [(old, "retired", [ids[j] for j in into]) for old, into in match.retired]
        record_lineage(session, run_id, lineage)


class ThemeAssigner:
    """Assigns new feedback to the current themes between runs (cosine to centroids, noise below threshold)."""

    def __init__(self, *, engine: Engine, model_version_id: int, threshold: float, check_interval_s: float) -> None:
        self.engine = engine
        self.model_version_id = model_version_id
        self.threshold = threshold
        self.check_interval_s = check_interval_s
        self._themes = Themes([], np.zeros((0, 1), np.float32))
        self._loaded_at = -float("inf")

    def reload(self) -> None:
        """Read the themes again before the next assignment (a run replaced them)."""
        self._loaded_at = -float("inf")

    def assign(self, vectors: NDArray[np.float32]) -> tuple[list[int | None], list[float]] | None:
        """Theme id (None = noise) and similarity per vector; None before the first clustering run."""
        if time.monotonic() - self._loaded_at >= self.check_interval_s:
            with session_scope(self.engine) as session:
                self._themes = active_themes(session, self.model_version_id)
            self._loaded_at = time.monotonic()
        if not self._themes.ids or len(vectors) == 0:
            return None
        result = assign(vectors, self._themes.centroids, self.threshold)
        ids = [self._themes.ids[label] if label >= 0 else None for label in result.labels.tolist()]
        return ids, result.similarity.tolist()
