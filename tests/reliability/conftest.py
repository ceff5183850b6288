"""Fixtures of the fault tests: clean worker queues, a scripted upstream model server, invoke bodies."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from schemas.events import InvokeRequested
from schemas.settings import Settings
from schemas.topology import WORKER_QUEUES
from tests.conftest import purge
from tests.invoke.upstream_app import Calls, running_upstream


def v2_body(text: str) -> dict[str, Any]:
    return {"inputs": [{"name": "input-0", "shape": [1], "datatype": "BYTES", "data": [text]}]}


def invoke_request(base_url: str, text: str, **fields: Any) -> InvokeRequested:
    return InvokeRequested(url=base_url, protocol="v2", body=v2_body(text), **fields)


@pytest.fixture
def clean_queues(topology: list[str], channel: Any) -> None:
    """Every worker queue and dead-letter queue of the session vhost starts empty."""
    for queue in WORKER_QUEUES.values():
        purge(channel, queue.name, queue.dead_letter_queue)


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
