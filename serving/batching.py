"""Server-side dynamic batching: concurrent requests to one model become one forward pass.

KServe's Hugging Face runtime runs each request on its own; on a small CPU box that caps a MiniLM
classifier at ~55 requests/s while the same model handles ~385 texts/s in batches of 32. The
``DynamicBatcher`` closes that gap without changing the protocol: each request awaits
``submit()``, and a single loop groups waiting requests into batches and hands each batch to an
async ``run_batch`` callable (which runs the model in a worker thread).

Policy:

* A batch holds requests with the same ``key`` (generation requests with different sampling
  parameters cannot share a ``generate()`` call), oldest first, up to ``max_batch_size`` rows.
  A request with more rows than that runs alone rather than being split.
* The batch is dispatched when it is full or when its oldest request has waited ``max_wait``.
  Requests that queued up while the previous batch ran have usually waited long enough already,
  so under load batches go out back to back with no added delay.
* One batch runs at a time (the model is one resource). ``max_batch_size=1`` turns batching off.

Pure asyncio, no torch: tests drive it with plain coroutines.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

RunBatch = Callable[[list[T]], Awaitable[Sequence[R | BaseException]]]


@dataclass
class _Pending(Generic[T, R]):
    item: T
    rows: int
    key: Hashable
    enqueued_at: float
    future: asyncio.Future[R] = field(repr=False)


class DynamicBatcher(Generic[T, R]):
    """Groups concurrent submissions into batches for ``run_batch``.

    Args:
        run_batch: called with the items of one batch; returns one result per item, in order.
            A result that is an exception is raised to that item's caller only; if ``run_batch``
            itself raises, every caller in the batch gets the exception.
        max_batch_size: most rows per batch (>= 1).
        max_wait: seconds the oldest request may wait for the batch to fill.
        on_batch: observer called with the row count of each dispatched batch (metrics).
        on_queue_depth: observer called with the number of waiting requests when it changes.
        clock: monotonic time source, injectable for tests.

    Example:
        >>> async def double(items: list[int]) -> list[int]:
        ...     return [2 * i for i in items]
        >>> batcher = DynamicBatcher(double, max_batch_size=8, max_wait=0.005)
        >>> # await asyncio.gather(*(batcher.submit(i) for i in range(3)))  -> [0, 2, 4], one batch
    """

    def __init__(
        self,
        run_batch: RunBatch[T, R],
        *,
        max_batch_size: int,
        max_wait: float,
        on_batch: Callable[[int], None] | None = None,
        on_queue_depth: Callable[[int], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be >= 1")
        if max_wait < 0:
            raise ValueError("max_wait must be >= 0")
        self._run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait
        self._on_batch = on_batch
        self._on_queue_depth = on_queue_depth
        self._clock = clock
        self._pending: deque[_Pending[T, R]] = deque()
        self._arrived: asyncio.Event | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._closed = False

    async def submit(self, item: T, *, rows: int = 1, key: Hashable = None) -> R:
        """Queue ``item`` (worth ``rows`` rows of the batch) and wait for its result.

        Raises:
            RuntimeError: the batcher is closed.
            Exception: whatever ``run_batch`` raised or returned for this item.
        """
        if self._closed:
            raise RuntimeError("batcher is closed")
        self._ensure_started()
        assert self._arrived is not None
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(item, max(1, rows), key, self._clock(), future))
        self._report_depth()
        self._arrived.set()
        return await future

    @property
    def queue_depth(self) -> int:
        """Requests waiting for a batch (not counting the one running)."""
        return len(self._pending)

    async def close(self) -> None:
        """Stop the loop; requests still waiting get ``RuntimeError``."""
        self._closed = True
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        while self._pending:
            pending = self._pending.popleft()
            if not pending.future.done():
                pending.future.set_exception(RuntimeError("batcher is closed"))
        self._report_depth()

    def _ensure_started(self) -> None:
        if self._loop_task is None:
            self._arrived = asyncio.Event()
            self._loop_task = asyncio.get_running_loop().create_task(self._loop(), name="dynamic-batcher")

    def _report_depth(self) -> None:
        if self._on_queue_depth is not None:
            self._on_queue_depth(len(self._pending))

    def _drop_cancelled(self) -> None:
        if any(p.future.done() for p in self._pending):
            self._pending = deque(p for p in self._pending if not p.future.done())
            self._report_depth()

    def _fillable_rows(self, key: Hashable) -> int:
        rows = 0
        for pending in self._pending:
            if pending.key == key:
                rows += pending.rows
                if rows >= self.max_batch_size:
                    break
        return rows

    def _take(self, key: Hashable) -> list[_Pending[T, R]]:
        """Remove and return the oldest requests with ``key`` that fit in one batch."""
        batch: list[_Pending[T, R]] = []
        rows = 0
        kept: deque[_Pending[T, R]] = deque()
        for pending in self._pending:
            fits = not batch or rows + pending.rows <= self.max_batch_size
            if pending.key == key and fits and rows < self.max_batch_size:
                batch.append(pending)
                rows += pending.rows
            else:
                kept.append(pending)
        self._pending = kept
        self._report_depth()
        return batch

    async def _loop(self) -> None:
        assert self._arrived is not None
        while True:
            self._drop_cancelled()
            if not self._pending:
                self._arrived.clear()
                await self._arrived.wait()
                continue
            oldest = self._pending[0]
            deadline = oldest.enqueued_at + self.max_wait
            while self._fillable_rows(oldest.key) < self.max_batch_size:
                remaining = deadline - self._clock()
                if remaining <= 0:
                    break
                self._arrived.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._arrived.wait(), remaining)
            self._drop_cancelled()
            if not self._pending or oldest.future.done():
                continue
            await self._dispatch(self._take(oldest.key))

    async def _dispatch(self, batch: list[_Pending[T, R]]) -> None:
        if self._on_batch is not None:
            self._on_batch(sum(p.rows for p in batch))
        try:
            results = await self._run_batch([p.item for p in batch])
        except asyncio.CancelledError:
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(RuntimeError("batcher is closed"))
            raise
        except Exception as exc:
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(exc)
            return
        if len(results) != len(batch):
            error = RuntimeError(f"run_batch returned {len(results)} results for {len(batch)} items")
            results = [error] * len(batch)
        for pending, result in zip(batch, results, strict=True):
            if pending.future.done():
                continue
            if isinstance(result, BaseException):
                pending.future.set_exception(result)
            else:
                pending.future.set_result(result)
