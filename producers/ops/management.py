"""A small client of the RabbitMQ management HTTP API: per-queue depths, consumers and rates.

The management API is the only source that counts unacknowledged messages and message rates (an
AMQP passive declare sees ready messages and consumers only), which is why `modelbus status` and the
KEDA scalers prefer it. httpx errors stop here as `ManagementUnavailable`.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import TracebackType
from typing import Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import httpx

from schemas.settings import BrokerSettings, redact_url


class ManagementUnavailable(Exception):
    """The management API did not answer usefully (not enabled, unreachable, refused our credentials)."""


@dataclass(frozen=True)
class ManagementQueue:
    """What the management API knows about one queue (rates in messages per second)."""

    name: str
    ready: int
    unacked: int
    consumers: int
    publish_rate: float | None
    deliver_rate: float | None


def broker_vhost(url: str) -> str:
    """The virtual host of an AMQP URL (`amqp://h/` and `amqp://h` both mean `/`, as in pika)."""
    path = urlsplit(url).path
    return unquote(path[1:]) if len(path) > 1 else "/"


def management_base_url(broker: BrokerSettings) -> str:
    """The management API base URL: `broker.management_url`, else the broker host on 15672 (15671 over TLS)."""
    if broker.management_url:  # credentials in it are used for auth (see _credentials), not kept in the URL
        parts = urlsplit(broker.management_url)
        netloc = parts.netloc.rsplit("@", 1)[-1]
        return urlunsplit((parts.scheme, netloc, parts.path, "", "")).rstrip("/")
    parts = urlsplit(broker.url)
    tls = parts.scheme == "amqps"
    host = parts.hostname or "localhost"
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    return urlunsplit(("https" if tls else "http", f"{host}:{15671 if tls else 15672}", "", "", ""))


def _credentials(broker: BrokerSettings) -> tuple[str, str]:
    """Basic-auth credentials: the management URL's own user if it has one, else the broker URL's."""
    for url in (broker.management_url or "", broker.url):
        parts = urlsplit(url)
        if parts.username:
            return unquote(parts.username), unquote(parts.password or "")
    return "guest", "guest"


def _rate(stats: dict[str, Any], key: str) -> float | None:
    details = stats.get(f"{key}_details")
    return float(details["rate"]) if isinstance(details, dict) and "rate" in details else None


class ManagementClient:
    """Read-only access to one vhost's queues.

    Example:
        >>> with management_client(Settings().broker) as api:  # doctest: +SKIP
        ...     api.queues()["modelbus.deploy"].ready
        3
    """

    def __init__(self, base_url: str, *, vhost: str, auth: tuple[str, str], timeout_s: float = 5.0,
                 verify: bool | str = True) -> None:
        self.base_url = base_url
        self.vhost = vhost
        self._http = httpx.Client(base_url=f"{base_url}/api", auth=auth, timeout=timeout_s, verify=verify)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ManagementClient:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _get(self, path: str, **params: str) -> Any:
        where = redact_url(self.base_url)
        try:
            response = self._http.get(path, params=params)
        except httpx.HTTPError as exc:
            raise ManagementUnavailable(f"management API at {where} unreachable: {exc}") from exc
        if response.status_code in (401, 403):
            raise ManagementUnavailable(f"management API at {where} refused the credentials (HTTP "
                                        f"{response.status_code}); the user needs the 'monitoring' tag")
        if response.status_code == 404:
            raise ManagementUnavailable(f"management API at {where}: {path} not found (HTTP 404)")
        if response.is_error:
            raise ManagementUnavailable(f"management API at {where} answered HTTP {response.status_code}")
        try:
            return response.json()
        except ValueError as exc:
            raise ManagementUnavailable(f"management API at {where} did not answer JSON") from exc

    def queues(self) -> dict[str, ManagementQueue]:
        """Every queue of the vhost by name (statistics lag the broker by its stats interval, ~5 s)."""
        rows = self._get(f"/queues/{quote(self.vhost, safe='')}",
                         columns="name,messages_ready,messages_unacknowledged,consumers,message_stats")
        result: dict[str, ManagementQueue] = {}
        for row in rows:
            stats = row.get("message_stats") or {}
            result[row["name"]] = ManagementQueue(
                name=row["name"],
                ready=int(row.get("messages_ready") or 0),
                unacked=int(row.get("messages_unacknowledged") or 0),
                consumers=int(row.get("consumers") or 0),
                publish_rate=_rate(stats, "publish"),
                deliver_rate=_rate(stats, "deliver_get"),
            )
        return result

    def version(self) -> str:
        """The RabbitMQ version (`/api/overview`)."""
        return str(self._get("/overview").get("rabbitmq_version", "unknown"))


def management_client(broker: BrokerSettings, *, timeout_s: float = 5.0) -> ManagementClient:
    """A client for the broker's management API, with the broker's credentials and CA."""
    verify: bool | str = str(broker.ca_file) if broker.ca_file else True
    return ManagementClient(management_base_url(broker), vhost=broker_vhost(broker.url),
                            auth=_credentials(broker), timeout_s=timeout_s, verify=verify)
