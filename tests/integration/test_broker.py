"""The worker's Redis transport, against the real Redis: a message is never in neither the queue nor `unacked`.

The race it closes lasts milliseconds inside a worker, so these tests stop the transport by hand at the point a
SIGKILL would: after Redis handed the message over, before kombu recorded it. This reaches into kombu's
consumer hooks on purpose; a worker-level kill test (test_pipeline.py) covers the same path end to end.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
import uuid
from collections.abc import Iterator

import pytest
from kombu import Connection, Consumer, Exchange, Message, Producer, Queue
from sqlalchemy import Engine, text

from worker.broker import TRANSPORT, Channel
from worker.services import ServiceUrls
from worker.settings import get_settings

pytestmark = pytest.mark.integration


@pytest.fixture
def queue() -> Queue:
    name = f"broker-{uuid.uuid4().hex[:8]}"
    return Queue(name, Exchange(name, type="direct"), routing_key=name)


@pytest.fixture
def connection(stack: ServiceUrls) -> Iterator[Connection]:
    # Own unacked and in-flight keys: the workers of other tests share this Redis.
    options = {"visibility_timeout": 1, "unacked_key": f"unacked-{uuid.uuid4().hex[:8]}"}
    with Connection(stack.broker_url, transport=TRANSPORT, transport_options=options) as conn:
        yield conn


def send(connection: Connection, queue: Queue, bodies: list[dict[str, int]]) -> None:
    with connection.channel() as channel:
        producer = Producer(channel)
        for body in bodies:
            producer.publish(body, exchange=queue.exchange, routing_key=queue.routing_key, declare=[queue])


def take_without_tracking(connection: Connection, queue: Queue) -> tuple[Channel, bytes]:
    """Redis hands a message over; the "worker" dies before kombu records it in `unacked`."""
    channel: Channel = connection.default_channel
    channel.basic_consume(queue.name, no_ack=False, callback=lambda message: None, consumer_tag="test")
    connection.transport.cycle._register_BRPOP(channel)  # sends the BLMOVE, as the event loop does
    raw = channel.client.parse_response(channel.client.connection, "BLMOVE")
    channel._in_poll = None
    assert raw is not None
    return channel, raw


def waiting(channel: Channel, queue: Queue) -> int:
    return int(channel.client.llen(queue.name))


def test_consumed_messages_are_tracked_and_leave_the_inflight_list(connection: Connection, queue: Queue) -> None:
    send(connection, queue, [{"n": i} for i in range(5)])
    received: list[int] = []

    def on_message(body: dict[str, int], message: Message) -> None:
        received.append(body["n"])
        message.ack()

    channel = connection.default_channel
    with Consumer(channel, queues=[queue], callbacks=[on_message], accept=["json"]):
        deadline = time.monotonic() + 10
        while len(received) < 5 and time.monotonic() < deadline:
            connection.drain_events(timeout=1)
        assert sorted(received) == [0, 1, 2, 3, 4]
        assert channel.client.llen(channel.inflight_key) == 0
        with pytest.raises(TimeoutError):
            connection.drain_events(timeout=0.5)  # acks go out together, before the next take
    assert channel.client.hlen(channel.unacked_key) == 0


def test_one_take_brings_waiting_messages_but_never_more_than_the_prefetch(
    connection: Connection, queue: Queue
) -> None:
    send(connection, queue, [{"n": i} for i in range(20)])
    received: list[Message] = []
    channel = connection.default_channel
    with Consumer(channel, queues=[queue], callbacks=[lambda _, m: received.append(m)], accept=["json"],
                  prefetch_count=5):  # fmt: skip
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError):
                connection.drain_events(timeout=0.5)
        assert len(received) == 5
        assert channel.client.hlen(channel.unacked_key) == 5
        assert waiting(channel, queue) == 15
        assert channel.client.llen(channel.inflight_key) == 0
        for message in received:
            message.ack()
        deadline = time.monotonic() + 3
        while len(received) < 20 and time.monotonic() < deadline:
            connection.drain_events(timeout=1)
            for message in received[5:]:
                if not message.acknowledged:
                    message.ack()
    assert sorted(m.payload["n"] for m in received) == list(range(20))


def test_a_message_taken_by_a_worker_that_died_before_tracking_it_is_put_back(
    connection: Connection, queue: Queue
) -> None:
    send(connection, queue, [{"n": 42}])
    channel, _ = take_without_tracking(connection, queue)
    assert waiting(channel, queue) == 0
    assert channel.client.hlen(channel.unacked_key) == 0, "kombu never saw it: with BRPOP it would be gone"

    assert channel.qos.restore_stranded() == 0, "first sighting: a live worker may still be about to track it"
    time.sleep(1.2)
    assert channel.qos.restore_stranded() == 1
    assert waiting(channel, queue) == 1 and channel.client.llen(channel.inflight_key) == 0
    assert b'"redelivered": true' in channel.client.lindex(queue.name, 0)


def test_an_inflight_entry_is_put_back_at_most_once(connection: Connection, queue: Queue) -> None:
    send(connection, queue, [{"n": 7}])
    channel, raw = take_without_tracking(connection, queue)
    assert channel.put_back(channel.client, raw) == 1
    assert channel.put_back(channel.client, raw) == 0, "an entry is put back at most once"
    assert waiting(channel, queue) == 1


def undeliverable(queue: Queue) -> list[bytes]:
    """Entries no queue can take: not JSON, JSON of another shape, a message routed nowhere. Unique per test, as
    each gets its own `rejected_events` row."""
    return [
        f"not a kombu message ({queue.name})".encode(),
        json.dumps({"json": "but not a kombu message", "queue": queue.name}).encode(),
        json.dumps({"body": "", "properties": {"delivery_tag": f"routed-nowhere-{queue.name}"}}).encode(),
    ]


@pytest.fixture
def records_rejections(stack: ServiceUrls) -> Iterator[None]:
    """The broker records dead letters through `get_settings()`, which may have been read before `stack` set the
    database URL in the environment."""
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def dead_letters(channel: Channel) -> list[bytes]:
    return list(channel.client.lrange(channel.dead_letter_key, 0, -1))


def rejection_reasons(engine: Engine, entries: list[bytes]) -> list[str]:
    ids = [f"refused-{hashlib.sha1(raw).hexdigest()}" for raw in entries]
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT reason FROM rejected_events WHERE message_id = ANY(:ids)"), {"ids": ids})
        return [row.reason for row in rows]


def take_all(connection: Connection, queue: Queue, expected: int) -> list[Message]:
    received: list[Message] = []
    with Consumer(connection.default_channel, queues=[queue], callbacks=[lambda _, m: received.append(m)],
                  accept=["json"]):  # fmt: skip
        deadline = time.monotonic() + 5
        while len(received) < expected and time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError):
                connection.drain_events(timeout=0.5)
        for message in received:
            message.ack()
    return received


def test_entries_that_are_not_messages_are_dead_lettered_and_the_sweep_still_puts_back_the_rest(
    connection: Connection, queue: Queue, engine: Engine, records_rejections: None
) -> None:
    send(connection, queue, [{"n": 42}])
    channel, _ = take_without_tracking(connection, queue)
    # A hand-made message with `"headers": null` can still go back: it is a message, routed to a queue.
    delivery_info = {"exchange": "", "routing_key": queue.name}
    null_headers = {"body": "", "headers": None, "properties": {"delivery_tag": "h", "delivery_info": delivery_info}}
    bad = undeliverable(queue)
    channel.client.lpush(channel.inflight_key, json.dumps(null_headers), *bad)  # swept first

    assert channel.qos.restore_stranded() == 0
    time.sleep(1.2)
    assert channel.qos.restore_stranded() == 2

    assert waiting(channel, queue) == 2, "the stranded messages after the bad entries are back in their queue"
    assert channel.client.llen(channel.inflight_key) == 0
    assert sorted(dead_letters(channel)) == sorted(bad)
    reasons = rejection_reasons(engine, bad)
    assert len(reasons) == 3 and all(channel.dead_letter_key in reason for reason in reasons), reasons
    assert any("no queue is bound to exchange '' with routing key ''" in reason for reason in reasons), reasons


def test_the_consumer_sets_aside_an_entry_that_is_not_a_message_and_goes_on(
    connection: Connection, queue: Queue, engine: Engine, records_rejections: None
) -> None:
    send(connection, queue, [{"n": 1}])
    channel = connection.default_channel
    garbage = undeliverable(queue)[0]
    channel.client.rpush(queue.name, garbage)  # the right end: taken first

    received = take_all(connection, queue, expected=1)

    assert [m.payload["n"] for m in received] == [1]
    assert dead_letters(channel) == [garbage]
    assert channel.client.llen(channel.inflight_key) == 0
    [reason] = rejection_reasons(engine, [garbage])
    assert "not a kombu message (not JSON: JSONDecodeError: Expecting value" in reason
    assert f"taken from queue {queue.name!r}; moved to the Redis list {channel.dead_letter_key!r}" in reason


def test_an_entry_redis_can_read_but_python_cannot_is_dead_lettered_from_a_bulk_take(
    connection: Connection, queue: Queue
) -> None:
    send(connection, queue, [{"n": 1}])  # taken by the blocking move
    # Lua's cjson reads hex numbers, Python's json does not: the bulk take records it in `unacked` first.
    hex_entry = b'{"body": "", "properties": {"delivery_tag": "hex", "delivery_info": {}}, "n": 0x10}'
    channel = connection.default_channel
    channel.client.lpush(queue.name, hex_entry)
    send(connection, queue, [{"n": 2}])

    received = take_all(connection, queue, expected=2)

    assert sorted(m.payload["n"] for m in received) == [1, 2]
    assert dead_letters(channel) == [hex_entry]
    assert channel.client.hget(channel.unacked_key, "hex") is None
    assert channel.client.zscore(channel.unacked_index_key, "hex") is None


def test_a_busy_queue_does_not_starve_the_others(connection: Connection) -> None:
    """The channel stayed on the queue that last gave a message: a training (or refit) message sent behind 600
    ingest messages waited until every one of them was taken, however long the backlog."""
    busy, other = (
        Queue(n, Exchange(n, type="direct"), routing_key=n)
        for n in (f"busy-{uuid.uuid4().hex[:8]}", f"other-{uuid.uuid4().hex[:8]}")
    )
    send(connection, busy, [{"n": i} for i in range(600)])
    received: list[str] = []

    def on_message(body: dict[str, int], message: Message) -> None:
        received.append(message.delivery_info["routing_key"])
        message.ack()
        if len(received) == 40:
            send(connection, other, [{"n": -1}])

    with Consumer(connection.default_channel, queues=[busy, other], callbacks=[on_message], accept=["json"],
                  prefetch_count=8):  # fmt: skip
        deadline = time.monotonic() + 30
        while other.name not in received and time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError):
                connection.drain_events(timeout=1)
    assert other.name in received
    assert received.index(other.name) < 120, f"taken after {received.index(other.name)} busy messages"
