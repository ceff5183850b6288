"""Malformed and hostile messages, each with the dead-letter reason a worker must give it.

Every kind a producer in any language could get wrong is here: bytes that are not JSON, JSON that is
not an object, a wrong content type, an unknown event type, schema violations, oversized bodies,
names Kubernetes would refuse, URI schemes modelbus must not fetch from, events sent to the wrong
queue, and plain envs that look like secrets.
"""

from __future__ import annotations

import itertools
import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from schemas.envelope import CONTENT_TYPE, encode, new_event
from schemas.events import DeployRequested, InvokeRequested, UndeployRequested

#: Largest event the workers under test accept (set through MODELBUS_MAX_EVENT_BYTES), bytes.
MAX_EVENT_BYTES = 32_768


@dataclass(frozen=True)
class BadMessage:
    kind: str
    reason: str
    body: bytes
    content_type: str = CONTENT_TYPE
    message_id: str = ""


def _envelope(event_type: str, data: dict[str, Any]) -> dict[str, Any]:
    eid = str(uuid.uuid4())
    return {"specversion": "1.0", "id": eid, "source": "/tests/bad", "type": event_type,
            "time": "2026-01-01T00:00:00Z", "correlationid": eid, "data": data}


def _raw(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def _invoke_kinds() -> list[Callable[[], tuple[str, str, bytes, str]]]:
    good = {"url": "http://127.0.0.1:9/", "body": {"inputs": []}}
    t = InvokeRequested.event_type()
    return [
        lambda: ("schema: no body", "SchemaViolation",
                 _raw(_envelope(t, {"url": "http://127.0.0.1:9/"})), CONTENT_TYPE),
        lambda: ("schema: body not an object", "SchemaViolation",
                 _raw(_envelope(t, {**good, "body": "text"})), CONTENT_TYPE),
        lambda: ("invalid service name", "SchemaViolation",
                 _raw(_envelope(t, {"service": "Not_A_DNS_Name!", "body": {}})), CONTENT_TYPE),
        lambda: ("forbidden scheme file://", "SchemaViolation",
                 _raw(_envelope(t, {**good, "url": "file:///etc/passwd"})), CONTENT_TYPE),
        lambda: ("forbidden scheme javascript:", "SchemaViolation",
                 _raw(_envelope(t, {**good, "url": "javascript:alert(1)"})), CONTENT_TYPE),
        lambda: ("wrong queue", "WrongQueue", encode(new_event(UndeployRequested(service="elsewhere"))), CONTENT_TYPE),
    ]


def _deploy_kinds() -> list[Callable[[], tuple[str, str, bytes, str]]]:
    t = DeployRequested.event_type()
    good = {"service": "fine", "path": "hf://org/model"}
    return [
        lambda: ("schema: no path", "SchemaViolation", _raw(_envelope(t, {"service": "fine"})), CONTENT_TYPE),
        lambda: ("schema: replicas out of range", "SchemaViolation",
                 _raw(_envelope(t, {**good, "replicas": 10_000})), CONTENT_TYPE),
        lambda: ("invalid service name", "SchemaViolation",
                 _raw(_envelope(t, {**good, "service": "UPPER_and_under"})), CONTENT_TYPE),
        lambda: ("service name too long", "SchemaViolation",
                 _raw(_envelope(t, {**good, "service": "a" * 80})), CONTENT_TYPE),
        lambda: ("forbidden scheme ftp://", "SchemaViolation",
                 _raw(_envelope(t, {**good, "path": "ftp://host/model"})), CONTENT_TYPE),
        lambda: ("forbidden scheme http://", "SchemaViolation",
                 _raw(_envelope(t, {**good, "path": "http://evil.example/model.bin"})), CONTENT_TYPE),
        lambda: ("path traversal", "SchemaViolation",
                 _raw(_envelope(t, {**good, "path": "file://../../etc"})), CONTENT_TYPE),
        lambda: ("secret-looking plain env", "SchemaViolation",
                 _raw(_envelope(t, {**good, "envs": [{"name": "HF_TOKEN", "value": "hf_plainTextToken123"}]})),
                 CONTENT_TYPE),
        lambda: ("wrong queue", "WrongQueue",
                 encode(new_event(InvokeRequested(url="http://127.0.0.1:9/", body={}))), CONTENT_TYPE),
    ]


def _common_kinds(sample: Callable[[], bytes]) -> list[Callable[[], tuple[str, str, bytes, str]]]:
    return [
        lambda: ("not JSON", "NotJSON", b"\x00\xffnot json at all {", CONTENT_TYPE),
        lambda: ("truncated JSON", "NotJSON", sample()[:40], CONTENT_TYPE),
        lambda: ("JSON array", "NotAnObject", b"[1, 2, 3]", CONTENT_TYPE),
        lambda: ("unknown type", "UnknownType", _raw(_envelope("io.modelbus.model.explode", {})), CONTENT_TYPE),
        lambda: ("no type", "UnknownType", _raw({"id": "x", "data": {}}), CONTENT_TYPE),
        lambda: ("wrong content type", "WrongContentType", sample(), "text/plain"),
        lambda: ("oversized", "TooLarge", _raw({"type": "x", "pad": "x" * MAX_EVENT_BYTES}), CONTENT_TYPE),
    ]


def bad_messages(queue: str, count: int) -> Iterator[BadMessage]:
    """`count` bad messages for the `invoke` or `deploy` queue, cycling through every kind."""
    if queue == "invoke":
        specific = _invoke_kinds()

        def sample() -> bytes:
            return encode(new_event(InvokeRequested(url="http://127.0.0.1:9/", body={})))
    else:
        specific = _deploy_kinds()

        def sample() -> bytes:
            return encode(new_event(UndeployRequested(service="sample")))
    kinds = [*_common_kinds(sample), *specific]
    for make in itertools.islice(itertools.cycle(kinds), count):
        kind, reason, body, content_type = make()
        yield BadMessage(kind, reason, body, content_type, message_id=f"bad-{uuid.uuid4()}")
