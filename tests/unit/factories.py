"""Payloads and fakes shared by the unit tests: plain functions, so each test shows what it changes."""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

import numpy as np
from pydantic import TypeAdapter

from schemas import Event
from worker.pipeline.embed import Embeddings
from worker.pipeline.validate import Accepted, RawMessage

EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)
FIXED_ID = "3f2b8c1e-9d4a-4e6b-8f0a-1c2d3e4f5a6b"


def content_payload(**overrides: Any) -> dict[str, Any]:
    """A valid `content.created` payload; keys set to None in `overrides` are dropped."""
    payload = {
        "kind": "content.created",
        "event_id": str(uuid.uuid4()),
        "content_id": "blog-001",
        "text": "Five subject lines that lifted our open rate.",
        "title": "Subject lines",
        "channel": "blog",
        "language": "en",
        "metadata": {"author": "sam"},
    }
    return _apply(payload, overrides)


def feedback_payload(**overrides: Any) -> dict[str, Any]:
    """A valid `feedback.received` payload."""
    payload = {
        "kind": "feedback.received",
        "event_id": str(uuid.uuid4()),
        "feedback_id": "fb-0001",
        "text": "Half our test sends land in Gmail spam.",
        "source": "support",
        "rating": 2,
    }
    return _apply(payload, overrides)


def correction_payload(**overrides: Any) -> dict[str, Any]:
    """A valid `tag.corrected` payload."""
    payload = {
        "kind": "tag.corrected",
        "event_id": str(uuid.uuid4()),
        "item": {"kind": "content", "external_id": "blog-001"},
        "added": ["deliverability"],
        "removed": ["pricing"],
        "actor": "editor@example.com",
    }
    return _apply(payload, overrides)


def _apply(payload: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    payload.update(overrides)
    return {k: v for k, v in payload.items() if v is not None}


def message(payload: Any, message_id: str = "msg-1") -> RawMessage:
    """A broker message as `send_task(..., args=[payload])` delivers it."""
    return RawMessage(message_id, (payload,), {})


def accepted(payload: dict[str, Any], message_id: str = "msg-1") -> Accepted:
    """A validated event, as `parse_message` returns it."""
    return Accepted(message_id, EVENT_ADAPTER.validate_python(payload))


class FakeEmbedder:
    """Deterministic unit vectors from a hash of the text; raises for texts containing `poison`."""

    def __init__(self, *, dims: int = 4, poison: str = "POISON") -> None:
        self._dims = dims
        self.poison = poison
        self.calls: list[list[str]] = []

    @property
    def version_name(self) -> str:
        return "fake@0"

    @property
    def dims(self) -> int:
        return self._dims

    def embed(self, texts: list[str]) -> Embeddings:
        self.calls.append(list(texts))
        if any(self.poison in t for t in texts):
            raise RuntimeError("model choked on a poison text")
        return Embeddings(
            vectors=np.stack([self.vector(t) for t in texts]),
            chunks_total=[1] * len(texts),
            chunks_used=[1] * len(texts),
        )

    def vector(self, text: str) -> np.ndarray:
        """The vector this embedder gives `text`."""
        seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")
        raw = np.random.default_rng(seed).normal(size=self._dims)
        return (raw / np.linalg.norm(raw)).astype(np.float32)
