"""The worker's Redis transport, against the real Redis: a message is never in neither the queue nor `unacked`.

The race it closes lasts milliseconds inside a worker, so these tests stop the transport by hand at the point a
SIGKILL would: after Redis handed the message over, before kombu recorded it. This reaches into kombu's
consumer hooks on purpose; a worker-level kill test (test_pipeline.py) covers the same path end to end.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator

import pytest
from kombu import Connection, Consumer, Exchange, Message, Producer, Queue

from worker.broker import TRANSPORT, Channel
from worker.services import ServiceUrls

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
