"""Declare the broker topology described in `schemas.topology` (idempotent)."""

from __future__ import annotations

import pika.exceptions as pe
from pika.adapters.blocking_connection import BlockingChannel

from producers.errors import PublishError
from schemas.topology import DEAD_LETTER_EXCHANGE, EXCHANGE, TASK_EXCHANGE, WORKER_QUEUES, WorkerQueue


class TopologyConflict(PublishError):
    """A queue or exchange exists with other arguments than modelbus declares."""


def declare_topology(channel: BlockingChannel, queues: list[WorkerQueue] | None = None) -> list[str]:
    """Declare the exchanges, each worker queue with its bindings, and each dead-letter queue.

    Declaring again is harmless. Returns the names of the declared queues.

    Raises:
        TopologyConflict: something exists with different arguments (the broker's message says what).
    """
    declared: list[str] = []
    try:
        for exchange in (EXCHANGE, DEAD_LETTER_EXCHANGE, TASK_EXCHANGE):
            channel.exchange_declare(exchange, exchange_type="topic", durable=True)
        for queue in queues or list(WORKER_QUEUES.values()):
            channel.queue_declare(queue.name, durable=True, arguments=queue.queue_arguments())
            for key in queue.routing_keys:
                channel.queue_bind(queue.name, EXCHANGE, routing_key=key)
            channel.queue_declare(queue.dead_letter_queue, durable=True, arguments={"x-queue-type": "quorum"})
            channel.queue_bind(queue.dead_letter_queue, DEAD_LETTER_EXCHANGE, routing_key=queue.name)
            declared += [queue.name, queue.dead_letter_queue]
    except pe.ChannelClosedByBroker as exc:
        raise TopologyConflict(f"declaring the topology failed: {exc.reply_text}") from exc
    return declared
