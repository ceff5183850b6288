"""Liveness and readiness of a worker process, served next to /metrics as /healthz and /readyz.

Kubernetes restarts a pod whose liveness probe fails and stops sending it work (or counting it
ready for a rollout) while its readiness probe fails. For a queue worker that means:

* ready   = connected to the broker and consuming (every component has said `set_ready(True)` and
            its checks pass);
* live    = no component that is supposed to be running has stopped making progress: a component
            that `beat`s while ready must beat again within `stale_after_s`. A broker outage makes a
            worker unready, not dead: restarting it would not bring the broker back.

Components report into one process-wide `HEALTH`. The Celery workers get it from the `CeleryHealth`
consumer bootstep; the asyncio invoke worker wraps its consuming phase in `asyncio_component(...)`.

Example:
    >>> HEALTH.set_ready("consumer", True)
    >>> HEALTH.readiness().ok
    True
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from celery import bootsteps
from prometheus_client import REGISTRY, CollectorRegistry, make_wsgi_app

Check = Callable[[], tuple[bool, str]]


@dataclass
class _Component:
    ready: bool = False
    detail: str = ""
    last_beat: float | None = None
    stale_after_s: float = 60.0
    checks: list[Check] = field(default_factory=list)


@dataclass(frozen=True)
class Probe:
    """A probe's answer: overall ok, and per component whether it is ok and why."""

    ok: bool
    components: dict[str, dict[str, Any]]

    def to_json(self) -> bytes:
        return json.dumps({"status": "ok" if self.ok else "fail", "components": self.components}).encode()


class Health:
    """What the parts of one worker process report about themselves (thread-safe)."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._components: dict[str, _Component] = {}

    def _get(self, name: str) -> _Component:
        return self._components.setdefault(name, _Component())

    def set_ready(self, component: str, ready: bool, detail: str = "") -> None:
        """Say whether `component` can take work now (and, if not, why)."""
        with self._lock:
            part = self._get(component)
            part.ready, part.detail = ready, detail

    def add_check(self, component: str, check: Check) -> None:
        """A readiness check evaluated at probe time, e.g. `lambda: (conn.connected, "broker connection")`."""
        with self._lock:
            self._get(component).checks.append(check)

    def beat(self, component: str, *, stale_after_s: float = 60.0) -> None:
        """`component` made progress; while it is ready it must beat again within `stale_after_s`."""
        with self._lock:
            part = self._get(component)
            part.last_beat, part.stale_after_s = self._clock(), stale_after_s

    def forget(self, component: str) -> None:
        with self._lock:
            self._components.pop(component, None)

    def readiness(self) -> Probe:
        with self._lock:
            parts = dict(self._components)
        report: dict[str, dict[str, Any]] = {}
        for name, part in parts.items():
            ok, details = part.ready, [part.detail] if part.detail else []
            for check in part.checks if ok else ():
                try:
                    passed, why = check()
                except Exception as exc:  # a check that cannot run says "not ready", never crashes the probe
                    passed, why = False, f"{type(exc).__name__}: {exc}"
                ok = ok and passed
                if not passed:
                    details.append(why)
            report[name] = {"ok": ok, "detail": "; ".join(details)}
        return Probe(bool(report) and all(r["ok"] for r in report.values()), report)

    def liveness(self) -> Probe:
        now = self._clock()
        with self._lock:
            parts = dict(self._components)
        report: dict[str, dict[str, Any]] = {}
        for name, part in parts.items():
            stalled = part.ready and part.last_beat is not None and now - part.last_beat > part.stale_after_s
            age = None if part.last_beat is None else round(now - part.last_beat, 1)
            report[name] = {"ok": not stalled, "last_beat_s": age,
                            "detail": f"no progress for {age}s" if stalled else ""}
        return Probe(all(r["ok"] for r in report.values()), report)


#: The process-wide health of this worker.
HEALTH = Health()


async def heartbeat(component: str, *, interval_s: float = 5.0, stale_after_s: float = 60.0,
                    health: Health = HEALTH) -> None:
    """Beat every `interval_s` until cancelled: proves an asyncio loop is not blocked (run as a task)."""
    while True:
        health.beat(component, stale_after_s=stale_after_s)
        await asyncio.sleep(interval_s)


@asynccontextmanager
async def asyncio_component(name: str, *, connected: Callable[[], bool], interval_s: float = 5.0,
                            stale_after_s: float = 60.0, health: Health = HEALTH) -> AsyncIterator[None]:
    """Ready while inside the block and `connected()`, with a heartbeat from the event loop.

    For asyncio workers: wrap the part of the service that runs while consuming.

    Example:
        >>> async with asyncio_component("invoke-consumer", connected=lambda: broker.connected):  # doctest: +SKIP
        ...     await stop.wait()
    """
    health.forget(name)
    health.add_check(name, lambda: (connected(), "broker connection lost (reconnecting)"))
    health.set_ready(name, True)
    beating = asyncio.create_task(heartbeat(name, interval_s=interval_s, stale_after_s=stale_after_s, health=health))
    try:
        yield
    finally:
        health.set_ready(name, False, "stopping")
        beating.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await beating


# --------------------------------------------------------------------------------------------- Celery


class CeleryHealth(bootsteps.StartStopStep):  # type: ignore[misc]  # celery is untyped
    """Consumer bootstep: ready while the consumer is connected and consuming, beating from its loop.

    Celery restarts the consumer blueprint on a lost connection (stop, reconnect, start), which
    flips readiness off and on again here.
    """

    requires = ("celery.worker.consumer.tasks:Tasks",)
    component = "celery-consumer"
    interval_s = 5.0
    stale_after_s = 60.0

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self._timer: Any = None

    def start(self, parent: Any) -> None:
        HEALTH.forget(self.component)
        HEALTH.add_check(self.component, lambda: (bool(parent.connection and parent.connection.connected),
                                                  "broker connection lost"))
        HEALTH.beat(self.component, stale_after_s=self.stale_after_s)
        HEALTH.set_ready(self.component, True)
        if parent.timer is not None:
            self._timer = parent.timer.call_repeatedly(
                self.interval_s, HEALTH.beat, (self.component,), {"stale_after_s": self.stale_after_s}
            )

    def stop(self, parent: Any) -> None:
        HEALTH.set_ready(self.component, False, "consumer stopped (reconnecting to the broker?)")
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def shutdown(self, parent: Any) -> None:
        self.stop(parent)
        HEALTH.set_ready(self.component, False, "worker shutting down")


# --------------------------------------------------------------------------------------------- server


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # probes every few seconds would flood logs
        pass


def wsgi_app(health: Health = HEALTH, registry: CollectorRegistry = REGISTRY) -> Callable[..., Iterable[bytes]]:
    """/metrics (Prometheus text format), /healthz (liveness) and /readyz (readiness), JSON, 200 or 503."""
    metrics = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path in ("/healthz", "/readyz"):
            probe = health.liveness() if path == "/healthz" else health.readiness()
            body = probe.to_json()
            start_response("200 OK" if probe.ok else "503 Service Unavailable",
                           [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
            return [body]
        return metrics(environ, start_response)  # type: ignore[no-any-return]

    return app


@dataclass
class HealthServer:
    """A running /metrics + probes server; `close()` stops it."""

    server: WSGIServer
    thread: threading.Thread

    @property
    def port(self) -> int:
        return int(self.server.server_port)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def serve(port: int, *, addr: str = "0.0.0.0", health: Health = HEALTH,
          registry: CollectorRegistry = REGISTRY) -> HealthServer:
    """Serve /metrics, /healthz and /readyz on `port` (0 picks a free one) in a daemon thread."""
    server = make_server(addr, port, wsgi_app(health, registry), server_class=_Server, handler_class=_Quiet)
    thread = threading.Thread(target=server.serve_forever, name="modelbus-health", daemon=True)
    thread.start()
    return HealthServer(server, thread)
