"""A cosine-softmax loss over the tags, trained jointly with the same-tag pairs.

MultipleNegativesRankingLoss shapes the space for retrieval, but on Banking77 it did not lift tagging: after
a 400-step full-set run the worker's tagger scored 93.51 against the stock model's 93.64. A classifier over
the tags, on the normalised sentence embedding, pulls each text towards one learned direction per tag and
away from all other tags at every step, which is what the tag heads (logistic regression and kNN on the
vectors) need. The head lives in the loss, not in the model, so the saved model is a plain
sentence-transformers model of unchanged shape; the tagger is refit on its vectors as before. With 3 passes
beside the pairs, the full-set run tags 93.93 (CPU) and retrieves as well as with the pairs alone (README).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from worker.pipeline.embed import model_dims

# The pattern the optimizer's learning-rate mapping finds the head's weight by (see fine_tune); it is searched
# in names like "tags.tag_head.weight" and must match nothing in the model.
HEAD_PARAMETER = r"(^|\.)tag_head\.weight$"


class TagSoftmaxLoss(nn.Module):
    """Cross-entropy of `scale * cos(embedding, tag direction)` over all tags; one label per row.

    With a `margin` (CosFace, Wang et al. 2018), the true tag's cosine counts `margin` less, so a text is only
    done once it is closer to its own tag than to any other by that much.
    """

    def __init__(self, model: Any, num_tags: int, *, scale: float = 20.0, margin: float = 0.0) -> None:
        super().__init__()
        self.model = model
        self.scale = scale
        self.margin = margin
        self.tag_head = nn.Linear(model_dims(model), num_tags, bias=False)
        self.cross_entropy = nn.CrossEntropyLoss()

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor) -> Tensor:
        """Mean cross-entropy of a batch.

        Args:
            sentence_features: one tokenized batch (the trainer's single text column).
            labels: (batch,) tag indices.
        """
        features = next(iter(sentence_features))
        embeddings = self.model(features)["sentence_embedding"]  # (batch, dims)
        # In fp32 even under bf16 autocast: at scale 20, bf16 logits would only be good to about 0.08.
        with torch.autocast(device_type=embeddings.device.type, enabled=False):
            unit = nn.functional.normalize(embeddings.float(), dim=-1)
            directions = nn.functional.normalize(self.tag_head.weight.float(), dim=-1)
            cosine = unit @ directions.T  # (batch, tags)
            if self.margin:
                cosine = cosine - self.margin * nn.functional.one_hot(labels, cosine.shape[1]).to(cosine.dtype)
            logits = self.scale * cosine
        return self.cross_entropy(logits, labels)


def tag_rows(tagged: Sequence[tuple[str, Sequence[str]]], *, passes: int) -> dict[str, list[Any]]:
    """The classification dataset: one (text, tag index) row per tag a text carries, repeated `passes` times.

    A text with several tags is one row per tag, so the softmax learns to split its mass between them (its loss
    cannot go below log of its tag count); a text with one tag, the common case of a correction, is unaffected.

    Returns:
        {"text": [...], "label": [...]} with label an index into the sorted tag names.
    """
    names = sorted({t for _, tags in tagged for t in tags})
    index = {name: i for i, name in enumerate(names)}
    rows = [(text, index[t]) for text, tags in tagged for t in tags]
    rows = rows * passes
    return {"text": [r[0] for r in rows], "label": [r[1] for r in rows]}


def count_tags(rows: dict[str, list[Any]]) -> int:
    """How many tags the rows of `tag_rows` cover (0 for no rows)."""
    return max(rows["label"], default=-1) + 1
