"""Creating a batch from a validated file, and publishing its requests in claimed chunks.

Creation is all-or-nothing: if any line is invalid the batch is recorded as `failed` with the
bad lines and no request is ever published (unless `skip_invalid`, which leaves those lines out).
Publishing claims a chunk of pending requests in the store, publishes them with pipelined
confirms, then marks them sent; a cancel between two chunks withdraws everything not yet claimed.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from producers.batch.amqp import BatchBroker
from producers.batch.records import request_event, results_queue_name
from producers.batch.store import BatchRecord, BatchState, BatchStore, Item
from producers.batch.validate import EVENT_OVERHEAD_BYTES, Limits, ValidationReport, validate_file, validate_lines
from producers.errors import PublishError
from schemas.settings import Settings

_WINDOW = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86_400}
MAX_WINDOW_S = 30 * 86_400
MAX_METADATA = 16


class InvalidBatch(ValueError):
    """The input file has invalid lines (see `report`); nothing was sent."""

    def __init__(self, report: ValidationReport, record: BatchRecord | None = None) -> None:
        super().__init__(f"the batch file is invalid, nothing was submitted:\n{report.summary()}")
        self.report = report
        self.record = record


def parse_window(text: str) -> float:
    """A completion window (`24h`, `90m`, `3600s`, `2d`, or seconds) in seconds.

    Raises:
        ValueError: not a duration, or outside 1 s .. 30 days.
    """
    match = _WINDOW.match(text)
    if not match:
        raise ValueError(f"completion window {text!r} is not a duration like 24h, 90m or 3600s")
    seconds = float(match.group(1)) * _UNIT_S[match.group(2)]
    if not 1 <= seconds <= MAX_WINDOW_S:
        raise ValueError(f"completion window {text!r} must be between 1s and 30d")
    return seconds


def parse_metadata(pairs: Mapping[str, str] | Iterable[str] | None) -> dict[str, str]:
    """Batch metadata from a mapping or `key=value` strings (at most 16, keys <= 64, values <= 512 chars).

    Raises:
        ValueError: a malformed pair or a limit exceeded.
    """
    if pairs is None:
        return {}
    items: dict[str, str] = {}
    if isinstance(pairs, Mapping):
        items = {str(k): str(v) for k, v in pairs.items()}
    else:
        for pair in pairs:
            key, sep, value = pair.partition("=")
            if not sep or not key:
                raise ValueError(f"metadata {pair!r} is not key=value")
            items[key] = value
    if len(items) > MAX_METADATA:
        raise ValueError(f"at most {MAX_METADATA} metadata pairs")
    for key, value in items.items():
        if len(key) > 64 or len(value) > 512:
            raise ValueError(f"metadata {key!r}: keys are at most 64 characters, values at most 512")
    return items


def limits_of(settings: Settings) -> Limits:
    """The batch size limits, a line being bounded by what fits in one event too."""
    cfg = settings.batch
    return Limits(max_lines=cfg.max_lines, max_file_bytes=cfg.max_file_bytes,
                  max_line_bytes=min(cfg.max_line_bytes, settings.max_event_bytes - EVENT_OVERHEAD_BYTES))


@dataclass(frozen=True)
class Target:
    """What a batch calls: a service by name, or a server base URL."""

    service: str | None = None
    url: str | None = None

    def __post_init__(self) -> None:
        if (self.service is None) == (self.url is None):
            raise ValueError("a batch needs exactly one of service or url")


def create_batch(
    settings: Settings,
    store: BatchStore,
    source: Path | Iterable[bytes | str],
    *,
    target: Target,
    endpoint: str | None = None,
    completion_window: str | None = None,
    metadata: Mapping[str, str] | Iterable[str] | None = None,
    skip_invalid: bool = False,
    max_in_flight: int | None = None,
    now: float | None = None,
) -> BatchRecord:
    """Validate an input file (path or lines) and record the batch (state `validating`).

    Returns:
        the record; `start` then declares its results queue and sets it in progress.

    Raises:
        InvalidBatch: invalid lines and not `skip_invalid`, or no valid line at all (the batch is
            recorded as failed with the errors, nothing is sent).
        ValueError: a bad endpoint, completion window or metadata.
        OSError: the file cannot be read.
    """
    window = completion_window or settings.batch.completion_window
    window_s = parse_window(window)
    meta = parse_metadata(metadata)
    limits = limits_of(settings)
    if isinstance(source, Path):
        report = validate_file(source, endpoint=endpoint, limits=limits)
    else:
        report = validate_lines(source, endpoint=endpoint, limits=limits)
    created = time.time() if now is None else now
    batch_id = f"batch_{uuid.uuid4().hex}"
    where = report.endpoint
    record = BatchRecord(
        id=batch_id, service=target.service, url=target.url,
        endpoint=where.url if where else (endpoint or ""), protocol=where.protocol if where else "v2",
        input_file=str(source) if isinstance(source, Path) else None, total=len(report.requests),
        skipped=len(report.errors) if skip_invalid else 0, completion_window=window, metadata=meta,
        results_queue=results_queue_name(batch_id), results_ttl_s=settings.batch.results_ttl_s,
        max_in_flight=settings.batch.max_in_flight if max_in_flight is None else max_in_flight,
        errors=[{"line": e.line, "code": e.code, "message": e.message, "custom_id": e.custom_id}
                for e in report.errors[:100]],
        created_at=created, expires_at=created + window_s,
    )
    refused = not report.requests or (report.errors and not skip_invalid)
    items = [] if refused else [
        (r.custom_id, r.line, {"protocol": r.protocol.value, "model_name": r.model_name, "body": r.body})
        for r in report.requests
    ]
    store.create(record, items)
    if refused:
        failed = store.transition(batch_id, BatchState.failed, allowed_from=[BatchState.validating], now=created,
                                  message="the input file has invalid lines; nothing was submitted")
        raise InvalidBatch(report, failed)
    return record


async def start(store: BatchStore, broker: BatchBroker, record: BatchRecord, *, now: float) -> BatchRecord:
    """Declare the batch's results queue (before any request names it), then mark it in progress."""
    if record.state is not BatchState.validating:
        return record
    await broker.declare_results(record.results_queue, record.results_ttl_s)
    moved = store.transition(record.id, BatchState.in_progress, allowed_from=[BatchState.validating], now=now)
    return moved or store.get(record.id)


async def publish_items(store: BatchStore, broker: BatchBroker, record: BatchRecord, items: list[Item]) -> None:
    """Publish claimed requests and mark them sent; on failure give them back and re-raise."""
    if not items:
        return
    try:
        await broker.declare_results(record.results_queue, record.results_ttl_s)
        await broker.publish([request_event(record, item) for item in items])
    except PublishError:
        # Some may have been delivered: they keep their ids, so sending them again is harmless.
        store.unclaim(record.id, [item.custom_id for item in items])
        raise
    store.mark_sent(record.id, [item.custom_id for item in items])


async def send_chunk(store: BatchStore, broker: BatchBroker, record: BatchRecord, limit: int) -> int:
    """Claim and publish up to `limit` pending requests (none once the batch is cancelled); returns how many."""
    items = store.claim(record.id, limit)
    await publish_items(store, broker, record, items)
    return len(items)
