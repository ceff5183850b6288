"""What a training-job backend does, whatever it runs on: the Protocol behind `k8s_jobs` and `local_jobs`.

The train handler only speaks this shape: submit a job idempotently (by run id), follow it for a
bounded window while relaying its progress lines, cancel it. It reuses the serving backends'
vocabulary (`Observation`, `FollowPolicy`): for a job, `ready` means it succeeded and its model folder
is in the artefact store; a `failed` observation carries the job's own reason (e.g. `UnknownColumn`
from its error line, or `Timeout`) and the end of its log in `details["log_tail"]`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from schemas.envelope import CloudEvent
from schemas.events import TrainRequested
from training.protocol import Error, Progress, Result, parse_line
from training.spec import JobSpec
from workers.backends.base import Applied, BackendName, FollowPolicy, Observation
from workers.profiles import Profile

OnProgress = Callable[[Progress], None]


@dataclass(frozen=True)
class TrainJob:
    """One training job to run: what the job reads (`spec`) plus what only the platform needs."""

    event: CloudEvent[TrainRequested]
    spec: JobSpec
    profile: Profile
    timeout_s: float

    @property
    def run_id(self) -> str:
        return self.spec.run_id


class JobBackend(Protocol):
    """A place training jobs run. Implementations map their library's errors to `workers.errors`."""

    name: BackendName
    follow_policy: FollowPolicy

    def submit(self, job: TrainJob) -> Applied:
        """Start the job, or adopt the one already running (or finished) under the same run id."""
        ...

    def follow(self, run_id: str, window_s: float, on_progress: OnProgress) -> Observation:
        """Watch the job for at most `window_s`, relaying new progress lines; return early when it ends."""
        ...

    def cancel(self, run_id: str) -> bool:
        """Stop the job; False when there was nothing running."""
        ...

    def close(self) -> None:
        ...


def outcome_from_log(lines: list[str], *, tail: str, ended: str) -> Observation:
    """The observation for a job that has ended, read from its protocol lines.

    Args:
        lines: the job's log lines (or the last of them).
        tail: the end of the log, attached to failures.
        ended: how it ended when no protocol line says (e.g. "the job exited with code 137").
    """
    result: Result | None = None
    error: Error | None = None
    for line in lines:
        parsed = parse_line(line)
        if isinstance(parsed, Result):
            result = parsed
        elif isinstance(parsed, Error):
            error = parsed
    details: dict[str, Any] = {"log_tail": tail}
    if result is not None and error is None:
        return Observation("ready", details={"result": result.data})
    if error is not None:
        return Observation("failed", reason=error.reason, message=error.message, details=details)
    return Observation("failed", reason="JobFailed", message=ended, details=details)
