"""`tagworker eval retrain`: simulate one retraining loop, the training labels playing the human corrections.

The stock model and the fine-tuned one are scored the same way: the worker's tagger fitted on the training
labels (accuracy, macro-F1 on the test lines) and same-tag retrieval among the test texts (each text is a
query; the other texts of its tag are the relevant ones; nDCG@10 and MRR@10).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from worker.evaluation.tagging import Labelled, Progress, embed_all, evaluate_tagging, keep_shots
from worker.pipeline.embed import Embedder, ModelEmbedder
from worker.pipeline.ranking import mrr_at_k, ndcg_at_k
from worker.pipeline.retrain import TrainParams, fine_tune
from worker.pipeline.taxonomy import Taxonomy
from worker.pipeline.training_pairs import same_tag_pairs


def same_tag_retrieval(vectors: NDArray[np.float32], labels: list[str], k: int = 10) -> dict[str, float]:
    """Mean nDCG@k and MRR@k when every row queries all the others.

    Args:
        vectors: (n, dims) unit-length rows.
        labels: n gold labels; rows sharing a label are relevant to each other.
    """
    similarity = vectors @ vectors.T
    np.fill_diagonal(similarity, -np.inf)
    top = np.argsort(-similarity, axis=1)[:, :k]
    members: dict[str, list[int]] = {}
    for i, label in enumerate(labels):
        members.setdefault(label, []).append(i)
    ndcg, mrr, queries = 0.0, 0.0, 0
    for i, label in enumerate(labels):
        relevant = {str(j): 1.0 for j in members[label] if j != i}
        if not relevant:
            continue
        ranked = [str(j) for j in top[i]]
        ndcg += ndcg_at_k(ranked, relevant, k)
        mrr += mrr_at_k(ranked, relevant, k)
        queries += 1
    return {f"ndcg{k}": round(100 * ndcg / max(queries, 1), 2), "mrr": round(100 * mrr / max(queries, 1), 2)}


def score_model(
    embedder: Embedder,
    train: Labelled,
    test: Labelled,
    *,
    seed: int,
    progress: Progress = lambda *_: None,
    taxonomy: Taxonomy | None = None,
) -> dict[str, Any]:
    """Tagging (the worker's fit and predict) and same-tag retrieval of one model."""
    vectors = embed_all(embedder, test.texts, progress, f"embed test {embedder.version_name}")
    tagging = evaluate_tagging(
        embedder, train, test, taxonomy=taxonomy, seed=seed, progress=progress, test_vectors=vectors
    )
    retrieval = same_tag_retrieval(vectors, [tags[0] for tags in test.tags])
    keep = ("accuracy", "macro_f1", "coverage")
    return {name: tagging[name] for name in keep} | retrieval


def evaluate_retrain(
    model: Any,
    train: Labelled,
    test: Labelled,
    *,
    shots: int | None = None,
    seed: int = 0,
    params: TrainParams | None = None,
    progress: Progress = lambda *_: None,
    show_progress: bool = False,
) -> dict[str, Any]:
    """Score `model` (a SentenceTransformer), fine-tune it on the training labels, score it again."""
    params = params or TrainParams(seed=seed)
    if shots:
        train = keep_shots(train, shots, seed)

    def embedder(name: str) -> ModelEmbedder:
        return ModelEmbedder.from_model(model, version_name=name)

    stock = score_model(embedder("stock"), train, test, seed=seed, progress=progress)
    tagged = list(zip(train.texts, train.tags, strict=True))
    pairs = same_tag_pairs(tagged, per_text=params.positives_per_text, max_pairs=params.max_pairs, seed=seed)
    with tempfile.TemporaryDirectory(prefix="tagworker-retrain-") as scratch:
        started = time.perf_counter()
        result = fine_tune(
            model, pairs, tagged=tagged, params=params,
            output_dir=Path(scratch), show_progress=show_progress,
        )  # fmt: skip
        train_seconds = time.perf_counter() - started
    model.eval()
    tuned = score_model(embedder("fine-tuned"), train, test, seed=seed, progress=progress)
    return {
        "stock": stock,
        "fine_tuned": tuned,
        "ndcg10_gain_pct": round(100 * (tuned["ndcg10"] - stock["ndcg10"]) / max(stock["ndcg10"], 1e-9), 1),
        "train_seconds": round(train_seconds, 1),
        "train_items": len(train.texts),
        "pairs": result.pairs,
        "steps": result.steps,
        "device": result.device,
        "params": vars(params),
    }
