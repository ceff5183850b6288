"""Coalesced acknowledgements: one `basic.ack(multiple)` for many settled deliveries.

Requests finish out of order (batches for different targets run concurrently), and each `ack`
is a frame and, on a busy loop, a system call. The tracker keeps the deliveries of one channel in
arrival order; once per loop turn it acks, with `multiple=True`, the highest delivery tag below
which every delivery is settled. A delivery still being answered holds back only the acks after
it, never loses one; anything unacked when a channel dies is redelivered by the broker.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aio_pika.abc import AbstractIncomingMessage

log = logging.getLogger(__name__)


class AckTracker:
    """Settle deliveries of one channel in any order; ack them in order, many per frame."""

    def __init__(self) -> None:
        self._outstanding: dict[int, list[Any]] = {}  # tag -> [message, settled], in arrival order
        self._flush_scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()

    def received(self, message: AbstractIncomingMessage) -> None:
        tag = message.delivery_tag
        if tag is not None:
            self._outstanding[tag] = [message, False]

    def settle(self, message: AbstractIncomingMessage) -> None:
        """Mark a delivery done (acked soon); it must have been `received`."""
        entry = self._outstanding.get(message.delivery_tag) if message.delivery_tag is not None else None
        if entry is None:
            return
        entry[1] = True
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def forget(self, message: AbstractIncomingMessage) -> None:
        """The delivery was settled some other way (nacked): it no longer holds acks back."""
        if message.delivery_tag is not None:
            self._outstanding.pop(message.delivery_tag, None)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        last: AbstractIncomingMessage | None = None
        while self._outstanding:
            tag = next(iter(self._outstanding))
            message, settled = self._outstanding[tag]
            if not settled:
                break
            del self._outstanding[tag]
            last = message
        if last is not None:
            task = asyncio.get_running_loop().create_task(self._ack(last))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _ack(message: AbstractIncomingMessage) -> None:
        try:
            await message.ack(multiple=True)
        except Exception as exc:  # channel gone: the broker redelivers, the answered-ids cache absorbs it
            log.warning("ack failed: %s", exc)

    async def wait(self) -> None:
        """Let a scheduled flush run and its ack go out (at shutdown)."""
        await asyncio.sleep(0)
        if self._tasks:
            await asyncio.wait(set(self._tasks))

    @property
    def pending(self) -> int:
        return len(self._outstanding)
