"""The tag classifier loss trained beside the same-tag pairs: its dataset and its gradient."""

from __future__ import annotations

import re

import torch
from torch import Tensor, nn

from worker.pipeline.tag_loss import HEAD_PARAMETER, TagSoftmaxLoss, count_tags, tag_rows


class FakeEncoder(nn.Module):
    """Looks up a trainable vector per input id: enough of a SentenceTransformer for the loss."""

    def __init__(self, n: int, dims: int) -> None:
        super().__init__()
        self.table = nn.Embedding(n, dims)

    def get_embedding_dimension(self) -> int:
        return int(self.table.embedding_dim)

    def forward(self, features: dict[str, Tensor]) -> dict[str, Tensor]:
        return {"sentence_embedding": self.table(features["ids"])}


def test_tag_rows_give_each_tag_of_a_text_its_own_row_and_repeat_per_pass() -> None:
    rows = tag_rows([("refund late", ["billing", "delivery"]), ("app crash", ["bugs"])], passes=2)
    assert rows["text"] == ["refund late", "refund late", "app crash"] * 2
    assert rows["label"] == [0, 2, 1] * 2  # sorted names: billing, bugs, delivery
    assert count_tags(rows) == 3


def test_no_passes_means_no_rows_and_no_tags() -> None:
    rows = tag_rows([("a", ["x"])], passes=0)
    assert rows == {"text": [], "label": []}
    assert count_tags(rows) == 0


def test_training_the_loss_separates_the_tags_and_moves_the_head() -> None:
    torch.manual_seed(0)
    encoder = FakeEncoder(6, 8)
    loss = TagSoftmaxLoss(encoder, 2)
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    features = [{"ids": torch.arange(6)}]
    assert [name for name, _ in loss.named_parameters() if re.search(HEAD_PARAMETER, name)] == ["tag_head.weight"]
    head_before = loss.tag_head.weight.detach().clone()
    optimizer = torch.optim.SGD(loss.parameters(), lr=0.5)
    first = float(loss(features, labels).detach())
    for _ in range(50):
        optimizer.zero_grad()
        value = loss(features, labels)
        value.backward()
        optimizer.step()
    assert float(loss(features, labels).detach()) < first / 10
    assert not torch.equal(head_before, loss.tag_head.weight)
    vectors = nn.functional.normalize(encoder.table.weight, dim=-1)
    similarity = vectors @ vectors.T
    assert similarity[0, 1] > similarity[0, 4] and similarity[3, 4] > similarity[3, 1]


def test_a_margin_charges_the_true_tag_until_it_wins_by_that_much() -> None:
    torch.manual_seed(0)
    encoder = FakeEncoder(4, 8)
    plain, margined = TagSoftmaxLoss(encoder, 2), TagSoftmaxLoss(encoder, 2, margin=0.3)
    margined.tag_head.weight.data.copy_(plain.tag_head.weight.data)
    labels, features = torch.tensor([0, 0, 1, 1]), [{"ids": torch.arange(4)}]
    # The same embeddings and directions: with the margin, the true tag's logit is 20 * 0.3 lower.
    assert float(margined(features, labels)) > float(plain(features, labels))
    optimizer = torch.optim.SGD(margined.parameters(), lr=0.5)
    for _ in range(200):
        optimizer.zero_grad()
        margined(features, labels).backward()
        optimizer.step()
    unit = nn.functional.normalize(encoder.table.weight, dim=-1)
    directions = nn.functional.normalize(margined.tag_head.weight, dim=-1)
    cosine = unit @ directions.T
    own, other = cosine[torch.arange(4), labels], cosine[torch.arange(4), 1 - labels]
    assert bool((own - other > 0.3).all())
