"""Fixtures of the deploy worker's tests: a deploy worker (gateway + Celery, in-process) on the real broker."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from producers.client import ModelBus
from schemas.settings import BrokerSettings, Settings
from schemas.topology import DEPLOY_QUEUE
from tests.conftest import purge, running_worker
from workers.app import create_app
from workers.backends.base import ServiceBackend
from workers.deploy.tasks import register
from workers.emit import Emitter


def fast_stopping(broker: BrokerSettings) -> BrokerSettings:
    """A short AMQP heartbeat: the worker's event loop wakes up often enough to stop within a second."""
    return broker.model_copy(update={"heartbeat_s": 2})


@contextmanager
def deploy_worker(settings: Settings, backend: ServiceBackend, *, concurrency: int = 2) -> Iterator[object]:
    """A deploy worker (event gateway and Celery task pool, in threads) using `backend`."""
    app = create_app(settings, ("deploy",), register_tasks=False)
    emitter = Emitter(settings, source="/tests/workers/deploy")
    register(app, settings=settings, emitter=emitter, backend=backend)
    try:
        with running_worker(app, concurrency=concurrency):
            yield app
    finally:
        emitter.close()


@pytest.fixture
def clean_deploy_queues(channel, topology) -> None:  # type: ignore[no-untyped-def]
    """Nothing left over from another test in the deploy event and task queues."""
    channel.queue_declare(DEPLOY_QUEUE.task_queue, durable=True, arguments={"x-queue-type": "quorum"})
    purge(channel, DEPLOY_QUEUE.name, DEPLOY_QUEUE.task_queue, DEPLOY_QUEUE.dead_letter_queue)


@pytest.fixture
def bus(settings: Settings) -> Iterator[ModelBus]:
    with ModelBus(settings, source="/tests/client") as client:
        yield client
