"""Publishing outcome events from inside workers: to the events exchange and to the requester.

One `Publisher` per thread (pika connections are not thread-safe), created lazily.
"""

from __future__ import annotations

import threading
from typing import Any

from producers.publisher import Publisher
from schemas.envelope import CloudEvent, new_event
from schemas.events import Event
from schemas.settings import Settings
from workers.observability import EVENTS_PUBLISHED, get_logger

log = get_logger(__name__)


class Emitter:
    """Publish events caused by another event (correlation and trace context inherited).

    Args:
        settings: broker settings and this process's CloudEvents source.
        source: overrides `settings.source`, e.g. `/modelbus/workers/deploy`.
    """

    def __init__(self, settings: Settings, *, source: str | None = None) -> None:
        self._settings = settings
        self._source = source or settings.source
        self._local = threading.local()

    @property
    def publisher(self) -> Publisher:
        publisher = getattr(self._local, "publisher", None)
        if publisher is None:
            publisher = self._local.publisher = Publisher(self._settings.broker)
        return publisher

    def emit(
        self,
        data: Event,
        *,
        cause: CloudEvent[Any] | None,
        event_id: str | None = None,
        exchange: bool = True,
    ) -> CloudEvent[Any]:
        """Publish `data` as an event caused by `cause`.

        It goes to the events exchange (unless `exchange=False`) and, when the cause names a
        `reply_to` queue, to that queue too. An unroutable exchange publish (nobody subscribed to
        that outcome) is not an error: the outcome is still delivered to the requester.
        """
        event = new_event(data, source=self._source, cause=cause, event_id=event_id)
        reply_to = getattr(cause.data, "reply_to", None) if cause is not None else None
        if exchange:
            self.publisher.publish(event, mandatory=False)
        if reply_to:
            self.publisher.reply(event, reply_to)
        EVENTS_PUBLISHED.labels(event.type).inc()
        log.info("published %s", event.type, extra={"published_id": event.id, "published_type": event.type})
        return event

    def close(self) -> None:
        publisher = getattr(self._local, "publisher", None)
        if publisher is not None:
            publisher.close()
            self._local.publisher = None
