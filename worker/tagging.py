"""Tagging in the worker: keep a current tagger per process, refit it from human labels, tag and re-tag items."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import Engine, func, select, update
from sqlalchemy.orm import Session

from models import Tagger as TaggerRow
from models import TaxonomyVersion
from worker.db import session_scope
from worker.errors import ModelVersionRetired
from worker.pipeline.embed import Embedder
from worker.pipeline.tag import TagAssignment
from worker.pipeline.tag_fit import FitParams, fit_tagger, tag_text_vectors
from worker.settings import TaggingSettings
from worker.store.item_tags import ModelTag, items_to_retag, replace_model_tags, tagged_by_others_since
from worker.store.model_versions import check_not_retired
from worker.store.tags import (
    StoredTagger,
    current_taxonomy,
    human_labels,
    last_correction_id,
    latest_tagger,
    save_tagger,
    saw_every_label,
    tag_ids,
    try_fit_lock,
)
from worker.store.training import read_point

log = logging.getLogger(__name__)

# Far longer than an ingest batch's transaction stays open: how far before a re-tag finished to look for items
# tagged with an older tagger.
_LONGEST_BATCH = timedelta(hours=1)


@dataclass(frozen=True)
class Tagged:
    """What the tagger decided for a batch, ready for `replace_model_tags`."""

    tagger_id: int
    item_ids: list[int]
    margins: list[float | None]
    tags: list[ModelTag]


@dataclass(frozen=True)
class Prediction:
    """A tagger's output for a batch, by row; `for_items` attaches the stored item ids."""

    tagger_id: int
    tag_ids: dict[str, int]
    found: list[list[TagAssignment]]
    margins: NDArray[np.float32]

    def for_items(self, item_ids: list[int | None]) -> Tagged:
        """Rows whose item id is None (not written) are left out."""
        kept = [(i, item_id) for i, item_id in enumerate(item_ids) if item_id is not None]
        tags = [
            ModelTag(item_id, self.tag_ids[a.tag], a.score, a.head)
            for i, item_id in kept
            for a in self.found[i]
            if a.tag in self.tag_ids
        ]
        margins = [float(self.margins[i]) if np.isfinite(self.margins[i]) else None for i, _ in kept]
        return Tagged(self.tagger_id, [item_id for _, item_id in kept], margins, tags)


@dataclass(frozen=True)
class FitSummary:
    tagger_id: int
    heads: dict[str, str]
    labelled_items: int
    seconds: float


class TaggingService:
    """One per worker process; cheap to call per batch (looks for a newer tagger every `check_interval_s`)."""

    def __init__(self, *, engine: Engine, embedder: Embedder, model_version_id: int, settings: TaggingSettings):
        self.engine = engine
        self.embedder = embedder
        self.model_version_id = model_version_id
        self.settings = settings
        self._stored: StoredTagger | None = None
        self._tag_ids: dict[str, int] = {}
        self._checked_at = -float("inf")

    def current(self) -> StoredTagger | None:
        """The tagger to use now; fits one when the current taxonomy has none for this model version yet."""
        if time.monotonic() - self._checked_at < self.settings.check_interval_s:
            return self._stored
        with session_scope(self.engine) as session:
            taxonomy_id = session.scalar(select(func.max(TaxonomyVersion.id)))
            stored = self._latest(session)
        if taxonomy_id is None:
            return None
        if stored is None or stored.taxonomy_version_id != taxonomy_id:
            self.fit()  # returns at once when another process is fitting; we look again next batch
            with session_scope(self.engine) as session:
                stored = self._latest(session)
        if stored is not None and stored.id != (self._stored.id if self._stored else None):
            with session_scope(self.engine) as session:
                self._tag_ids = tag_ids(session)
            self._stored = stored
            log.info("using tagger %d (%s)", stored.id, stored.tagger.kinds)
        if stored is not None and stored.taxonomy_version_id == taxonomy_id:
            self._checked_at = time.monotonic()
        return self._stored

    def _latest(self, session: Session) -> StoredTagger | None:
        return latest_tagger(session, self.model_version_id, known_id=self._stored.id if self._stored else None)

    def predict(self, kinds: list[str], vectors: NDArray[np.float32]) -> Prediction | None:
        """Model tags for a batch by row, or None when no taxonomy is loaded."""
        stored = self.current()
        if stored is None or len(kinds) == 0:
            return None
        found, margins = stored.tagger.predict(vectors, kinds)
        return Prediction(stored.id, self._tag_ids, found, margins)

    def fit(self, *, force: bool = False) -> FitSummary | None:
        """Fit and store a new tagger when the taxonomy or the human labels changed; None if nothing to do.

        `force` fits even so, and waits for a fit running elsewhere rather than skip: after a backfill, that
        other fit may have read the version's vectors before they were all there.
        """
        started = time.perf_counter()
        with session_scope(self.engine) as session:
            if not try_fit_lock(session, wait=force):
                log.info("another process is fitting a tagger; skipping")
                return None
            found = current_taxonomy(session)
            if found is None:
                return None
            taxonomy_id, taxonomy = found
            stored = latest_tagger(session, self.model_version_id)
            # Before the label reads, so a label committed meanwhile is read and counted again, never missed.
            read, through = read_point(session), last_correction_id(session)
            fresh = stored and stored.taxonomy_version_id == taxonomy_id and saw_every_label(session, stored.id)
            if fresh and not force:
                return None
            labelled = human_labels(session, self.model_version_id, self.embedder.dims)
            params = FitParams(
                min_examples=self.settings.min_examples, zero_shot_threshold=self.settings.zero_shot_threshold
            )
            tagger = fit_tagger(taxonomy, tag_text_vectors(self.embedder, taxonomy), labelled, params)
            seconds = round(time.perf_counter() - started, 3)
            tagger_id = save_tagger(
                session, tagger, taxonomy_version_id=taxonomy_id, model_version_id=self.model_version_id,
                labels_through=through, labels_read=read, labelled_items=len(labelled.tags), seconds=seconds,
            )  # fmt: skip
            session.commit()
        self._checked_at = -float("inf")
        log.info(
            "fitted tagger %d: %s from %d labelled items in %.2fs", tagger_id, tagger.kinds, len(labelled.tags), seconds
        )
        return FitSummary(tagger_id, dict(tagger.kinds), len(labelled.tags), seconds)

    def retag_pending(self) -> int:
        """Re-tag the version's items that the newest tagger did not tag last; returns how many.

        All of them after a refit. After that, the few an ingest batch tagged with the tagger before (it read it
        up to `check_interval_s` earlier, or its transaction outlasted the re-tag), and after a rollback the items
        the other version's tagger tagged meanwhile.
        """
        self._checked_at = -float("inf")
        stored = self.current()
        if stored is None:
            return 0
        with session_scope(self.engine) as session:
            retagged_at = session.scalar(select(TaggerRow.retagged_at).where(TaggerRow.id == stored.id))
            if retagged_at is not None and not tagged_by_others_since(
                session, model_version_id=self.model_version_id, tagger_id=stored.id,
                since=retagged_at - _LONGEST_BATCH,
            ):  # fmt: skip
                return 0
        done, after = 0, 0
        while True:
            with session_scope(self.engine) as session:
                rows = items_to_retag(session, model_version_id=self.model_version_id, tagger_id=stored.id,
                                      after=after, limit=self.settings.retag_chunk)  # fmt: skip
                if not rows:
                    session.execute(
                        update(TaggerRow).where(TaggerRow.id == stored.id).values(retagged_at=datetime.now(UTC))
                    )
                    session.commit()
                    break
                vectors = np.stack([np.asarray(r.vector, dtype=np.float32) for r in rows])
                prediction = self.predict([r.kind for r in rows], vectors)
                if prediction is not None:
                    write_tagged(session, prediction.for_items([r.item_id for r in rows]), self.model_version_id)
                try:  # a worker that has not switched yet must not re-tag over the new version's tags
                    check_not_retired(session, self.model_version_id)
                except ModelVersionRetired:
                    log.info("model version %d was retired; stopped re-tagging", self.model_version_id)
                    return done
                session.commit()
                done, after = done + len(rows), rows[-1].item_id
        log.info("re-tagged %d items with tagger %d", done, stored.id)
        return done


def write_tagged(session: Session, tagged: Tagged, model_version_id: int) -> None:
    """Write a batch's model tags in the caller's transaction."""
    replace_model_tags(
        session, item_ids=tagged.item_ids, margins=tagged.margins, tags=tagged.tags,
        tagger_id=tagged.tagger_id, model_version_id=model_version_id,
    )  # fmt: skip
