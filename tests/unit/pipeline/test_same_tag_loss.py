"""The same-tag ranking loss for texts with several tags: shared-tag candidates are not negatives."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from worker.pipeline.same_tag_loss import SameTagRankingLoss, shared_tag_mask, tags_by_text


def test_a_candidate_carrying_the_anchor_pairs_tag_is_masked_and_nothing_else() -> None:
    pair_tags = torch.tensor([0, 1, 2])  # pairs made for tags 0, 1, 2
    positive_tags = torch.tensor(
        [[True, True, False],  # positive 0 carries tags 0 and 1: no negative for pair 1
         [False, True, False],
         [False, False, True]]
    )  # fmt: skip

    mask = shared_tag_mask(pair_tags, positive_tags)

    assert mask.tolist() == [[False, False, False], [True, False, False], [False, False, False]]


def test_tags_by_text_joins_the_tags_of_a_text_listed_twice() -> None:
    tagged = [("a", ["email"]), ("b", ["tofu"]), ("a", ["tofu"])]
    assert tags_by_text(tagged) == {"a": frozenset({"email", "tofu"}), "b": frozenset({"tofu"})}


class Rows(nn.Module):
    """A stand-in model: each text's 'features' is already its embedding."""

    def forward(self, features: dict[str, Tensor]) -> dict[str, Tensor]:
        return {"sentence_embedding": features["x"]}


def loss_of(loss: nn.Module, anchors: Tensor, positives: Tensor, labels: Tensor) -> float:
    features: list[dict[str, Any]] = [{"x": anchors}, {"x": positives}]
    return float(loss(features, labels))


def test_with_one_tag_per_text_it_is_plain_mnrl_and_a_shared_tag_lowers_the_loss() -> None:
    torch.manual_seed(0)
    anchors, positives = torch.randn(3, 8), torch.randn(3, 8)
    labels = torch.tensor([0, 1, 2])
    single = SameTagRankingLoss(Rows(), pair_tags=["a", "b", "c"], positive_tags=[{"a"}, {"b"}, {"c"}])  # type: ignore[list-item]
    scores = 20 * nn.functional.normalize(anchors, dim=-1) @ nn.functional.normalize(positives, dim=-1).T
    plain = float(nn.functional.cross_entropy(scores, torch.arange(3)))
    assert abs(loss_of(single, anchors, positives, labels) - plain) < 1e-5

    shared = SameTagRankingLoss(Rows(), pair_tags=["a", "b", "c"], positive_tags=[{"a", "b"}, {"b"}, {"c"}])  # type: ignore[list-item]
    assert loss_of(shared, anchors, positives, labels) < plain, "pair b no longer pushes away positive 0"
