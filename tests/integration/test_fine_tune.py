"""fine_tune on the real model with pairs, vocabulary pairs and the tag classifier in one run."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from sentence_transformers import SentenceTransformer

from worker.pipeline.embed import resolve_model_path
from worker.pipeline.retrain import TrainParams, fine_tune
from worker.pipeline.training_pairs import ScoredPair, same_tag_pairs

pytestmark = pytest.mark.slow

TEXTS = {
    "billing": ["I was charged twice", "Refund my last invoice", "Why is my bill higher", "Cancel the renewal fee"],
    "bugs": ["The app crashes on login", "Export button does nothing", "Sync fails every night", "Blank screen"],
    "onboarding": ["Setup took two days", "The tutorial is confusing", "Could not import contacts", "No guide"],
}


def test_three_losses_train_in_the_computed_steps_and_the_head_stays_out_of_the_model(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    model = SentenceTransformer(resolve_model_path("all-MiniLM-L6-v2"), device="cpu")
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    tagged = [(text, [tag]) for tag, group in TEXTS.items() for text in group]
    pairs = same_tag_pairs(tagged, per_text=3, max_pairs=100, seed=0)  # 36 pairs, batches of 3 (3 tags)
    vocabulary = [ScoredPair("CAC", "customer acquisition cost", 1.0), ScoredPair("churn", "organic produce", 0.05)]
    params = TrainParams(batch_size=8, tag_passes=2, max_steps=1_000)  # 24 tag rows in batches of 8
    with caplog.at_level(logging.INFO, logger="worker.pipeline.retrain"):
        result = fine_tune(
            model, pairs, scored=vocabulary, tagged=tagged, params=params, output_dir=tmp_path,
        )  # fmt: skip
    assert result.steps == 12 + 1 + 3  # 36 pairs and 2 vocabulary pairs in batches of 3; 24 tag rows in 8s
    assert "36 pairs + 2 scored + 24 tag rows" in caplog.text
    after = model.state_dict()
    assert after.keys() == before.keys()  # the classifier's head is not part of the saved model
    assert any(not torch.equal(before[name], after[name]) for name in before)


def test_without_tag_passes_the_pairs_train_alone(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    model = SentenceTransformer(resolve_model_path("all-MiniLM-L6-v2"), device="cpu")
    tagged = [(text, [tag]) for tag, group in TEXTS.items() for text in group]
    pairs = same_tag_pairs(tagged, per_text=1, max_pairs=100, seed=0)
    with caplog.at_level(logging.INFO, logger="worker.pipeline.retrain"):
        result = fine_tune(
            model, pairs, tagged=tagged, params=TrainParams(batch_size=8, tag_passes=0), output_dir=tmp_path,
        )  # fmt: skip
    assert result.steps == 12 // 3
    assert "+ 0 tag rows" in caplog.text
