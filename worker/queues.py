"""Broker-side facts: what waits in the queue, what workers hold unacked, the server's version."""

from __future__ import annotations

import redis


def queue_depth(broker_url: str, queue: str) -> dict[str, int]:
    """Messages waiting in `queue`, and messages delivered but not yet acked (all queues)."""
    client = redis.Redis.from_url(broker_url, socket_connect_timeout=3)
    try:
        return {"waiting": int(client.llen(queue)), "unacked": int(client.hlen("unacked"))}
    finally:
        client.close()


def broker_redis_version(broker_url: str) -> str | None:
    """`redis_version` of `INFO server`; None when the URL is not Redis or the server does not answer it."""
    if broker_url.partition("://")[0].lower() not in ("redis", "rediss"):
        return None
    try:
        client = redis.Redis.from_url(broker_url, socket_connect_timeout=5, socket_timeout=5)
        try:
            return str(client.info("server")["redis_version"])
        finally:
            client.close()
    except (redis.RedisError, KeyError):  # not up yet (Celery retries), or INFO refused by a managed Redis
        return None
