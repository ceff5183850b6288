"""1,000 bad messages interleaved with good ones: each bad one dead-lettered with its reason, no good one lost.

Given a worker process consuming its queue, when a producer sends a stream in which three messages
out of four are malformed or hostile (see `bad_messages`), then every bad message lands in the
queue's dead-letter queue, untouched, with a machine-readable reason and a human error in headers,
every good one is answered, and the worker process keeps running throughout.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from typing import Any

import pika
import pytest

from producers import Publisher
from schemas.envelope import amqp_properties, encode, new_event
from schemas.events import InvokeCompleted, ServiceDeleted, UndeployRequested
from schemas.topology import DEPLOY_QUEUE, ERROR_HEADER, INVOKE_QUEUE, REASON_HEADER, WorkerQueue
from tests.reliability.bad_messages import MAX_EVENT_BYTES, BadMessage, bad_messages
from tests.reliability.conftest import invoke_request
from tests.reliability.harness import WorkerProcess, event_tap, read_all, wait_for

BAD = 1000
GOOD_EVERY = 4  # one good message after every three bad ones


def _send(settings: Any, stream: list[BadMessage | Any], routing_key: str) -> None:
    with Publisher(settings.broker) as publisher:
        for item in stream:
            if isinstance(item, BadMessage):
                props = pika.BasicProperties(content_type=item.content_type, message_id=item.message_id,
                                             delivery_mode=2)
                publisher.publish_raw(item.body, routing_key=routing_key, properties=props)
            else:
                publisher.publish_raw(encode(item), routing_key=item.routing_key,
                                      properties=pika.BasicProperties(**amqp_properties(item)))


def _interleave(bad: list[BadMessage], good: list[Any]) -> list[Any]:
    stream: list[Any] = []
    goods = iter(good)
    for i, message in enumerate(bad, start=1):
        stream.append(message)
        if i % (GOOD_EVERY - 1) == 0:
            stream.append(next(goods))
    return stream


def _check_dead_letters(channel: Any, queue: WorkerQueue, bad: list[BadMessage]) -> Counter[str]:
    with contextlib.suppress(AssertionError):  # what is missing is reported below, by kind
        wait_for(lambda: channel.queue_declare(queue.dead_letter_queue, passive=True).method.message_count
                 >= len(bad), timeout=30, what=f"{len(bad)} dead letters in {queue.dead_letter_queue}")
    letters = read_all(channel, queue.dead_letter_queue)
    expected = {m.message_id: m for m in bad}
    seen: Counter[str] = Counter()
    for props, body in letters:
        message = expected.pop(props.message_id)
        headers = props.headers or {}
        assert headers.get(REASON_HEADER) == message.reason, (message.kind, headers.get(ERROR_HEADER))
        assert headers.get(ERROR_HEADER), f"{message.kind}: no error text"
        assert body == message.body, f"{message.kind}: the dead letter is not the original message"
        seen[message.reason] += 1
    missing = Counter(m.kind for m in expected.values())
    assert not missing, f"{len(expected)} bad messages were not dead-lettered: {dict(missing)}"
    return seen


@pytest.fixture
def small_events(fast_retries: dict[str, str]) -> dict[str, str]:
    return {**fast_retries, "MODELBUS_MAX_EVENT_BYTES": str(MAX_EVENT_BYTES)}


def test_the_invoke_worker_dead_letters_every_bad_message_and_answers_every_good_one(
    settings, broker_url, clean_queues, upstream, small_events, tmp_path, channel, record_property,
) -> None:
    base_url, _ = upstream
    bad = list(bad_messages("invoke", BAD))
    with event_tap(broker_url, bindings=()) as replies, \
            WorkerProcess("invoke", settings, tmp_path / "logs", env=small_events).start() as worker:
        good = [new_event(invoke_request(base_url, f"good {i}", reply_to=replies.queue))
                for i in range(BAD // (GOOD_EVERY - 1))]
        pid = worker.pid
        _send(settings, _interleave(bad, good), INVOKE_QUEUE.routing_keys[0])
        wanted = {e.id for e in good}
        replies.wait(lambda tap: {e.data.request_id for e in tap.events()} >= wanted, timeout=60,
                     what="an answer to every good request")
        reasons = _check_dead_letters(channel, INVOKE_QUEUE, bad)
        assert worker.alive, worker.log()[-2000:]
        assert (worker.pid, worker.starts) == (pid, 1)
    assert all(isinstance(e.data, InvokeCompleted) for e in replies.events())
    print(f"\ninvoke: {len(bad)} dead-lettered by reason {dict(reasons)}, {len(good)} good answered")
    record_property("dead_lettered", dict(reasons))


def test_the_deploy_gateway_dead_letters_every_bad_message_and_handles_every_good_one(
    settings, broker_url, clean_queues, small_events, tmp_path, channel, record_property,
) -> None:
    bad = list(bad_messages("deploy", BAD))
    with event_tap(broker_url, bindings=("service.deleted", "deploy.failed")) as outcomes, \
            WorkerProcess("deploy", settings, tmp_path / "logs", env=small_events).start() as worker:
        # UndeployRequested of services that never existed: cheap, and answered with ServiceDeleted.
        good = [new_event(UndeployRequested(service=f"never-deployed-{i}")) for i in range(BAD // (GOOD_EVERY - 1))]
        pid = worker.pid
        _send(settings, _interleave(bad, good), DEPLOY_QUEUE.routing_keys[0])
        wanted = {e.id for e in good}
        outcomes.wait(lambda tap: {e.causationid for e in tap.events()} >= wanted, timeout=90,
                      what="an outcome for every good request")
        reasons = _check_dead_letters(channel, DEPLOY_QUEUE, bad)
        assert worker.alive, worker.log()[-2000:]
        assert (worker.pid, worker.starts) == (pid, 1)
    answers = [e for e in outcomes.events() if e.causationid in wanted]
    assert all(isinstance(e.data, ServiceDeleted) and not e.data.existed for e in answers)
    print(f"\ndeploy: {len(bad)} dead-lettered by reason {dict(reasons)}, {len(good)} good handled")
    record_property("dead_lettered", dict(reasons))
