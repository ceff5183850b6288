"""Fixtures of the fault tests: clean worker queues, a scripted upstream model server, invoke bodies."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pika
import pytest

from schemas.events import InvokeRequested
from schemas.settings import Settings
from schemas.topology import WORKER_QUEUES
from tests.conftest import purge
from tests.invoke.upstream_app import Calls, running_upstream
from tests.reliability.harness import TEST_CONNECTION_PREFIX


def v2_body(text: str) -> dict[str, Any]:
    return {"inputs": [{"name": "input-0", "shape": [1], "datatype": "BYTES", "data": [text]}]}


def invoke_request(base_url: str, text: str, **fields: Any) -> InvokeRequested:
    return InvokeRequested(url=base_url, protocol="v2", body=v2_body(text), **fields)


@pytest.fixture
def clean_queues(topology: list[str], broker_url: str) -> None:
    """Every worker queue and dead-letter queue of the session vhost starts empty.

    Its connection is closed before the test (and named as the test's own), so tests that cut the
    vhost's connections do not break it.
    """
    params = pika.URLParameters(broker_url)
    params.client_properties = {"connection_name": f"{TEST_CONNECTION_PREFIX}clean-queues"}
    connection = pika.BlockingConnection(params)
    try:
        channel = connection.channel()
        for queue in WORKER_QUEUES.values():
            purge(channel, queue.name, queue.dead_letter_queue)
    finally:
        connection.close()


@pytest.fixture
def upstream() -> Iterator[tuple[str, Calls]]:
    """A real HTTP model server (in-process uvicorn) answering v2 inference deterministically."""
    with running_upstream() as found:
        yield found


@pytest.fixture
def fast_retries(settings: Settings) -> dict[str, str]:
    """Worker environment for quick upstream retries (a test's faults heal or fail in seconds)."""
    return {"MODELBUS_INVOKE__BACKOFF_S": "0.05", "MODELBUS_INVOKE__BACKOFF_MAX_S": "0.5",
            "MODELBUS_LOG_LEVEL": "WARNING"}
