"""Fixtures of the operations tests: a private vhost (exact queue counts), a CLI runner, dead letters.

Status and dead-letter tests assert exact numbers, so they get a vhost of their own instead of the
session's shared one; every test starts with the topology declared and every queue empty.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pika
import pytest
from typer.testing import CliRunner

from producers.cli.main import app as cli_app
from producers.topology import declare_topology
from schemas import new_event
from schemas.envelope import amqp_properties, encode
from schemas.events import UndeployRequested
from schemas.settings import BrokerSettings, Settings
from schemas.topology import DEAD_LETTER_EXCHANGE, EXCHANGE, WORKER_QUEUES, dead_letter_headers
from tests.conftest import private_vhost, vhost_url


@pytest.fixture(scope="module")
def ops_url() -> Iterator[str]:
    """A vhost for one test module, with the modelbus topology declared."""
    with private_vhost("modelbus-ops") as name:
        url = vhost_url(name)
        connection = pika.BlockingConnection(pika.URLParameters(url))
        declare_topology(connection.channel())
        connection.close()
        yield url


@pytest.fixture
def ops_channel(ops_url: str) -> Iterator[pika.adapters.blocking_connection.BlockingChannel]:
    """A channel on the ops vhost; every modelbus queue is empty when the test starts."""
    connection = pika.BlockingConnection(pika.URLParameters(ops_url))
    channel = connection.channel()
    channel.confirm_delivery()  # publishes in tests are confirmed before they assert anything
    for queue in WORKER_QUEUES.values():
        channel.queue_purge(queue.name)
        channel.queue_purge(queue.dead_letter_queue)
    try:
        yield channel
    finally:
        if connection.is_open:
            connection.close()


@pytest.fixture
def ops_settings(ops_url: str, tmp_path: Path) -> Settings:
    return Settings(broker=BrokerSettings(url=ops_url, connect_attempts=2, retry_delay_s=0.1),
                    state_dir=tmp_path / "state")


@pytest.fixture
def cli(ops_url: str, tmp_path: Path) -> Callable[..., object]:
    """Run `modelbus ...` in-process against the ops vhost; returns the click Result."""
    runner = CliRunner()
    env = {"MODELBUS_BROKER__URL": ops_url, "MODELBUS_STATE_DIR": str(tmp_path / "state"),
           "MODELBUS_BROKER__CONNECT_ATTEMPTS": "2", "COLUMNS": "200"}

    def run(*args: str, input: str | None = None, extra_env: dict[str, str] | None = None) -> object:
        return runner.invoke(cli_app, list(args), input=input, env={**env, **(extra_env or {})})

    return run


def dead_letter(channel, *, worker: str = "deploy", service: str = "svc", reason: str = "KubernetesUnavailable",
                error: str = "api 503", routing_key: str | None = None):
    """Put an UndeployRequested into `worker`'s DLQ the way the task runner does; returns the event."""
    event = new_event(UndeployRequested(service=service))
    props = amqp_properties(event)
    props["headers"] = {**props["headers"],
                        **dead_letter_headers(reason, error, routing_key or event.routing_key)}
    channel.basic_publish(DEAD_LETTER_EXCHANGE, WORKER_QUEUES[worker].name, encode(event),
                          pika.BasicProperties(**props), mandatory=True)
    return event


def publish_event(channel, service: str = "svc"):
    """Publish an UndeployRequested to the events exchange (lands in the deploy queue)."""
    event = new_event(UndeployRequested(service=service))
    channel.basic_publish(EXCHANGE, event.routing_key, encode(event),
                          pika.BasicProperties(**amqp_properties(event)), mandatory=True)
    return event
