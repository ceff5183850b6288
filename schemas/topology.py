"""Broker topology as data: the exchanges, the worker queues, their bindings and dead-letter queues.

Declared by `producers.topology.declare` (and by every worker at start-up); documented in the AsyncAPI
export. Any AMQP client in any language can publish to `EXCHANGE` with the event's routing key.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from schemas.events import (
    DeployRequested,
    InvokeRequested,
    ServiceDeleted,
    ServiceReady,
    TrainRequested,
    UndeployRequested,
)

#: Topic exchange every event is published to; routing key = dotted event name.
EXCHANGE = "modelbus.events"
#: Where rejected messages go; routed by the name of the queue they were rejected from.
DEAD_LETTER_EXCHANGE = "modelbus.dead-letter"
#: Topic exchange of Celery's own task queues (native delayed delivery needs a topic exchange).
TASK_EXCHANGE = "modelbus.tasks"

#: Reply queues of `ModelBus` clients: this prefix and a random id. Not exclusive, so a client's
#: queue outlives a dropped connection; it expires after `broker.reply_queue_expires_s` unused.
REPLY_QUEUE_PREFIX = "modelbus.reply."

#: Header names set on dead-lettered messages by the event gateway.
REASON_HEADER = "x-modelbus-reason"
ERROR_HEADER = "x-modelbus-error"
ORIGINAL_ROUTING_KEY_HEADER = "x-modelbus-routing-key"
#: Set by `modelbus dlq replay`: how often an operator sent this message back from a dead-letter queue.
REPLAY_HEADER = "x-modelbus-replays"


@dataclass(frozen=True)
class WorkerQueue:
    """A durable quorum queue that one kind of worker consumes, with its dead-letter queue."""

    worker: str
    name: str
    routing_keys: tuple[str, ...]
    #: deliveries before a message that keeps failing is dead-lettered by the broker itself
    delivery_limit: int = 20
    arguments: dict[str, object] = field(default_factory=dict)

    @property
    def dead_letter_queue(self) -> str:
        return f"{self.name}.dlq"

    @property
    def task_queue(self) -> str:
        """The Celery queue the worker's gateway dispatches tasks to."""
        return f"{self.name}.tasks"

    def queue_arguments(self) -> dict[str, object]:
        return {
            "x-queue-type": "quorum",
            "x-dead-letter-exchange": DEAD_LETTER_EXCHANGE,
            "x-dead-letter-routing-key": self.name,
            "x-delivery-limit": self.delivery_limit,
            **self.arguments,
        }


DEPLOY_QUEUE = WorkerQueue(
    "deploy", "modelbus.deploy", (DeployRequested.routing_key, UndeployRequested.routing_key)
)
TRAIN_QUEUE = WorkerQueue("train", "modelbus.train", (TrainRequested.routing_key,))
INVOKE_QUEUE = WorkerQueue("invoke", "modelbus.invoke", (InvokeRequested.routing_key,))

WORKER_QUEUES: dict[str, WorkerQueue] = {q.worker: q for q in (DEPLOY_QUEUE, TRAIN_QUEUE, INVOKE_QUEUE)}

#: Events that keep service registries fresh (bound by per-process, auto-delete queues).
REGISTRY_ROUTING_KEYS = (ServiceReady.routing_key, ServiceDeleted.routing_key)


def worker_queue(name: str) -> WorkerQueue:
    """Find a worker queue by worker name (`deploy`), queue name, or dead-letter queue name."""
    for queue in WORKER_QUEUES.values():
        if name in (queue.worker, queue.name, queue.dead_letter_queue):
            return queue
    known = ", ".join(q.name for q in WORKER_QUEUES.values())
    raise KeyError(f"unknown queue {name!r}; known: {known}")


def dead_letter_headers(reason: str, error: str, routing_key: str | None) -> dict[str, str]:
    """Headers a dead-lettered message carries: why, in words, and where it was first routed."""
    headers = {REASON_HEADER: reason, ERROR_HEADER: error[:4096]}
    if routing_key:
        headers[ORIGINAL_ROUTING_KEY_HEADER] = routing_key
    return headers
