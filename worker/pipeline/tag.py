"""Taggers on top of embeddings: one head per facet, zero-shot or supervised, with per-tag thresholds.

A facet head turns unit vectors into one score per tag. Zero-shot heads score by cosine to each tag's
prototype (the mean embedding of its name, description and examples). Supervised heads average a logistic
regression (softmax over the facet's tags for a single-label facet, one sigmoid per tag for a multi-label one)
with a similarity-weighted vote of the nearest labelled items. A tag is assigned when its score reaches the tag's
threshold; below it the head abstains. The same objects serve the worker and `tagworker eval tagging`.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray

HeadKind = Literal["zero-shot", "supervised"]
KNN_K = 10
KNN_TEMPERATURE = 0.05
KNN_WEIGHT = 0.5  # share of the kNN vote in a supervised score (chosen on a validation split of Banking77 train)


@dataclass(frozen=True)
class TagAssignment:
    """One tag a head gave an item."""

    tag: str
    score: float
    head: HeadKind


@dataclass(frozen=True)
class FacetHead:
    """Scores for the tags of one facet.

    Attributes:
        prototypes: (n_tags, dims) unit vectors (zero-shot).
        coef, intercept: (n_tags, dims) and (n_tags,) logistic weights (supervised).
        exemplars: (m, dims) labelled vectors for the kNN vote; exemplar_tags: (m, n_tags) 0/1.
        exemplar_mask: (m, n_tags) which exemplars are labelled for which tag (an item a person only took a tag
            off is labelled for that tag alone); None when every exemplar is labelled for every tag.
        thresholds: (n_tags,) minimum score to assign each tag.
    """

    facet: str
    multi_label: bool
    kind: HeadKind
    tags: tuple[str, ...]
    thresholds: NDArray[np.float32]
    applies_to: tuple[str, ...] = ("content", "feedback")
    prototypes: NDArray[np.float32] | None = None
    coef: NDArray[np.float32] | None = None
    intercept: NDArray[np.float32] | None = None
    exemplars: NDArray[np.float32] | None = None
    exemplar_tags: NDArray[np.float32] | None = None
    exemplar_mask: NDArray[np.bool_] | None = None

    def scores(self, vectors: NDArray[np.float32]) -> NDArray[np.float32]:
        """(n, dims) unit vectors -> (n, n_tags) scores in [0, 1] (cosine for zero-shot)."""
        if self.kind == "zero-shot":
            assert self.prototypes is not None
            return (vectors @ self.prototypes.T).astype(np.float32)
        assert self.coef is not None and self.intercept is not None
        logits = vectors @ self.coef.T + self.intercept
        model = _sigmoid(logits) if self.multi_label else _softmax(logits)
        return ((1 - KNN_WEIGHT) * model + KNN_WEIGHT * self._knn_vote(vectors)).astype(np.float32)

    def _knn_vote(self, vectors: NDArray[np.float32]) -> NDArray[np.float32]:
        """Per tag, the similarity-weighted share of the tag among the k nearest exemplars labelled for it."""
        assert self.exemplars is not None and self.exemplar_tags is not None
        similarity = vectors @ self.exemplars.T
        if self.exemplar_mask is None:
            return _vote(similarity, self.exemplar_tags)
        everywhere: NDArray[np.bool_] = np.all(self.exemplar_mask, axis=1)
        votes = _vote(np.where(everywhere, similarity, -np.inf), self.exemplar_tags)
        for j in np.flatnonzero(np.any(self.exemplar_mask[~everywhere], axis=0)):
            # Tags some exemplars are labelled for alone (absent labels): their own neighbours.
            masked = np.where(self.exemplar_mask[:, j], similarity, -np.inf)
            votes[:, j] = _vote(masked, self.exemplar_tags[:, j : j + 1])[:, 0]
        return votes

    def assign(self, scores: NDArray[np.float32]) -> tuple[list[list[TagAssignment]], NDArray[np.float32]]:
        """Tags per item and each item's margin to the nearest threshold (small = uncertain)."""
        above = scores - self.thresholds
        result: list[list[TagAssignment]] = []
        if self.multi_label:
            margins = np.abs(above).min(axis=1)
            for row, over in zip(scores, above, strict=True):
                picked = np.flatnonzero(over >= 0)
                result.append([TagAssignment(self.tags[j], float(row[j]), self.kind) for j in picked])
            return result, margins
        top = scores.argmax(axis=1)
        margins = np.abs(above[np.arange(len(top)), top])
        for row, over, j in zip(scores, above, top, strict=True):
            result.append([TagAssignment(self.tags[j], float(row[j]), self.kind)] if over[j] >= 0 else [])
        return result, margins


@dataclass(frozen=True)
class Tagger:
    """All facet heads of one taxonomy version for one model version."""

    heads: tuple[FacetHead, ...]

    def predict(
        self, vectors: NDArray[np.float32], kinds: list[str] | None = None
    ) -> tuple[list[list[TagAssignment]], NDArray[np.float32]]:
        """(n, dims) unit vectors -> tags per item, and per item the smallest margin over its facets.

        Args:
            kinds: each item's kind (content or feedback); a facet only tags the kinds it applies to.
        """
        tags: list[list[TagAssignment]] = [[] for _ in range(len(vectors))]
        margins = np.full(len(vectors), np.inf, dtype=np.float32)
        for head in self.heads:
            rows = np.arange(len(vectors))
            if kinds is not None:
                rows = np.flatnonzero([kind in head.applies_to for kind in kinds])
            if len(rows) == 0:
                continue
            assigned, margin = head.assign(head.scores(vectors[rows]))
            for i, found in zip(rows, assigned, strict=True):
                tags[i].extend(found)
            margins[rows] = np.minimum(margins[rows], margin)
        return tags, margins

    @property
    def kinds(self) -> dict[str, HeadKind]:
        return {head.facet: head.kind for head in self.heads}


def _vote(similarity: NDArray[np.float32], tags: NDArray[np.float32]) -> NDArray[np.float32]:
    """(n, m) similarities (-inf: not a neighbour) and (m, t) 0/1 tags -> (n, t) votes of the k nearest."""
    k = min(KNN_K, int(np.isfinite(similarity[0]).sum()) if len(similarity) else 0)
    if k == 0:
        return np.zeros((len(similarity), tags.shape[1]), dtype=np.float32)
    nearest = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
    weights = np.exp((np.take_along_axis(similarity, nearest, axis=1) - 1.0) / KNN_TEMPERATURE)
    votes = np.einsum("nk,nkt->nt", weights, tags[nearest])
    return votes / np.maximum(weights.sum(axis=1, keepdims=True), 1e-12)


def _softmax(logits: NDArray[np.float32]) -> NDArray[np.float32]:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def _sigmoid(logits: NDArray[np.float32]) -> NDArray[np.float32]:
    return (1.0 / (1.0 + np.exp(-np.clip(logits, -50, 50)))).astype(np.float32)


_ARRAYS = ("thresholds", "prototypes", "coef", "intercept", "exemplars", "exemplar_tags", "exemplar_mask")


def dump_tagger(tagger: Tagger) -> bytes:
    """Serialize to a numpy archive (no pickle: loading it can never execute code)."""
    meta = [
        {
            "facet": h.facet,
            "multi_label": h.multi_label,
            "kind": h.kind,
            "tags": list(h.tags),
            "applies_to": h.applies_to,
        }
        for h in tagger.heads
    ]
    arrays = {"meta": np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)}
    for i, head in enumerate(tagger.heads):
        for name in _ARRAYS:
            value = getattr(head, name)
            if value is not None:
                arrays[f"{i}.{name}"] = value
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)  # type: ignore[arg-type]
    return buffer.getvalue()


def load_tagger(blob: bytes) -> Tagger:
    """Inverse of `dump_tagger`."""
    with np.load(io.BytesIO(blob), allow_pickle=False) as archive:
        meta = json.loads(archive["meta"].tobytes().decode())
        heads = []
        for i, head in enumerate(meta):
            arrays = {name: archive[f"{i}.{name}"] for name in _ARRAYS if f"{i}.{name}" in archive.files}
            heads.append(
                FacetHead(
                    facet=head["facet"],
                    multi_label=head["multi_label"],
                    kind=head["kind"],
                    tags=tuple(head["tags"]),
                    applies_to=tuple(head["applies_to"]),
                    **arrays,
                )
            )
    return Tagger(heads=tuple(heads))
