"""A Redis transport that keeps every message it takes off a queue until the message is tracked or put back.

Why: kombu's Redis transport takes a message with `BRPOP` and only afterwards records it in the `unacked`
hash. A worker killed in between (and the reply can wait unread in the socket for a whole batch while the
worker's prefetch is full) loses that message for good: it is in neither the queue nor `unacked`. Our
SIGKILL test lost 1 of 400 events that way in 3 of 5 runs.

Here the message moves atomically with `BLMOVE` into an in-flight list and leaves it only after kombu has
recorded it in `unacked`. A periodic sweep, run by every worker with kombu's own `restore_visible`, puts back
what has sat in the in-flight list for longer than the visibility timeout: the same promise kombu makes for
`unacked` (the sweep is in `worker.broker_qos`). Redelivery can duplicate a message, never lose it; the store is
idempotent. Needs Redis >= 6.2. Producers are unaffected: they only push, and may keep using the stock transport.

It also costs fewer round trips. Stock kombu spends three per message (BRPOP, record in `unacked`, ack), and
they were nearly all of the worker's main-process CPU in `tagworker bench` (1.5-1.7 ms per event on 2 cores).
Here, after the blocking `BLMOVE` of one message, one Lua call records it in `unacked`, takes up to
`BULK_TAKE - 1` more that are waiting (within the prefetch limit) and records those too, atomically; acks are
sent together, before the next take. A delayed ack can only make a message run twice, never vanish.

Entries that no queue can take go to a dead-letter list instead (see `worker.dead_letters`).
"""

from __future__ import annotations

import logging
from time import monotonic, time
from typing import Any

from kombu.transport import redis as kombu_redis
from kombu.utils.json import dumps

from worker.broker_qos import QoS
from worker.dead_letters import read_entry, report_dead_letter
from worker.errors import NotDeliverable

log = logging.getLogger(__name__)

TRANSPORT = "worker.broker:Transport"
# Longest a BLMOVE waits on one key when a channel watches several (queues x priority levels): bounds the
# extra latency of a message that lands on a key the channel is not waiting on right now.
MULTI_KEY_WAIT_S = 0.1

# Messages one round trip may take beyond the first; the prefetch limit still applies.
BULK_TAKE = 32

# Record the in-flight message ARGV[2] (tag ARGV[3], exchange ARGV[4], routing key ARGV[5]) in `unacked` and
# drop it from the in-flight list; then move up to ARGV[6] more from the queue KEYS[4] straight into `unacked`,
# returning {tag, raw} for each. A queue entry that fails the checks of `read_entry` is left where it is, for
# the normal path to dead-letter. cjson reads a little more than Python (hex numbers, raw newlines in strings):
# the channel dead-letters such an entry from `unacked` after the take.
_RECORD_AND_TAKE = """
local now = ARGV[1]
local function entry(raw, exchange, routing_key)
  return '[' .. raw .. ',' .. cjson.encode(exchange) .. ',' .. cjson.encode(routing_key) .. ']'
end
local function read(raw)
  local ok, message = pcall(cjson.decode, raw)
  if not ok or type(message) ~= 'table' or type(message.properties) ~= 'table' then return nil end
  local tag, info = message.properties.delivery_tag, message.properties.delivery_info
  if info == nil then info = {} end
  if type(tag) ~= 'string' or type(info) ~= 'table' then return nil end
  local exchange, routing_key = info.exchange or '', info.routing_key or ''
  if type(exchange) ~= 'string' or type(routing_key) ~= 'string' then return nil end
  return tag, exchange, routing_key
end
redis.call('ZADD', KEYS[2], now, ARGV[3])
redis.call('HSET', KEYS[1], ARGV[3], entry(ARGV[2], ARGV[4], ARGV[5]))
redis.call('LREM', KEYS[3], 1, ARGV[2])
local taken = {}
for i = 1, tonumber(ARGV[6]) do
  local raw = redis.call('LINDEX', KEYS[4], -1)
  if not raw then break end
  local tag, exchange, routing_key = read(raw)
  if not tag then break end
  redis.call('RPOP', KEYS[4])
  redis.call('ZADD', KEYS[2], now, tag)
  redis.call('HSET', KEYS[1], tag, entry(raw, exchange, routing_key))
  taken[#taken + 1] = {tag, raw}
end
return taken
"""

# Take the entry ARGV[1] out of the in-flight list and push ARGV[2] to the list(s) KEYS[2..] (its queues, or
# the dead-letter list), only if no worker removed it meanwhile: a worker that tracked it already owns it.
_PUT_BACK = """
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then return 0 end
for i = 2, #KEYS do redis.call('RPUSH', KEYS[i], ARGV[2]) end
return 1
"""


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

    @property
    def dead_letter_key(self) -> str:
        return f"{self.unacked_key}_dead_letter"

    def close(self) -> None:
        try:
            self.qos.flush_acks()
        except Exception:  # the messages come back after the visibility timeout: redelivered, not lost
            log.warning("could not send the last acks before closing", exc_info=True)
        super().close()

    def _brpop_start(self, timeout: float | None = None) -> None:
        self.qos.flush_acks()
        if timeout is None:
            timeout = self.brpop_timeout
        queues = self._queue_cycle.consume(len(self.active_queues))
        if not queues:
            return
        keys = [(self._q_for_pri(queue, pri), queue) for pri in self.priority_steps for queue in queues]
        key, queue = keys[self._key_to_wait_on([k for k, _ in keys])]
        wait = (timeout or 0) if len(keys) == 1 else min(timeout or MULTI_KEY_WAIT_S, MULTI_KEY_WAIT_S)
        self._blmove_key, self._blmove_queue = key, queue
        self._in_poll = self.client.connection
        self._brpop_sent_at = monotonic()  # type: ignore[assignment]
        self.client.connection.send_command("BLMOVE", key, self.inflight_key, "RIGHT", "LEFT", wait)

    def _key_to_wait_on(self, keys: list[str]) -> int:
        """The first key (by priority, then by the fair queue cycle) that holds messages, as BRPOP would pick.

        BLMOVE waits on one key only. Staying on the key that last gave a message starved the others: a
        training or refit message waited behind the whole ingest backlog. One LLEN round trip per take (of up to
        BULK_TAKE messages) finds the right key; when all are empty, the wait cycles over them.
        """
        if len(keys) > 1:
            with self.conn_or_acquire() as client:
                pipe = client.pipeline(transaction=False)
                for key in keys:
                    pipe.llen(key)
                lengths = pipe.execute()
            waiting = [i for i, length in enumerate(lengths) if length]
            if waiting:
                self._blmove_index = waiting[0]
        return self._blmove_index % len(keys)

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
            assert queue is not None
            self._queue_cycle.rotate(queue)
            try:
                first = read_entry(item)
            except NotDeliverable as exc:
                with self.conn_or_acquire() as client:
                    self.dead_letter(client, item, f"{exc}; taken from queue {queue!r}")
                raise kombu_redis.Empty() from None
            if queue not in self.connection._callbacks:
                # No consumer any more: kombu puts the message back itself, so it must not be in `unacked`.
                self.connection._deliver(first, queue)
                self.client.lrem(self.inflight_key, 1, item)
                return True
            more = self._record_and_take(item, first)
            self._deliver_recorded([first, *self._read_taken(more, queue)], queue)
            return True
        finally:
            self._in_poll = None  # type: ignore[assignment]
            self._flush_brpop_reauth()

    def _record_and_take(self, item: bytes, first: dict[str, Any]) -> list[tuple[bytes, bytes]]:
        """Record `first` in `unacked` and take up to BULK_TAKE - 1 more waiting messages, in one round trip."""
        properties = first["properties"]
        delivery = properties.get("delivery_info") or {}
        room = self.qos.can_consume_max_estimate()
        extra = BULK_TAKE - 1 if room is None else max(0, min(BULK_TAKE, room) - 1)
        keys = [self.unacked_key, self.unacked_index_key, self.inflight_key, self._blmove_key]
        args = [
            time(),
            item,
            properties["delivery_tag"],
            delivery.get("exchange", ""),
            delivery.get("routing_key", ""),
            extra,
        ]
        with self.conn_or_acquire() as client:
            return [(tag, raw) for tag, raw in client.eval(_RECORD_AND_TAKE, len(keys), *keys, *args)]

    def _read_taken(self, taken: list[tuple[bytes, bytes]], queue: str) -> list[dict[str, Any]]:
        """The messages of a bulk take; an entry Lua read but Python cannot leaves `unacked` for the dead letters."""
        messages = []
        for tag, raw in taken:
            try:
                messages.append(read_entry(raw))
            except NotDeliverable as exc:
                with self.conn_or_acquire() as client:
                    pipe = client.pipeline()  # a transaction: the entry is never in both places, nor in neither
                    pipe.hdel(self.unacked_key, tag).zrem(self.unacked_index_key, tag)
                    pipe.rpush(self.dead_letter_key, raw).execute()
                report_dead_letter(raw, f"{exc}; taken from queue {queue!r}", self.dead_letter_key)
        return messages

    def _deliver_recorded(self, payloads: list[dict[str, Any]], queue: str) -> None:
        """Hand messages already in `unacked` to the consumer; kombu's QoS must not record them again."""
        tags = [p["properties"]["delivery_tag"] for p in payloads]
        self.qos.recorded.update(tags)
        try:
            for payload in payloads:
                self.connection._deliver(payload, queue)
        finally:
            # Any not delivered (a callback raised) come back from `unacked` after the visibility timeout.
            self.qos.recorded.difference_update(tags)

    def put_back(self, client: Any, raw: bytes) -> int:
        """Move one in-flight entry back to its queue(s), marked redelivered; 0 when a worker took it meanwhile.

        An entry no queue can take goes to the dead-letter list instead, and counts 0.
        """
        try:
            message = read_entry(raw)
            queues = self._destinations(message)
        except NotDeliverable as exc:
            self.dead_letter(client, raw, f"{exc}; found in the in-flight list {self.inflight_key!r}")
            return 0
        message["properties"].setdefault("delivery_info", {})["redelivered"] = True
        if isinstance(message.setdefault("headers", {}), dict):  # a hand-made message may hold `null` or text
            message["headers"]["redelivered"] = True
        priority = self._get_message_priority(message, reverse=False)
        keys = [self.inflight_key] + [self._q_for_pri(q, priority) for q in queues]
        return int(client.eval(_PUT_BACK, len(keys), *keys, raw, dumps(message)))

    def _destinations(self, message: dict[str, Any]) -> list[str]:
        """The queues a message goes back to; kombu answers [None] or [] where none is bound."""
        delivery = message["properties"].get("delivery_info", {})
        exchange, routing_key = delivery.get("exchange", ""), delivery.get("routing_key", "")
        queues = self._lookup(exchange, routing_key)
        if not queues or not all(queues):
            raise NotDeliverable(f"no queue is bound to exchange {exchange!r} with routing key {routing_key!r}")
        return list(queues)

    def dead_letter(self, client: Any, raw: bytes, reason: str) -> int:
        """Move an in-flight entry to the dead-letter list and report it; 0 when a worker took it meanwhile."""
        keys = [self.inflight_key, self.dead_letter_key]
        moved = int(client.eval(_PUT_BACK, len(keys), *keys, raw, raw))
        if moved:
            report_dead_letter(raw, reason, self.dead_letter_key)
        return moved


class Transport(kombu_redis.Transport):
    """The worker's broker transport: kombu's Redis transport with the in-flight list."""

    Channel = Channel
