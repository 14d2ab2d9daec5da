"""PostgreSQL advisory lock keys, all in one place: two uses once shared a key by accident.

`unique` refuses a repeated value at import. Keys are plain ints where they are bound to SQL parameters.
"""

from __future__ import annotations

from enum import IntEnum, unique


@unique
class AdvisoryLock(IntEnum):
    TAXONOMY_SEED = 7160401  # storing a taxonomy version (the default one at migrate, or `tags load`): one at a time
    VECTOR_EXTENSION = 7160402  # CREATE EXTENSION vector, before the first migration
    MODEL_SWITCH = 7160403  # registration, promotion, rollback take it exclusively; ingest writes take it shared
    CLUSTERING = 7160404  # one clustering run at a time
    RETRAINING = 7160405  # one retraining run at a time
    BACKFILL = 7160406  # one backfill at a time
    TAGGER_FIT = 7160407  # one tagger fit at a time
    # Ingest writes of items take it shared; one that leaves a correction waiting for its item, exclusively.
    ITEM_ARRIVALS = 7160408
