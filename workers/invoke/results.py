"""The outcome events of an invoke request (pure builders).

Every outcome of a request has the id `derived_id(request.id, "result")`: a redelivered request
yields a result with the same id, whichever way it ends, so consumers de-duplicate by id.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from schemas.envelope import CloudEvent, derived_id, new_event
from schemas.events import InvokeCompleted, InvokeFailed, InvokeRequested
from workers.invoke.targets import Target

SOURCE = "/modelbus/workers/invoke"
_MAX_MESSAGE = 4000


@dataclass(frozen=True)
class FailureInfo:
    """Why a request failed, as it is reported: reason, words, HTTP-style status, upstream body."""

    reason: str
    message: str
    status_code: int | None = None
    body: dict[str, Any] | None = None
    retryable: bool = False
    attempts: int = 0


def result_id(request_id: str) -> str:
    return derived_id(request_id, "result")


def completed(
    request: CloudEvent[InvokeRequested],
    *,
    target: Target | None,
    body: dict[str, Any],
    status_code: int,
    latency_ms: float,
    batch_size: int,
    attempts: int,
    source: str = SOURCE,
) -> CloudEvent[InvokeCompleted]:
    data = request.data
    # Built from already-validated parts (the request, a JSON object from upstream): skip re-validation
    # on the hot path.
    return new_event(
        InvokeCompleted.model_construct(
            request_id=request.id,
            service=data.service,
            url=str(data.url) if data.url is not None else None,
            protocol=data.protocol,
            status_code=status_code,
            body=body,
            latency_ms=round(latency_ms, 3),
            batch_size=batch_size,
            attempts=attempts,
            batch_id=data.batch_id,
            custom_id=data.custom_id,
        ),
        source=source,
        cause=request,
        event_id=result_id(request.id),
        subject=target.service if target is not None else data.service,
    )


def failed(
    request: CloudEvent[InvokeRequested], info: FailureInfo, *, source: str = SOURCE
) -> CloudEvent[InvokeFailed]:
    data = request.data
    return new_event(
        InvokeFailed(
            request_id=request.id,
            reason=info.reason,
            message=info.message[:_MAX_MESSAGE],
            retryable=info.retryable,
            service=data.service,
            url=str(data.url) if data.url is not None else None,
            protocol=data.protocol,
            status_code=info.status_code,
            body=info.body,
            attempts=info.attempts,
            batch_id=data.batch_id,
            custom_id=data.custom_id,
        ),
        source=source,
        cause=request,
        event_id=result_id(request.id),
    )
