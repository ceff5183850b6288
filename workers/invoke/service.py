"""The invoke service: InvokeRequested deliveries in, one confirmed result per request out.

Not a Celery task per request: one asyncio loop takes deliveries from the invoke quorum queue
(large prefetch), resolves each request's target, queues it in the micro-batcher, and runs due
batches upstream with at most `concurrency_per_target` calls per target ("lane"). Each result is
published with a publisher confirm and only then is the request acked, so delivery is
at-least-once; a result's id derives from its request's id, and ids answered recently are
remembered, so a redelivered request does not produce a second, different result.

Requests that cannot succeed (unknown service, protocol mismatch, invalid body, deadline already
past) are answered with an `InvokeFailed` at once; messages that are not valid events go to the
dead-letter queue with the reason in headers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aio_pika.abc import AbstractIncomingMessage

from schemas.envelope import CONTENT_TYPE, DATA_CONTENT_TYPE, CloudEvent, EventDecodeError, decode
from schemas.events import InvokeRequested, ServiceDeleted, ServiceReady
from schemas.settings import Settings
from workers.errors import PermanentError
from workers.invoke import metrics, protocols
from workers.invoke.acks import AckTracker
from workers.invoke.amqp import Broker, BrokerError
from workers.invoke.batching import Batch, MicroBatcher
from workers.invoke.execute import Answer, execute
from workers.invoke.results import FailureInfo, completed, failed
from workers.invoke.targets import ServiceDirectory, Target, UnknownService
from workers.invoke.upstream import Upstream

log = logging.getLogger(__name__)

_STATUS_OF_REASON = {"UnknownService": 404, "ProtocolMismatch": 400, "InvalidRequest": 400, "DeadlineExceeded": 504}


@dataclass
class Job:
    """One request on its way through the worker (with every delivery of it seen meanwhile)."""

    event: CloudEvent[InvokeRequested]
    messages: list[AbstractIncomingMessage]
    received: float
    deadline: float | None
    target: Target | None = None
    url: str = ""
    rows: int = 1


@dataclass
class _Lane:
    in_flight: int = 0
    kick_pending: bool = False
    timer: asyncio.TimerHandle | None = None
    tasks: set[asyncio.Task[None]] = field(default_factory=set)


class InvokeService:
    """Dispatch logic of one invoke worker process (the AMQP and HTTP adapters are passed in)."""

    def __init__(self, settings: Settings, *, broker: Broker, directory: ServiceDirectory, upstream: Upstream,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.broker = broker
        self.directory = directory
        self.upstream = upstream
        self._clock = clock
        cfg = settings.invoke
        self.batcher: MicroBatcher[Job] = MicroBatcher(max_size=cfg.max_batch_size, max_wait_s=cfg.max_wait_ms / 1000,
                                                       linger_s=cfg.linger_ms / 1000)
        self._lanes: dict[Hashable, _Lane] = {}
        self._inflight: dict[str, Job] = {}
        self._answered: OrderedDict[str, None] = OrderedDict()
        self._background: set[asyncio.Task[None]] = set()
        self._draining = False
        self._acks: dict[int, AckTracker] = {}

    # -- intake ------------------------------------------------------------------------------------
    async def on_request(self, message: AbstractIncomingMessage) -> None:
        """Consumer callback: decode, de-duplicate, resolve, queue (never blocks on upstream)."""
        self._tracker(message).received(message)
        try:
            content_type = (message.content_type or "").split(";")[0].strip()
            if content_type not in (CONTENT_TYPE, DATA_CONTENT_TYPE):  # the same rule as the event gateway
                raise EventDecodeError("WrongContentType",
                                       f"content type {content_type or '<none>'!r} is not {CONTENT_TYPE}")
            event = decode(message.body, max_bytes=self.settings.max_event_bytes,
                           allow_plain_secret_envs=self.settings.allow_plain_secret_envs)
            if not isinstance(event.data, InvokeRequested):
                raise EventDecodeError("WrongQueue", f"{event.type} does not belong on the invoke queue")
        except EventDecodeError as exc:
            metrics.REJECTED.labels(exc.reason).inc()
            self._spawn(self._dead_letter(message, exc.reason, str(exc)))
            return
        request_id = event.id
        if request_id in self._answered:
            metrics.DUPLICATES.inc()
            self._settle(message)
            return
        running = self._inflight.get(request_id)
        if running is not None:  # the same request again while the first copy is still being answered
            running.messages.append(message)
            return
        data = event.data
        metrics.for_protocol(data.protocol.value).requests.inc()
        now = self._clock()
        job = Job(event, [message], now, None)
        self._inflight[request_id] = job
        try:
            if data.deadline is not None:
                remaining = (data.deadline - datetime.now(UTC)).total_seconds()
                if remaining <= 0:
                    raise PermanentError("the request's deadline had passed when it arrived", reason="DeadlineExceeded")
                job.deadline = now + remaining
            job.target, job.url = self.directory.resolve(data)
            plan = protocols.plan(data.protocol, data.body)
        except protocols.InvalidBody as exc:
            self._finish_early(job, FailureInfo("InvalidRequest", str(exc), status_code=400))
            return
        except PermanentError as exc:
            retryable = isinstance(exc, UnknownService)  # it may be deployed later
            self._finish_early(job, FailureInfo(exc.reason, exc.message, status_code=_STATUS_OF_REASON.get(exc.reason),
                                                retryable=retryable))
            return
        job.rows = plan.rows
        lane = job.target.lane
        key = (data.protocol, job.url, plan.compat) if plan.compat is not None else (data.protocol, job.url, "solo")
        self.batcher.add(lane, key, job, now=now, rows=plan.rows, solo=plan.compat is None)
        metrics.PENDING.inc()
        self._schedule_kick(lane)

    def on_registry_event(self, body: bytes) -> None:
        try:
            event = decode(body, max_bytes=self.settings.max_event_bytes)
        except EventDecodeError as exc:
            log.warning("ignoring an invalid registry event: %s", exc)
            return
        if isinstance(event.data, ServiceReady | ServiceDeleted):
            self.directory.apply(event.data)
            log.info("service directory updated", extra={"service": event.data.service, "event_type": event.type})

    async def on_registry(self, message: AbstractIncomingMessage) -> None:
        self.on_registry_event(message.body)

    # -- lanes -------------------------------------------------------------------------------------
    def _lane(self, lane: Hashable) -> _Lane:
        found = self._lanes.get(lane)
        if found is None:
            found = self._lanes[lane] = _Lane()
        return found

    def _schedule_kick(self, lane: Hashable) -> None:
        """Look at the lane on the next loop turn, so deliveries that arrived together batch together."""
        state = self._lane(lane)
        if not state.kick_pending:
            state.kick_pending = True
            asyncio.get_running_loop().call_soon(self._kick, lane)

    def _kick(self, lane: Hashable) -> None:
        state = self._lane(lane)
        state.kick_pending = False
        if state.timer is not None:
            state.timer.cancel()
            state.timer = None
        limit = max(1, self.settings.invoke.concurrency_per_target)
        while state.in_flight < limit:
            now = self._clock()
            due = self.batcher.due(lane, now=now, idle=self._draining or state.in_flight == 0)
            if not due:
                break
            batch = self.batcher.take(lane, due[0])
            metrics.PENDING.dec(len(batch.items))
            state.in_flight += 1
            task = asyncio.get_running_loop().create_task(self._run(batch, state))
            state.tasks.add(task)
            task.add_done_callback(state.tasks.discard)
        deadline = self.batcher.next_deadline(lane, idle=state.in_flight == 0)
        if deadline is not None and state.in_flight < limit:
            loop = asyncio.get_running_loop()
            state.timer = loop.call_at(loop.time() + max(0.0, deadline - self._clock()), self._kick, lane)

    async def _run(self, batch: Batch[Job], state: _Lane) -> None:
        jobs = batch.items
        first = jobs[0]
        assert first.target is not None
        protocol = first.event.data.protocol
        try:
            metrics.IN_FLIGHT.inc()
            per_protocol = metrics.for_protocol(protocol.value)
            per_protocol.batch_size.observe(len(jobs))
            answers = await execute(
                protocol, lane=first.target.lane, url=first.url, bodies=[j.event.data.body for j in jobs],
                deadlines=[j.deadline for j in jobs], upstream=self.upstream, on_attempt=per_protocol.upstream.observe,
            )
        except Exception as exc:  # a bug must not leave requests unanswered: report it per request
            log.exception("batch failed unexpectedly")
            answers = [Answer(failure=FailureInfo("InternalError", f"{type(exc).__name__}: {exc}", status_code=500))
                       for _ in jobs]
        finally:
            metrics.IN_FLIGHT.dec()
            state.in_flight -= 1
            self._kick(batch.lane)
        await asyncio.gather(*(self._finish(job, answer) for job, answer in zip(jobs, answers, strict=True)))

    # -- outcomes ----------------------------------------------------------------------------------
    def _finish_early(self, job: Job, info: FailureInfo) -> None:
        self._spawn(self._finish(job, Answer(failure=info)))

    async def _finish(self, job: Job, answer: Answer) -> None:
        """Publish the request's result (confirmed), then ack every delivery of the request."""
        request = job.event
        protocol = request.data.protocol.value
        if answer.failure is not None:
            result: CloudEvent[Any] = failed(request, answer.failure)
            outcome, reason = "failed", answer.failure.reason
            log.warning("invoke failed", extra={"request_id": request.id, "reason": reason,
                                                "error": answer.failure.message[:500]})
        else:
            assert answer.body is not None
            latency_ms = (self._clock() - job.received) * 1000
            result = completed(request, target=job.target, body=answer.body, status_code=answer.status_code,
                               latency_ms=latency_ms, batch_size=answer.batch_size, attempts=answer.attempts)
            outcome, reason = "completed", ""
        try:
            await self.broker.publish(result, reply_to=request.data.reply_to)
        except BrokerError as exc:
            # Not confirmed: give the request back to the queue; it is answered again (same result id).
            log.error("result not confirmed; the request goes back to the queue: %s", exc)
            self._inflight.pop(request.id, None)
            for message in job.messages:
                await self._requeue(message)
            return
        self._remember(request.id)
        self._inflight.pop(request.id, None)
        per_protocol = metrics.for_protocol(protocol)
        if outcome == "completed":
            per_protocol.completed.inc()
        else:
            metrics.RESULTS.labels(protocol, outcome, reason).inc()
        per_protocol.latency.observe(max(0.0, (datetime.now(UTC) - request.time).total_seconds()))
        for message in job.messages:
            self._settle(message)

    # -- acknowledgements --------------------------------------------------------------------------
    def _tracker(self, message: AbstractIncomingMessage) -> AckTracker:
        key = id(message.channel)
        found = self._acks.get(key)
        if found is None:
            found = self._acks[key] = AckTracker()
        return found

    def _settle(self, message: AbstractIncomingMessage) -> None:
        """The delivery is answered (or dead-lettered): ack it, coalesced with its neighbours."""
        self._tracker(message).settle(message)

    async def _requeue(self, message: AbstractIncomingMessage) -> None:
        self._tracker(message).forget(message)
        try:
            await message.nack(requeue=True)
        except Exception as exc:  # channel gone: the broker requeues it anyway
            log.warning("nack failed: %s", exc)

    def _remember(self, request_id: str) -> None:
        self._answered[request_id] = None
        if len(self._answered) > self.settings.invoke.result_cache_size:
            self._answered.popitem(last=False)

    async def _dead_letter(self, message: AbstractIncomingMessage, reason: str, error: str) -> None:
        try:
            await self.broker.dead_letter(message, reason, error)
        except BrokerError as exc:
            log.error("could not dead-letter an invalid message; it goes back to the queue: %s", exc)
            await self._requeue(message)
            return
        self._settle(message)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- shutdown ----------------------------------------------------------------------------------
    async def drain(self, timeout: float) -> None:
        """Send every waiting batch now and wait (up to `timeout` s) for all results to be published."""
        self._draining = True
        self.batcher.linger_s = 0.0
        for lane in self.batcher.lanes():
            self._kick(lane)
        end = self._clock() + timeout
        while self._clock() < end:
            tasks = set(self._background)
            for state in self._lanes.values():
                tasks |= state.tasks
            if not tasks and not self.batcher.pending():
                for tracker in self._acks.values():
                    await tracker.wait()
                return
            if tasks:
                await asyncio.wait(tasks, timeout=max(0.0, end - self._clock()))
            else:
                for lane in self.batcher.lanes():
                    self._kick(lane)
                await asyncio.sleep(0.01)
        log.warning("shutdown timed out with requests unanswered; they will be redelivered")
