"""Batches end to end: real `serving` processes, the real invoke worker (a child process), RabbitMQ.

A tiny classifier and a tiny generator are served; the invoke worker finds them in its service
registry. Each test submits a batch the way a user does (Python client or `modelbus batch ...`)
and checks the files a user gets: every custom_id exactly once, in the output or the error file.
"""

from __future__ import annotations

import ast
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pika
import pytest
from typer.testing import CliRunner

from producers.batch import Batch, BatchState, BatchStore
from producers.cli.main import app
from producers.client import ModelBus
from schemas.events import ServiceReady
from schemas.settings import BatchSettings, Settings
from schemas.topology import EXCHANGE, INVOKE_QUEUE
from tests.batch.conftest import classifier_lines, read_jsonl, v2_text, write_jsonl
from tests.invoke.upstream_app import ready_event_data
from tests.models import build_tiny_classifier, build_tiny_generator
from tests.serving_process import REPO_ROOT, start_server
from workers.registry import ServiceRegistry

CHAT = {"model": "gen", "max_tokens": 4, "temperature": 0}


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A classifier answering raw logits (each text's answer is recognisable) and a chat generator."""
    root = tmp_path_factory.mktemp("batch-models")
    classifier = build_tiny_classifier(root / "cls")
    generator = build_tiny_generator(root / "gen")
    procs = {
        "cls": start_server(["--model_name", "cls", "--model_dir", str(classifier), "--return_raw_logits",
                             "--torch_threads", "1"]),
        "gen": start_server(["--model_name", "gen", "--model_dir", str(generator), "--torch_threads", "1"]),
    }
    try:
        yield {name: proc.wait_ready(120) for name, proc in procs.items()}
    finally:
        for proc in procs.values():
            proc.stop()


def consumers(broker_url: str, queue: str) -> int:
    connection = pika.BlockingConnection(pika.URLParameters(broker_url))
    try:
        return int(connection.channel().queue_declare(queue, passive=True).method.consumer_count)
    finally:
        connection.close()


@pytest.fixture(scope="module")
def invoke_worker(broker_url: str, topology: list[str], servers: dict[str, str],
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[subprocess.Popen[bytes]]:
    """`python -m workers.invoke` on the session vhost, knowing `classifier` and `writer` from its registry."""
    state = tmp_path_factory.mktemp("invoke-worker")
    registry = ServiceRegistry(state)
    registry.apply_event(ServiceReady(**ready_event_data("classifier", servers["cls"], model_name="cls")))
    registry.apply_event(ServiceReady(**ready_event_data("writer", servers["gen"], model_name="gen",
                                                         task="text_generation")))
    env = {**os.environ, "MODELBUS_BROKER__URL": broker_url, "MODELBUS_STATE_DIR": str(state),
           "MODELBUS_LOG_LEVEL": "WARNING", "PYTHONPATH": str(REPO_ROOT)}
    with (state / "worker.log").open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "workers.invoke"], env=env, stdout=log,
                                stderr=subprocess.STDOUT, cwd=str(REPO_ROOT))
    try:
        end = time.monotonic() + 60
        while consumers(broker_url, INVOKE_QUEUE.name) < 1:
            assert proc.poll() is None, (state / "worker.log").read_text()
            assert time.monotonic() < end, "the invoke worker did not start consuming"
            time.sleep(0.1)
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture
def e2e_settings(settings: Settings, invoke_worker: subprocess.Popen[bytes]) -> Settings:
    return settings.model_copy(update={"batch": BatchSettings(poll_interval_s=0.05)})


def cli_env(settings: Settings, **extra: str) -> dict[str, str]:
    return {"MODELBUS_BROKER__URL": settings.broker.url, "MODELBUS_STATE_DIR": str(settings.state_dir),
            "MODELBUS_BATCH__POLL_INTERVAL_S": "0.05", **extra}


class Tap:
    """A private queue on the events exchange that sees every InvokeRequested published."""

    def __init__(self, broker_url: str) -> None:
        self.connection = pika.BlockingConnection(pika.URLParameters(broker_url))
        self.channel = self.connection.channel()
        self.queue = str(self.channel.queue_declare("", exclusive=True).method.queue)
        self.channel.queue_bind(self.queue, EXCHANGE, routing_key="invoke.requested")

    def requests_of(self, batch_id: str) -> list[dict[str, Any]]:
        found = []
        while True:
            method, _props, body = self.channel.basic_get(self.queue, auto_ack=True)
            if method is None:
                return found
            event = json.loads(body)
            if event["data"].get("batch_id") == batch_id:
                found.append(event)

    def close(self) -> None:
        self.connection.close()


@pytest.fixture
def tap(broker_url: str, invoke_worker: subprocess.Popen[bytes]) -> Iterator[Tap]:
    found = Tap(broker_url)
    yield found
    found.close()


def logits(v2_response: dict[str, Any]) -> list[float]:
    """The raw logits of a one-text v2 classifier answer (BYTES: the string of a {label: logit} dict)."""
    (row,) = v2_response["outputs"][0]["data"]
    found = ast.literal_eval(row) if isinstance(row, str) else row
    return [found[key] for key in sorted(found)]


def custom_ids(*files: Path) -> list[str]:
    return [line["custom_id"] for path in files for line in read_jsonl(path)]


def test_a_2000_line_classifier_batch_completes_with_every_custom_id_once(
        e2e_settings: Settings, servers: dict[str, str], tmp_path: Path) -> None:
    # Given 2,000 classifier requests, ten of which the server will refuse
    lines = classifier_lines(1990)
    bad = {"inputs": [{"name": "input-0", "shape": [1], "datatype": "FP32", "data": ["not a number"]}]}
    lines += [{"custom_id": f"bad-{i}", "method": "POST", "url": "/v2/models/cls/infer", "body": bad}
              for i in range(10)]
    source = write_jsonl(tmp_path / "in.jsonl", lines)
    # When it is submitted through the client and waited for
    with ModelBus(e2e_settings) as bus:
        batch = bus.batch(source, service="classifier", metadata={"suite": "batch"}, wait=True, timeout=150)
    out, errors = tmp_path / "out.jsonl", tmp_path / "errors.jsonl"
    status = batch.results(out, errors)
    # Then every custom_id is in exactly one file, once
    assert (status.state, status.completed, status.failed) == (BatchState.completed, 1990, 10)
    assert sorted(custom_ids(out, errors)) == sorted(line["custom_id"] for line in lines)
    assert {line["custom_id"] for line in read_jsonl(errors)} == {f"bad-{i}" for i in range(10)}
    assert {line["response"]["status_code"] for line in read_jsonl(out)} == {200}
    # And each answer is the one the server gives that text alone (micro-batching split them back right)
    answers = {line["custom_id"]: logits(line["response"]["body"]) for line in read_jsonl(out)}
    with httpx.Client(base_url=servers["cls"], timeout=30) as http:
        for i in (0, 1, 777, 1989):
            alone = http.post("/v2/models/cls/infer", json=v2_text(f"text number {i}: the quick brown fox")).json()
            assert answers[f"req-{i}"] == pytest.approx(logits(alone), abs=1e-4)
    assert batch.record.metadata == {"suite": "batch"}


def test_a_200_line_chat_batch_completes_through_the_cli(e2e_settings: Settings, tmp_path: Path) -> None:
    # Given 200 chat requests in the OpenAI batch format
    lines = [{"custom_id": f"chat-{i}", "method": "POST", "url": "/v1/chat/completions",
              "body": {**CHAT, "messages": [{"role": "user", "content": f"Hello, my dog is cute {i}"}]}}
             for i in range(200)]
    source = write_jsonl(tmp_path / "chat.jsonl", lines)
    runner = CliRunner()
    env = cli_env(e2e_settings)
    # When `modelbus batch submit --wait` runs, then `modelbus batch results`
    submitted = runner.invoke(app, ["batch", "submit", str(source), "--service", "writer", "--wait",
                                    "--metadata", "kind=chat", "--timeout", "150"], env=env)
    assert submitted.exit_code == 0, submitted.output
    batch_id = submitted.stdout.splitlines()[0]
    out, errors = tmp_path / "out.jsonl", tmp_path / "errors.jsonl"
    fetched = runner.invoke(app, ["batch", "results", batch_id, "-o", str(out), "--errors", str(errors)], env=env)
    assert fetched.exit_code == 0, fetched.output
    # Then all 200 have a chat completion, once each
    results = read_jsonl(out)
    assert sorted(custom_ids(out, errors)) == sorted(f"chat-{i}" for i in range(200))
    assert len(results) == 200
    assert all(line["response"]["body"]["choices"][0]["message"]["role"] == "assistant" for line in results)
    # And the batch is listed as completed, with its metadata
    listed = runner.invoke(app, ["batch", "list", "--json"], env=env)
    record = next(r for r in json.loads(listed.stdout) if r["id"] == batch_id)
    assert (record["state"], record["total"], record["metadata"]) == ("completed", 200, {"kind": "chat"})


def test_a_batch_cancelled_half_way_keeps_its_partial_results_and_sends_nothing_more(
        e2e_settings: Settings, tap: Tap, tmp_path: Path) -> None:
    # Given a 1,000-line batch sent 40 at a time, followed in the background
    source = write_jsonl(tmp_path / "in.jsonl", classifier_lines(1000))
    settings = e2e_settings.model_copy(update={"batch": BatchSettings(poll_interval_s=0.02, send_chunk=20)})
    with ModelBus(settings) as bus:
        batch = bus.batch(source, service="classifier", max_in_flight=40, send=False)
    finished: list[Any] = []
    follower = threading.Thread(target=lambda: finished.append(batch.wait(timeout=120)))
    follower.start()
    store = BatchStore(settings.state_dir)
    end = time.monotonic() + 60
    while store.counts(batch.id).answered < 300:
        assert time.monotonic() < end, "the batch made no progress"
        time.sleep(0.01)
    # When it is cancelled from the command line
    cancelled = CliRunner().invoke(app, ["batch", "cancel", batch.id], env=cli_env(settings))
    assert cancelled.exit_code == 0, cancelled.output
    sent_at_cancel = store.counts(batch.id).sent
    follower.join(timeout=120)
    assert not follower.is_alive()
    # Then what was sent got its result, the rest is reported cancelled, and nothing more was published
    status = finished[0]
    assert 300 <= sent_at_cancel < 1000
    assert status.state is BatchState.cancelled
    assert (status.completed + status.failed, status.cancelled) == (sent_at_cancel, 1000 - sent_at_cancel)
    assert len(tap.requests_of(batch.id)) == sent_at_cancel
    out, errors = tmp_path / "out.jsonl", tmp_path / "errors.jsonl"
    Batch(settings, batch.id).results(out, errors)
    assert sorted(custom_ids(out, errors)) == sorted(f"req-{i}" for i in range(1000))
    assert len(read_jsonl(out)) == sent_at_cancel


def test_collection_killed_mid_way_and_resumed_loses_and_duplicates_nothing(
        e2e_settings: Settings, broker_url: str, tmp_path: Path) -> None:
    # Given a 600-line batch whose results all wait in its queue
    source = write_jsonl(tmp_path / "in.jsonl", classifier_lines(600))
    with ModelBus(e2e_settings) as bus:
        batch = bus.batch(source, service="classifier")
    connection = pika.BlockingConnection(pika.URLParameters(broker_url))
    try:
        end = time.monotonic() + 60
        while connection.channel().queue_declare(batch.record.results_queue, passive=True).method.message_count < 600:
            assert time.monotonic() < end, "the results did not all arrive"
            time.sleep(0.05)
    finally:
        connection.close()
    out, errors = tmp_path / "out.jsonl", tmp_path / "errors.jsonl"
    command = [sys.executable, "-m", "producers.cli", "batch", "results", batch.id, "-o", str(out),
               "--errors", str(errors)]
    env = {**os.environ, **cli_env(e2e_settings, MODELBUS_BATCH__COLLECT_CHUNK="5"), "PYTHONPATH": str(REPO_ROOT)}
    # When `modelbus batch results` is killed while it collects
    proc = subprocess.Popen(command, env=env, cwd=str(REPO_ROOT), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    store = BatchStore(e2e_settings.state_dir)
    end = time.monotonic() + 60
    while store.counts(batch.id).collected < 100:
        assert proc.poll() is None, proc.communicate()[0].decode()
        assert time.monotonic() < end, "collection did not start"
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    at_kill = store.counts(batch.id).collected
    assert at_kill < 600, "collection finished before it could be interrupted"
    # And run again to the end
    resumed = subprocess.run(command, env=env, cwd=str(REPO_ROOT), capture_output=True, timeout=120, check=False)
    assert resumed.returncode == 0, resumed.stdout.decode() + resumed.stderr.decode()
    # Then every custom_id is there exactly once
    assert sorted(custom_ids(out, errors)) == sorted(f"req-{i}" for i in range(600))
    assert Batch(e2e_settings, batch.id).status().state is BatchState.completed
