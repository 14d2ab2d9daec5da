"""A Redis transport that keeps every message it takes off a queue until the message is tracked or put back.

Why: kombu's Redis transport takes a message with `BRPOP` and only afterwards records it in the `unacked`
hash. A worker killed in between (and the reply can wait unread in the socket for a whole batch while the
worker's prefetch is full) loses that message for good: it is in neither the queue nor `unacked`. Our
SIGKILL test lost 1 of 400 events that way in 3 of 5 runs.

Here the message moves atomically with `BLMOVE` into an in-flight list and leaves it only after kombu has
recorded it in `unacked`. A periodic sweep, run by every worker with kombu's own `restore_visible`, puts back
what has sat in the in-flight list for longer than the visibility timeout: the same promise kombu makes for
`unacked`. Redelivery can duplicate a message, never lose it; the store is idempotent. Needs Redis >= 6.2.
Producers are unaffected: they only push, and may keep using the stock transport.
"""

from __future__ import annotations

import hashlib
import logging
from time import monotonic, time
from typing import Any

from kombu.transport import redis as kombu_redis
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import dumps, loads

log = logging.getLogger(__name__)

TRANSPORT = "worker.broker:Transport"
# Longest a BLMOVE waits on one key when a channel watches several (queues x priority levels): bounds the
# extra latency of a message that lands on a key the channel is not waiting on right now.
MULTI_KEY_WAIT_S = 0.1

# Take the entry out of the in-flight list and push the message back to its queue(s), only if no worker
# removed it meanwhile: a worker that tracked it in `unacked` already owns it.
_PUT_BACK = """
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then return 0 end
for i = 2, #KEYS do redis.call('RPUSH', KEYS[i], ARGV[2]) end
return 1
"""


class QoS(kombu_redis.QoS):
    """kombu's ack emulation, plus the sweep that returns messages stranded in the in-flight list."""

    def restore_visible(self, start: int = 0, num: int = 10, interval: int = 10) -> None:
        super().restore_visible(start=start, num=num, interval=interval)
        if (self._vrestore_count - 1) % (interval or 1) == 0:
            self.restore_stranded()

    def restore_stranded(self) -> int:
        """Put back in-flight entries seen for longer than the visibility timeout; returns how many."""
        channel: Channel = self.channel
        with channel.conn_or_acquire() as client:
            entries = client.lrange(channel.inflight_key, 0, -1)
            seen = {bytes_to_str(k): float(v) for k, v in client.hgetall(channel.inflight_seen_key).items()}
            now = time()
            current = {hashlib.sha1(raw).hexdigest(): raw for raw in entries}
            new = {digest: now for digest in current if digest not in seen}
            if new:
                client.hset(channel.inflight_seen_key, mapping=new)
            gone = [digest for digest in seen if digest not in current]
            if gone:
                client.hdel(channel.inflight_seen_key, *gone)
            stale = [raw for digest, raw in current.items() if now - seen.get(digest, now) >= self.visibility_timeout]
            restored = sum(channel.put_back(client, raw) for raw in stale)
        if restored:
            log.warning("put back %d message(s) a dead worker had taken but not tracked", restored)
        return restored


class Channel(kombu_redis.Channel):
    """Consumes with BLMOVE into an in-flight list instead of BRPOP."""

    QoS = QoS
    _blmove_key: str | None = None
    _blmove_queue: str | None = None
    _blmove_index = 0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.global_keyprefix:
            raise ValueError("the tagworker broker transport does not support global_keyprefix; use a Redis db number")

    @property
    def inflight_key(self) -> str:
        return f"{self.unacked_key}_inflight"

    @property
    def inflight_seen_key(self) -> str:
        return f"{self.unacked_key}_inflight_seen"

    def _brpop_start(self, timeout: float | None = None) -> None:
        if timeout is None:
            timeout = self.brpop_timeout
        queues = self._queue_cycle.consume(len(self.active_queues))
        if not queues:
            return
        keys = [(self._q_for_pri(queue, pri), queue) for pri in self.priority_steps for queue in queues]
        # Stay on the key that last gave a message; move on when it comes back empty.
        key, queue = keys[self._blmove_index % len(keys)]
        wait = (timeout or 0) if len(keys) == 1 else min(timeout or MULTI_KEY_WAIT_S, MULTI_KEY_WAIT_S)
        self._blmove_key, self._blmove_queue = key, queue
        self._in_poll = self.client.connection
        self._brpop_sent_at = monotonic()  # type: ignore[assignment]
        self.client.connection.send_command("BLMOVE", key, self.inflight_key, "RIGHT", "LEFT", wait)

    def _brpop_read(self, **options: Any) -> bool:
        try:
            try:
                item = self.client.parse_response(self.client.connection, "BLMOVE", **options)
            except self.connection_errors:
                self.client.connection.disconnect()
                raise
            if item is None:
                self._blmove_index += 1
                raise kombu_redis.Empty()
            queue = self._blmove_queue
            self._queue_cycle.rotate(queue)
            # kombu records the message in `unacked` inside _deliver; only then may it leave the in-flight list.
            self.connection._deliver(loads(bytes_to_str(item)), queue)
            self.client.lrem(self.inflight_key, 1, item)
            return True
        finally:
            self._in_poll = None  # type: ignore[assignment]
            self._flush_brpop_reauth()

    def put_back(self, client: Any, raw: bytes) -> int:
        """Move one in-flight entry back to its queue(s), marked redelivered; 0 when a worker took it meanwhile."""
        message = loads(bytes_to_str(raw))
        delivery = message.get("properties", {}).get("delivery_info", {})
        queues = self._lookup(delivery.get("exchange", ""), delivery.get("routing_key", ""))
        message.setdefault("headers", {})["redelivered"] = True
        if isinstance(delivery, dict):
            delivery["redelivered"] = True
        priority = self._get_message_priority(message, reverse=False)
        keys = [self.inflight_key] + [self._q_for_pri(q, priority) for q in queues]
        return int(client.eval(_PUT_BACK, len(keys), *keys, raw, dumps(message)))


class Transport(kombu_redis.Transport):
    """The worker's broker transport: kombu's Redis transport with the in-flight list."""

    Channel = Channel
