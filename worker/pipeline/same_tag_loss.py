"""MultipleNegativesRankingLoss for same-tag pairs of texts that may carry several tags.

Batches never hold a tag twice (tag_batches.py), which makes every in-batch candidate a true negative only
when each text has one tag. Marketing taxonomies have several facets (funnel stage, channel, topic), so a
text usually carries one tag of each: the positive of a "channel: email" pair is often also "stage: awareness",
and for an "awareness" pair in the same batch it is then no negative at all. Plain MNRL would push the two
apart. This loss leaves such candidates out of that anchor's softmax; with one tag per text it is MNRL.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor, nn


def tags_by_text(tagged: Sequence[tuple[str, Sequence[str]]]) -> dict[str, frozenset[str]]:
    """Every tag each text carries (a text listed twice gets the union)."""
    found: dict[str, set[str]] = {}
    for text, tags in tagged:
        found.setdefault(text, set()).update(tags)
    return {text: frozenset(tags) for text, tags in found.items()}


def shared_tag_mask(pair_tags: Tensor, positive_tags: Tensor) -> Tensor:
    """Which in-batch candidates are not negatives.

    Args:
        pair_tags: (batch,) the tag index each pair was made for.
        positive_tags: (batch, tags) bool, the tags each pair's positive carries.

    Returns:
        (batch, batch) bool: True at [i, j], j != i, where positive j carries pair i's tag.
    """
    mask = positive_tags[:, pair_tags].T.clone()
    mask.fill_diagonal_(False)
    return mask


class SameTagRankingLoss(nn.Module):
    """Cross-entropy of `scale * cos(anchor, positive)` over the batch's positives, shared-tag ones left out."""

    pair_tag: Tensor
    positive_tags: Tensor

    def __init__(
        self, model: Any, *, pair_tags: Sequence[str], positive_tags: Sequence[frozenset[str]], scale: float = 20.0
    ) -> None:
        """Args: the tag each pair was made for, and all tags of each pair's positive, by pair index (the
        dataset's `label` column)."""
        super().__init__()
        self.model = model
        self.scale = scale
        names = sorted(set(pair_tags).union(*positive_tags))
        index = {name: i for i, name in enumerate(names)}
        self.register_buffer("pair_tag", torch.tensor([index[t] for t in pair_tags]), persistent=False)
        carried = torch.zeros((len(pair_tags), len(names)), dtype=torch.bool)
        for row, tags in enumerate(positive_tags):
            carried[row, [index[t] for t in tags]] = True
        self.register_buffer("positive_tags", carried, persistent=False)

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor) -> Tensor:
        """Mean loss of a batch of (anchor, positive) features; `labels` are the pairs' indices."""
        anchor_features, positive_features = sentence_features
        anchors = self.model(anchor_features)["sentence_embedding"]
        positives = self.model(positive_features)["sentence_embedding"]
        rows = labels.long().to(self.pair_tag.device)
        with torch.autocast(device_type=anchors.device.type, enabled=False):
            scores = (
                self.scale
                * nn.functional.normalize(anchors.float(), dim=-1)
                @ nn.functional.normalize(positives.float(), dim=-1).T
            )
            mask = shared_tag_mask(self.pair_tag[rows], self.positive_tags[rows]).to(scores.device)
            scores = scores.masked_fill(mask, float("-inf"))
            target = torch.arange(len(scores), device=scores.device)
            return nn.functional.cross_entropy(scores, target)

    def get_config_dict(self) -> dict[str, Any]:
        return {"scale": self.scale, "shared_tags": "left out of the negatives"}
