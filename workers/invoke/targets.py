"""Where an invoke request goes: a named service (from the service directory) or an explicit URL.

The directory is an in-memory map of `ServiceReady` announcements, kept fresh by the
`service.ready` / `service.deleted` events the invoke service subscribes to. On a miss (a worker
that started after the service was announced) it asks the persistent service registry once.

Protocol checks happen here, before anything is queued: a v2 request for a text-generation
service, or a chat request for a classifier, fails at once with `ProtocolMismatch`.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from schemas.events import InvokeRequested, ServiceDeleted, ServiceEndpoints, ServiceReady
from schemas.types import InvokeProtocol, Task
from workers.errors import PermanentError

log = logging.getLogger(__name__)

_GENERATIVE = (InvokeProtocol.openai_completions, InvokeProtocol.openai_chat)
_ENCODER = (InvokeProtocol.v2, InvokeProtocol.v1, InvokeProtocol.openai_embeddings)
_ENDPOINT_FIELD = {
    InvokeProtocol.v2: "v2_infer",
    InvokeProtocol.v1: "v1_predict",
    InvokeProtocol.openai_completions: "openai_completions",
    InvokeProtocol.openai_chat: "openai_chat",
    InvokeProtocol.openai_embeddings: "openai_embeddings",
}


class UnknownService(PermanentError):
    reason = "UnknownService"


class ProtocolMismatch(PermanentError):
    reason = "ProtocolMismatch"


def endpoint_path(protocol: InvokeProtocol, model_name: str) -> str:
    """The KServe-compatible path of a protocol, relative to a server's base URL."""
    return {
        InvokeProtocol.v2: f"/v2/models/{model_name}/infer",
        InvokeProtocol.v1: f"/v1/models/{model_name}:predict",
        InvokeProtocol.openai_completions: "/openai/v1/completions",
        InvokeProtocol.openai_chat: "/openai/v1/chat/completions",
        InvokeProtocol.openai_embeddings: "/openai/v1/embeddings",
    }[protocol]


def supported_protocols(task: Task | None, endpoints: ServiceEndpoints | None) -> tuple[InvokeProtocol, ...]:
    """Protocols a service answers: what its endpoints list, else what its task implies."""
    if endpoints is not None:
        listed = tuple(p for p, f in _ENDPOINT_FIELD.items() if getattr(endpoints, f))
        if listed:
            return listed
    if task is None:
        return tuple(InvokeProtocol)
    generative = task in (Task.text_generation, Task.text2text_generation)
    return _GENERATIVE if generative else _ENCODER


@dataclass(frozen=True)
class Target:
    """One upstream server. `lane` keys its batching, concurrency limit, breaker and HTTP pool."""

    lane: str
    base_url: str
    model_name: str
    service: str | None = None
    task: Task | None = None
    endpoints: ServiceEndpoints | None = None

    def endpoint(self, protocol: InvokeProtocol, model_name: str | None = None) -> str:
        """The URL to POST a request of `protocol` to.

        Raises:
            ProtocolMismatch: the service does not speak that protocol (e.g. v2 on a generative model).
        """
        if self.service is not None:
            supported = supported_protocols(self.task, self.endpoints)
            if protocol not in supported:
                task = self.task.value if self.task else "unknown task"
                raise ProtocolMismatch(
                    f"service {self.service!r} ({task}) does not serve {protocol.value} requests; "
                    f"it serves: {', '.join(p.value for p in supported)}"
                )
            listed = getattr(self.endpoints, _ENDPOINT_FIELD[protocol], None) if self.endpoints else None
            if listed and (model_name is None or model_name == self.model_name):
                return str(listed)
        return self.base_url.rstrip("/") + endpoint_path(protocol, model_name or self.model_name)


def target_of_ready(ready: ServiceReady) -> Target:
    return Target(
        lane=f"service:{ready.service}",
        base_url=ready.url,
        model_name=ready.model_name,
        service=ready.service,
        task=ready.task,
        endpoints=ready.endpoints,
    )


class ServiceDirectory:
    """Ready services by name, from `ServiceReady`/`ServiceDeleted` events, with a registry fallback.

    Args:
        fallback: looks a service up in the persistent registry on a cache miss (None if unknown).

    Example:
        >>> d = ServiceDirectory(fallback=lambda name: None)
        >>> d.apply(ready_event.data)  # doctest: +SKIP
        >>> d.get("sentiment").endpoint(InvokeProtocol.v2)  # doctest: +SKIP
    """

    def __init__(self, fallback: Callable[[str], ServiceReady | None] | None = None) -> None:
        self._fallback = fallback
        self._services: dict[str, Target] = {}

    def apply(self, data: ServiceReady | ServiceDeleted) -> None:
        if isinstance(data, ServiceReady):
            self._services[data.service] = target_of_ready(data)
        else:
            self._services.pop(data.service, None)

    def get(self, name: str) -> Target | None:
        found = self._services.get(name)
        if found is None and self._fallback is not None:
            ready = self._fallback(name)
            if ready is not None:
                found = self._services[name] = target_of_ready(ready)
        return found

    def resolve(self, request: InvokeRequested) -> tuple[Target, str]:
        """The target of a request and the URL to call.

        Raises:
            UnknownService: no ready service has that name.
            ProtocolMismatch: the service does not speak the request's protocol.
        """
        if request.url is not None:
            url = str(request.url).rstrip("/")
            target = Target(lane=f"url:{url}", base_url=url, model_name=request.model_name or "model")
        else:
            assert request.service is not None  # the event validates "exactly one of service or url"
            found = self.get(request.service)
            if found is None:
                raise UnknownService(f"no ready service named {request.service!r}; deploy it first or check the name")
            target = found
        return target, target.endpoint(request.protocol, request.model_name)


def registry_fallback(state_dir: Path) -> Callable[[str], ServiceReady | None]:
    """Look services up in the persistent service registry of `state_dir` (written by the deploy worker)."""
    from workers.registry import ServiceRegistry

    registry = ServiceRegistry(state_dir)

    def lookup(name: str) -> ServiceReady | None:
        try:
            record = registry.get(name)
        except (OSError, ValueError, sqlite3.Error) as exc:
            log.warning("service registry lookup failed: %s", exc)
            return None
        return record.ready if record is not None else None

    return lookup
