"""The outcome tree: what a handler's exception means for the message that caused it.

Handlers raise; one wrapper (in the task/gateway layer) decides: `PermanentError` -> a `*Failed`
event and the message is done (dead-lettered when it was never valid); `RetryableError` -> retried
with backoff up to the task's limit, then treated as permanent. Handlers never ack or reject.
"""

from __future__ import annotations


class WorkerError(Exception):
    """Base of every outcome-bearing error. `reason` is machine-readable (e.g. `UnknownProfile`)."""

    reason: str = "InternalError"

    def __init__(self, message: str, *, reason: str | None = None, details: dict[str, object] | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason
        self.details = details or {}

    @property
    def message(self) -> str:
        return str(self)


class PermanentError(WorkerError):
    """Retrying cannot help (bad input, unknown profile, model failed to load): report and stop."""

    reason = "PermanentError"


class RetryableError(WorkerError):
    """A transient failure (API 5xx, connection refused, conflict): retry after `delay` seconds."""

    reason = "Transient"

    def __init__(self, message: str, *, delay: float = 1.0, reason: str | None = None,
                 details: dict[str, object] | None = None) -> None:
        super().__init__(message, reason=reason, details=details)
        self.delay = delay


class DeadlineExceeded(PermanentError):
    """The request's deadline passed before it could be completed."""

    reason = "DeadlineExceeded"
