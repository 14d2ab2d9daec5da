"""Fine-tune a sentence-transformers model on human tag decisions with `SentenceTransformerTrainer`.

Three datasets train in one run, their batches interleaved in proportion to their size:
- (anchor, positive) pairs of texts that people gave the same tag, with MultipleNegativesRankingLoss: every
  other positive in the batch is a negative, so same-tag texts are pulled together and other tags pushed away,
  which is what same-tag retrieval needs. Batches never hold two pairs of the same tag (tag_batches.py), so no
  in-batch "negative" is in truth a positive.
- (text, tag) rows with a cosine-softmax loss over all tags (tag_loss.py), which is what the tag heads need:
  on Banking77 the pairs alone lifted retrieval but not tagging accuracy.
- Optional scored vocabulary pairs ("CAC" / "customer acquisition cost" 1.0) with CoSENT.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from worker.pipeline.tag_batches import batch_sampler_for
from worker.pipeline.tag_loss import HEAD_PARAMETER, TagSoftmaxLoss, count_tags, tag_rows
from worker.pipeline.training_pairs import ScoredPair

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
    # CosFace margin of the tag loss: a text trains until its own tag beats every other by this much cosine.
    tag_margin: float = 0.0
    # Tokens per text while training only (the saved model embeds with its own window): long copy costs memory
    # and time quadratically in it, and short texts (intents, reviews) never reach it.
    max_seq_length: int = 128


@dataclass(frozen=True)
class TrainResult:
    """What a fine-tuning run did."""

    pairs: int
    scored_pairs: int
    steps: int
    seconds: float
    device: str


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
    datasets, losses = _datasets_and_losses(model, pairs, scored, rows, tag_margin=params.tag_margin)
    # A batch holds each tag at most once (see tag_batches.py), so it cannot be larger than the tags.
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
    window = model.max_seq_length
    model.max_seq_length = min(window or params.max_seq_length, params.max_seq_length)
    try:
        output = trainer.train()
    finally:
        model.max_seq_length = window  # saved with the model: it embeds long texts in windows of this size
    seconds = time.perf_counter() - started
    log.info(
        "fine-tuned on %d pairs + %d scored + %d tag rows in %d steps, %.1fs",
        len(pairs), len(scored), len(rows["text"]), output.global_step, seconds,
    )  # fmt: skip
    return TrainResult(len(pairs), len(scored), int(output.global_step), round(seconds, 1), str(model.device))


def _datasets_and_losses(
    model: Any,
    pairs: list[tuple[str, str, str]],
    scored: Sequence[ScoredPair],
    rows: dict[str, list[Any]],
    *,
    tag_margin: float,
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
        losses["tags"] = TagSoftmaxLoss(model, tag_count, margin=tag_margin)
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
