"""The AMQP adapter of the invoke worker (aio-pika): topology, consumers, confirmed publishing.

Two channels on one robust (auto-reconnecting) connection: one consumes the invoke quorum queue
with a large prefetch (plus a private auto-delete queue of registry events), the other publishes
results in confirm mode. Confirms are awaited concurrently, so many results are in flight at once
instead of one broker round trip per message. aio-pika/aiormq exceptions stop here as
`BrokerError`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractIncomingMessage, AbstractRobustConnection
from aiormq import spec

from schemas.envelope import CloudEvent, amqp_properties, encode
from schemas.settings import Settings
from schemas.topology import (
    DEAD_LETTER_EXCHANGE,
    EXCHANGE,
    INVOKE_QUEUE,
    REGISTRY_ROUTING_KEYS,
    dead_letter_headers,
)

log = logging.getLogger(__name__)

Handler = Callable[[AbstractIncomingMessage], Awaitable[None]]


class BrokerError(Exception):
    """Publishing or consuming failed at the broker (connection lost, channel closed, nack)."""


def _properties(event: CloudEvent[Any]) -> spec.Basic.Properties:
    """The AMQP properties of an outcome, built straight for the wire (no aio-pika message object)."""
    props = amqp_properties(event)
    return spec.Basic.Properties(
        message_id=props["message_id"],
        correlation_id=props["correlation_id"],
        message_type=props["type"],
        content_type=props["content_type"],
        delivery_mode=props["delivery_mode"],
        timestamp=datetime.fromtimestamp(props["timestamp"], UTC),
        app_id=props["app_id"],
        headers=props["headers"],
    )


class Broker:
    """Connection, topology and the two channels of one invoke worker process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._connection: AbstractRobustConnection | None = None
        self._consume: AbstractChannel | None = None
        self._publish: AbstractChannel | None = None
        self._registry: AbstractChannel | None = None
        self._consumer_tags: list[tuple[Any, str]] = []
        self._exchanges: dict[str, AbstractExchange] = {}

    @property
    def connected(self) -> bool:
        """Whether the connection is up now (a robust connection re-opens itself when lost)."""
        return self._connection is not None and self._connection.connected.is_set()

    async def connect(self) -> None:
        broker = self.settings.broker
        ssl_context = None
        if urlsplit(broker.url).scheme == "amqps":
            from producers.connection import ssl_context as make_context

            ssl_context = make_context(broker)
        try:
            self._connection = await aio_pika.connect_robust(
                broker.url, ssl_context=ssl_context, timeout=broker.connect_timeout_s,
                client_properties={"connection_name": "modelbus-invoke"},
            )
            self._consume = await self._connection.channel(publisher_confirms=False)
            await self._consume.set_qos(prefetch_count=self.settings.invoke.prefetch)
            self._publish = await self._connection.channel(publisher_confirms=True)
            # Registry events are consumed without acks on their own channel, so their delivery tags
            # never interleave with the invoke queue's (whose acks are coalesced by tag order).
            self._registry = await self._connection.channel(publisher_confirms=False)
            await self._declare(self._publish)
        except (aiormq.exceptions.AMQPError, OSError, TimeoutError) as exc:
            raise BrokerError(f"cannot connect to the broker: {type(exc).__name__}: {exc}") from exc

    async def _declare(self, channel: AbstractChannel) -> None:
        """The invoke queue, its bindings and dead-letter queue (idempotent, same as `topology declare`)."""
        events = await channel.declare_exchange(EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True)
        dlx = await channel.declare_exchange(DEAD_LETTER_EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True)
        queue = await channel.declare_queue(INVOKE_QUEUE.name, durable=True,
                                            arguments=INVOKE_QUEUE.queue_arguments())  # type: ignore[arg-type]
        for key in INVOKE_QUEUE.routing_keys:
            await queue.bind(events, routing_key=key)
        dlq = await channel.declare_queue(INVOKE_QUEUE.dead_letter_queue, durable=True,
                                          arguments={"x-queue-type": "quorum"})
        await dlq.bind(dlx, routing_key=INVOKE_QUEUE.name)
        self._exchanges = {EXCHANGE: events, DEAD_LETTER_EXCHANGE: dlx}

    @property
    def _channels(self) -> tuple[AbstractChannel, AbstractChannel]:
        if self._consume is None or self._publish is None:
            raise BrokerError("not connected")
        return self._consume, self._publish

    async def consume_requests(self, handler: Handler) -> None:
        consume, _ = self._channels
        # Declared (not `get_queue`) so the robust channel knows the queue and restores the consumer
        # after a reconnect; a queue object from `get_queue(ensure=False)` is silently left behind.
        queue = await consume.declare_queue(INVOKE_QUEUE.name, durable=True,
                                            arguments=INVOKE_QUEUE.queue_arguments())  # type: ignore[arg-type]
        self._consumer_tags.append((queue, await queue.consume(handler)))

    async def consume_registry(self, handler: Handler) -> None:
        """Subscribe a private auto-delete queue to `service.ready` / `service.deleted` events."""
        if self._registry is None:
            raise BrokerError("not connected")
        events = await self._registry.get_exchange(EXCHANGE, ensure=False)
        queue = await self._registry.declare_queue("", exclusive=True, auto_delete=True)
        for key in REGISTRY_ROUTING_KEYS:
            await queue.bind(events, routing_key=key)
        self._consumer_tags.append((queue, await queue.consume(handler, no_ack=True)))

    async def stop_consuming(self) -> None:
        tags, self._consumer_tags = self._consumer_tags, []
        for queue, tag in tags:
            try:
                await queue.cancel(tag)
            except (aiormq.exceptions.AMQPError, OSError, RuntimeError) as exc:
                log.warning("cancelling consumer %s failed: %s", tag, exc)

    async def publish(self, event: CloudEvent[Any], *, reply_to: str | None) -> None:
        """Publish an outcome (to `reply_to` if set, else the events exchange) and await its confirm.

        Raises:
            BrokerError: not confirmed (connection lost or nack); the request stays unacked.
        """
        _, channel = self._channels
        # Straight to aiormq, the layer under aio-pika's exchange objects: every result of the
        # worker crosses this line, and the wrapper's per-message objects cost more than the frames.
        exchange, routing_key = ("", reply_to) if reply_to else (EXCHANGE, event.routing_key)
        try:
            underlay = await channel.get_underlay_channel()
            confirm = await underlay.basic_publish(
                encode(event), exchange=exchange, routing_key=routing_key, properties=_properties(event),
                mandatory=False, timeout=self.settings.broker.confirm_timeout_s,
            )
        except (aiormq.exceptions.AMQPError, OSError, TimeoutError, RuntimeError) as exc:
            raise BrokerError(f"publishing {event.type} {event.id} failed: {type(exc).__name__}: {exc}") from exc
        if not isinstance(confirm, spec.Basic.Ack):
            raise BrokerError(f"publishing {event.type} {event.id} failed: the broker answered {confirm!r}")

    async def dead_letter(self, message: AbstractIncomingMessage, reason: str, error: str) -> None:
        """Publish a message, untouched, to the invoke DLQ with the reason in headers (confirmed)."""
        headers = {**(message.headers or {}), **dead_letter_headers(reason, error, message.routing_key)}
        copy = aio_pika.Message(
            message.body, headers=headers, content_type=message.content_type or "application/octet-stream",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT, message_id=message.message_id,
            correlation_id=message.correlation_id, type=message.type,
        )
        try:
            await self._exchanges[DEAD_LETTER_EXCHANGE].publish(
                copy, routing_key=INVOKE_QUEUE.name, timeout=self.settings.broker.confirm_timeout_s
            )
        except (aiormq.exceptions.AMQPError, aio_pika.exceptions.DeliveryError, OSError, TimeoutError,
                RuntimeError) as exc:
            raise BrokerError(f"dead-lettering failed: {type(exc).__name__}: {exc}") from exc
        log.warning("dead-lettered an invalid message", extra={"reason": reason, "error": error[:500]})

    async def close(self) -> None:
        connection, self._connection = self._connection, None
        self._consume = self._publish = self._registry = None
        if connection is not None:
            await connection.close()
