"""What can go wrong when publishing, as one small tree (pika's exceptions stop in the adapter)."""

from __future__ import annotations


class PublishError(Exception):
    """Base of every publishing failure."""


class BrokerUnavailable(PublishError):
    """The broker did not answer after the configured attempts (wrong URL, down, TLS or auth failure)."""


class Unroutable(PublishError):
    """No queue is bound for the routing key: the event would have been dropped, so it was refused."""


class PublishNacked(PublishError):
    """The broker refused to take responsibility for the message (nack)."""


class ReplyTimeout(TimeoutError):
    """No outcome event arrived within the timeout."""
