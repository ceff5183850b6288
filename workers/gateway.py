"""The event gateway: a Celery consumer bootstep that turns modelbus events into Celery tasks.

For each message on a worker's quorum queue it (1) checks the content type and decodes/validates the
CloudEvent, (2) dead-letters anything invalid with the reason in headers, (3) skips event ids it has
already dispatched, (4) dispatches the Celery task `modelbus.<routing key>` with publisher confirms,
and only then (5) acks. A crash between 4 and 5 redelivers the event; tasks are keyed by event id and
handlers are idempotent, so that costs a duplicate check, not a duplicate deployment.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from celery import bootsteps
from kombu import Consumer, Exchange, Queue, binding
from kombu.message import Message

from schemas.envelope import CONTENT_TYPE, DATA_CONTENT_TYPE, EventDecodeError, decode
from schemas.settings import Settings
from schemas.topology import DEAD_LETTER_EXCHANGE, EXCHANGE, REPLAY_HEADER, WorkerQueue, dead_letter_headers
from workers.observability import EVENTS_CONSUMED, EVENTS_DUPLICATE, EVENTS_REJECTED, bind_event, get_logger

log = get_logger(__name__)

ACCEPTED_CONTENT_TYPES = (CONTENT_TYPE, DATA_CONTENT_TYPE)


def kombu_queue(queue: WorkerQueue) -> Queue:
    """The kombu declaration of a worker queue, identical to `producers.topology`'s."""
    exchange = Exchange(EXCHANGE, type="topic", durable=True)
    return Queue(
        queue.name,
        bindings=[binding(exchange, routing_key=key) for key in queue.routing_keys],
        durable=True,
        queue_arguments=queue.queue_arguments(),
    )


class SeenIds:
    """A bounded memory of dispatched event ids (most recent kept)."""

    def __init__(self, capacity: int = 100_000) -> None:
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._capacity = capacity

    def __contains__(self, event_id: object) -> bool:
        return event_id in self._ids

    def add(self, event_id: str) -> None:
        self._ids[event_id] = None
        self._ids.move_to_end(event_id)
        while len(self._ids) > self._capacity:
            self._ids.popitem(last=False)


class EventGateway(bootsteps.ConsumerStep):  # type: ignore[misc]  # celery is untyped
    """Consumes the worker queues named in `app.conf.modelbus_queues` (see `workers.app`)."""

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.app = parent.app
        self.settings: Settings = self.app.conf.modelbus_settings
        self.queues: list[WorkerQueue] = list(self.app.conf.modelbus_queues)
        self.seen = SeenIds()

    def get_consumers(self, channel: Any) -> list[Consumer]:
        self._declare_dead_letter(channel)
        return [
            Consumer(
                channel,
                queues=[kombu_queue(q)],
                on_message=lambda message, q=q: self.on_message(q, message),
                prefetch_count=self.settings.broker.prefetch,
                accept=None,
            )
            for q in self.queues
        ]

    def _declare_dead_letter(self, channel: Any) -> None:
        dlx = Exchange(DEAD_LETTER_EXCHANGE, type="topic", durable=True)
        for q in self.queues:
            Queue(q.dead_letter_queue, dlx, routing_key=q.name, durable=True,
                  queue_arguments={"x-queue-type": "quorum"})(channel).declare()

    def on_message(self, queue: WorkerQueue, message: Message) -> None:
        worker = queue.worker
        routing_key = message.delivery_info.get("routing_key")
        try:
            content_type = (message.content_type or "").split(";")[0].strip()
            if content_type not in ACCEPTED_CONTENT_TYPES:
                raise EventDecodeError(
                    "WrongContentType", f"content type {content_type or '<none>'!r} is not {CONTENT_TYPE}"
                )
            event = decode(
                message.body,
                max_bytes=self.settings.max_event_bytes,
                allow_plain_secret_envs=self.settings.allow_plain_secret_envs,
            )
            if event.routing_key not in queue.routing_keys:
                raise EventDecodeError(
                    "WrongQueue", f"{event.type} does not belong on {queue.name} (routing key {routing_key!r})"
                )
        except EventDecodeError as exc:
            self.dead_letter(queue, message, exc.reason, str(exc))
            EVENTS_REJECTED.labels(worker, exc.reason).inc()
            message.ack()
            return
        # A replay from the dead-letter queue is a deliberate new attempt, not a redelivery.
        replays = (message.headers or {}).get(REPLAY_HEADER)
        dedupe_key = f"{event.id}#replay{replays}" if replays else event.id
        with bind_event(event):
            if dedupe_key in self.seen:
                EVENTS_DUPLICATE.labels(worker, event.type).inc()
                log.info("duplicate event skipped")
                message.ack()
                return
            try:
                self.app.send_task(
                    f"modelbus.{event.routing_key}",
                    args=[message.body.decode() if isinstance(message.body, bytes) else message.body],
                    task_id=event.id,
                    queue=queue.task_queue,
                    routing_key=queue.task_queue,
                    exchange=self.app.conf.modelbus_task_exchange,
                )
            except Exception:
                # The broker did not confirm the task: leave the event for redelivery (the quorum
                # queue's delivery limit dead-letters it if this keeps happening).
                log.exception("dispatching the task failed; the event will be redelivered")
                message.requeue()
                return
            self.seen.add(dedupe_key)
            EVENTS_CONSUMED.labels(worker, event.type).inc()
            log.info("dispatched")
            message.ack()

    def dead_letter(self, queue: WorkerQueue, message: Message, reason: str, error: str) -> None:
        """Publish the message, untouched, to the DLQ with the reason in headers (confirmed)."""
        original_key = message.delivery_info.get("routing_key")
        headers = {**(message.headers or {}), **dead_letter_headers(reason, error, original_key)}
        with self.app.producer_pool.acquire(block=True) as producer:
            producer.publish(
                message.body,
                exchange=DEAD_LETTER_EXCHANGE,
                routing_key=queue.name,
                headers=headers,
                content_type=message.content_type or "application/octet-stream",
                content_encoding=message.content_encoding or "binary",
                delivery_mode=2,
                message_id=message.properties.get("message_id"),
                correlation_id=message.properties.get("correlation_id"),
                type=message.properties.get("type"),
                retry=True,
            )
        log.warning("dead-lettered an invalid message", extra={"reason": reason, "error": error[:500],
                                                                 "queue": queue.name})
