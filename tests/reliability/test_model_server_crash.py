"""A model server killed in the middle of a run: requests in flight are retried, none disappears.

Given a real `python -m serving` process with a tiny classifier behind an invoke worker, when the
server is SIGKILLed while requests stream in, then either it comes back on the same port and every
request is answered (the worker kept retrying), or it stays down and every request is reported as
failed once its deadline has passed. Either way each request gets exactly one outcome.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from producers import Publisher
from schemas.envelope import CloudEvent, new_event
from schemas.events import InvokeCompleted, InvokeFailed, InvokeRequested
from tests.models import build_tiny_classifier
from tests.reliability.conftest import invoke_request
from tests.reliability.harness import EventTap, WorkerProcess, event_tap, result_request_ids
from tests.serving_process import ServerProcess

REQUESTS = 300


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_classifier(tmp_path_factory.mktemp("models") / "classifier")


def _server_args(model_dir: Path) -> list[str]:
    return ["--model_name", "model", "--model_dir", str(model_dir), "--max_batch_wait_ms", "5"]


@pytest.fixture
def server(classifier_dir: Path) -> Iterator[ServerProcess]:
    process = ServerProcess(_server_args(classifier_dir))
    try:
        process.wait_ready(120)
        yield process
    finally:
        process.stop()


def _publish_in_background(settings, requests: list[CloudEvent[InvokeRequested]]) -> threading.Thread:
    def publish() -> None:
        with Publisher(settings.broker) as publisher:
            for request in requests:
                publisher.publish(request)

    thread = threading.Thread(target=publish, name="publish", daemon=True)
    thread.start()
    return thread


def _one_outcome_each(replies: EventTap, requests: list[CloudEvent[InvokeRequested]]) -> dict[str, object]:
    answers = result_request_ids(replies.events())
    assert set(answers) == {r.id for r in requests}, "a request disappeared"
    assert all(len(set(ids)) == 1 for ids in answers.values())
    return {e.data.request_id: e.data for e in replies.events()}


def test_requests_in_flight_are_answered_when_the_killed_server_comes_back(
    settings, broker_url, clean_queues, server, classifier_dir, tmp_path, record_property,
) -> None:
    retry_long = {"MODELBUS_INVOKE__MAX_ATTEMPTS": "60", "MODELBUS_INVOKE__BACKOFF_S": "0.2",
                  "MODELBUS_INVOKE__BACKOFF_MAX_S": "1", "MODELBUS_INVOKE__TIMEOUT_S": "10",
                  "MODELBUS_INVOKE__BREAKER_FAILURES": "100000", "MODELBUS_LOG_LEVEL": "WARNING"}
    deadline = datetime.now(UTC) + timedelta(minutes=3)
    with event_tap(broker_url, bindings=()) as replies, \
            WorkerProcess("invoke", settings, tmp_path / "logs", env=retry_long).start():
        requests = [new_event(invoke_request(server.base_url, f"sentence number {i}", reply_to=replies.queue,
                                             deadline=deadline)) for i in range(REQUESTS)]
        publishing = _publish_in_background(settings, requests)
        replies.wait(lambda tap: len(tap.messages) >= 30, timeout=60, what="the first answers")
        server.process.kill()  # SIGKILL: in-flight calls see their connection reset
        server.process.wait(timeout=10)
        publishing.join(timeout=60)
        answered_while_up = len(replies.messages)
        revived = ServerProcess(_server_args(classifier_dir), port=server.port)
        try:
            revived.wait_ready(120)
            replies.wait(lambda tap: len(result_request_ids(tap.events())) >= REQUESTS, timeout=120,
                         what="an outcome for every request")
        finally:
            revived.stop()
    outcomes = _one_outcome_each(replies, requests)
    assert answered_while_up < REQUESTS, "the server was killed after everything was answered: no fault"
    failed = [o for o in outcomes.values() if isinstance(o, InvokeFailed)]
    assert failed == [], f"{len(failed)} requests failed although the server came back: {failed[:2]}"
    retried = sum(1 for o in outcomes.values() if isinstance(o, InvokeCompleted) and o.attempts > 1)
    print(f"\n{REQUESTS} requests: {answered_while_up} answered before the kill, {retried} answered after "
          "retrying, 0 lost")
    record_property("retried", retried)
    assert retried > 0


def test_requests_fail_with_a_reason_after_their_deadline_when_the_server_stays_dead(
    settings, broker_url, clean_queues, server, tmp_path,
) -> None:
    retry_until_deadline = {"MODELBUS_INVOKE__MAX_ATTEMPTS": "1000", "MODELBUS_INVOKE__BACKOFF_S": "0.2",
                            "MODELBUS_INVOKE__BACKOFF_MAX_S": "1", "MODELBUS_INVOKE__BREAKER_FAILURES": "100000",
                            "MODELBUS_LOG_LEVEL": "WARNING"}
    with event_tap(broker_url, bindings=()) as replies, \
            WorkerProcess("invoke", settings, tmp_path / "logs", env=retry_until_deadline).start():
        deadline = datetime.now(UTC) + timedelta(seconds=8)
        requests = [new_event(invoke_request(server.base_url, f"sentence number {i}", reply_to=replies.queue,
                                             deadline=deadline)) for i in range(REQUESTS)]
        publishing = _publish_in_background(settings, requests)
        replies.wait(lambda tap: len(tap.messages) >= 30, timeout=60, what="the first answers")
        server.process.kill()
        server.process.wait(timeout=10)
        publishing.join(timeout=60)
        replies.wait(lambda tap: len(result_request_ids(tap.events())) >= REQUESTS, timeout=60,
                     what="an outcome for every request")
        finished = datetime.now(UTC)
    outcomes = _one_outcome_each(replies, requests)
    failed = [o for o in outcomes.values() if isinstance(o, InvokeFailed)]
    assert failed, "nothing was in flight when the server died"
    reasons = {o.reason for o in failed}
    assert reasons == {"DeadlineExceeded"}, "the worker gave up before the deadline"
    assert all("deadline" in o.message.lower() for o in failed), failed[0].message
    assert deadline - timedelta(seconds=2) < finished < deadline + timedelta(seconds=20)
    print(f"\n{REQUESTS} requests: {REQUESTS - len(failed)} answered, {len(failed)} failed by reason "
          f"{ {r: sum(o.reason == r for o in failed) for r in reasons} }, 0 lost")
