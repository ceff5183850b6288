"""Fixtures of the batch tests: settings tuned for quick rounds, a clean invoke queue, batch files."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pika
import pytest

from schemas.envelope import CloudEvent, decode
from schemas.settings import BatchSettings, Settings
from schemas.topology import INVOKE_QUEUE
from tests.conftest import purge

Channel = pika.adapters.blocking_connection.BlockingChannel


def v2_text(text: str) -> dict[str, Any]:
    return {"inputs": [{"name": "input-0", "shape": [1], "datatype": "BYTES", "data": [text]}]}


def write_jsonl(path: Path, lines: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def classifier_lines(n: int, model: str = "cls") -> list[dict[str, Any]]:
    return [{"custom_id": f"req-{i}", "method": "POST", "url": f"/v2/models/{model}/infer",
             "body": v2_text(f"text number {i}: the quick brown fox")} for i in range(n)]


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture
def batch_settings(settings: Settings, topology: list[str], channel: Channel) -> Iterator[Settings]:
    """Settings with short polling on a clean invoke queue (emptied again afterwards)."""
    purge(channel, INVOKE_QUEUE.name)
    yield settings.model_copy(update={"batch": BatchSettings(poll_interval_s=0.02, send_chunk=50, collect_chunk=64)})
    purge(channel, INVOKE_QUEUE.name)


def take_requests(channel: Channel, n: int | None = None) -> list[CloudEvent[Any]]:
    """The InvokeRequested events waiting in the invoke queue (all, or the first `n`), acknowledged."""
    found: list[CloudEvent[Any]] = []
    while n is None or len(found) < n:
        method, _props, body = channel.basic_get(INVOKE_QUEUE.name, auto_ack=True)
        if method is None:
            break
        found.append(decode(body))
    return found
