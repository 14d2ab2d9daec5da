"""Turn a raw Celery message into an event, or into a rejection with a reason a person can act on."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter, ValidationError

from schemas import EVENT_KINDS, Event
from worker.settings import IngestSettings

_EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)


@dataclass(frozen=True)
class RawMessage:
    """One broker message as the task received it; build it with `read_message`."""

    message_id: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    # Set when the body's args or kwargs could not be read at all; `parse_message` returns it as it is.
    malformed: Rejection | None = None


@dataclass(frozen=True)
class Rejection:
    """Why a message is not stored; `raw` is the payload as ASCII-escaped JSON."""

    message_id: str
    reason: str
    raw: str
    status: str = "invalid"
    event_id: uuid.UUID | None = None
    kind: str | None = None
    # A correction naming an item not stored yet: (kind, external id) of the item, whose arrival applies it.
    waits_for: tuple[str, str] | None = None


@dataclass(frozen=True)
class Accepted:
    """A valid event and the message it came in."""

    message_id: str
    event: Event


# The `raw` of a payload that not even `repr` can write: a rejection must still be recorded.
UNWRITABLE_RAW = '"<payload not kept: too deeply nested to write out>"'


def raw_text(value: Any) -> str:
    """The payload as JSON text that any TEXT column stores (NUL and lone surrogates escaped); never raises."""
    try:
        return json.dumps(value, ensure_ascii=True, default=repr)
    except (ValueError, RecursionError):  # circular or absurdly deep
        pass
    try:
        return repr(value)[:100_000]
    except RecursionError:  # deeper than the stack allows (about 1,000 levels, less inside a worker)
        return UNWRITABLE_RAW


def _json_bytes(value: Any) -> int:
    """Bytes of `value` as UTF-8 JSON, as the JSONB column holds it (not as escaped ASCII: "日本" is 6, not 12)."""
    try:
        return len(json.dumps(value, ensure_ascii=False, default=repr).encode("utf-8", "replace"))
    except (ValueError, RecursionError):
        return len(raw_text(value))


def read_message(message_id: object, args: object, kwargs: object) -> RawMessage:
    """One request of a batch as a RawMessage; never raises, whatever a hand-made body holds.

    Args or kwargs of the wrong shape would make the whole batch fail before validation (and be requeued
    forever), so they become this message's rejection instead. They are not coerced: `tuple("abc")` or
    `dict([["event", x]])` would make up an event the producer never sent.
    """
    identifier = str(message_id)
    found_args = () if args is None else args
    found_kwargs = {} if kwargs is None else kwargs
    if isinstance(found_args, list | tuple) and isinstance(found_kwargs, dict):
        return RawMessage(identifier, tuple(found_args), dict(found_kwargs))
    rejection = Rejection(identifier, _shape_problem(found_args, found_kwargs), raw_text([args, kwargs]))
    return RawMessage(identifier, (), {}, malformed=rejection)


def _shape_problem(args: object, kwargs: object) -> str:
    hint = "send the event as send_task('tagworker.ingest', args=[event])"
    if not isinstance(args, list | tuple):
        return f"message args must be a list (holding the event), got {type(args).__name__}; {hint}"
    return f"message kwargs must be an object, got {type(kwargs).__name__}; {hint}"


def _depth(value: Any, limit: int, level: int = 0) -> int:
    if level > limit:
        return level
    if isinstance(value, dict):
        return max((_depth(v, limit, level + 1) for v in value.values()), default=level + 1)
    if isinstance(value, list):
        return max((_depth(v, limit, level + 1) for v in value), default=level + 1)
    return level


def _unwrap(message: RawMessage) -> Any:
    """The single event object of a message: `ingest(event)` or `ingest(event=...)`."""
    if message.kwargs and not message.args and set(message.kwargs) == {"event"}:
        return message.kwargs["event"]
    if len(message.args) == 1 and not message.kwargs:
        return message.args[0]
    raise ValueError(
        f"expected one positional argument (the event), got {len(message.args)} args and kwargs "
        f"{sorted(message.kwargs)}"
    )


def _first_error(error: ValidationError) -> str:
    parts = []
    for item in error.errors()[:3]:
        where = ".".join(str(p) for p in item["loc"]) or "event"
        parts.append(f"{where}: {item['msg']}")
    more = f" (+{error.error_count() - 3} more)" if error.error_count() > 3 else ""
    return ("; ".join(parts) + more).replace("\x00", "\\x00")


def _check_strings(value: Any) -> str | None:
    """A reason if any string in the payload is not valid UTF-8 (lone surrogates from `\\udXXX` escapes)."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "invalid UTF-8 (lone surrogate)"
    elif isinstance(value, dict):
        for key, inner in value.items():
            reason = _check_strings(key) or _check_strings(inner)
            if reason:
                return f"{key!s}: {reason}" if isinstance(key, str) and key.isprintable() else reason
    elif isinstance(value, list):
        for inner in value:
            reason = _check_strings(inner)
            if reason:
                return reason
    return None


def _precheck(payload: Any, limits: IngestSettings) -> str | None:
    """Reasons pydantic would not give, or would give less clearly."""
    if not isinstance(payload, dict):
        return f"event must be a JSON object, got {type(payload).__name__}"
    kind = payload.get("kind")
    if kind not in EVENT_KINDS:
        return f"unknown event kind {kind!r}; expected one of {', '.join(EVENT_KINDS)}"
    if _depth(payload.get("metadata"), limits.max_metadata_depth) > limits.max_metadata_depth:
        return f"metadata is nested deeper than {limits.max_metadata_depth} levels"
    if _depth(payload, limits.max_metadata_depth + 2) > limits.max_metadata_depth + 2:
        return f"event is nested deeper than {limits.max_metadata_depth + 2} levels"
    reason = _check_strings(payload)
    if reason:
        return reason
    text = payload.get("text")
    if isinstance(text, str) and len(text) > limits.max_text_chars:
        return f"text has {len(text)} characters, more than the limit of {limits.max_text_chars}"
    if isinstance(text, str) and not text.strip():
        return "text is empty"
    metadata = payload.get("metadata")
    if metadata is not None and (size := _json_bytes(metadata)) > limits.max_metadata_bytes:
        return f"metadata is {size} bytes as JSON (UTF-8), more than the limit of {limits.max_metadata_bytes}"
    return None


def parse_message(message: RawMessage, limits: IngestSettings) -> Accepted | Rejection:
    """Validate one message; never raises, whatever the input."""
    if message.malformed is not None:
        return message.malformed
    try:
        return _parse(message, limits)
    except Exception as exc:
        return Rejection(
            message.message_id,
            f"could not validate: {type(exc).__name__}: {exc}"[:2000],
            raw_text([message.args, message.kwargs]),
        )


def _parse(message: RawMessage, limits: IngestSettings) -> Accepted | Rejection:
    try:
        payload = _unwrap(message)
    except ValueError as exc:
        return Rejection(message.message_id, str(exc), raw_text([message.args, message.kwargs]))
    raw = raw_text(payload)
    if isinstance(payload, str):
        try:
            payload = json.loads(payload)
        except (ValueError, RecursionError) as exc:
            return Rejection(message.message_id, f"not JSON: {exc}"[:500], raw)
    reason = _precheck(payload, limits)
    if reason is None:
        try:
            return Accepted(message.message_id, _EVENT_ADAPTER.validate_python(payload))
        except ValidationError as exc:
            reason = _first_error(exc)
    event_id, kind = _salvage_ids(payload)
    return Rejection(message.message_id, reason, raw, event_id=event_id, kind=kind)


def _salvage_ids(payload: Any) -> tuple[uuid.UUID | None, str | None]:
    """The event id and kind of a rejected payload, where they are readable, so rejections can be found by id."""
    if not isinstance(payload, dict):
        return None, None
    kind = payload.get("kind") if isinstance(payload.get("kind"), str) else None
    try:
        event_id = uuid.UUID(str(payload.get("event_id")))
    except ValueError:
        event_id = None
    return event_id, (kind[:64] if kind and kind.isprintable() else None)
