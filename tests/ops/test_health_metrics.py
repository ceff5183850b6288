"""Probes and metrics of a real worker process: what Kubernetes and Prometheus see.

Given `modelbus worker deploy --metrics-port P` running against the broker, /readyz answers 200 once
it consumes, /healthz answers 200, and /metrics counts the events it consumed and rejected. A worker
that cannot reach the broker is alive but not ready.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pika
import pytest

from schemas.envelope import CONTENT_TYPE
from schemas.topology import EXCHANGE
from tests.conftest import running_worker
from tests.ops.conftest import publish_event
from workers.app import create_app
from workers.health import Health


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def worker_process(name: str, broker_url: str, state_dir: Path) -> Iterator[str]:
    """`modelbus worker NAME --metrics-port P` as a child process; yields its base URL, stops it after."""
    port = _free_port()
    env = {**os.environ, "MODELBUS_BROKER__URL": broker_url, "MODELBUS_STATE_DIR": str(state_dir),
           "MODELBUS_BACKEND": "local", "MODELBUS_LOG_LEVEL": "WARNING"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "producers.cli", "worker", name, "--metrics-port", str(port), "--concurrency", "2"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()


def _until(get, predicate, timeout: float = 30.0):
    """Poll `get()` until `predicate(value)`; the last value otherwise (connection errors count as None)."""
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        try:
            value = get()
        except httpx.TransportError:
            value = None
        if value is not None and predicate(value):
            return value
        time.sleep(0.2)
    return value


def _metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text format (0 when absent)."""
    for line in text.splitlines():
        match = re.match(rf"^{name}\{{(.*)\}} (\S+)$", line)
        if match and all(f'{k}="{v}"' in match.group(1) for k, v in labels.items()):
            return float(match.group(2))
    return 0.0


def test_a_deploy_worker_is_ready_when_consuming_and_its_counters_move(ops_url, ops_channel, tmp_path):
    with worker_process("deploy", ops_url, tmp_path / "state") as base:
        # Given the worker is up: ready and alive
        ready = _until(lambda: httpx.get(f"{base}/readyz"), lambda r: r.status_code == 200)
        assert ready is not None, "the worker never answered /readyz"
        assert ready.status_code == 200, ready.text
        assert ready.json()["components"]["celery-consumer"]["ok"] is True
        assert httpx.get(f"{base}/healthz").status_code == 200

        # When an invalid message and a valid event arrive
        ops_channel.basic_publish(EXCHANGE, "undeploy.requested", b"{not json",
                                  pika.BasicProperties(content_type=CONTENT_TYPE), mandatory=True)
        publish_event(ops_channel, "nothing-here")

        # Then /metrics shows one rejected, one consumed, and one handled undeploy
        def counted(r):
            return (_metric(r.text, "modelbus_events_rejected_total", worker="deploy") >= 1
                    and _metric(r.text, "modelbus_events_consumed_total", worker="deploy",
                                type="io.modelbus.undeploy.requested") >= 1
                    and _metric(r.text, "modelbus_tasks_total", type="io.modelbus.undeploy.requested") >= 1)

        scrape = _until(lambda: httpx.get(f"{base}/metrics"), counted)
        assert scrape is not None, "the worker never answered /metrics"
        assert counted(scrape), scrape.text
        assert _metric(scrape.text, "modelbus_task_duration_seconds_count",
                       type="io.modelbus.undeploy.requested") >= 1


def test_the_invoke_worker_is_ready_when_consuming_and_counts_what_it_rejects(ops_url, ops_channel, tmp_path):
    with worker_process("invoke", ops_url, tmp_path / "state") as base:
        ready = _until(lambda: httpx.get(f"{base}/readyz"), lambda r: r.status_code == 200)
        assert ready is not None, "the worker never answered /readyz"
        assert ready.json()["components"]["invoke-consumer"]["ok"] is True

        ops_channel.basic_publish(EXCHANGE, "invoke.requested", b"{not json",
                                  pika.BasicProperties(content_type=CONTENT_TYPE), mandatory=True)

        scrape = _until(lambda: httpx.get(f"{base}/metrics"),
                        lambda r: _metric(r.text, "modelbus_invoke_rejected_total") >= 1)
        assert scrape is not None, "the worker never answered /metrics"
        assert _metric(scrape.text, "modelbus_invoke_rejected_total") >= 1, scrape.text


def test_flower_works_unchanged_against_the_celery_app(ops_url, ops_settings, tmp_path):
    port = _free_port()
    env = {**os.environ, "MODELBUS_BROKER__URL": ops_url, "MODELBUS_STATE_DIR": str(tmp_path / "flower"),
           "MODELBUS_WORKERS": "deploy", "FLOWER_UNAUTHENTICATED_API": "true"}
    app = create_app(ops_settings, ("deploy",), register_tasks=False)
    with running_worker(app):
        flower = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "workers.app", "flower", f"--port={port}", "--address=127.0.0.1"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            workers = _until(lambda: httpx.get(f"http://127.0.0.1:{port}/api/workers?refresh=1", timeout=10),
                             lambda r: r.status_code == 200 and bool(r.json()))
        finally:
            flower.terminate()
            flower.wait(timeout=20)
    assert workers is not None, "flower never answered"
    queues = {q["name"] for info in workers.json().values() for q in info.get("active_queues") or []}
    assert "modelbus.deploy.tasks" in queues


def test_a_worker_that_cannot_reach_the_broker_is_alive_but_not_ready(tmp_path):
    with worker_process("deploy", "amqp://guest:guest@127.0.0.1:9/", tmp_path / "state") as base:
        live = _until(lambda: httpx.get(f"{base}/healthz"), lambda r: r.status_code == 200)
        assert live is not None, "the worker never answered /healthz"
        assert live.status_code == 200
        ready = httpx.get(f"{base}/readyz")
        assert ready.status_code == 503
        assert ready.json()["status"] == "fail"


# ------------------------------------------------------------------------------- the probe rules


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_readiness_needs_every_component_ready_and_its_checks_passing():
    health = Health()
    assert not health.readiness().ok  # nothing has said it is ready yet
    connected = {"value": True}
    health.set_ready("consumer", True)
    health.add_check("consumer", lambda: (connected["value"], "broker connection lost"))
    assert health.readiness().ok
    connected["value"] = False
    probe = health.readiness()
    assert not probe.ok
    assert probe.components["consumer"]["detail"] == "broker connection lost"


def test_liveness_fails_only_when_a_ready_component_stops_beating():
    clock = Clock()
    health = Health(clock=clock)
    health.set_ready("loop", True)
    health.beat("loop", stale_after_s=30)
    clock.now = 29
    assert health.liveness().ok
    clock.now = 31
    assert not health.liveness().ok
    health.set_ready("loop", False, "reconnecting")  # an outage is unready, not dead
    assert health.liveness().ok


@pytest.mark.asyncio
async def test_an_asyncio_component_is_ready_while_consuming_and_connected():
    import asyncio

    from workers.health import asyncio_component

    health = Health()
    connected = {"value": True}
    async with asyncio_component("invoke", connected=lambda: connected["value"], interval_s=0.01, health=health):
        await asyncio.sleep(0.05)
        assert health.readiness().ok
        assert health.liveness().components["invoke"]["last_beat_s"] < 1
        connected["value"] = False
        assert not health.readiness().ok
    connected["value"] = True
    assert not health.readiness().ok  # stopped consuming: not ready any more
