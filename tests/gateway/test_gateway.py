"""The event gateway and task runner on the real broker, with a handler written for the test.

Given a Celery worker whose gateway consumes the deploy queue, when events arrive, then valid ones
reach the handler exactly once per id, invalid ones land in the DLQ with the reason, and handler
errors turn into *Failed events (after bounded retries for transient ones).
"""

from __future__ import annotations

import json
import threading
import uuid
from collections import Counter

import pika
import pytest

from producers import Publisher
from schemas import DeployFailed, DeployRequested, ServiceReady, decode, new_event
from schemas.settings import BrokerSettings, Settings
from schemas.topology import DEPLOY_QUEUE, EXCHANGE
from tests.conftest import get_message, running_worker
from workers.app import create_app
from workers.emit import Emitter
from workers.errors import PermanentError, RetryableError
from workers.runner import event_task


def _failure(event, error):
    return DeployFailed(service=event.data.service, reason=error.reason, message=error.message)


@pytest.fixture(scope="module")
def harness(broker_url, tmp_path_factory, topology):
    """A deploy worker whose handler obeys the service name: ok-*, perm-*, flaky-*, poison-*."""
    settings = Settings(broker=BrokerSettings(url=broker_url), state_dir=tmp_path_factory.mktemp("state"),
                        task_max_retries=2)
    connection = pika.BlockingConnection(pika.URLParameters(broker_url))
    channel = connection.channel()
    calls: Counter[str] = Counter()
    lock = threading.Lock()
    app = create_app(settings, ("deploy",), register_tasks=False)
    emitter = Emitter(settings)

    def handler(event):
        name = event.data.service
        with lock:
            calls[name] += 1
            attempt = calls[name]
        if name.startswith("perm"):
            raise PermanentError("no such profile", reason="UnknownProfile")
        if name.startswith("flaky") and attempt < 2:
            raise RetryableError("api 503", delay=0.05, reason="KubernetesUnavailable")
        if name.startswith("poison"):
            raise ZeroDivisionError("bug in handler")
        emitter.emit(ServiceReady(service=name, model_name="model", backend="local", path=str(event.data.path),
                                  url="http://127.0.0.1:1", endpoints={}), cause=event)

    event_task(app, DEPLOY_QUEUE, "deploy.requested", handler, _failure, settings=settings, emitter=emitter)
    for q in (DEPLOY_QUEUE.name, DEPLOY_QUEUE.dead_letter_queue):
        channel.queue_purge(q)
    outcomes = f"test.gateway.outcomes.{uuid.uuid4().hex[:8]}"
    channel.queue_declare(outcomes)
    for key in ("service.ready", "deploy.failed"):
        channel.queue_bind(outcomes, EXCHANGE, routing_key=key)
    with running_worker(app):
        yield settings, calls, outcomes
    emitter.close()
    channel.queue_delete(outcomes)
    connection.close()


def _publish(settings, *services, event_id=None):
    events = [new_event(DeployRequested(service=s, path="hf://org/model"), event_id=event_id) for s in services]
    with Publisher(settings.broker) as publisher:
        for event in events:
            publisher.publish(event)
    return events


def _outcome(channel, queue, timeout=20):
    return decode(get_message(channel, queue, timeout=timeout)[2])


def test_a_valid_event_reaches_its_handler_and_the_outcome_is_published(harness, channel):
    settings, calls, outcomes = harness
    (event,) = _publish(settings, "ok-one")
    ready = _outcome(channel, outcomes)
    assert isinstance(ready.data, ServiceReady)
    assert ready.causationid == event.id
    assert ready.correlationid == event.correlationid
    assert calls["ok-one"] == 1


def test_a_redelivered_event_id_is_handled_once(harness, channel):
    settings, calls, outcomes = harness
    _publish(settings, "ok-twice", event_id="fixed-id-1")
    _publish(settings, "ok-twice", event_id="fixed-id-1")
    assert isinstance(_outcome(channel, outcomes).data, ServiceReady)
    with pytest.raises(AssertionError, match="nothing arrived"):
        get_message(channel, outcomes, timeout=1.5)
    assert calls["ok-twice"] == 1


def test_a_permanent_error_becomes_a_failed_event_with_the_reason(harness, channel):
    settings, calls, outcomes = harness
    (event,) = _publish(settings, "perm-one")
    failed = _outcome(channel, outcomes)
    assert isinstance(failed.data, DeployFailed)
    assert failed.data.reason == "UnknownProfile"
    assert failed.causationid == event.id
    assert calls["perm-one"] == 1


def test_a_transient_error_is_retried_then_succeeds(harness, channel):
    settings, calls, outcomes = harness
    _publish(settings, "flaky-one")
    assert isinstance(_outcome(channel, outcomes).data, ServiceReady)
    assert calls["flaky-one"] == 2


def test_a_poison_event_is_retried_a_bounded_number_of_times_then_failed_and_dead_lettered(harness, channel):
    settings, calls, outcomes = harness
    (event,) = _publish(settings, "poison-one")
    failed = _outcome(channel, outcomes, timeout=30)
    assert isinstance(failed.data, DeployFailed)
    assert failed.data.reason == "InternalError"
    assert failed.data.retryable is True
    assert "ZeroDivisionError" in failed.data.message
    assert calls["poison-one"] == 3  # first run + 2 retries
    _, props, body = get_message(channel, DEPLOY_QUEUE.dead_letter_queue, timeout=10)
    assert decode(body).id == event.id
    assert props.headers["x-modelbus-reason"] == "InternalError"


@pytest.mark.parametrize(
    ("body", "content_type", "reason"),
    [
        (b"\x00\x01 not json", "application/cloudevents+json", "NotJSON"),
        (b'{"hello": "world"}', "text/plain", "WrongContentType"),
        (b'{"specversion": "1.0", "type": "io.modelbus.nope"}', "application/cloudevents+json", "UnknownType"),
    ],
)
def test_invalid_messages_are_dead_lettered_with_the_reason(harness, channel, body, content_type, reason):
    settings, _, _ = harness
    channel.basic_publish(EXCHANGE, "deploy.requested", body,
                          pika.BasicProperties(content_type=content_type, delivery_mode=2))
    _, props, dead = get_message(channel, DEPLOY_QUEUE.dead_letter_queue, timeout=10)
    assert dead == body
    assert props.headers["x-modelbus-reason"] == reason
    assert props.headers["x-modelbus-routing-key"] == "deploy.requested"


def test_a_schema_violation_is_dead_lettered_and_the_worker_keeps_going(harness, channel):
    settings, calls, outcomes = harness
    bad = json.loads(new_event(DeployRequested(service="ok-x", path="hf://org/m")).model_dump_json())
    bad["data"]["service"] = "Not A DNS Name"
    channel.basic_publish(EXCHANGE, "deploy.requested", json.dumps(bad).encode(),
                          pika.BasicProperties(content_type="application/cloudevents+json"))
    _, props, _ = get_message(channel, DEPLOY_QUEUE.dead_letter_queue, timeout=10)
    assert props.headers["x-modelbus-reason"] == "SchemaViolation"
    assert "data.service" in props.headers["x-modelbus-error"]
    _publish(settings, "ok-after")
    assert _outcome(channel, outcomes).data.service == "ok-after"
