"""Broker-side counts: what waits in the queue and what workers hold unacked."""

from __future__ import annotations

import redis


def queue_depth(broker_url: str, queue: str) -> dict[str, int]:
    """Messages waiting in `queue`, and messages delivered but not yet acked (all queues)."""
    client = redis.Redis.from_url(broker_url, socket_connect_timeout=3)
    try:
        return {"waiting": int(client.llen(queue)), "unacked": int(client.hlen("unacked"))}
    finally:
        client.close()
