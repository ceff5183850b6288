"""The publishing adapter: pika with publisher confirms, mandatory routing and bounded reconnects.

Every publish is confirmed by the broker before `publish` returns, is persistent, and is `mandatory`,
so an event nobody is bound to receive raises `Unroutable` instead of vanishing. A lost connection
is re-opened (bounded attempts, doubling delay) and the publish retried: delivery is at-least-once
and consumers de-duplicate by event id. A `Publisher` is not thread-safe: use one per thread.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

import pika
import pika.exceptions as pe
from pika.adapters.blocking_connection import BlockingChannel

from producers.connection import pika_parameters
from producers.errors import BrokerUnavailable, PublishNacked, Unroutable
from schemas.envelope import CloudEvent, amqp_properties, encode
from schemas.settings import BrokerSettings, redact_url
from schemas.topology import EXCHANGE

log = logging.getLogger(__name__)

_CONNECTION_ERRORS = (pe.AMQPConnectionError, pe.ConnectionClosed, pe.StreamLostError, pe.ChannelWrongStateError)


class Publisher:
    """Publish modelbus events (or raw messages) with confirms.

    Example:
        >>> with Publisher(Settings().broker) as pub:  # doctest: +SKIP
        ...     pub.publish(new_event(UndeployRequested(service="sentiment")))
    """

    def __init__(self, broker: BrokerSettings, *, sleep: Callable[[float], None] = time.sleep) -> None:
        self._broker = broker
        self._sleep = sleep
        self._connection: pika.BlockingConnection | None = None
        self._channel: BlockingChannel | None = None

    # -- connection -----------------------------------------------------------------------------
    def connect(self) -> BlockingChannel:
        """Open (or reuse) a confirm-mode channel, retrying with backoff; raises BrokerUnavailable."""
        if self._channel is not None and self._channel.is_open:
            return self._channel
        self._drop()
        delay = self._broker.retry_delay_s
        last: Exception | None = None
        for attempt in range(1, max(1, self._broker.connect_attempts) + 1):
            try:
                self._connection = pika.BlockingConnection(pika_parameters(self._broker))
                self._channel = self._connection.channel()
                self._channel.confirm_delivery()
                return self._channel
            except (pe.AMQPError, OSError) as exc:
                last = exc
                log.warning("broker connection attempt %d failed: %s", attempt, type(exc).__name__)
                if attempt < self._broker.connect_attempts:
                    self._sleep(delay)
                    delay = min(delay * 2, 30.0)
        raise BrokerUnavailable(
            f"cannot reach the broker at {redact_url(self._broker.url)} after "
            f"{self._broker.connect_attempts} attempts: {_describe(last)}"
        ) from last

    @property
    def channel(self) -> BlockingChannel:
        return self.connect()

    def _drop(self) -> None:
        conn, self._connection, self._channel = self._connection, None, None
        if conn is not None and conn.is_open:
            with contextlib.suppress(pe.AMQPError, OSError):  # already broken; nothing left to release
                conn.close()

    def close(self) -> None:
        self._drop()

    def __enter__(self) -> Publisher:
        self.connect()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- publishing -----------------------------------------------------------------------------
    def publish(
        self,
        event: CloudEvent[Any],
        *,
        routing_key: str | None = None,
        exchange: str = EXCHANGE,
        mandatory: bool = True,
    ) -> None:
        """Publish an event (routing key = its dotted name unless given) and wait for the confirm.

        Raises:
            Unroutable: no queue is bound for the routing key (nothing was delivered).
            PublishNacked: the broker refused the message.
            BrokerUnavailable: the broker stayed unreachable through every attempt.
        """
        props = amqp_properties(event)
        self.publish_raw(
            encode(event),
            routing_key=routing_key or event.routing_key,
            exchange=exchange,
            properties=pika.BasicProperties(**props),
            mandatory=mandatory,
        )

    def reply(self, event: CloudEvent[Any], reply_to: str) -> None:
        """Send an event straight to a reply queue (default exchange); a vanished queue is not an error."""
        try:
            self.publish(event, routing_key=reply_to, exchange="", mandatory=True)
        except Unroutable:
            log.info("reply queue %s is gone; the outcome is still on the events exchange", reply_to)

    def publish_raw(
        self,
        body: bytes,
        *,
        routing_key: str,
        exchange: str = EXCHANGE,
        properties: pika.BasicProperties | None = None,
        mandatory: bool = True,
    ) -> None:
        """Publish bytes with confirms and reconnects (used for dead-letter replay and replies)."""
        attempts = max(1, self._broker.connect_attempts)
        for attempt in range(1, attempts + 1):
            channel = self.connect()
            try:
                channel.basic_publish(exchange, routing_key, body, properties, mandatory=mandatory)
                return
            except pe.UnroutableError as exc:
                raise Unroutable(
                    f"no queue is bound to exchange {exchange!r} for routing key {routing_key!r}; "
                    "declare the topology (modelbus topology declare) or start the worker"
                ) from exc
            except pe.NackError as exc:
                raise PublishNacked(f"the broker refused the message for {routing_key!r}") from exc
            except _CONNECTION_ERRORS as exc:
                log.warning("publish attempt %d lost the connection (%s); reconnecting", attempt, type(exc).__name__)
                self._drop()
                if attempt == attempts:
                    raise BrokerUnavailable(f"publishing to {routing_key!r} failed: {_describe(exc)}") from exc
                self._sleep(self._broker.retry_delay_s)


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return "unknown error"
    text = str(exc) or repr(exc)
    return f"{type(exc).__name__}: {text}"
