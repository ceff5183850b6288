"""The CloudEvents 1.0 structured JSON envelope every modelbus message travels in.

`new_event` builds an envelope (a caused event inherits correlation id and trace context, and names
its cause), `encode` turns it into bytes plus the AMQP properties that mirror it, and `decode` is the
one decoder for any event: size check, JSON parse, discriminated union on `type`, full validation.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Generic, TypeVar

from pydantic import (
    AwareDatetime,
    Discriminator,
    Field,
    StringConstraints,
    Tag,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from schemas.events import BY_TYPE, EVENT_TYPES, Event
from schemas.types import ALLOW_SECRET_ENVS, Frozen

CONTENT_TYPE = "application/cloudevents+json"
DATA_CONTENT_TYPE = "application/json"
#: Largest encoded event accepted on the wire. Invoke bodies beyond this belong in object storage.
MAX_EVENT_BYTES = 1_048_576
DEFAULT_SOURCE = "/modelbus"

EventId = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:\-]+$")]
TraceParent = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")]

D = TypeVar("D", bound=Event)

#: Namespace for ids derived from other ids (results of a request are idempotent by construction).
_DERIVED_NS = uuid.UUID("6f1d7b9c-8a55-4c1e-9a7e-2f0f3b7d4a10")


class CloudEvent(Frozen, Generic[D]):
    """A CloudEvents 1.0 envelope around one modelbus event.

    The extensions `correlationid` (shared by every event of one workflow), `causationid` (the id of
    the event that caused this one) and `traceparent` (W3C trace context) are carried as top-level
    attributes, as the CloudEvents JSON format requires.
    """

    specversion: str = Field(default="1.0", pattern=r"^1\.0$")
    id: EventId
    source: Annotated[str, Field(min_length=1, max_length=512)] = DEFAULT_SOURCE
    type: str
    time: AwareDatetime
    subject: Annotated[str, Field(max_length=512)] | None = None
    datacontenttype: str = DATA_CONTENT_TYPE
    data: D
    correlationid: EventId
    causationid: EventId | None = None
    traceparent: TraceParent | None = None

    @model_validator(mode="after")
    def _type_matches_data(self) -> CloudEvent[D]:
        expected = type(self.data).event_type()
        if self.type != expected:
            raise ValueError(f"type {self.type!r} does not match data of {expected!r}")
        return self

    @property
    def routing_key(self) -> str:
        return self.data.routing_key


def _type_of(value: Any) -> str | None:
    if isinstance(value, dict):
        found = value.get("type")
        return found if isinstance(found, str) and found in BY_TYPE else None
    return getattr(value, "type", None)



def _build_adapter() -> TypeAdapter[CloudEvent[Any]]:
    from typing import Union

    members = tuple(Annotated[CloudEvent[cls], Tag(cls.event_type())] for cls in EVENT_TYPES)  # type: ignore[valid-type]
    union = Union[members]  # type: ignore[valid-type]  # noqa: UP007 - built from a runtime tuple
    return TypeAdapter(Annotated[union, Discriminator(_type_of)])


_ADAPTER = _build_adapter()


class EventDecodeError(ValueError):
    """A message is not a valid modelbus event. `reason` is machine-readable, `str()` is for people."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def new_event(
    data: D,
    *,
    source: str = DEFAULT_SOURCE,
    cause: CloudEvent[Any] | None = None,
    correlation_id: str | None = None,
    subject: str | None = None,
    event_id: str | None = None,
    traceparent: str | None = None,
    time: datetime | None = None,
) -> CloudEvent[D]:
    """Wrap event data in an envelope.

    Args:
        data: the event payload.
        source: who emits it (CloudEvents `source`), e.g. `/modelbus/workers/deploy`.
        cause: the event this one answers; its correlation id and trace context are inherited and
            its id becomes `causationid`.
        correlation_id: for a new workflow; defaults to the event id.
        subject: what it is about (defaults to the service or model name when the data has one).
        event_id: a fixed id, for idempotent results (see `derived_id`).

    Example:
        >>> ev = new_event(UndeployRequested(service="sentiment"))  # doctest: +SKIP
    """
    eid = event_id or str(uuid.uuid4())
    correlation = correlation_id or (cause.correlationid if cause else None) or eid
    envelope_cls: Any = CloudEvent[type(data)]  # type: ignore[misc]
    event: CloudEvent[D] = envelope_cls(
        id=eid,
        source=source,
        type=type(data).event_type(),
        time=time or datetime.now(UTC),
        subject=subject if subject is not None else _default_subject(data),
        data=data,
        correlationid=correlation,
        causationid=cause.id if cause else None,
        traceparent=traceparent or (cause.traceparent if cause else None),
    )
    return event


def _default_subject(data: Event) -> str | None:
    for attr in ("service", "name"):
        value = getattr(data, attr, None)
        if isinstance(value, str):
            return value
    return None


def derived_id(cause_id: str, purpose: str) -> str:
    """A deterministic id for the event that `purpose` derives from `cause_id`.

    A redelivered request therefore yields a result with the same id, which consumers de-duplicate.
    """
    return str(uuid.uuid5(_DERIVED_NS, f"{cause_id}/{purpose}"))


def encode(event: CloudEvent[Any]) -> bytes:
    """Serialize to CloudEvents structured JSON; raises ValueError past MAX_EVENT_BYTES."""
    body = event.model_dump_json(exclude_none=True).encode()
    if len(body) > MAX_EVENT_BYTES:
        raise ValueError(f"event is {len(body)} bytes, over the {MAX_EVENT_BYTES}-byte limit")
    return body


def amqp_properties(event: CloudEvent[Any]) -> dict[str, Any]:
    """The AMQP basic properties that mirror the envelope (kept free of any AMQP library)."""
    headers: dict[str, Any] = {"ce-specversion": "1.0", "ce-source": event.source}
    if event.causationid:
        headers["causationid"] = event.causationid
    if event.traceparent:
        headers["traceparent"] = event.traceparent
    return {
        "message_id": event.id,
        "correlation_id": event.correlationid,
        "type": event.type,
        "content_type": CONTENT_TYPE,
        "delivery_mode": 2,
        "timestamp": int(event.time.timestamp()),
        "app_id": "modelbus",
        "headers": headers,
    }


def decode(
    raw: bytes | str | dict[str, Any],
    *,
    max_bytes: int = MAX_EVENT_BYTES,
    allow_plain_secret_envs: bool = False,
) -> CloudEvent[Any]:
    """Decode and validate any modelbus event.

    Raises:
        EventDecodeError: with reason `TooLarge`, `NotJSON`, `NotAnObject`, `UnknownType` or
            `SchemaViolation`, and a message listing what is wrong.
    """
    if isinstance(raw, bytes | str):
        if len(raw) > max_bytes:
            raise EventDecodeError("TooLarge", f"message is {len(raw)} bytes, over the {max_bytes}-byte limit")
        try:
            obj = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise EventDecodeError("NotJSON", f"message is not JSON: {exc}") from exc
    else:
        obj = raw
    if not isinstance(obj, dict):
        raise EventDecodeError("NotAnObject", "a CloudEvent must be a JSON object")
    if obj.get("type") not in BY_TYPE:
        known = ", ".join(sorted(BY_TYPE))
        raise EventDecodeError("UnknownType", f"unknown event type {obj.get('type')!r}; known: {known}")
    try:
        return _ADAPTER.validate_python(obj, context={ALLOW_SECRET_ENVS: allow_plain_secret_envs})
    except ValidationError as exc:
        raise EventDecodeError("SchemaViolation", format_validation_error(exc)) from exc


def format_validation_error(exc: ValidationError) -> str:
    """One readable line per problem: `data.service: String should match pattern ...`."""
    lines = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(p) for p in err["loc"] if str(p) not in BY_TYPE)
        lines.append(f"{loc or '<event>'}: {err['msg']}")
    return "; ".join(lines)


def validate_data(event_name: str, data: dict[str, Any], *, allow_plain_secret_envs: bool = False) -> Event:
    """Validate a bare `data` object for the named event (class name, routing key or type)."""
    from schemas.events import event_class

    cls = event_class(event_name)
    return cls.model_validate(data, context={ALLOW_SECRET_ENVS: allow_plain_secret_envs})
