"""What a serving backend does, whatever it runs on: the Protocol behind `kserve` and `local`.

The deploy handler only speaks this shape: apply a service idempotently, follow it for a bounded
window, delete it. Waiting is split into windows so a worker never holds a slot for the minutes a
GPU pod takes to start; between windows the follow-up is a delayed Celery task (see
`workers.deploy.handlers`). The train worker's job backends follow the same `Observation` and
`FollowPolicy` vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from schemas.envelope import CloudEvent
from schemas.events import DeployRequested
from schemas.types import ModelURI
from workers.profiles import Profile

BackendName = Literal["kserve", "local"]
State = Literal["pending", "ready", "failed", "missing"]


@dataclass(frozen=True)
class Observation:
    """What a backend saw of a service or job at one moment.

    Attributes:
        state: `pending` (keep following), `ready`, `failed` (final), `missing` (deleted or never made).
        reason: machine-readable cause, e.g. `ModelLoadFailed`, `ServerExited`.
        message: for people; never contains secret values.
        url: base URL inside the platform; `external_url` from outside, when exposed.
    """

    state: State
    reason: str | None = None
    message: str | None = None
    url: str | None = None
    external_url: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def final(self) -> bool:
        return self.state != "pending"


@dataclass(frozen=True)
class Applied:
    """The outcome of an idempotent apply: whether anything was created or changed."""

    created: bool
    changed: bool


@dataclass(frozen=True)
class FollowPolicy:
    """How long to wait for readiness overall, per follow-up task, and between tasks (seconds)."""

    timeout_s: float
    window_s: float
    recheck_delay_s: float


class ServiceBackend(Protocol):
    """A place model servers run. Implementations map their library's errors to `workers.errors`."""

    name: BackendName
    follow_policy: FollowPolicy

    def apply(self, event: CloudEvent[DeployRequested], profile: Profile, model: ModelURI) -> Applied:
        """Create the service or bring it to the requested spec; applying the same event twice changes nothing."""
        ...

    def follow(self, name: str, window_s: float) -> Observation:
        """Watch the service for at most `window_s` and return as soon as its state is final."""
        ...

    def give_up(self, name: str) -> None:
        """Readiness failed or timed out: release what cannot become ready (a backend may keep it for debugging)."""
        ...

    def delete(self, name: str) -> bool:
        """Delete the service and what modelbus made for it; False when nothing existed."""
        ...

    def close(self) -> None:
        ...
