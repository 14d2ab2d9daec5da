"""The broker transport's QoS: kombu's ack emulation with acks sent in groups, and the sweep of the in-flight list.

The sweep puts back what a worker took off a queue (with `BLMOVE`, see `worker.broker`) but never recorded in
`unacked`, because it died in between. It runs with kombu's own `restore_visible` and waits as long as kombu
does for `unacked`: an entry goes back once it has been seen in the in-flight list for the visibility timeout.
"""

from __future__ import annotations

import hashlib
import logging
from time import time
from typing import TYPE_CHECKING, Any

from kombu.transport import redis as kombu_redis
from kombu.utils.encoding import bytes_to_str

if TYPE_CHECKING:
    from worker.broker import Channel

log = logging.getLogger(__name__)


def put_back_or_skip(channel: Channel, client: Any, raw: bytes) -> int:
    """`put_back`, but an entry that fails to go back cannot stop the sweep of the others."""
    try:
        return channel.put_back(client, raw)
    except channel.connection_errors:
        raise  # Redis itself is gone: every other entry would fail the same way
    except Exception:
        log.exception("could not put back in-flight entry %r; the next sweep tries again", raw[:200])
        return 0


class QoS(kombu_redis.QoS):
    """kombu's ack emulation with acks sent in groups, plus the sweep of the in-flight list."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.recorded: set[str] = set()  # tags the channel already wrote to `unacked`, about to be delivered
        self._pending_acks: list[str] = []

    def append(self, message: Any, delivery_tag: str) -> None:
        if delivery_tag in self.recorded:
            self.recorded.discard(delivery_tag)
            kombu_redis.virtual.QoS.append(self, message, delivery_tag)
        else:
            super().append(message, delivery_tag)

    def ack(self, delivery_tag: str) -> None:
        self._pending_acks.append(delivery_tag)
        kombu_redis.virtual.QoS.ack(self, delivery_tag)

    def flush_acks(self) -> None:
        """Remove the acked messages from `unacked` in one round trip."""
        if not self._pending_acks:
            return
        tags, self._pending_acks = self._pending_acks, []
        with self.pipe_or_acquire() as pipe:
            pipe.zrem(self.unacked_index_key, *tags).hdel(self.unacked_key, *tags).execute()

    def restore_visible(self, start: int = 0, num: int = 10, interval: int = 10) -> None:
        self.flush_acks()
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
            restored = sum(put_back_or_skip(channel, client, raw) for raw in stale)
        if restored:
            log.warning("put back %d message(s) a dead worker had taken but not tracked", restored)
        return restored
