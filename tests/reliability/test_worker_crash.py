"""A worker killed with SIGKILL in the middle of a run loses no request.

Given 1,000 InvokeRequested events on the invoke queue and a worker answering them, when the worker
is SIGKILLed (no drain, no acks) and started again, then every request gets a result: what the dead
worker held unacked is redelivered. A result published just before the kill, whose request was not
acked yet, is published again with the same result id, so consumers can drop the duplicate.
The deploy worker (Celery, tasks acked late) is held to the same promise.
"""

from __future__ import annotations

import threading

import pytest

from producers import Publisher
from schemas.envelope import new_event
from schemas.events import InvokeCompleted, ServiceDeleted, UndeployRequested
from schemas.topology import INVOKE_QUEUE
from tests.invoke.upstream_app import label
from tests.reliability.conftest import invoke_request
from tests.reliability.harness import WorkerProcess, event_tap, read_all, result_request_ids

REQUESTS = 1000
DEPLOY_REQUESTS = 300


def test_a_worker_killed_mid_run_loses_no_request_and_duplicates_carry_the_same_id(
    settings, broker_url, clean_queues, upstream, fast_retries, tmp_path, channel, record_property,
) -> None:
    base_url, calls = upstream
    with event_tap(broker_url, bindings=()) as replies:
        requests = [new_event(invoke_request(base_url, "x" * (i % 7) + f" request {i}", reply_to=replies.queue))
                    for i in range(REQUESTS)]
        worker = WorkerProcess("invoke", settings, tmp_path / "logs", env=fast_retries).start()
        try:
            published = threading.Event()

            def publish_all() -> None:
                with Publisher(settings.broker) as publisher:
                    for request in requests:
                        publisher.publish(request)
                published.set()

            publisher = threading.Thread(target=publish_all, name="publish-1000")
            publisher.start()

            # When: the worker dies hard once a part of the requests has been answered.
            replies.wait(lambda tap: len(tap.messages) >= 150, timeout=60, what="the first answers")
            worker.kill()
            answered_before_kill = len(result_request_ids(replies.events()))
            publisher.join(timeout=60)
            assert published.is_set(), "publishing did not finish"
            worker.start()

            # Then: every request is answered, the repeated ones under the same result id.
            wanted = {r.id for r in requests}
            replies.wait(lambda tap: wanted <= set(result_request_ids(tap.events())), timeout=90,
                         what="an answer to every request")
        finally:
            worker.stop()
        results = replies.events()

    answers = result_request_ids(results)
    duplicates = sum(len(ids) - 1 for ids in answers.values())
    print(f"\n{REQUESTS} requests: {answered_before_kill} answered before SIGKILL, "
          f"{len(answers)} answered in total, {duplicates} duplicate result(s) (same id), "
          f"{len(calls.log)} upstream calls")
    record_property("answered_before_kill", answered_before_kill)
    record_property("duplicate_results", duplicates)
    assert answered_before_kill < REQUESTS, "the worker was killed after it had finished: no fault was injected"
    assert set(answers) == wanted
    assert all(len(set(ids)) == 1 for ids in answers.values()), "a redelivered request got a different result id"
    by_request = {r.id: r for r in requests}
    for event in results:
        assert isinstance(event.data, InvokeCompleted), event.data
        text = by_request[event.data.request_id].data.body["inputs"][0]["data"][0]
        assert event.data.body["outputs"][0]["data"] == [label(text)], "a request got another request's answer"
    assert read_all(channel, INVOKE_QUEUE.dead_letter_queue) == []


@pytest.fixture(autouse=True)
def _no_leftover_requests(channel, clean_queues):
    yield
    assert channel.queue_declare(INVOKE_QUEUE.name, passive=True).method.message_count == 0


def test_a_deploy_worker_killed_mid_run_handles_every_request_after_a_restart(
    settings, broker_url, clean_queues, tmp_path, record_property,
) -> None:
    # UndeployRequested of services that never existed: cheap, and answered with ServiceDeleted.
    requests = [new_event(UndeployRequested(service=f"never-{i}")) for i in range(DEPLOY_REQUESTS)]
    with event_tap(broker_url, bindings=("service.deleted", "deploy.failed")) as outcomes, \
            WorkerProcess("deploy", settings, tmp_path / "logs", env={"MODELBUS_LOG_LEVEL": "WARNING"}) as worker:
        worker.start()
        with Publisher(settings.broker) as publisher:
            for request in requests:
                publisher.publish(request)
        outcomes.wait(lambda tap: len(tap.messages) >= DEPLOY_REQUESTS // 5, timeout=60, what="the first outcomes")
        worker.kill()  # tasks taken but not acked, events dispatched but not acked: all redelivered
        handled_before_kill = len(outcomes.messages)
        worker.start()
        wanted = {r.id for r in requests}
        outcomes.wait(lambda tap: wanted <= {e.causationid for e in tap.events()}, timeout=90,
                      what="an outcome for every request")
    by_request: dict[str | None, set[str]] = {}
    for event in outcomes.events():
        assert isinstance(event.data, ServiceDeleted)
        by_request.setdefault(event.causationid, set()).add(event.id)
    assert all(len(ids) == 1 for ids in by_request.values()), "a request was answered under two ids"
    repeats = len(outcomes.events()) - len(by_request)
    print(f"\n{DEPLOY_REQUESTS} deploy-queue requests: {handled_before_kill} handled before SIGKILL, "
          f"all handled after the restart, {repeats} repeated outcome(s) (same id)")
    record_property("duplicate_outcomes", repeats)
    assert handled_before_kill < DEPLOY_REQUESTS, "the worker was killed after it had finished: no fault was injected"
