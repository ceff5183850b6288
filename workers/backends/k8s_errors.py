"""How Kubernetes API failures become outcomes, for every backend that talks to a cluster.

Serving (`kserve`) and training (`k8s_jobs`) must report the same failure the same way, so the
mapping lives here once: 403/401 -> PermanentError (`Forbidden`/`Unauthorized`), 400/422 ->
PermanentError (`Invalid`), 404 -> PermanentError (`NotFound`), 409/429/5xx and an unreachable API
-> RetryableError. Following an object is a resourceVersion-aware watch that reconnects on dropped
streams and resyncs on 410 Gone; `follow_watch` holds that loop so both backends handle a flaky
API server alike.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import urllib3
from kubernetes import watch
from kubernetes.client.exceptions import ApiException

from workers.backends.base import Observation
from workers.errors import PermanentError, RetryableError, WorkerError
from workers.observability import get_logger

log = get_logger(__name__)

#: Connection-level failures: the API server could not be reached or the stream dropped.
UNREACHABLE = (urllib3.exceptions.HTTPError, OSError)

#: API statuses retrying cannot fix, and the reason each becomes.
PERMANENT_STATUSES = {403: "Forbidden", 401: "Unauthorized", 400: "Invalid", 422: "Invalid", 404: "NotFound"}

#: Statuses during a watch that reconnecting cannot fix (the rest are retried within the window).
_WATCH_FATAL = (401, 403, 404)

#: The longest pause before reconnecting a failed watch, in seconds.
_RECONNECT_DELAY_S = 0.5

Observe = Callable[[], tuple[Observation, str | None]]
WatchOnce = Callable[[str | None, float, Observation], tuple[Observation, str | None]]


def _status_message(exc: ApiException) -> str:
    try:
        body = json.loads(exc.body or "{}")
    except (TypeError, ValueError):
        body = {}
    return str(body.get("message") or exc.reason or f"HTTP {exc.status}")


def api_error(exc: ApiException, action: str) -> WorkerError:
    """The outcome an API error means, with the API's own message."""
    status = exc.status or 0
    message = f"Kubernetes API refused to {action}: {_status_message(exc)}"
    details: dict[str, object] = {"status": status}
    if status in PERMANENT_STATUSES:
        return PermanentError(message, reason=PERMANENT_STATUSES[status], details=details)
    if status == 429:
        retry_after = str((exc.headers or {}).get("Retry-After") or "")
        delay = float(retry_after) if retry_after.isdigit() else 2.0
        return RetryableError(message, delay=delay, reason="Throttled", details=details)
    if status == 409:
        return RetryableError(message, delay=0.5, reason="Conflict", details=details)
    return RetryableError(message, delay=2.0, reason="KubernetesUnavailable", details=details)


@contextmanager
def mapped_errors(action: str) -> Iterator[None]:
    """Map `ApiException` and connection failures raised inside the block (see `api_error`)."""
    try:
        yield
    except ApiException as exc:
        raise api_error(exc, action) from exc
    except UNREACHABLE as exc:
        raise RetryableError(
            f"Kubernetes API unreachable while trying to {action}: {exc}", delay=2.0, reason="KubernetesUnreachable"
        ) from exc


def watch_arguments(name: str, version: str | None, remaining: float, api_timeout: float) -> dict[str, Any]:
    """Keyword arguments of a list call that watches the object called `name` for `remaining` seconds."""
    kwargs: dict[str, Any] = {
        "field_selector": f"metadata.name={name}",
        "timeout_seconds": max(1, int(remaining)),
        "_request_timeout": (min(api_timeout, 10.0), remaining),
    }
    if version:
        kwargs["resource_version"] = version
    return kwargs


def watch_one(
    what: str,
    name: str,
    stream: watch.Watch,
    events: Iterator[Any],
    *,
    version: str | None,
    remaining: float,
    last: Observation,
    interpret: Callable[[dict[str, Any]], Observation],
) -> tuple[Observation, str | None]:
    """Follow `events` (from `stream`, a watch made with `watch_arguments`) for at most `remaining` seconds.

    `interpret` turns the object called `name` into an observation. Returns the last observation and
    resourceVersion; a deletion ends the watch as `missing`. `what` names the object in messages.
    """
    end = time.monotonic() + remaining
    observation = last
    for event in events:
        if not isinstance(event, dict) or event.get("type") == "BOOKMARK":
            continue
        obj = event.get("raw_object") or event.get("object") or {}
        meta = obj.get("metadata") or {}
        if meta.get("name") != name:
            continue
        version = meta.get("resourceVersion") or version
        if event["type"] == "DELETED":
            stream.stop()  # type: ignore[no-untyped-call]
            return Observation("missing", reason="Deleted", message=f"{what} was deleted"), None
        observation = interpret(obj)
        if observation.final or time.monotonic() >= end:  # a busy stream must not outlast the window
            stream.stop()  # type: ignore[no-untyped-call]
            break
    return observation, version


def follow_watch(what: str, window_s: float, *, observe: Observe, watch_once: WatchOnce) -> Observation:
    """Observe, then watch until the observation is final or `window_s` has passed.

    `observe()` reads the object (observation and resourceVersion); `watch_once(version, remaining,
    last)` watches from that version for at most `remaining` seconds. A 410 Gone resyncs from a fresh
    read; 401/403/404 end the follow with `api_error` (they would fail every reconnect too); other API
    errors and dropped streams reconnect after a short pause. `what` names the object in messages.
    """
    end = time.monotonic() + window_s
    observation, version = observe()
    while not observation.final and (remaining := end - time.monotonic()) > 0.05:
        try:
            observation, version = watch_once(version, remaining, observation)
        except ApiException as exc:
            if exc.status == 410:  # our resourceVersion is too old: resync from a fresh read
                observation, version = observe()
                continue
            if exc.status in _WATCH_FATAL:
                raise api_error(exc, f"watch {what}") from exc
            log.warning("watch of %s failed (HTTP %s); reconnecting", what, exc.status)
            time.sleep(min(_RECONNECT_DELAY_S, max(0.0, end - time.monotonic())))
        except UNREACHABLE as exc:
            # A read timeout is the normal end of a quiet window; anything else is a dropped stream.
            if time.monotonic() < end - 0.05:
                log.info("watch of %s interrupted (%s); reconnecting", what, type(exc).__name__)
                time.sleep(min(_RECONNECT_DELAY_S, max(0.0, end - time.monotonic())))
    return observation
