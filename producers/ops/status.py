"""What `modelbus status` shows, as data: queues, workers online, services, latest failures.

`collect` gathers it from the broker (management API or AMQP), the Celery workers (broadcast
`inspect active`) and the service registry; every part fails on its own, so a dead management API
or a missing registry still leaves the rest of the screen useful.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console

from producers.errors import BrokerUnavailable
from producers.ops.dlq import DeadLetter, browse
from producers.ops.queues import QueueStats, Source, StatsUnavailable, queue_stats
from schemas.settings import BrokerSettings, Settings
from schemas.topology import WORKER_QUEUES


@dataclass(frozen=True)
class WorkerInfo:
    """A worker process seen online.

    Attributes:
        worker: deploy, train or invoke.
        kind: `celery` (answered `inspect`) or `consumer` (seen only as consumers of its queue).
        tasks: the tasks it runs now (id, name, seconds running) for Celery workers.
    """

    name: str
    worker: str
    kind: str
    tasks: list[dict[str, Any]] = field(default_factory=list)

    @property
    def in_flight(self) -> int:
        return len(self.tasks)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "worker": self.worker, "kind": self.kind, "in_flight": self.in_flight,
                "tasks": self.tasks}


@dataclass
class StatusReport:
    """One refresh of the status screen. `errors` says, per part, what could not be read."""

    generated_at: float
    source: Source | None = None
    queues: list[QueueStats] = field(default_factory=list)
    workers: list[WorkerInfo] = field(default_factory=list)
    services: list[dict[str, Any]] = field(default_factory=list)
    failures: list[DeadLetter] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def queue(self, name: str) -> QueueStats | None:
        return next((q for q in self.queues if q.name == name), None)

    def dead_letters(self, worker: str) -> int | None:
        dlq = self.queue(WORKER_QUEUES[worker].dead_letter_queue)
        return None if dlq is None else dlq.ready + (dlq.unacked or 0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "generated_at": self.generated_at,
            "source": self.source,
            "queues": [
                {**q.to_dict(),
                 "dead_letters": self.dead_letters(q.worker) if q.kind == "events" else None}
                for q in self.queues
            ],
            "workers": [w.to_dict() for w in self.workers],
            "services": self.services,
            "failures": [f.to_dict(self.generated_at) for f in self.failures],
            "errors": self.errors,
            "notes": self.notes,
        }


def latest_failures(broker: BrokerSettings, *, limit: int = 5, scan: int = 100) -> list[DeadLetter]:
    """The most recent dead letters across all dead-letter queues (listing consumes none)."""
    letters: list[DeadLetter] = []
    for queue in WORKER_QUEUES.values():
        with contextlib.suppress(KeyError):  # a DLQ nobody declared yet holds nothing
            letters += browse(broker, queue, limit=scan)
    letters.sort(key=lambda d: d.timestamp or 0.0, reverse=True)
    return letters[:limit]


def consumers_only(report: StatusReport, seen: set[str]) -> list[WorkerInfo]:
    """Workers not seen by Celery inspect (the invoke worker) shown from their queue's consumers."""
    out = []
    for worker, queue in WORKER_QUEUES.items():
        stats = report.queue(queue.name)
        if worker not in seen and stats is not None and stats.consumers:
            out += [WorkerInfo(f"{worker} consumer {i + 1}", worker, "consumer") for i in range(stats.consumers)]
    return out


def collect(
    broker: BrokerSettings,
    *,
    inspect: Callable[[], list[WorkerInfo]],
    services: Callable[[], list[dict[str, Any]]],
    prefer: Source | None = None,
    failures: int = 5,
    clock: Callable[[], float] = time.time,
) -> StatusReport:
    """One status report. Each part that fails is recorded in `errors`, never raised.

    Args:
        inspect: returns the Celery workers online (see `celery_workers`).
        services: returns the service registry's records as dicts.
        prefer: force the stats source ("management" or "amqp").
        failures: how many of the latest dead letters to include.
    """
    report = StatusReport(generated_at=clock())
    try:
        report.source, report.queues, note = queue_stats(broker, prefer=prefer)
        if note:
            report.notes.append(note)
    except StatsUnavailable as exc:
        report.errors["queues"] = str(exc)
    if "queues" in report.errors:
        report.errors["workers"] = "not asked: the broker does not answer"
    else:
        try:
            report.workers = inspect()
        except Exception as exc:  # any failure of a broadcast is reported on screen, not raised
            report.errors["workers"] = f"{type(exc).__name__}: {exc}"
    report.workers += consumers_only(report, {w.worker for w in report.workers})
    try:
        report.services = services()
    except Exception as exc:  # the registry is optional (another machine, no state dir)
        report.errors["services"] = f"{type(exc).__name__}: {exc}"
    if "queues" not in report.errors and failures:
        try:
            report.failures = latest_failures(broker, limit=failures)
        except BrokerUnavailable as exc:
            report.errors["failures"] = str(exc)
    return report


def render_status(settings: Settings, console: Console) -> None:
    """Print the status screen once, as `modelbus status` does (for embedding, e.g. the demo)."""
    from producers.ops.screen import print_status

    print_status(settings, console)
