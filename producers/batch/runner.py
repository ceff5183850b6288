"""The loop that moves a batch along: send (paced), collect, take lifecycle steps, report progress.

One coroutine serves every command: `until="sent"` publishes the remaining requests and returns
(`submit`), `until="drained"` collects what is waiting and returns (`status`, `results`, `cancel`),
`until="terminal"` does both until the batch is finished (`submit --wait`, `Batch.wait`).

Sending is paced: at most `max_in_flight` requests of the batch are out without a result, and
the store is consulted before each chunk, so a cancel (from any process) stops the sending. Only
the process holding the batch's collection lock collects and takes lifecycle steps; the others
report what the store and the queue say.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Literal

from producers.batch.amqp import BatchBroker
from producers.batch.collect import Collector
from producers.batch.status import BatchStatus, Step, next_step, status_of
from producers.batch.store import BatchLocked, BatchRecord, BatchState, BatchStore, Counts
from producers.batch.submit import publish_items, send_chunk, start
from producers.errors import ReplyTimeout
from schemas.settings import Settings

log = logging.getLogger(__name__)

Until = Literal["sent", "drained", "terminal"]
OnProgress = Callable[[BatchStatus], None]


class _Run:
    """State of one `drive` call."""

    def __init__(self, settings: Settings, store: BatchStore, batch_id: str, broker: BatchBroker,
                 clock: Callable[[], float]) -> None:
        self.settings = settings
        self.store = store
        self.batch_id = batch_id
        self.broker = broker
        self.clock = clock
        self.collector: Collector | None = None

    async def open(self, stack: contextlib.AsyncExitStack, *, send: bool, collect: bool) -> BatchRecord:
        """Start a recorded batch if sending, and become its collector if collecting and nobody else is."""
        store, batch_id = self.store, self.batch_id
        record = store.get(batch_id)
        if send and record.state is BatchState.validating:
            record = await start(store, self.broker, record, now=self.clock())
        if collect and not record.state.terminal:
            try:
                stack.enter_context(store.collecting(batch_id, block=False))
            except BatchLocked:
                log.info("another process is collecting batch %s; reporting only", batch_id)
            else:
                self.collector = Collector(store, batch_id, self.broker, chunk=self.settings.batch.collect_chunk,
                                           max_event_bytes=self.settings.max_event_bytes)
                await self.collector.start()
                stack.push_async_callback(self.collector.stop)
        if send and record.state is BatchState.in_progress:
            # Requests claimed by a submitter that died before their confirms: their ids make a resend harmless.
            await publish_items(store, self.broker, record, store.claimed(batch_id))
        return record

    def reached(self, until: Until, record: BatchRecord, counts: Counts, depth: int, sent: int) -> bool:
        if until == "sent":
            return counts.pending - sent <= 0 or record.state is not BatchState.in_progress
        if until == "drained":
            return self.collector is None or (depth == 0 and self.collector.buffered == 0)
        return False

    async def look(self) -> tuple[BatchRecord, Counts, int]:
        record = self.store.get(self.batch_id)
        counts = self.store.counts(self.batch_id)
        depth = 0
        if not record.state.terminal and record.state is not BatchState.validating:
            depth = await self.broker.depth(record.results_queue) or 0
        return record, counts, depth

    async def step(self, record: BatchRecord, counts: Counts, depth: int) -> bool:
        """Take the due lifecycle step (collector only); True if the batch changed."""
        assert self.collector is not None
        now = self.clock()
        step = next_step(record, counts, depth, now, cancel_grace_s=self.settings.batch.cancel_grace_s)
        if step is Step.none:
            return False
        batch_id, store = self.batch_id, self.store
        if step is Step.finalize:
            store.transition(batch_id, BatchState.finalizing, allowed_from=[BatchState.in_progress], now=now)
        elif step is Step.complete:
            if record.state is BatchState.in_progress:
                store.transition(batch_id, BatchState.finalizing, allowed_from=[BatchState.in_progress], now=now)
            store.transition(batch_id, BatchState.completed, allowed_from=[BatchState.finalizing], now=now)
            await self._retire(record)
        elif step is Step.expire:
            store.withdraw_pending(batch_id)
            await self._drain(record)
            self.collector.write_withdrawn(store.uncollected(batch_id), "expired")
            store.transition(batch_id, BatchState.expired, allowed_from=[BatchState.in_progress], now=now)
            await self._retire(record)
        elif step is Step.cancelled:
            await self._drain(record)
            self.collector.write_withdrawn(store.uncollected(batch_id), "cancelled")
            store.transition(batch_id, BatchState.cancelled, allowed_from=[BatchState.cancelling], now=now)
            await self._retire(record)
        log.info("batch %s: %s", batch_id, step.value)
        return True

    async def _drain(self, record: BatchRecord, limit_s: float = 10.0) -> None:
        """Collect the results already in the queue, so none is reported expired or cancelled wrongly."""
        assert self.collector is not None
        ends = time.monotonic() + limit_s
        await self.collector.pump(0.0)
        while time.monotonic() < ends and (await self.broker.depth(record.results_queue) or 0) > 0:
            await self.collector.pump(self.settings.batch.poll_interval_s)

    async def _retire(self, record: BatchRecord) -> None:
        """Stop consuming the finished batch's results queue, then delete it."""
        await self.broker.cancel_consumers()
        await self.broker.delete(record.results_queue)

    async def send(self, record: BatchRecord, counts: Counts, depth: int) -> int:
        """Publish the next chunk if the in-flight bound allows; returns requests sent."""
        if record.state is not BatchState.in_progress or counts.pending == 0:
            return 0
        chunk = max(1, self.settings.batch.send_chunk)
        if record.max_in_flight > 0:
            in_flight = counts.sent - counts.answered - depth - (self.collector.buffered if self.collector else 0)
            chunk = min(chunk, record.max_in_flight - in_flight)
            if chunk <= 0:
                return 0
        return await send_chunk(self.store, self.broker, record, chunk)


async def drive(
    settings: Settings,
    store: BatchStore,
    batch_id: str,
    *,
    until: Until,
    send: bool = True,
    collect: bool = True,
    timeout: float | None = None,
    on_progress: OnProgress | None = None,
    clock: Callable[[], float] = time.time,
) -> BatchStatus:
    """Move a batch along until `until`; returns its status then.

    Args:
        until: `sent` (every request published, or none may be), `drained` (the waiting results
            collected) or `terminal` (completed, failed, expired or cancelled).
        send: publish pending requests (paced by the batch's max_in_flight).
        collect: collect results and take lifecycle steps, if no other process is collecting.
        timeout: give up after this many seconds (raises ReplyTimeout).
        on_progress: called with the status after every round.
        clock: wall-clock time (epoch seconds); injected by tests of expiry.

    Raises:
        ReplyTimeout: `timeout` passed first.
        UnknownBatch: no such batch.
        PublishError: the broker refused or lost requests.
    """
    poll = settings.batch.poll_interval_s
    ends = None if timeout is None else time.monotonic() + timeout
    async with BatchBroker(settings.broker) as broker, contextlib.AsyncExitStack() as stack:
        run = _Run(settings, store, batch_id, broker, clock)
        await run.open(stack, send=send, collect=collect)
        while True:
            if run.collector is not None:
                await run.collector.pump(0.0)
            record, counts, depth = await run.look()
            if run.collector is not None and await run.step(record, counts, depth):
                record, counts, depth = await run.look()
            status = status_of(record, counts, depth, clock())
            if on_progress is not None:
                on_progress(status)
            if record.state.terminal or record.state is BatchState.validating:
                return status
            sent = await run.send(record, counts, depth) if send else 0
            if run.reached(until, record, counts, depth, sent):
                return status_of(*(await run.look()), clock()) if sent else status
            if ends is not None and time.monotonic() > ends:
                raise ReplyTimeout(f"batch {batch_id} is still {record.state.value} after {timeout:g}s")
            if sent:
                continue
            if run.collector is not None:
                await run.collector.pump(poll)
            else:
                await asyncio.sleep(poll)
