"""Convert the labelled datasets in ../shared/data into `{"text", "tags"}` lines for `tagworker eval ...`."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from pathlib import Path

from worker.errors import ConfigurationError

DATASETS = ("banking77", "dstc11", "goemotions")


def _banking77(source: Path) -> Iterator[tuple[str, dict[str, object]]]:
    for split in ("train", "test"):
        with (source / "banking77" / f"{split}.csv").open(encoding="utf-8", newline="") as handle:
            for row in csv.DictReader(handle):
                yield split, {"text": row["text"], "tags": [row["category"]]}


def _dstc11(source: Path) -> Iterator[tuple[str, dict[str, object]]]:
    with (source / "dstc11_intents" / "utterances.jsonl").open(encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            yield row["domain"], {"text": row["text"], "tags": [row["intent"]]}


def _goemotions(source: Path) -> Iterator[tuple[str, dict[str, object]]]:
    with (source / "goemotions" / "comments.jsonl").open(encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            yield row["split"], {"text": row["text"], "tags": row["labels"]}


def convert(dataset: str, source: Path, out: Path) -> dict[str, int]:
    """Write one file per split (Banking77, GoEmotions) or per domain (DSTC11); returns lines per file."""
    readers = {"banking77": _banking77, "dstc11": _dstc11, "goemotions": _goemotions}
    if dataset not in readers:
        raise ConfigurationError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
    if not source.is_dir():
        raise ConfigurationError(f"{source} is not a directory; point --source at ../shared/data")
    out.mkdir(parents=True, exist_ok=True)
    return _write_groups(readers[dataset](source), out, prefix=dataset)


def _write_groups(rows: Iterable[tuple[str, dict[str, object]]], out: Path, *, prefix: str) -> dict[str, int]:
    handles = {}
    counts: dict[str, int] = {}
    try:
        for group, row in rows:
            name = f"{prefix}-{group}.jsonl"
            if name not in handles:
                handles[name] = (out / name).open("w", encoding="utf-8")
            handles[name].write(json.dumps(row, ensure_ascii=False) + "\n")
            counts[name] = counts.get(name, 0) + 1
    except (OSError, KeyError, json.JSONDecodeError) as exc:
        raise ConfigurationError(f"cannot convert {prefix}: {exc}") from None
    finally:
        for handle in handles.values():
            handle.close()
    return counts
