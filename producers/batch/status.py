"""Where a batch stands (counts, rate, ETA) and what its next lifecycle step is: pure functions.

`status_of` turns the store's counts and the results queue's depth into the numbers a user asks
for; `next_step` decides the transition the collector should make (finalize, complete, expire,
finish cancelling), so the rules live in one place and are tested without a broker.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

from producers.batch.store import BatchRecord, BatchState, Counts


@dataclass(frozen=True)
class BatchStatus:
    """A batch's progress.

    Attributes:
        completed / failed: results collected into the output / error file.
        awaiting_collection: results waiting in the results queue.
        pending: requests without a result yet (sent and in flight, or not sent yet).
        cancelled / expired: requests given up on (error lines `batch_cancelled` / `batch_expired`).
        rate: results per second since the batch started (until it finished).
        eta_s: seconds until every pending request has a result at that rate (None if unknown).
    """

    id: str
    state: BatchState
    total: int
    sent: int
    completed: int
    failed: int
    awaiting_collection: int
    pending: int
    cancelled: int
    expired: int
    rate: float
    eta_s: float | None
    record: BatchRecord

    @property
    def done(self) -> int:
        """Requests with a result, collected or waiting in the queue."""
        return self.completed + self.failed + self.awaiting_collection

    def __str__(self) -> str:
        line = f"{self.id} {self.state.value}: {self.completed} completed, {self.failed} failed"
        if self.cancelled or self.expired:
            line += f", {self.cancelled} cancelled, {self.expired} expired"
        return line + f" of {self.total} ({self.rate:.1f} req/s)"

    def as_dict(self) -> dict[str, Any]:
        found = asdict(self)
        found["state"] = self.state.value
        found["record"] = self.record.model_dump(mode="json")
        return found


def status_of(record: BatchRecord, counts: Counts, depth: int, now: float) -> BatchStatus:
    """Progress of a batch from its record, its request counts and its results queue's depth."""
    pending = max(0, counts.open - depth)
    done = counts.answered + depth
    started = record.in_progress_at
    ended = record.completed_at or record.cancelled_at or record.expired_at or record.failed_at
    elapsed = ((ended or now) - started) if started else 0.0
    rate = done / elapsed if elapsed > 0 else 0.0
    eta = pending / rate if rate > 0 and not record.state.terminal else (0.0 if pending == 0 else None)
    return BatchStatus(
        id=record.id, state=record.state, total=counts.total, sent=counts.sent, completed=counts.completed,
        failed=counts.failed, awaiting_collection=depth, pending=pending, cancelled=counts.cancelled,
        expired=counts.expired, rate=rate, eta_s=eta, record=record,
    )


class Step(StrEnum):
    """What the collector does next with a batch."""

    none = "none"
    finalize = "finalize"  # every request has a result; some still to collect
    complete = "complete"  # every request's line is written
    expire = "expire"  # the completion window passed with requests unanswered
    cancelled = "cancelled"  # a cancelling batch has every result it will get


def next_step(record: BatchRecord, counts: Counts, depth: int, now: float, *, cancel_grace_s: float) -> Step:
    """The lifecycle transition due for a batch (`Step.none` if nothing changes).

    Example:
        >>> next_step(record, Counts(total=2, sent=2, completed=2), 0, now, cancel_grace_s=600)  # doctest: +SKIP
        <Step.complete: 'complete'>
    """
    state = record.state
    if state is BatchState.cancelling:
        in_flight = counts.open - counts.pending
        grace_over = record.cancelling_at is not None and now - record.cancelling_at >= cancel_grace_s
        return Step.cancelled if in_flight <= 0 or grace_over else Step.none
    if state not in (BatchState.in_progress, BatchState.finalizing):
        return Step.none
    if counts.collected >= counts.total:
        return Step.complete
    everything_answered = counts.pending == 0 and counts.answered + depth >= counts.sent
    if everything_answered:
        return Step.finalize if state is BatchState.in_progress else Step.none
    if now >= record.expires_at:
        return Step.expire
    return Step.none
