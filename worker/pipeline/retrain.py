"""Fine-tune a sentence-transformers model on human tag decisions with `SentenceTransformerTrainer`.

Three datasets train in one run, their batches interleaved in proportion to their size:
- (anchor, positive) pairs of texts that people gave the same tag, with MultipleNegativesRankingLoss: every
  other positive in the batch is a negative, so same-tag texts are pulled together and other tags pushed away,
  which is what same-tag retrieval needs. Batches never hold two pairs of the same tag, so no in-batch
  "negative" is in truth a positive.
- (text, tag) rows with a cosine-softmax loss over all tags (tag_loss.py), which is what the tag heads need:
  on Banking77 the pairs alone lifted retrieval but not tagging accuracy.
- Optional scored vocabulary pairs ("CAC" / "customer acquisition cost" 1.0) with CoSENT.
"""

from __future__ import annotations

import logging
import random
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sentence_transformers import DefaultBatchSampler
from torch.utils.data import RandomSampler

from worker.errors import ConfigurationError
from worker.jsonl import json_lines
from worker.pipeline.tag_loss import HEAD_PARAMETER, TagSoftmaxLoss, count_tags, tag_rows

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainParams:
    """Caps and hyperparameters of one fine-tuning run."""

    epochs: int = 1
    batch_size: int = 64
    learning_rate: float = 1e-4
    warmup_ratio: float = 0.1
    positives_per_text: int = 7
    max_pairs: int = 20_000
    max_steps: int = 2_000
    seed: int = 0
    # Passes over the labelled texts for the tag classifier loss (see tag_loss.py) per epoch; 0 turns it off.
    tag_passes: int = 3
    head_learning_rate: float = 1e-2


@dataclass(frozen=True)
class ScoredPair:
    """A vocabulary pair from `tagworker train pairs add`: similarity in [0, 1]."""

    a: str
    b: str
    score: float


@dataclass(frozen=True)
class TrainResult:
    """What a fine-tuning run did."""

    pairs: int
    scored_pairs: int
    steps: int
    seconds: float
    device: str


@dataclass(frozen=True)
class GateDecision:
    """Whether a candidate replaces the active version, and why."""

    promote: bool
    reason: str


def decide(
    before: dict[str, float],
    after: dict[str, float],
    *,
    min_gain: float,
    max_ndcg_drop: float,
    min_ndcg_gain: float,
    max_accuracy_drop: float,
) -> GateDecision:
    """Promote a candidate that is better at one job and no worse at the other (metrics in percent points).

    Better at tagging: held-out accuracy gains `min_gain` and nDCG@10 drops at most `max_ndcg_drop`. Better at
    retrieval: nDCG@10 gains `min_ndcg_gain` and accuracy drops at most `max_accuracy_drop`.
    """
    gain = after["accuracy"] - before["accuracy"]
    ndcg_gain = after["ndcg10"] - before["ndcg10"]
    summary = (
        f"accuracy {before['accuracy']:.2f} -> {after['accuracy']:.2f}, "
        f"nDCG@10 {before['ndcg10']:.2f} -> {after['ndcg10']:.2f}"
    )
    if gain >= min_gain and ndcg_gain >= -max_ndcg_drop:
        return GateDecision(True, f"{summary}: promoted (tags better)")
    if ndcg_gain >= min_ndcg_gain and gain >= -max_accuracy_drop:
        return GateDecision(True, f"{summary}: promoted (retrieves better)")
    if gain >= min_gain:
        return GateDecision(False, f"{summary}: nDCG@10 dropped {-ndcg_gain:.2f} points (allowed {max_ndcg_drop})")
    if ndcg_gain >= min_ndcg_gain:
        return GateDecision(False, f"{summary}: accuracy dropped {-gain:.2f} points (allowed {max_accuracy_drop})")
    return GateDecision(
        False,
        f"{summary}: accuracy gain {gain:+.2f} is below the margin {min_gain} and nDCG@10 gain {ndcg_gain:+.2f} "
        f"is below {min_ndcg_gain}",
    )


def read_scored_pairs(path: Path) -> list[ScoredPair]:
    """`{"a": str, "b": str, "score": float in [0, 1]}` per line; a bad line is an error that names it.

    Each phrase may have at most 1,000 bytes of UTF-8.
    """
    expected = '{"a": str, "b": str, "score": 0..1}'
    # PostgreSQL's btree index on (a, b) holds rows of at most 2,704 bytes (a third of a page), and text that
    # does not compress is stored in full: two phrases of 1,000 bytes each stay well under it. Counted in bytes,
    # not characters, because a character may take up to four.
    max_bytes = 1000
    pairs = []
    for number, row in json_lines(path, expected):
        try:
            a, b, score = row["a"], row["b"], float(row["score"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigurationError(f"{path}:{number}: expected {expected} ({exc})") from None
        if not isinstance(a, str) or not isinstance(b, str) or not a.strip() or not b.strip():
            raise ConfigurationError(f"{path}:{number}: a and b must be non-empty strings")
        if not 0 <= score <= 1:
            raise ConfigurationError(f"{path}:{number}: score {score} is outside 0..1")
        for name, phrase in (("a", a.strip()), ("b", b.strip())):
            # JSON can escape what PostgreSQL text cannot hold: NUL, and half a surrogate pair.
            if "\x00" in phrase or any("\ud800" <= c <= "\udfff" for c in phrase):
                raise ConfigurationError(f"{path}:{number}: {name} holds \\u0000 or half a surrogate pair: remove it")
            if (size := len(phrase.encode("utf-8"))) > max_bytes:
                raise ConfigurationError(
                    f"{path}:{number}: {name} is {size:,} bytes of UTF-8 ({len(phrase):,} characters); a vocabulary "
                    f"phrase may have at most {max_bytes:,}: shorten it"
                )
        pairs.append(ScoredPair(a.strip(), b.strip(), score))
    if not pairs:
        raise ConfigurationError(f"{path} has no pairs")
    return pairs


def same_tag_pairs(
    rows: Sequence[tuple[str, Sequence[str]]], *, per_text: int, max_pairs: int, seed: int
) -> list[tuple[str, str, str]]:
    """(anchor, positive, tag) triples from (text, tags) rows: each text with up to `per_text` others of its tag.

    A text counts under every tag it carries. Tags with a single text give no pair. Pairs are shuffled, and
    when capped each tag keeps its share.
    """
    rng = random.Random(seed)
    by_tag: dict[str, list[str]] = defaultdict(list)
    for text, tags in rows:
        for tag in tags:
            by_tag[tag].append(text)
    pairs = []
    for tag, members in by_tag.items():
        for i, anchor in enumerate(members):
            others = members[:i] + members[i + 1 :]
            for positive in rng.sample(others, min(per_text, len(others))):
                pairs.append((anchor, positive, tag))
    rng.shuffle(pairs)
    return pairs[:max_pairs]


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


def fine_tune(
    model: Any,
    pairs: list[tuple[str, str, str]],
    *,
    scored: Sequence[ScoredPair] = (),
    tagged: Sequence[tuple[str, Sequence[str]]] = (),
    params: TrainParams,
    output_dir: Path,
    show_progress: bool = False,
) -> TrainResult:
    """Train `model` (a SentenceTransformer) in place; checkpoints go nowhere but `output_dir`.

    Args:
        pairs: (anchor, positive, tag) same-tag pairs, trained with MultipleNegativesRankingLoss.
        scored: vocabulary pairs, trained with CoSENT.
        tagged: (text, tags) rows for the tag classifier loss, used when `params.tag_passes` > 0.
    """
    from sentence_transformers import SentenceTransformerTrainer

    if not pairs and not scored:
        raise ValueError("nothing to train on: no two texts share a tag and there are no scored pairs")
    rows = tag_rows(tagged, passes=params.tag_passes)
    started = time.perf_counter()
    datasets, losses = _datasets_and_losses(model, pairs, scored, rows)
    # A batch holds each tag at most once (see DistinctTagBatchSampler), so it cannot be larger than the tags.
    tags = len({p[2] for p in pairs})
    batch_size = max(2, min(params.batch_size, tags)) if pairs else params.batch_size
    sizes = {name: params.batch_size if name == "tags" else batch_size for name in datasets}
    steps_per_epoch = sum(-(-len(d) // sizes[name]) for name, d in datasets.items())
    max_steps = min(params.max_steps, steps_per_epoch * params.epochs)
    args = _arguments(
        params, output_dir=output_dir, batch_size=batch_size, max_steps=max_steps, pair_tags=[p[2] for p in pairs],
        head="tags" in losses, show_progress=show_progress,
    )  # fmt: skip
    trainer = SentenceTransformerTrainer(
        model=model,
        args=args,
        train_dataset=datasets if len(datasets) > 1 else next(iter(datasets.values())),
        loss=losses if len(losses) > 1 else next(iter(losses.values())),
    )
    _quiet_stdout(trainer)
    output = trainer.train()
    seconds = time.perf_counter() - started
    log.info(
        "fine-tuned on %d pairs + %d scored + %d tag rows in %d steps, %.1fs",
        len(pairs), len(scored), len(rows["text"]), output.global_step, seconds,
    )  # fmt: skip
    return TrainResult(len(pairs), len(scored), int(output.global_step), round(seconds, 1), str(model.device))


def _datasets_and_losses(
    model: Any, pairs: list[tuple[str, str, str]], scored: Sequence[ScoredPair], rows: dict[str, list[Any]]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The trainer's datasets and their losses, by name; an empty source gets neither."""
    from datasets import Dataset
    from sentence_transformers.sentence_transformer.losses import CoSENTLoss, MultipleNegativesRankingLoss

    datasets: dict[str, Any] = {}
    losses: dict[str, Any] = {}
    if pairs:
        datasets["same_tag"] = Dataset.from_dict({"anchor": [p[0] for p in pairs], "positive": [p[1] for p in pairs]})
        losses["same_tag"] = MultipleNegativesRankingLoss(model)
    if scored:
        datasets["vocabulary"] = Dataset.from_dict(
            {"a": [p.a for p in scored], "b": [p.b for p in scored], "score": [float(p.score) for p in scored]}
        )
        losses["vocabulary"] = CoSENTLoss(model)
    tag_count = count_tags(rows)
    if tag_count > 1:
        datasets["tags"] = Dataset.from_dict(rows)
        losses["tags"] = TagSoftmaxLoss(model, tag_count)
    return datasets, losses


def _arguments(
    params: TrainParams,
    *,
    output_dir: Path,
    batch_size: int,
    max_steps: int,
    pair_tags: list[str],
    head: bool,
    show_progress: bool,
) -> Any:
    """`SentenceTransformerTrainingArguments` for one run: bf16 (or fp16) on a GPU, fp32 on CPU, no checkpoints."""
    import torch
    from sentence_transformers import SentenceTransformerTrainingArguments
    from sentence_transformers.sentence_transformer.training_args import MultiDatasetBatchSamplers

    cuda = torch.cuda.is_available()
    return SentenceTransformerTrainingArguments(
        output_dir=str(output_dir),
        num_train_epochs=params.epochs,
        max_steps=max_steps,
        per_device_train_batch_size=batch_size,
        learning_rate=params.learning_rate,
        # The tag head starts at random and must find its directions within a few hundred steps.
        learning_rate_mapping={HEAD_PARAMETER: params.head_learning_rate} if head else {},
        warmup_steps=params.warmup_ratio,  # a float below 1 is a share of the steps (transformers >= 5)
        seed=params.seed,
        data_seed=params.seed,
        bf16=cuda and torch.cuda.is_bf16_supported(),
        fp16=cuda and not torch.cuda.is_bf16_supported(),
        batch_sampler=batch_sampler_for(pair_tags, label_batch_size=params.batch_size),
        multi_dataset_batch_sampler=MultiDatasetBatchSamplers.PROPORTIONAL,
        save_strategy="no",
        report_to="none",
        logging_steps=50,
        disable_tqdm=not show_progress,
        dataloader_drop_last=False,
        dataloader_pin_memory=cuda,
    )


def _quiet_stdout(trainer: Any) -> None:
    """Keep the trainer's loss dicts off stdout, where `--json` commands print their result; they go to the log."""
    from transformers import PrinterCallback, ProgressCallback

    class LoggedProgress(ProgressCallback):  # type: ignore[misc]
        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
            if state.is_world_process_zero and logs:
                log.info("training step %d: %s", state.global_step, logs)

    trainer.remove_callback(PrinterCallback)
    if trainer.pop_callback(ProgressCallback) is not None:
        trainer.add_callback(LoggedProgress)
