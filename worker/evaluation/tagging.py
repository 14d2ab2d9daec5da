"""`tagworker eval tagging`: fit the worker's taggers on labelled lines and score them on held-out lines.

Lines are `{"text": str, "tags": [str, ...]}`. Without a taxonomy file the tags of the data form one facet,
multi-label when any line has several tags. The same `fit_tagger` and `Tagger` run here as in the worker.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from worker.errors import ConfigurationError
from worker.jsonl import json_lines
from worker.pipeline.embed import Embedder
from worker.pipeline.tag import Tagger
from worker.pipeline.tag_fit import FitParams, LabelledSet, fit_tagger, tag_text_vectors
from worker.pipeline.taxonomy import Taxonomy, single_facet

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class Labelled:
    """Texts with their gold tags (first tag = the one `accuracy` compares with)."""

    texts: list[str]
    tags: list[list[str]]


def read_labelled(path: Path) -> Labelled:
    """Read `{"text", "tags"}` lines; a line without text or tags is an error that names the line."""
    expected = '{"text": str, "tags": [str]}'
    texts, tags = [], []
    for number, row in json_lines(path, expected):
        try:
            text, row_tags = row["text"], row["tags"]
        except (KeyError, TypeError) as exc:
            raise ConfigurationError(f"{path}:{number}: expected {expected} ({exc})") from None
        if not isinstance(text, str) or not text.strip() or not isinstance(row_tags, list) or not row_tags:
            raise ConfigurationError(f"{path}:{number}: needs a non-empty text and at least one tag")
        texts.append(text)
        tags.append([str(t) for t in row_tags])
    if not texts:
        raise ConfigurationError(f"{path} has no labelled lines")
    return Labelled(texts, tags)


def keep_shots(data: Labelled, shots: int, seed: int) -> Labelled:
    """At most `shots` lines per tag (a line counts for every tag it carries)."""
    rng = random.Random(seed)
    order = list(range(len(data.texts)))
    rng.shuffle(order)
    counts: dict[str, int] = {}
    kept = []
    for i in order:
        if any(counts.get(t, 0) < shots for t in data.tags[i]):
            kept.append(i)
            for t in data.tags[i]:
                counts[t] = counts.get(t, 0) + 1
    return Labelled([data.texts[i] for i in kept], [data.tags[i] for i in kept])


def taxonomy_for(train: Labelled, test: Labelled) -> Taxonomy:
    """One facet of every tag in the data, in order of first appearance."""
    names = list(dict.fromkeys(t for tags in train.tags + test.tags for t in tags))
    multi = any(len(tags) > 1 for tags in train.tags + test.tags)
    return single_facet("label", names, multi_label=multi)


def embed_all(embedder: Embedder, texts: list[str], progress: Progress, stage: str) -> NDArray[np.float32]:
    """Embed in batches of 256, reporting progress."""
    parts = []
    for start in range(0, len(texts), 256):
        parts.append(embedder.embed(texts[start : start + 256]).vectors)
        progress(stage, min(start + 256, len(texts)), len(texts))
    return np.vstack(parts) if parts else np.zeros((0, embedder.dims), dtype=np.float32)


def score(tagger: Tagger, vectors: NDArray[np.float32], gold: list[list[str]]) -> dict[str, float]:
    """accuracy (top tag in the first gold tag's facet), micro/macro F1 of assigned tags, coverage."""
    assigned, _ = tagger.predict(vectors)
    facet_scores = {head.facet: (head, head.scores(vectors)) for head in tagger.heads}
    facet_of = {t: head.facet for head in tagger.heads for t in head.tags}
    hits = 0
    for i, tags in enumerate(gold):
        facet = facet_of.get(tags[0])
        if facet is not None:
            head, scores = facet_scores[facet]
            hits += head.tags[int(scores[i].argmax())] == tags[0]
    predicted = [{a.tag for a in found} for found in assigned]
    truth = [{t for t in tags if t in facet_of} for tags in gold]
    micro, macro = f1_scores(predicted, truth)
    return {
        "accuracy": round(100 * hits / len(gold), 2),
        "micro_f1": round(100 * micro, 2),
        "macro_f1": round(100 * macro, 2),
        "coverage": round(100 * sum(bool(p) for p in predicted) / len(gold), 2),
    }


def f1_scores(predicted: list[set[str]], truth: list[set[str]]) -> tuple[float, float]:
    """Micro and macro F1 over tags that occur in either side."""
    tags = sorted(set().union(*predicted, *truth))
    tp = {t: 0 for t in tags}
    fp = dict(tp)
    fn = dict(tp)
    for p, g in zip(predicted, truth, strict=True):
        for t in p & g:
            tp[t] += 1
        for t in p - g:
            fp[t] += 1
        for t in g - p:
            fn[t] += 1

    def f1(a: int, b: int, c: int) -> float:
        return 2 * a / (2 * a + b + c) if a + b + c else 0.0

    micro = f1(sum(tp.values()), sum(fp.values()), sum(fn.values()))
    macro = sum(f1(tp[t], fp[t], fn[t]) for t in tags) / len(tags) if tags else 0.0
    return micro, macro


def evaluate_tagging(
    embedder: Embedder,
    train: Labelled,
    test: Labelled,
    *,
    taxonomy: Taxonomy | None = None,
    shots: int | None = None,
    zero_shot: bool = False,
    seed: int = 0,
    baseline: bool = False,
    progress: Progress = lambda *_: None,
    test_vectors: NDArray[np.float32] | None = None,
) -> dict[str, Any]:
    """Fit on `train` (or on tag texts alone with `zero_shot`), score on `test` (its vectors when already made)."""
    started = time.perf_counter()
    names_only = taxonomy is None
    taxonomy = taxonomy or taxonomy_for(train, test)
    if shots:
        train = keep_shots(train, shots, seed)
    tag_vectors = tag_text_vectors(embedder, taxonomy, names_only=names_only)
    labelled = LabelledSet.empty(embedder.dims)
    if not zero_shot:
        labelled = LabelledSet(
            embed_all(embedder, train.texts, progress, "embed train"), [frozenset(t) for t in train.tags]
        )
    tagger = fit_tagger(taxonomy, tag_vectors, labelled, FitParams(seed=seed), zero_shot=zero_shot)
    if test_vectors is None:
        test_vectors = embed_all(embedder, test.texts, progress, "embed test")
    result: dict[str, Any] = score(tagger, test_vectors, test.tags)
    result |= {
        "seconds": round(time.perf_counter() - started, 1),
        "train_items": 0 if zero_shot else len(train.texts),
        "test_items": len(test.texts),
        "tags": len(taxonomy.tag_names),
        "heads": tagger.kinds,
        "model": embedder.version_name,
    }
    if baseline and not zero_shot:
        from worker.evaluation.tfidf_baseline import tfidf_baseline

        result["baseline_tfidf"] = tfidf_baseline(train, test, taxonomy, seed=seed)
    return result
