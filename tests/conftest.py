"""Shared fixtures: a private RabbitMQ vhost per test session, settings pointing at it, state dirs.

Every integration test talks to the real broker on 127.0.0.1:5672. The session gets its own vhost
(created through the management API, deleted at the end), so runs never see each other's messages.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

import httpx
import pika
import pytest

from producers.publisher import Publisher
from producers.topology import declare_topology
from schemas.settings import BrokerSettings, Settings

BROKER_HOST = os.environ.get("MODELBUS_TEST_BROKER_HOST", "127.0.0.1")
MANAGEMENT = os.environ.get("MODELBUS_TEST_MANAGEMENT_URL", f"http://{BROKER_HOST}:15672")
USER, PASSWORD = "guest", "guest"


def management() -> httpx.Client:
    return httpx.Client(base_url=f"{MANAGEMENT}/api", auth=(USER, PASSWORD), timeout=10)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run tests marked `disruptive` (a broker restart) after every other test."""
    items.sort(key=lambda item: item.get_closest_marker("disruptive") is not None)


@contextmanager
def private_vhost(prefix: str) -> Iterator[str]:
    """A fresh vhost with full permissions for the test user, deleted afterwards; yields its name."""
    name = f"{prefix}-{uuid.uuid4().hex[:10]}"
    with management() as api:
        api.put(f"/vhosts/{quote(name, safe='')}").raise_for_status()
        api.put(
            f"/permissions/{quote(name, safe='')}/{USER}",
            json={"configure": ".*", "write": ".*", "read": ".*"},
        ).raise_for_status()
    try:
        yield name
    finally:
        with management() as api:
            api.delete(f"/vhosts/{quote(name, safe='')}")


def vhost_url(name: str) -> str:
    """The AMQP URL of the test broker's vhost `name`."""
    return f"amqp://{USER}:{PASSWORD}@{BROKER_HOST}:5672/{quote(name, safe='')}"


@pytest.fixture(scope="session")
def vhost() -> Iterator[str]:
    """A fresh vhost for this test session, with full permissions for the test user."""
    with private_vhost("modelbus-test") as name:
        yield name


@pytest.fixture(scope="session")
def broker_url(vhost: str) -> str:
    return vhost_url(vhost)


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    path = tmp_path / "state"
    path.mkdir()
    return path


@pytest.fixture
def settings(broker_url: str, state_dir: Path) -> Settings:
    """Settings for a test: the session vhost, a private state directory, local backend."""
    return Settings(
        broker=BrokerSettings(url=broker_url, connect_attempts=3, retry_delay_s=0.2),
        state_dir=state_dir,
        backend="local",
    )


@pytest.fixture(scope="session")
def topology(broker_url: str) -> list[str]:
    """The modelbus topology declared once in the session vhost."""
    with Publisher(BrokerSettings(url=broker_url)) as publisher:
        return declare_topology(publisher.channel)


@pytest.fixture
def channel(broker_url: str) -> Iterator[pika.adapters.blocking_connection.BlockingChannel]:
    """A plain pika channel on the session vhost, for tests that inspect queues directly."""
    connection = pika.BlockingConnection(pika.URLParameters(broker_url))
    try:
        yield connection.channel()
    finally:
        if connection.is_open:
            connection.close()


def purge(channel: pika.adapters.blocking_connection.BlockingChannel, *queues: str) -> None:
    for queue in queues:
        channel.queue_purge(queue)


@contextmanager
def running_worker(app, *, concurrency: int = 2) -> Iterator[object]:
    """Run a Celery worker of `app` (gateway included) in a thread for the duration of the block.

    The worker consumes the task queues of `app.conf.modelbus_queues`; its gateway consumes their
    event queues. Stopped (and joined) on exit.
    """
    from celery.contrib.testing.worker import start_worker

    queues = ",".join(q.task_queue for q in app.conf.modelbus_queues)
    with start_worker(app, pool="threads", concurrency=concurrency, perform_ping_check=False,
                      queues=queues, loglevel="WARNING", shutdown_timeout=30) as worker:
        yield worker


def get_message(channel, queue: str, *, timeout: float = 10.0, ack: bool = True):
    """The next message of `queue` as (method, properties, body), waiting up to `timeout` seconds.

    Dead-lettering and cross-process delivery are asynchronous; this polls instead of sleeping blind.
    Raises AssertionError when nothing arrives.
    """
    import time

    deadline = time.monotonic() + timeout
    while True:
        method, props, body = channel.basic_get(queue, auto_ack=ack)
        if method is not None:
            return method, props, body
        if time.monotonic() > deadline:
            raise AssertionError(f"nothing arrived in {queue} within {timeout}s")
        time.sleep(0.05)


def ready_count(channel, queue: str, expected: int | None = None, *, timeout: float = 5.0) -> int:
    """Ready messages of `queue`. With `expected`, wait (bounded) for that count: a message browsed and
    requeued, or dead-lettered, becomes ready in a quorum queue asynchronously."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        depth = int(channel.queue_declare(queue, passive=True).method.message_count)
        if expected is None or depth == expected or time.monotonic() > deadline:
            return depth
        time.sleep(0.05)
