"""Pure builders: a batch request becomes an `InvokeRequested`; an outcome event becomes a result line.

Ids are derived, never random, so everything is idempotent end to end: a request's event id
derives from (batch id, custom_id), so publishing it again after a crash is recognised by the
invoke worker; the result's id derives from the request's, so a second result is recognised by
the collector.

Result lines follow the OpenAI batch output format:
`{"id", "custom_id", "response": {"status_code", "request_id", "body"}, "error": null}` in the
output file; `{"id", "custom_id", "response": null | {...}, "error": {"code", "message"}}` in the
error file.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from producers.batch.store import BatchRecord, Item
from schemas.envelope import CloudEvent, derived_id, new_event
from schemas.events import InvokeCompleted, InvokeFailed, InvokeRequested

SOURCE = "/modelbus/batch"

Outcome = Literal["completed", "failed", "cancelled", "expired"]

#: Error lines written for requests a batch gave up on, as the OpenAI Batch API words them.
WITHDRAWN: dict[str, tuple[str, str]] = {
    "cancelled": ("batch_cancelled", "The batch was cancelled before this request was executed."),
    "expired": ("batch_expired", "This request could not be executed before the completion window expired."),
}


def results_queue_name(batch_id: str) -> str:
    """The per-batch durable queue the invoke worker answers into."""
    return f"modelbus.batch.{batch_id}.results"


def request_id(batch_id: str, custom_id: str) -> str:
    return derived_id(batch_id, f"request/{custom_id}")


def request_event(record: BatchRecord, item: Item, *, source: str = SOURCE) -> CloudEvent[InvokeRequested]:
    """The `InvokeRequested` of one batch request: tagged with batch and custom id, answered into the
    batch's results queue, with the batch's expiry as its deadline; the batch id is the correlation id."""
    data = InvokeRequested(
        service=record.service,
        url=record.url,
        protocol=item.protocol,
        model_name=item.model_name,
        body=item.body,
        batch_id=record.id,
        custom_id=item.custom_id,
        reply_to=record.results_queue,
        deadline=datetime.fromtimestamp(record.expires_at, UTC),
    )
    return new_event(data, source=source, event_id=request_id(record.id, item.custom_id), correlation_id=record.id,
                     subject=record.service)


def result_line(event: CloudEvent[Any]) -> tuple[Outcome, dict[str, Any]]:
    """The output-file line (outcome `completed`) or error-file line (`failed`) of an outcome event.

    Raises:
        TypeError: the event is not an InvokeCompleted or InvokeFailed.
    """
    data = event.data
    if isinstance(data, InvokeCompleted):
        response = {"status_code": data.status_code, "request_id": data.request_id, "body": data.body}
        return "completed", {"id": event.id, "custom_id": data.custom_id, "response": response, "error": None}
    if isinstance(data, InvokeFailed):
        failed_response = None
        if data.status_code is not None:
            failed_response = {"status_code": data.status_code, "request_id": data.request_id, "body": data.body or {}}
        return "failed", {"id": event.id, "custom_id": data.custom_id, "response": failed_response,
                          "error": {"code": data.reason, "message": data.message}}
    raise TypeError(f"{event.type} is not an invoke outcome")


def withdrawn_line(batch_id: str, custom_id: str, outcome: Literal["cancelled", "expired"]) -> dict[str, Any]:
    """The error-file line of a request the batch gave up on (never sent, or never answered in time)."""
    code, message = WITHDRAWN[outcome]
    return {"id": derived_id(request_id(batch_id, custom_id), outcome), "custom_id": custom_id, "response": None,
            "error": {"code": code, "message": message}}
