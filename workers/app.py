"""The Celery application of the deploy and train workers, with the event gateway bootstep.

`create_app(settings, workers=("deploy",))` builds an app whose gateway consumes those workers' event
queues and whose task queues are quorum queues on a topic exchange (native delayed delivery for
retries needs one). `celery -A workers.app worker` uses the module-level `app`, configured from the
environment (`MODELBUS_WORKERS=deploy,train` picks the workers; default both).
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Sequence
from importlib import import_module
from typing import Any
from urllib.parse import urlsplit

from celery import Celery
from kombu import Exchange, Queue

from schemas.settings import BrokerSettings, Settings
from schemas.topology import TASK_EXCHANGE, WORKER_QUEUES
from workers.emit import Emitter
from workers.gateway import EventGateway
from workers.health import CeleryHealth

CELERY_WORKERS = ("deploy", "train")


def broker_ssl(broker: BrokerSettings) -> dict[str, Any] | bool:
    """py-amqp TLS options for amqps:// URLs (certificate verified), False otherwise."""
    if urlsplit(broker.url).scheme != "amqps":
        return False
    options: dict[str, Any] = {"cert_reqs": ssl.CERT_REQUIRED, "server_hostname": urlsplit(broker.url).hostname}
    if broker.ca_file:
        options["ca_certs"] = str(broker.ca_file)
    if broker.cert_file:
        options["certfile"] = str(broker.cert_file)
    if broker.key_file:
        options["keyfile"] = str(broker.key_file)
    return options


def create_app(
    settings: Settings | None = None, workers: Sequence[str] = CELERY_WORKERS, *, register_tasks: bool = True
) -> Celery:
    """Build the Celery app for `workers` (any of "deploy", "train").

    `register_tasks=False` leaves the handlers out, for wiring custom ones with `workers.runner.event_task`.

    Raises:
        KeyError: an unknown worker name.
    """
    settings = settings or Settings()
    unknown = [w for w in workers if w not in CELERY_WORKERS]
    if unknown:
        raise KeyError(f"unknown worker(s) {unknown}; Celery workers are {', '.join(CELERY_WORKERS)}")
    queues = [WORKER_QUEUES[w] for w in workers]
    task_exchange = Exchange(TASK_EXCHANGE, type="topic", durable=True)

    app = Celery("modelbus", broker=settings.broker.url, set_as_current=False)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_ignore_result=True,
        worker_prefetch_multiplier=1,
        task_queues=[
            Queue(q.task_queue, task_exchange, routing_key=q.task_queue, durable=True,
                  queue_arguments={"x-queue-type": "quorum"})
            for q in queues
        ],
        task_routes={
            f"modelbus.{key}": {"queue": q.task_queue, "routing_key": q.task_queue}
            for q in queues
            for key in q.routing_keys
        },
        task_default_queue=queues[0].task_queue,
        task_default_exchange=TASK_EXCHANGE,
        task_default_exchange_type="topic",
        task_create_missing_queues=False,
        broker_transport_options={"confirm_publish": True},
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        broker_heartbeat=settings.broker.heartbeat_s,
        broker_use_ssl=broker_ssl(settings.broker),
        worker_hijack_root_logger=False,
        worker_send_task_events=True,
        task_send_sent_event=False,
        worker_cancel_long_running_tasks_on_connection_loss=True,
        modelbus_settings=settings,
        modelbus_queues=queues,
        modelbus_task_exchange=task_exchange,
    )
    app.steps["consumer"].add(EventGateway)
    app.steps["consumer"].add(CeleryHealth)

    emitter = Emitter(settings, source=f"{settings.source}/workers/{'-'.join(workers)}")
    app.conf.modelbus_emitter = emitter
    for worker in workers if register_tasks else ():
        import_module(f"workers.{worker}.tasks").register(app, settings=settings, emitter=emitter)
    return app


def _env_workers() -> tuple[str, ...]:
    names = os.environ.get("MODELBUS_WORKERS", ",".join(CELERY_WORKERS))
    return tuple(n.strip() for n in names.split(",") if n.strip())


def __getattr__(name: str) -> Celery:
    # `celery -A workers.app` looks up `app`; build it lazily so importing this module stays cheap.
    if name == "app":
        app = create_app(Settings(), _env_workers())
        globals()["app"] = app
        return app
    raise AttributeError(name)
