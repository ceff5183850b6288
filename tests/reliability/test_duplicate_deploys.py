"""The same DeployRequested delivered ten times starts one model server and gets consistent replies.

Given a deploy worker process with the local backend, when one DeployRequested is delivered ten
times (a producer retrying, a redelivery), then the gateway handles it once and one `ServiceReady`
answers it; when ten different requests for the same service and spec arrive, each is answered with
the same URL and the same single server process serves them all. Undeploying stops that process.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pika
import psutil
import pytest

from producers import Publisher
from producers.connection import pika_parameters
from schemas.envelope import CloudEvent, derived_id, new_event
from schemas.events import DeployRequested, ServiceDeleted, ServiceReady, UndeployRequested
from schemas.topology import DEPLOY_QUEUE
from tests.models import build_tiny_classifier
from tests.reliability.harness import EventTap, WorkerProcess, event_tap, wait_for

COPIES = 10


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_classifier(tmp_path_factory.mktemp("dup-models") / "classifier")


def servers_of(model_dir: Path) -> list[psutil.Process]:
    """The running model server processes that serve `model_dir`."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info.get("cmdline") or []
        if "serving" in cmdline and any(str(model_dir) in arg for arg in cmdline):
            found.append(proc)
    return found


@pytest.fixture
def deploy_worker(settings, clean_queues, classifier_dir, tmp_path) -> Iterator[WorkerProcess]:
    env = {"MODELBUS_LOG_LEVEL": "WARNING", "MODELBUS_SERVING__START_TIMEOUT_S": "120"}
    with WorkerProcess("deploy", settings, tmp_path / "logs", env=env).start() as worker:
        yield worker
    for proc in servers_of(classifier_dir):  # a failed test must not leave a server behind
        proc.kill()


def _request(service: str, model_dir: Path, reply_to: str) -> DeployRequested:
    return DeployRequested(service=service, path=model_dir.as_uri(), task="sequence_classification",
                           reply_to=reply_to)


def _publish(settings, events: list[CloudEvent[DeployRequested]]) -> None:
    with Publisher(settings.broker) as publisher:
        for event in events:
            publisher.publish(event)


def _undeploy(settings, replies: EventTap, service: str) -> None:
    event = new_event(UndeployRequested(service=service, reply_to=replies.queue))
    _publish(settings, [event])
    replies.wait(lambda tap: any(e.causationid == event.id for e in tap.events()), timeout=60,
                 what="the undeploy to be answered")
    (deleted,) = [e for e in replies.events() if e.causationid == event.id]
    assert isinstance(deleted.data, ServiceDeleted)
    assert deleted.data.existed


def test_one_request_delivered_ten_times_is_handled_once(settings, broker_url, deploy_worker, classifier_dir):
    with event_tap(broker_url, bindings=()) as replies:
        event = new_event(_request("twice-told", classifier_dir, replies.queue))
        _publish(settings, [event] * COPIES)
        replies.wait(lambda tap: len(tap.messages) >= 1, timeout=120, what="the service to be ready")
        (server,) = servers_of(classifier_dir)
        # Every copy has been through the gateway once the queue is empty and nothing is unacked.
        wait_for(lambda: deploy_worker.alive and _queue_idle(settings), timeout=30, what="the copies to be consumed")
        replies.poll(0.5)
        (ready,) = replies.events()
        assert isinstance(ready.data, ServiceReady)
        assert ready.id == derived_id(event.id, "ready")
        assert ready.data.url.endswith(f":{_port_of(server)}")
        _undeploy(settings, replies, "twice-told")
    wait_for(lambda: not servers_of(classifier_dir), timeout=30, what="the server to stop")


def test_ten_requests_for_one_service_share_one_server_and_get_the_same_answer(
    settings, broker_url, deploy_worker, classifier_dir,
):
    with event_tap(broker_url, bindings=()) as replies:
        events = [new_event(_request("many-asked", classifier_dir, replies.queue)) for _ in range(COPIES)]
        _publish(settings, events)
        replies.wait(lambda tap: {e.causationid for e in tap.events()} >= {e.id for e in events}, timeout=180,
                     what="a reply to every request")
        answers = [e for e in replies.events() if e.causationid in {ev.id for ev in events}]
        assert len(answers) == COPIES
        assert all(isinstance(a.data, ServiceReady) for a in answers), [a.data for a in answers]
        assert len({a.data.url for a in answers}) == 1
        assert len({a.data.model_dump_json(include={"url", "endpoints", "model_name", "backend"})
                    for a in answers}) == 1
        (server,) = servers_of(classifier_dir)
        assert answers[0].data.url.endswith(f":{_port_of(server)}")
        _undeploy(settings, replies, "many-asked")
    wait_for(lambda: not servers_of(classifier_dir), timeout=30, what="the server to stop")


def _port_of(server: psutil.Process) -> int:
    (arg,) = [a for a in server.info["cmdline"] if a.startswith("--http_port=")]
    return int(arg.split("=", 1)[1])


def _queue_idle(settings) -> bool:
    connection = pika.BlockingConnection(pika_parameters(settings.broker))
    try:
        method = connection.channel().queue_declare(DEPLOY_QUEUE.name, passive=True).method
        return method.message_count == 0
    finally:
        connection.close()
