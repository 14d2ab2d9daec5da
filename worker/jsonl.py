"""JSON Lines and CSV input files (labelled data, vocabulary pairs, bench texts): readers that name the bad line."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from worker.errors import ConfigurationError


def json_lines(path: Path, expected: str) -> Iterator[tuple[int, Any]]:
    """(line number, value) for each non-blank line; a line that is not UTF-8 or not JSON is an error naming it.

    Read as bytes and decoded line by line, so that a decoding error names its line; a UTF-8 byte order mark on
    the first line is skipped.
    """
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, 1):
            line = utf8_line(path, number, raw)
            if not line.strip():
                continue
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as exc:
                raise ConfigurationError(f"{path}:{number}: expected {expected} ({exc})") from None


def utf8_line(path: Path, number: int, raw: bytes) -> str:
    """`raw` decoded as UTF-8 (dropping a byte order mark on line 1), or an error that names the line and byte."""
    try:
        return raw.decode("utf-8-sig" if number == 1 else "utf-8")
    except UnicodeDecodeError as exc:
        bad = raw[exc.start : exc.start + 1].hex()
        raise ConfigurationError(
            f"{path}:{number}: not UTF-8 (byte 0x{bad} at position {exc.start + 1} of the line); save the file as UTF-8"
        ) from None


def csv_rows(path: Path, *, required: str | None = None) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, row) per CSV record after the header; bytes that are not UTF-8 are an error naming the line.

    Args:
        required: a column the header must have, and every row a value in.
    """
    with path.open("rb") as handle:
        reader = csv.DictReader(utf8_line(path, number, raw) for number, raw in enumerate(handle, 1))
        try:
            if required is not None and required not in (reader.fieldnames or ()):
                header = ", ".join(reader.fieldnames or ()) or "none"
                raise ConfigurationError(f"{path}:1: no `{required}` column (the header has: {header})")
            for row in reader:
                if required is not None and row[required] is None:
                    raise ConfigurationError(f"{path}:{reader.line_num}: no value in the `{required}` column")
                yield reader.line_num, row
        except csv.Error as exc:  # DictReader's own line_num lags behind on an error; its reader's does not
            raise ConfigurationError(f"{path}:{reader.reader.line_num}: {exc}") from None
