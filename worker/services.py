"""Where PostgreSQL and Redis are: the configured URLs, or the embedded servers."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from worker import embedded
from worker.errors import ServiceUnavailableError
from worker.settings import Settings


@dataclass(frozen=True)
class ServiceUrls:
    """Connection URLs; they may hold passwords, so never log them whole (see `redact`)."""

    database_url: str
    broker_url: str


def resolve(settings: Settings, *, start_embedded: bool = False) -> ServiceUrls:
    """The URLs to use; embedded servers fill in what is not configured (started only when asked)."""
    database = settings.database.url.get_secret_value() if settings.database.url else None
    broker = settings.broker.url.get_secret_value() if settings.broker.url else None
    if database and broker:
        return ServiceUrls(database_url=database, broker_url=broker)
    servers = embedded.ensure_running(settings.data_dir) if start_embedded else embedded.running(settings.data_dir)
    if servers is None:
        raise ServiceUnavailableError(
            f"no database/broker URL is configured and the embedded servers in {settings.data_dir} are not "
            "running; start them with `tagworker up`, or set TAGWORKER_DATABASE__URL and TAGWORKER_BROKER__URL"
        )
    return ServiceUrls(database_url=database or servers.database_url, broker_url=broker or servers.broker_url)


def redact(url: str) -> str:
    """The URL with any password (in the authority or a `password=` query parameter) replaced by ***."""
    if "://" not in url:
        return url
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        credentials, _, host = netloc.rpartition("@")  # the last @ ends the credentials; passwords may hold @
        user = credentials.split(":", 1)[0]
        netloc = f"{user}:***@{host}" if ":" in credentials else f"{credentials}@{host}"
    query = "&".join(
        f"{key}=***" if key.lower() in ("password", "pass", "pwd") else f"{key}={value}" if sep else key
        for key, sep, value in (pair.partition("=") for pair in parts.query.split("&") if pair)
    )
    tail = urlunsplit(("", "", parts.path, query, parts.fragment))
    return f"{parts.scheme}://{netloc}{tail}"
