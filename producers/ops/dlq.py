"""Dead letters: look at them, send them back, or drop them.

A dead letter is an event (or an invalid message) that a worker gave up on: the gateway rejects what
does not decode, the task runner dead-letters what kept failing after its retries, and the broker
dead-letters what exceeded the queue's delivery limit. The first two set headers with the reason
(`x-modelbus-reason`), the error and the original routing key; the broker adds `x-death`.

* `browse` reads messages with `basic.get` without acking them and gives them all back at the end
  (`basic.nack` with requeue), so listing consumes nothing.
* `replay` publishes each selected dead letter to `modelbus.events` with its original routing key and
  acks it only after the broker confirmed the publish: a failure half-way leaves the rest (and the one
  that failed) in the dead-letter queue. Replayed messages carry `x-modelbus-replays` so the gateway's
  de-duplication lets them through.
* `purge` drops every message of a dead-letter queue.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Collection, Generator, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import pika
import pika.exceptions as pe
from pika.adapters.blocking_connection import BlockingChannel

from producers.connection import pika_parameters
from producers.errors import BrokerUnavailable, PublishError
from producers.publisher import Publisher
from schemas.settings import BrokerSettings, redact_url
from schemas.topology import (
    ERROR_HEADER,
    EXCHANGE,
    ORIGINAL_ROUTING_KEY_HEADER,
    REASON_HEADER,
    REPLAY_HEADER,
    WorkerQueue,
)

EVENT_TYPE_PREFIX = "io.modelbus."

#: Headers that describe a dead-lettering and must not follow a replayed message.
_DEATH_HEADERS = (REASON_HEADER, ERROR_HEADER, ORIGINAL_ROUTING_KEY_HEADER, "x-death", "x-first-death-exchange",
                  "x-first-death-queue", "x-first-death-reason", "x-last-death-exchange", "x-last-death-queue",
                  "x-last-death-reason", "x-delivery-count")


@dataclass(frozen=True)
class DeadLetter:
    """One dead-lettered message, as an operator needs to see it.

    Attributes:
        reason: machine-readable (`InvalidEvent`, `KubernetesUnavailable`, or the broker's
            `delivery_limit`/`rejected` when the broker dead-lettered it).
        routing_key: where it was first published; None when nothing tells (it cannot be replayed).
        timestamp: the message's AMQP timestamp (the event's time), epoch seconds.
    """

    queue: str
    message_id: str | None
    event_id: str | None
    event_type: str | None
    correlation_id: str | None
    reason: str
    error: str
    routing_key: str | None
    timestamp: float | None
    deaths: int
    replays: int
    size: int
    headers: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def key(self) -> str | None:
        """The id operators select it by: the event id, else the AMQP message id."""
        return self.event_id or self.message_id

    def age_s(self, now: float) -> float | None:
        return None if self.timestamp is None else max(0.0, now - self.timestamp)

    def to_dict(self, now: float | None = None) -> dict[str, Any]:
        out = asdict(self)
        out.pop("headers")
        out["age_s"] = self.age_s(time.time() if now is None else now)
        return out


@dataclass
class ReplayResult:
    """What `replay` did: ids sent back, ids that could not be (with why), selected ids never found."""

    replayed: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    not_found: list[str] = field(default_factory=list)


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def parse(queue: str, properties: pika.BasicProperties, body: bytes) -> DeadLetter:
    """A DeadLetter from a delivered message (bodies that are not JSON events are shown as such)."""
    headers = dict(properties.headers or {})
    deaths = [d for d in headers.get("x-death") or [] if isinstance(d, dict)]
    envelope: dict[str, Any] = {}
    with contextlib.suppress(ValueError, UnicodeDecodeError):
        loaded = json.loads(body)
        envelope = loaded if isinstance(loaded, dict) else {}
    event_type = _text(properties.type) or _text(envelope.get("type"))
    reason = _text(headers.get(REASON_HEADER)) or (_text(deaths[0].get("reason")) if deaths else None) or "unknown"
    return DeadLetter(
        queue=queue,
        message_id=_text(properties.message_id),
        event_id=_text(envelope.get("id")),
        event_type=event_type,
        correlation_id=_text(properties.correlation_id) or _text(envelope.get("correlationid")),
        reason=reason,
        error=_text(headers.get(ERROR_HEADER)) or "",
        routing_key=original_routing_key(headers, event_type),
        timestamp=float(properties.timestamp) if properties.timestamp else None,
        deaths=sum(int(d.get("count") or 1) for d in deaths),
        replays=int(headers.get(REPLAY_HEADER) or 0),
        size=len(body),
        headers=headers,
    )


def original_routing_key(headers: dict[str, Any], event_type: str | None) -> str | None:
    """Where the message was first routed: our header, else the broker's x-death, else its event type."""
    key = _text(headers.get(ORIGINAL_ROUTING_KEY_HEADER))
    if key:
        return key
    for death in headers.get("x-death") or []:
        keys = death.get("routing-keys") if isinstance(death, dict) else None
        if keys:
            return _text(keys[0])
    if event_type and event_type.startswith(EVENT_TYPE_PREFIX):
        return event_type[len(EVENT_TYPE_PREFIX):]
    return None


def replay_properties(properties: pika.BasicProperties, replays: int) -> pika.BasicProperties:
    """The original properties without the dead-lettering headers, with the replay count."""
    headers = {k: v for k, v in (properties.headers or {}).items() if k not in _DEATH_HEADERS}
    headers[REPLAY_HEADER] = replays + 1
    return pika.BasicProperties(
        content_type=properties.content_type, content_encoding=properties.content_encoding, headers=headers,
        delivery_mode=2, correlation_id=properties.correlation_id, message_id=properties.message_id,
        timestamp=properties.timestamp, type=properties.type, app_id=properties.app_id,
    )


@contextlib.contextmanager
def _channel(broker: BrokerSettings) -> Iterator[BlockingChannel]:
    try:
        connection = pika.BlockingConnection(pika_parameters(broker))
    except (pe.AMQPError, OSError) as exc:
        raise BrokerUnavailable(f"cannot reach the broker at {redact_url(broker.url)}: {type(exc).__name__}") from exc
    try:
        yield connection.channel()
    finally:
        with contextlib.suppress(pe.AMQPError, OSError):
            connection.close()  # anything still unacked goes back to its queue


def _depth(channel: BlockingChannel, name: str) -> int:
    try:
        return int(channel.queue_declare(name, passive=True).method.message_count)
    except pe.ChannelClosedByBroker as exc:
        raise KeyError(f"queue {name} does not exist; declare the topology (modelbus topology declare)") from exc


def _each(channel: BlockingChannel, name: str,
          limit: int) -> Generator[tuple[int, pika.BasicProperties, bytes], None, None]:
    """Up to `limit` messages, each left unacked (the caller acks or they are all nacked at the end)."""
    try:
        for _ in range(limit):
            method, properties, body = channel.basic_get(name, auto_ack=False)
            if method is None:
                return
            yield method.delivery_tag, properties, body
    finally:
        if channel.is_open:
            channel.basic_nack(delivery_tag=0, multiple=True, requeue=True)


def browse(broker: BrokerSettings, queue: WorkerQueue, *, limit: int = 100) -> list[DeadLetter]:
    """The first `limit` dead letters of `queue`'s DLQ, oldest first; none is consumed.

    Raises:
        BrokerUnavailable: the broker does not answer.
        KeyError: the dead-letter queue does not exist.
    """
    name = queue.dead_letter_queue
    with _channel(broker) as channel:
        depth = _depth(channel, name)
        with contextlib.closing(_each(channel, name, min(limit, depth))) as messages:
            return [parse(name, props, body) for _, props, body in messages]


def replay(broker: BrokerSettings, queue: WorkerQueue, *, ids: Collection[str] | None = None,
           limit: int | None = None,
           publisher_factory: Callable[[BrokerSettings], Publisher] = Publisher) -> ReplayResult:
    """Publish dead letters back to the events exchange with their original routing key.

    Args:
        ids: replay only these (event id or message id); None replays all.
        limit: replay at most this many.

    Each one is acked in the DLQ only after its publish was confirmed; one that is unroutable or
    refused stays in the DLQ and is reported in `failed`. A broker outage stops the replay there.

    Raises:
        BrokerUnavailable: the broker does not answer at the start.
        KeyError: the dead-letter queue does not exist.
    """
    name = queue.dead_letter_queue
    wanted = set(ids) if ids is not None else None
    result = ReplayResult()
    seen: set[str] = set()
    with _channel(broker) as channel, publisher_factory(broker) as publisher, \
            contextlib.closing(_each(channel, name, _depth(channel, name))) as messages:
        for tag, props, body in messages:
            letter = parse(name, props, body)
            ident = letter.key or f"<delivery {tag}>"
            if wanted is not None and not ({letter.event_id, letter.message_id} & wanted):
                continue
            seen.update(filter(None, (letter.event_id, letter.message_id)))
            if letter.routing_key is None:
                result.failed.append((ident, "no original routing key (not a modelbus event?)"))
                continue
            try:
                publisher.publish_raw(body, routing_key=letter.routing_key, exchange=EXCHANGE,
                                      properties=replay_properties(props, letter.replays), mandatory=True)
            except BrokerUnavailable as exc:
                result.failed.append((ident, str(exc)))
                break
            except PublishError as exc:
                result.failed.append((ident, str(exc)))
                continue
            channel.basic_ack(tag)
            result.replayed.append(ident)
            if limit is not None and len(result.replayed) >= limit:
                break
    if wanted is not None:
        result.not_found = sorted(wanted - seen)
    return result


def purge(broker: BrokerSettings, queue: WorkerQueue) -> int:
    """Drop every dead letter of `queue`; returns how many there were.

    Raises:
        BrokerUnavailable: the broker does not answer.
        KeyError: the dead-letter queue does not exist.
    """
    with _channel(broker) as channel:
        _depth(channel, queue.dead_letter_queue)
        return int(channel.queue_purge(queue.dead_letter_queue).method.message_count)
