"""The pairs a fine-tuning run trains on: same-tag pairs from labelled texts, and scored vocabulary pairs."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from worker.errors import ConfigurationError
from worker.jsonl import json_lines


@dataclass(frozen=True)
class ScoredPair:
    """A vocabulary pair from `tagworker train pairs add`: similarity in [0, 1]."""

    a: str
    b: str
    score: float


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
