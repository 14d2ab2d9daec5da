"""The Celery configuration a broker URL gets."""

from __future__ import annotations

import ssl

import pytest
from celery import Celery

from worker.broker import TRANSPORT
from worker.celery_config import celery_config
from worker.settings import Settings


def connection(url: str):  # type: ignore[no-untyped-def]
    app = Celery(set_as_current=False)
    app.conf.update(celery_config(Settings(), url))
    return app.connection_for_write()


@pytest.mark.parametrize("url", ["redis://cache:6379/0", "rediss://:secret@cache.example.com:6380/0"])
def test_redis_with_or_without_tls_gets_the_transport_that_keeps_in_flight_messages(url: str) -> None:
    """`rediss://` (managed Redis) used to fall back to kombu's transport, which loses messages of killed workers."""
    assert connection(url).transport_cls == TRANSPORT


def test_tls_verifies_the_server_unless_the_url_says_otherwise() -> None:
    assert connection("rediss://cache:6380/0").ssl == {"ssl_cert_reqs": ssl.CERT_REQUIRED}
    assert connection("rediss://cache:6380/0?ssl_cert_reqs=none").ssl == {"ssl_cert_reqs": ssl.CERT_NONE}
    assert not connection("redis://cache:6379/0").ssl


def test_a_redis_command_gives_up_on_a_half_open_connection() -> None:
    """kombu waits for ever by default: a dead connection hung the worker's event loop on an ack or a queue length."""
    from worker.celery_config import SOCKET_TIMEOUT_S

    assert connection("redis://cache:6379/0").transport_options["socket_timeout"] == SOCKET_TIMEOUT_S
