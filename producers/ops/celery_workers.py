"""The Celery workers online and what they run, by broadcast `inspect active` (what Flower shows too)."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from celery import Celery

from producers.ops.status import WorkerInfo
from schemas.topology import WORKER_QUEUES


def inspect_app(broker_url: str, *, use_ssl: dict[str, Any] | bool = False) -> Celery:
    """A bare Celery app that can broadcast to the modelbus workers (it registers no task)."""
    app = Celery("modelbus-status", broker=broker_url, set_as_current=False)
    app.conf.update(broker_use_ssl=use_ssl, broker_connection_retry=False, broker_connection_max_retries=1,
                    broker_connection_timeout=5)
    return app


def _worker_of(hostname: str, queues: list[dict[str, Any]]) -> str:
    """deploy/train from the task queues a worker consumes, else the part of its hostname before `@`."""
    by_task_queue = {q.task_queue: w for w, q in WORKER_QUEUES.items()}
    names = sorted({by_task_queue[q["name"]] for q in queues if q.get("name") in by_task_queue})
    return "+".join(names) if names else hostname.split("@", 1)[0]


def celery_workers(app: Celery, *, timeout_s: float = 1.0, now: float | None = None) -> list[WorkerInfo]:
    """Workers that answer within `timeout_s`, each with its running tasks (id, name, seconds running)."""
    now = time.time() if now is None else now
    inspect = app.control.inspect(timeout=timeout_s)
    with ThreadPoolExecutor(2) as pool:  # each broadcast waits out the timeout: ask both at once
        asked_queues, asked_active = pool.submit(inspect.active_queues), pool.submit(inspect.active)
        queues, active = asked_queues.result() or {}, asked_active.result() or {}
    workers = []
    for hostname in sorted(set(queues) | set(active)):
        running = [
            {"id": t.get("id"), "name": t.get("name"),
             "running_s": round(now - t["time_start"], 1) if t.get("time_start") else None}
            for t in active.get(hostname) or []
        ]
        workers.append(WorkerInfo(hostname, _worker_of(hostname, queues.get(hostname) or []), "celery", running))
    return workers
