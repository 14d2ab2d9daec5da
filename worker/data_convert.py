"""Convert the labelled datasets in ../shared/data into `{"text", "tags"}` lines for `tagworker eval ...`."""

from __future__ import annotations

import json
import os
import uuid
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

from worker.errors import ConfigurationError
from worker.jsonl import csv_rows, json_lines

APPSTORE_TEST_SHARE = 0.2


def _banking77(source: Path) -> Iterator[tuple[str, dict[str, object]]]:
    for split in ("train", "test"):
        path = source / "banking77" / f"{split}.csv"
        for number, row in csv_rows(path):
            text, category = _strings(path, number, row, ("text", "category"), what="column")
            yield split, {"text": text, "tags": [category]}


def _dstc11(source: Path) -> Iterator[tuple[str, dict[str, object]]]:
    path = source / "dstc11_intents" / "utterances.jsonl"
    for number, row in json_lines(path, "a JSON object"):
        domain, text, intent = _strings(path, number, row, ("domain", "text", "intent"))
        yield domain, {"text": text, "tags": [intent]}


def _goemotions(source: Path) -> Iterator[tuple[str, dict[str, object]]]:
    path = source / "goemotions" / "comments.jsonl"
    for number, row in json_lines(path, "a JSON object"):
        split, text = _strings(path, number, row, ("split", "text"))
        labels = row.get("labels")
        if not isinstance(labels, list) or not all(isinstance(label, str) for label in labels):
            raise ConfigurationError(f"{path}:{number}: field 'labels' must be a list of strings")
        yield split, {"text": text, "tags": labels}


def _appstore(source: Path) -> Iterator[tuple[str, dict[str, object]]]:
    """App Store listing copy (long marketing text) tagged with its genre; English listings only.

    The split is by a hash of the app id, so it is the same on every machine and needs no seed; about
    `APPSTORE_TEST_SHARE` of each genre lands in the test file.
    """
    path = source / "appstore_descriptions" / "apps.jsonl"
    for number, row in json_lines(path, "a JSON object"):
        description, genre = _strings(path, number, row, ("description", "genre"))
        if row.get("mostly_ascii") is not True or not description.strip():
            continue
        bucket = zlib.crc32(str(row.get("app_id", number)).encode()) % 1000
        yield "test" if bucket < 1000 * APPSTORE_TEST_SHARE else "train", {"text": description, "tags": [genre]}


def _strings(path: Path, number: int, row: object, names: tuple[str, ...], *, what: str = "field") -> list[str]:
    """The named string values of one record, or an error that names the file, line and field."""
    if not isinstance(row, dict):
        raise ConfigurationError(f"{path}:{number}: expected a JSON object, got {type(row).__name__}")
    values = []
    for name in names:
        if row.get(name) is None:
            raise ConfigurationError(f"{path}:{number}: no {what} {name!r}")
        if not isinstance(row[name], str):
            raise ConfigurationError(f"{path}:{number}: {what} {name!r} must be a string")
        values.append(row[name])
    return values


_READERS = {"banking77": _banking77, "dstc11": _dstc11, "goemotions": _goemotions, "appstore": _appstore}
DATASETS = tuple(_READERS)


def convert(dataset: str, source: Path, out: Path) -> dict[str, int]:
    """Write one file per split (Banking77, GoEmotions, App Store) or per domain (DSTC11); returns lines per file."""
    if dataset not in _READERS:
        raise ConfigurationError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
    if not source.is_dir():
        raise ConfigurationError(f"{source} is not a directory; point --source at ../shared/data")
    out.mkdir(parents=True, exist_ok=True)
    return _write_groups(_READERS[dataset](source), out, prefix=dataset)


def _write_groups(rows: Iterable[tuple[str, dict[str, object]]], out: Path, *, prefix: str) -> dict[str, int]:
    """Write each group beside its file and move it into place only when every row converted.

    A malformed row half-way used to leave truncated files that looked like finished ones; now a failure leaves
    the output directory as it was (an earlier run's files included) and removes the partial ones.
    """
    partial: dict[str, IO[str]] = {}
    counts: dict[str, int] = {}
    try:
        for group, row in rows:
            name = f"{prefix}-{group}.jsonl"
            if name not in partial:
                partial[name] = _partial_file(out, name)
            partial[name].write(json.dumps(row, ensure_ascii=False) + "\n")
            counts[name] = counts.get(name, 0) + 1
        for name, handle in list(partial.items()):
            handle.close()
            os.replace(handle.name, out / name)
            del partial[name]
    except OSError as exc:
        raise ConfigurationError(f"cannot convert {prefix}: {exc}") from None
    finally:
        for handle in partial.values():
            handle.close()
            Path(handle.name).unlink(missing_ok=True)
    return counts


def _partial_file(out: Path, name: str) -> IO[str]:
    # A name of our own opened with "x" rather than tempfile's 0600 file: the result keeps the umask's mode.
    return (out / f".{name}.{uuid.uuid4().hex}.partial").open("x", encoding="utf-8")
