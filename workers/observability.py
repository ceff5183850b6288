"""Structured logs and Prometheus metrics shared by every worker.

Logs are one JSON object per line with the event id, correlation id and type of the event being
handled (bound with `bind_event`), and pass through a redactor so credentials never reach them.
Metrics live in the default prometheus_client registry and are served by `start_metrics_server`.
"""

from __future__ import annotations

import contextvars
import functools
import json
import logging
import re
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar

from prometheus_client import Counter, Gauge, Histogram

from schemas.envelope import CloudEvent

_EVENT_FIELDS: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("modelbus_event", default=None)

#: Things that must never reach a log line: URL passwords, bearer tokens, HF tokens, key=value secrets.
_REDACTIONS = (
    (re.compile(r"(\b[a-z][a-z0-9+.-]*://[^:/\s@]+:)[^@\s/]+@", re.IGNORECASE), r"\1***@"),
    (re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._\-]+"), r"\1***"),
    (re.compile(r"\bhf_[A-Za-z0-9]{10,}\b"), "hf_***"),
    (re.compile(r"(?i)\b((?:[A-Z0-9_]*?)(?:TOKEN|SECRET|PASSWORD|API_?KEY)[A-Z0-9_]*\s*[=:]\s*)\S+"), r"\1***"),
)


def redact(text: str) -> str:
    """Mask credentials in free text (URLs with passwords, bearer/HF tokens, KEY=value secrets)."""
    for pattern, replacement in _REDACTIONS:
        text = pattern.sub(replacement, text)
    return text


class JsonFormatter(logging.Formatter):
    """One JSON object per record, with the bound event fields and any `extra={...}` fields."""

    _STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": redact(record.getMessage()),
        }
        out.update(_EVENT_FIELDS.get() or {})
        for key, value in vars(record).items():
            if key not in self._STANDARD and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = redact(self.formatException(record.exc_info))
        return json.dumps(out, default=str)


class RedactingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def configure_logging(level: str = "INFO", fmt: str = "json") -> None:
    """Route the root logger to stderr as JSON lines (or redacted text for humans)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else RedactingFormatter("%(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("pika", "kubernetes.client.rest", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@contextmanager
def bind_event(event: CloudEvent[Any]) -> Iterator[None]:
    """Attach the event's ids to every log line written inside the block."""
    token = _EVENT_FIELDS.set(
        {"event_id": event.id, "correlation_id": event.correlationid, "event_type": event.type,
         "subject": event.subject}
    )
    try:
        yield
    finally:
        _EVENT_FIELDS.reset(token)


# ---------------------------------------------------------------------------------------------- metrics

EVENTS_CONSUMED = Counter(
    "modelbus_events_consumed_total", "Events taken from a worker queue.", ["worker", "type"]
)
EVENTS_REJECTED = Counter(
    "modelbus_events_rejected_total", "Messages dead-lettered as invalid, by reason.", ["worker", "reason"]
)
EVENTS_DUPLICATE = Counter(
    "modelbus_events_duplicate_total", "Redelivered events skipped by id.", ["worker", "type"]
)
EVENTS_PUBLISHED = Counter("modelbus_events_published_total", "Outcome events published.", ["type"])
TASKS_FINISHED = Counter(
    "modelbus_tasks_total", "Handled events by outcome (ok, failed, retried, dead_lettered).", ["type", "outcome"]
)
TASK_SECONDS = Histogram(
    "modelbus_task_duration_seconds", "Time a handler took.", ["type"],
    buckets=(0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900),
)
IN_FLIGHT = Gauge("modelbus_tasks_in_flight", "Handlers running now.", ["type"])
BACKEND_OPERATIONS = Counter(
    "modelbus_backend_operations_total", "Backend calls (create, patch, delete, watch...) by result.",
    ["backend", "operation", "result"],
)


class _Named(Protocol):
    @property
    def metric_name(self) -> str: ...


B = TypeVar("B", bound=_Named)
P = ParamSpec("P")
R = TypeVar("R")


def metered(operation: str) -> Callable[[Callable[Concatenate[B, P], R]], Callable[Concatenate[B, P], R]]:
    """Count each call of a backend method in `modelbus_backend_operations_total`.

    The result label is `ok`, or the failure's machine-readable reason (`TransientError` and
    `PermanentError` carry one), else its exception class name.

    Example:
        >>> class LocalBackend:
        ...     metric_name = "local"
        ...     @metered("delete")
        ...     def delete(self, name: str) -> bool: ...
    """

    def decorate(method: Callable[Concatenate[B, P], R]) -> Callable[Concatenate[B, P], R]:
        @functools.wraps(method)
        def counted(self: B, /, *args: P.args, **kwargs: P.kwargs) -> R:
            try:
                result = method(self, *args, **kwargs)
            except Exception as exc:
                reason = getattr(exc, "reason", None)
                label = reason if isinstance(reason, str) and reason else type(exc).__name__
                BACKEND_OPERATIONS.labels(self.metric_name, operation, label).inc()
                raise
            BACKEND_OPERATIONS.labels(self.metric_name, operation, "ok").inc()
            return result

        return counted

    return decorate


@contextmanager
def track_task(event_type: str) -> Iterator[None]:
    """Count in-flight handlers and their duration."""
    IN_FLIGHT.labels(event_type).inc()
    start = time.perf_counter()
    try:
        yield
    finally:
        IN_FLIGHT.labels(event_type).dec()
        TASK_SECONDS.labels(event_type).observe(time.perf_counter() - start)


def start_metrics_server(port: int | None, addr: str = "0.0.0.0") -> Any:
    """Serve /metrics and the /healthz, /readyz probes (`workers.health`) on `port`; no-op when None."""
    if port is None:
        return None
    from workers.health import serve

    return serve(port, addr=addr)


def get_logger(name: str) -> logging.Logger:
    return logging.getLogger(name)
