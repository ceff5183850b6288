"""Celery tasks as thin shims around plain handlers; the one place outcomes are decided.

`event_task` registers the task `modelbus.<routing key>`. It decodes the event, enforces its
deadline, calls the handler, and maps what the handler raised:

* nothing            -> done (the handler published its outcome through the emitter)
* PermanentError     -> the worker's `*Failed` event (reason, message), done
* RetryableError     -> retried after a backoff (exponential, with jitter), up to settings.task_max_retries;
                        then the `*Failed` event (retryable=True) and the event to the dead-letter queue
* any other error    -> treated like a RetryableError with reason InternalError (a poison event ends in
                        the dead-letter queue after bounded retries, never in a hot loop)
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pika
from celery import Celery, Task

from schemas.envelope import CloudEvent, amqp_properties, decode, derived_id, encode
from schemas.events import Event
from schemas.settings import Settings
from schemas.topology import DEAD_LETTER_EXCHANGE, WorkerQueue, dead_letter_headers
from workers.emit import Emitter
from workers.errors import DeadlineExceeded, PermanentError, RetryableError, WorkerError
from workers.observability import TASKS_FINISHED, bind_event, get_logger, redact, track_task

log = get_logger(__name__)

Handler = Callable[[CloudEvent[Any]], None]
FailureBuilder = Callable[[CloudEvent[Any], WorkerError], Event]


def backoff(base: float, attempt: int, *, cap: float = 300.0) -> int:
    """Exponential backoff with jitter: a delay in [base, base * 2**attempt], capped, in whole seconds.

    Whole seconds because Celery's native delayed delivery on quorum queues counts in seconds (>= 1).
    """
    high = min(cap, base * (2**attempt))
    return max(1, round(random.uniform(min(base, high), high)))


def event_task(
    app: Celery,
    queue: WorkerQueue,
    routing_key: str,
    handler: Handler,
    failure: FailureBuilder,
    *,
    settings: Settings,
    emitter: Emitter,
) -> Task:
    """Register the Celery task that handles `routing_key` events with `handler`.

    Args:
        app: the worker's Celery app.
        queue: the worker queue the event came from (for dead-lettering).
        routing_key: e.g. `deploy.requested`; the task is named `modelbus.deploy.requested`.
        handler: `handler(event)`; publishes its own outcome, raises PermanentError/RetryableError.
        failure: builds the `*Failed` event data from the event and the error.
    """

    @app.task(  # type: ignore[untyped-decorator]  # celery is untyped
        name=f"modelbus.{routing_key}",
        shared=False,  # each app (one per worker process, or per test) gets its own handler
        bind=True,
        acks_late=True,
        reject_on_worker_lost=True,
        max_retries=settings.task_max_retries,
        time_limit=settings.task_time_limit_s,
        soft_time_limit=settings.task_time_limit_s * 0.95,
        ignore_result=True,
    )
    def run(task: Task, raw: str) -> None:
        event = decode(raw, max_bytes=settings.max_event_bytes, allow_plain_secret_envs=True)
        with bind_event(event), track_task(event.type):
            try:
                deadline = getattr(event.data, "deadline", None)
                if deadline is not None and deadline <= datetime.now(UTC):
                    raise DeadlineExceeded(f"the request's deadline {deadline.isoformat()} has passed")
                handler(event)
            except PermanentError as exc:
                _fail(event, exc, retryable=False)
            except RetryableError as exc:
                _retry_or_fail(task, raw, event, exc)
            except Exception as exc:
                if _is_celery_control(exc):
                    raise
                log.exception("handler raised unexpectedly")
                _retry_or_fail(task, raw, event, RetryableError(redact(f"{type(exc).__name__}: {exc}"),
                                                                 reason="InternalError"))
            else:
                TASKS_FINISHED.labels(event.type, "ok").inc()

    def _retry_or_fail(task: Task, raw: str, event: CloudEvent[Any], exc: RetryableError) -> None:
        retries = task.request.retries
        if retries < (task.max_retries or 0):
            delay = backoff(max(exc.delay, 0.1), retries)
            TASKS_FINISHED.labels(event.type, "retried").inc()
            log.warning("retrying in %ds: %s", delay, exc, extra={"reason": exc.reason, "attempt": retries + 1})
            raise task.retry(countdown=delay, exc=exc, max_retries=task.max_retries)
        _fail(event, exc, retryable=True)
        _dead_letter(raw, event, exc)

    def _fail(event: CloudEvent[Any], exc: WorkerError, *, retryable: bool) -> None:
        data = failure(event, exc)
        if hasattr(data, "retryable") and retryable:
            data = data.model_copy(update={"retryable": True})
        emitter.emit(data, cause=event, event_id=derived_id(event.id, "failed"))
        TASKS_FINISHED.labels(event.type, "failed").inc()
        log.warning("failed: %s", exc, extra={"reason": exc.reason})

    def _dead_letter(raw: str, event: CloudEvent[Any], exc: WorkerError) -> None:
        props = amqp_properties(event)
        props["headers"] = {**props["headers"], **dead_letter_headers(exc.reason, str(exc), event.routing_key)}
        emitter.publisher.publish_raw(
            raw.encode(),
            exchange=DEAD_LETTER_EXCHANGE,
            routing_key=queue.name,
            properties=pika.BasicProperties(**props),
        )
        TASKS_FINISHED.labels(event.type, "dead_lettered").inc()

    return run


def _is_celery_control(exc: BaseException) -> bool:
    from celery.exceptions import Retry, SoftTimeLimitExceeded

    return isinstance(exc, Retry | SoftTimeLimitExceeded)


FollowUp = Callable[[CloudEvent[Any], float], None]


def follow_up_scheduler(app: Celery, queue: WorkerQueue, routing_key: str) -> FollowUp:
    """A function that schedules the task `modelbus.<routing_key>` for an event after `countdown` seconds.

    Long waits (a pod becoming Ready, a training Job) are followed in short windows by such delayed
    tasks, so no worker slot is held for minutes. Native delayed delivery counts whole seconds and
    rejects a countdown below one, hence the rounding up.
    """

    def follow_up(event: CloudEvent[Any], countdown: float) -> None:
        app.send_task(
            f"modelbus.{routing_key}",
            args=[encode(event).decode()],
            countdown=max(1, math.ceil(countdown)),
            queue=queue.task_queue,
            routing_key=queue.task_queue,
            exchange=app.conf.modelbus_task_exchange,
        )

    return follow_up
