"""Batches of same-tag pairs that hold no tag twice, and the batch sampler factory the trainer is given."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from sentence_transformers import DefaultBatchSampler
from torch.utils.data import RandomSampler


def distinct_tag_order(tags: Sequence[str], batch_size: int, rng: random.Random) -> list[int]:
    """Indices in an order whose consecutive blocks of `batch_size` hold no tag twice, where the counts allow.

    Each round takes one pair from each of the `batch_size` tags with the most pairs left, so the last
    batches are not all one tag.
    """
    queues: dict[str, list[int]] = defaultdict(list)
    for index, tag in enumerate(tags):
        queues[tag].append(index)
    for queue in queues.values():
        rng.shuffle(queue)
    order: list[int] = []
    while queues:
        names = sorted(queues, key=lambda t: (-len(queues[t]), rng.random()))[:batch_size]
        for tag in names:
            order.append(queues[tag].pop())
            if not queues[tag]:
                del queues[tag]
    return order


class DistinctTagBatchSampler(DefaultBatchSampler):
    """Batches of same-tag pairs with no tag twice: every in-batch negative of MNRL is a true negative."""

    def __init__(self, dataset: Any, *, tags: Sequence[str], batch_size: int, drop_last: bool, seed: int = 0, **_: Any):
        super().__init__(dataset, batch_size=batch_size, drop_last=drop_last, seed=seed)
        self.tags = list(tags)

    def __iter__(self) -> Iterator[list[int]]:
        order = distinct_tag_order(self.tags, self.batch_size, random.Random(self.seed + self.epoch))
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            if len(batch) == self.batch_size or not self.drop_last:
                yield batch

    def __len__(self) -> int:
        full, rest = divmod(len(self.tags), self.batch_size)
        return full + (1 if rest and not self.drop_last else 0)


def batch_sampler_for(tags: Sequence[str], *, label_batch_size: int) -> Callable[..., Any]:
    """The trainer's batch sampler factory: distinct tags for the same-tag pairs, shuffled for the rest.

    The tag classifier's rows get `label_batch_size`: unlike the pairs' batches, theirs need not stay under the
    number of tags, and with few tags the capped size would make its steps tiny and noisy.
    """

    def make(dataset: Any, **kwargs: Any) -> Any:
        if "anchor" in dataset.column_names:
            return DistinctTagBatchSampler(dataset, tags=tags, **kwargs)
        if "label" in dataset.column_names:
            kwargs["batch_size"] = label_batch_size
        return DefaultBatchSampler(RandomSampler(dataset, generator=kwargs.get("generator")), **kwargs)

    return make
