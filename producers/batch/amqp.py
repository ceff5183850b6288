"""The AMQP adapter of batch jobs (aio-pika): results queues, pipelined confirmed publishing, consuming.

Batches publish thousands of requests, so confirms are awaited concurrently for a whole chunk
(one broker round trip per chunk, not per message: about ten times the rate of a blocking
confirm-per-message publisher). Every message is persistent and `mandatory`, so a request that no
queue takes (no invoke worker topology) fails loudly instead of vanishing. aio-pika/aiormq
exceptions stop here, mapped to the `producers.errors` tree.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage, AbstractQueue

from producers.errors import BrokerUnavailable, PublishNacked, Unroutable
from schemas.envelope import CloudEvent, amqp_properties, encode
from schemas.settings import BrokerSettings, redact_url
from schemas.topology import EXCHANGE

log = logging.getLogger(__name__)

_FAILURES = (aiormq.exceptions.AMQPError, aio_pika.exceptions.AMQPError, OSError, TimeoutError, RuntimeError)

OnMessage = Callable[[AbstractIncomingMessage], Awaitable[None]]


def message_of(event: CloudEvent[Any]) -> aio_pika.Message:
    """The AMQP message of an event: its encoding plus the properties that mirror the envelope."""
    props = amqp_properties(event)
    return aio_pika.Message(
        encode(event), message_id=props["message_id"], correlation_id=props["correlation_id"], type=props["type"],
        content_type=props["content_type"], delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        timestamp=props["timestamp"], app_id=props["app_id"], headers=props["headers"],
    )


def results_queue_arguments(ttl_s: int) -> dict[str, Any]:
    """A quorum queue (replicated, survives broker restarts) the broker deletes once unused for `ttl_s`."""
    return {"x-queue-type": "quorum", "x-expires": int(ttl_s * 1000)}


class BatchBroker:
    """One connection with a confirming publish channel and a consuming channel.

    Example:
        >>> async with BatchBroker(settings.broker) as broker:  # doctest: +SKIP
        ...     await broker.publish([event1, event2])
    """

    def __init__(self, broker: BrokerSettings, *, name: str = "modelbus-batch") -> None:
        self._settings = broker
        self._name = name
        self._connection: AbstractConnection | None = None
        self._publish: AbstractChannel | None = None
        self._consume: AbstractChannel | None = None
        self._consumers: list[tuple[AbstractQueue, str]] = []

    async def __aenter__(self) -> BatchBroker:
        await self.connect()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def connect(self) -> None:
        """Connect, retrying with a doubling delay; raises BrokerUnavailable after the last attempt."""
        ssl_context = None
        if urlsplit(self._settings.url).scheme == "amqps":
            from producers.connection import ssl_context as make_context

            ssl_context = make_context(self._settings)
        delay = self._settings.retry_delay_s
        attempts = max(1, self._settings.connect_attempts)
        for attempt in range(1, attempts + 1):
            try:
                self._connection = await aio_pika.connect(
                    self._settings.url, ssl_context=ssl_context, timeout=self._settings.connect_timeout_s,
                    client_properties={"connection_name": self._name},
                )
                self._publish = await self._connection.channel(publisher_confirms=True, on_return_raises=True)
                return
            except _FAILURES as exc:
                if attempt == attempts:
                    raise BrokerUnavailable(f"cannot reach the broker at {redact_url(self._settings.url)}: "
                                            f"{type(exc).__name__}: {exc}") from exc
                log.warning("broker connection attempt %d failed: %s", attempt, type(exc).__name__)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    async def close(self) -> None:
        connection, self._connection = self._connection, None
        self._publish = self._consume = None
        self._consumers = []
        if connection is not None and not connection.is_closed:
            try:
                await connection.close()
            except _FAILURES as exc:  # already broken; nothing left to release
                log.debug("closing the connection failed: %s", exc)

    def _channel(self) -> AbstractChannel:
        if self._publish is None or self._publish.is_closed:
            raise BrokerUnavailable("not connected to the broker")
        return self._publish

    # -- queues -----------------------------------------------------------------------------------
    async def declare_results(self, queue: str, ttl_s: int) -> None:
        """Declare a batch's results queue (idempotent with the same arguments)."""
        try:
            await self._channel().declare_queue(queue, durable=True, arguments=results_queue_arguments(ttl_s))
        except _FAILURES as exc:
            raise BrokerUnavailable(f"declaring {queue} failed: {type(exc).__name__}: {exc}") from exc

    async def depth(self, queue: str) -> int | None:
        """Messages ready in `queue` (unacknowledged ones not included); None when the queue is gone."""
        assert self._connection is not None
        channel = await self._connection.channel(publisher_confirms=False)
        try:
            declared = await channel.declare_queue(queue, passive=True)
            result = declared.declaration_result
            return int(result.message_count or 0)
        except aio_pika.exceptions.ChannelNotFoundEntity:
            return None
        except _FAILURES as exc:
            raise BrokerUnavailable(f"looking at {queue} failed: {type(exc).__name__}: {exc}") from exc
        finally:
            if not channel.is_closed:
                await channel.close()

    async def delete(self, queue: str) -> None:
        """Delete a finished batch's results queue (gone already is fine)."""
        assert self._connection is not None
        channel = await self._connection.channel(publisher_confirms=False)
        try:
            await channel.queue_delete(queue)
        except aio_pika.exceptions.ChannelNotFoundEntity:
            pass
        except _FAILURES as exc:
            log.warning("deleting %s failed (the broker expires it when unused): %s", queue, exc)
        finally:
            if not channel.is_closed:
                await channel.close()

    # -- publishing -------------------------------------------------------------------------------
    async def publish(self, events: Sequence[CloudEvent[Any]], *, exchange: str = EXCHANGE) -> None:
        """Publish events with their routing keys and await every confirm (pipelined).

        Raises:
            Unroutable: no queue is bound for a routing key (the invoke topology is missing).
            PublishNacked: the broker refused a message.
            BrokerUnavailable: the connection failed; some of the events may have been delivered.
        """
        channel = self._channel()
        target = await channel.get_exchange(exchange, ensure=False) if exchange else channel.default_exchange
        timeout = self._settings.confirm_timeout_s
        results = await asyncio.gather(
            *(target.publish(message_of(event), routing_key=event.routing_key, mandatory=True, timeout=timeout)
              for event in events),
            return_exceptions=True,
        )
        for result in results:
            if isinstance(result, aiormq.exceptions.PublishError):
                raise Unroutable(f"no queue is bound to {exchange!r} for {events[0].routing_key!r}; start the "
                                 "invoke worker or run `modelbus topology declare`") from result
            if isinstance(result, aiormq.exceptions.DeliveryError):
                raise PublishNacked("the broker refused a batch request") from result
            if isinstance(result, BaseException):
                raise BrokerUnavailable(f"publishing failed: {type(result).__name__}: {result}") from result

    # -- consuming --------------------------------------------------------------------------------
    async def consume(self, queue: str, on_message: OnMessage, *, prefetch: int) -> None:
        """Consume `queue` with manual acks and at most `prefetch` unacknowledged deliveries."""
        assert self._connection is not None
        try:
            if self._consume is None or self._consume.is_closed:
                self._consume = await self._connection.channel(publisher_confirms=False)
                await self._consume.set_qos(prefetch_count=prefetch)
            declared = await self._consume.get_queue(queue, ensure=False)
            self._consumers.append((declared, await declared.consume(on_message)))
        except _FAILURES as exc:
            raise BrokerUnavailable(f"consuming {queue} failed: {type(exc).__name__}: {exc}") from exc

    async def cancel_consumers(self) -> None:
        consumers, self._consumers = self._consumers, []
        for queue, tag in consumers:
            try:
                await queue.cancel(tag)
            except _FAILURES as exc:
                log.debug("cancelling consumer %s failed: %s", tag, exc)

    async def ack_through(self, message: AbstractIncomingMessage) -> None:
        """Acknowledge `message` and every earlier delivery on its channel."""
        try:
            await message.ack(multiple=True)
        except _FAILURES as exc:
            raise BrokerUnavailable(f"acknowledging failed: {type(exc).__name__}: {exc}") from exc
