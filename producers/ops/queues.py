"""Queue statistics of the modelbus topology, from the management API or, failing that, over AMQP.

Each worker has three queues: its event queue (what producers publish to), its dead-letter queue,
and for the Celery workers (deploy, train) the task queue the gateway dispatches to. `queue_stats`
reports them all; when the management API does not answer, an AMQP passive declare still gives the
ready count and the consumers (but neither unacked messages nor rates, which stay None).
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass
from typing import Any, Literal

import pika
import pika.exceptions as pe

from producers.connection import pika_parameters
from producers.ops.management import ManagementUnavailable, management_client
from schemas.settings import BrokerSettings, redact_url
from schemas.topology import WORKER_QUEUES

QueueKind = Literal["events", "tasks", "dead-letter"]
Source = Literal["management", "amqp"]

#: Workers whose gateway dispatches to a Celery task queue (the invoke worker consumes directly).
CELERY_WORKERS = ("deploy", "train")


class StatsUnavailable(Exception):
    """Neither the management API nor AMQP answered; the message says what each one said."""


@dataclass(frozen=True)
class QueueStats:
    """One queue's numbers. `unacked` and the rates (messages/s) are None when only AMQP answered;
    `exists` is False for a queue nobody has declared yet."""

    name: str
    worker: str
    kind: QueueKind
    ready: int
    unacked: int | None
    consumers: int
    publish_rate: float | None = None
    deliver_rate: float | None = None
    exists: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def topology_queues() -> list[tuple[str, str, QueueKind]]:
    """(queue, worker, kind) for every queue modelbus declares, in display order."""
    out: list[tuple[str, str, QueueKind]] = []
    for worker, queue in WORKER_QUEUES.items():
        out.append((queue.name, worker, "events"))
        if worker in CELERY_WORKERS:
            out.append((queue.task_queue, worker, "tasks"))
        out.append((queue.dead_letter_queue, worker, "dead-letter"))
    return out


def from_management(broker: BrokerSettings, *, timeout_s: float = 5.0) -> list[QueueStats]:
    """Stats of every topology queue from the management API; raises ManagementUnavailable."""
    with management_client(broker, timeout_s=timeout_s) as api:
        known = api.queues()
    stats = []
    for name, worker, kind in topology_queues():
        row = known.get(name)
        if row is None:
            stats.append(QueueStats(name, worker, kind, 0, 0, 0, exists=False))
        else:
            stats.append(QueueStats(name, worker, kind, row.ready, row.unacked, row.consumers,
                                    row.publish_rate, row.deliver_rate))
    return stats


def from_amqp(broker: BrokerSettings) -> list[QueueStats]:
    """Ready count and consumers of every topology queue by passive declare; raises StatsUnavailable."""
    try:
        connection = pika.BlockingConnection(pika_parameters(broker))
    except (pe.AMQPError, OSError) as exc:
        raise StatsUnavailable(f"AMQP at {redact_url(broker.url)}: {type(exc).__name__} {exc}".strip()) from exc
    stats = []
    try:
        channel = connection.channel()
        for name, worker, kind in topology_queues():
            try:
                ok = channel.queue_declare(name, passive=True).method
            except pe.ChannelClosedByBroker as exc:
                if exc.reply_code != 404:
                    raise StatsUnavailable(f"AMQP passive declare of {name}: {exc.reply_text}") from exc
                channel = connection.channel()  # a 404 closes the channel
                stats.append(QueueStats(name, worker, kind, 0, None, 0, exists=False))
                continue
            stats.append(QueueStats(name, worker, kind, ok.message_count, None, ok.consumer_count))
    except pe.AMQPError as exc:
        raise StatsUnavailable(f"AMQP at {redact_url(broker.url)}: {type(exc).__name__}") from exc
    finally:
        with contextlib.suppress(pe.AMQPError, OSError):
            connection.close()
    return stats


def queue_stats(broker: BrokerSettings, *, prefer: Source | None = None,
                timeout_s: float = 5.0) -> tuple[Source, list[QueueStats], str | None]:
    """Stats from the best source that answers.

    Args:
        prefer: force one source ("management" or "amqp"); default tries management, then AMQP.

    Returns:
        (source, stats, note): note says why the management API was not used, when it was not.

    Raises:
        StatsUnavailable: no source answered; the message has each source's error.
    """
    note = None
    if prefer in (None, "management"):
        try:
            return "management", from_management(broker, timeout_s=timeout_s), None
        except ManagementUnavailable as exc:
            if prefer == "management":
                raise StatsUnavailable(str(exc)) from exc
            note = f"{exc}; falling back to AMQP (no unacked counts, no rates)"
    try:
        return "amqp", from_amqp(broker), note
    except StatsUnavailable as exc:
        raise StatsUnavailable("; ".join(filter(None, [note and note.split("; falling")[0], str(exc)]))) from exc
