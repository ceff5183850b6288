"""Invoke requests that cannot succeed end in an InvokeFailed that says why, and never stall others."""

from __future__ import annotations

import time
from collections.abc import Callable

import pika
import pytest

from producers.client import ModelBus, RequestFailed
from schemas.events import InvokeFailed, InvokeRequested
from schemas.settings import Settings
from schemas.topology import ERROR_HEADER, INVOKE_QUEUE, REASON_HEADER
from tests.invoke.conftest import WorkerHandle
from tests.invoke.upstream_app import Calls, free_port

V2 = {"inputs": [{"name": "input-0", "shape": [1], "datatype": "BYTES", "data": ["hello"]}]}


def with_invoke(settings: Settings, **changes: object) -> Settings:
    return settings.model_copy(update={"invoke": settings.invoke.model_copy(update=changes)})


def failure_of(bus: ModelBus, timeout: float = 20.0, **request: object) -> InvokeFailed:
    with pytest.raises(RequestFailed) as caught:
        bus.request(InvokeRequested(**request), timeout=timeout)  # type: ignore[arg-type]
    data: InvokeFailed = caught.value.event.data
    return data


def test_an_unknown_service_is_reported_at_once(worker: WorkerHandle, bus: ModelBus) -> None:
    start = time.monotonic()
    failure = failure_of(bus, service="no-such-service", body=V2)
    assert failure.reason == "UnknownService"
    assert "no-such-service" in failure.message
    assert failure.status_code == 404
    assert time.monotonic() - start < 5


def test_a_v2_request_to_a_generative_service_is_a_protocol_mismatch(
    worker: WorkerHandle, bus: ModelBus, upstream: tuple[str, Calls], announce: Callable[..., None],
) -> None:
    base, calls = upstream
    announce(worker, "chatty", base, task="text_generation")
    failure = failure_of(bus, service="chatty", protocol="v2", body=V2)
    assert failure.reason == "ProtocolMismatch"
    assert "openai.chat" in failure.message
    assert calls.log == []


def test_an_upstream_500_is_retried_then_reported_with_its_status_and_body(
    worker: WorkerHandle, bus: ModelBus, upstream: tuple[str, Calls],
) -> None:
    base, calls = upstream
    failure = failure_of(bus, url=base, model_name="fail500", body=V2)
    assert failure.reason == "UpstreamError"
    assert failure.status_code == 500
    assert failure.body == {"error": "model crashed"}
    assert failure.attempts == 3 == calls.count("fail500")
    assert "model crashed" in failure.message


def test_a_transient_503_is_retried_until_it_succeeds(
    worker: WorkerHandle, bus: ModelBus, upstream: tuple[str, Calls],
) -> None:
    base, calls = upstream
    done = bus.request(InvokeRequested(url=base, model_name="flaky", body=V2), timeout=20)
    assert done.data.body["outputs"][0]["data"] == [0]
    assert done.data.attempts == 3 == calls.count("flaky")


def test_an_upstream_that_does_not_answer_in_time_is_reported_as_a_timeout(
    invoke_settings: Settings, start_worker: Callable[..., WorkerHandle], bus: ModelBus,
    upstream: tuple[str, Calls],
) -> None:
    base, calls = upstream
    start_worker(with_invoke(invoke_settings, timeout_s=0.5))
    failure = failure_of(bus, url=base, model_name="slow", body=V2)
    assert failure.reason == "UpstreamTimeout"
    assert failure.status_code == 504
    assert failure.attempts == 3 == calls.count("slow")


def test_a_refused_connection_is_retried_then_reported(worker: WorkerHandle, bus: ModelBus) -> None:
    failure = failure_of(bus, url=f"http://127.0.0.1:{free_port()}", body=V2)
    assert failure.reason == "UpstreamUnreachable"
    assert failure.attempts == 3
    assert failure.retryable


def test_a_dead_service_does_not_stall_requests_for_a_healthy_one(
    invoke_settings: Settings, start_worker: Callable[..., WorkerHandle], bus: ModelBus,
    upstream: tuple[str, Calls],
) -> None:
    base, _ = upstream
    start_worker(with_invoke(invoke_settings, breaker_failures=2, breaker_reset_s=60))
    dead = f"http://127.0.0.1:{free_port()}"
    # Given a target that refuses connections has tripped its circuit
    failure_of(bus, url=dead, body=V2)
    # When many more requests for it arrive together with one for a healthy server
    doomed = [bus.send(InvokeRequested(url=dead, body=V2)) for _ in range(20)]
    healthy = bus.send(InvokeRequested(url=base, body=V2))
    # Then the healthy one is answered, and the dead ones fail fast with CircuitOpen
    assert bus.wait(healthy, timeout=10).data.body["outputs"][0]["data"] == [0]
    reasons = set()
    for request in doomed:
        with pytest.raises(RequestFailed) as caught:
            bus.wait(request, timeout=10)
        reasons.add(caught.value.reason)
    assert reasons == {"CircuitOpen"}


def test_a_request_past_its_deadline_is_not_sent_upstream(
    worker: WorkerHandle, bus: ModelBus, upstream: tuple[str, Calls],
) -> None:
    base, calls = upstream
    failure = failure_of(bus, url=base, body=V2, deadline="2020-01-01T00:00:00Z")
    assert failure.reason == "DeadlineExceeded"
    assert calls.log == []


def test_a_message_that_is_not_an_event_goes_to_the_dead_letter_queue_with_the_reason(
    worker: WorkerHandle, channel: pika.adapters.blocking_connection.BlockingChannel,
) -> None:
    channel.basic_publish("modelbus.events", "invoke.requested", b"{not json",
                          pika.BasicProperties(content_type="application/cloudevents+json"))
    end = time.monotonic() + 10
    while True:
        method, props, body = channel.basic_get(INVOKE_QUEUE.dead_letter_queue, auto_ack=True)
        if method is not None:
            break
        assert time.monotonic() < end, "nothing reached the dead-letter queue"
        time.sleep(0.05)
    assert body == b"{not json"
    assert props.headers[REASON_HEADER] == "NotJSON"
    assert "not JSON" in props.headers[ERROR_HEADER]


def test_an_invalid_body_for_the_protocol_is_reported_as_invalid_request(
    worker: WorkerHandle, bus: ModelBus, upstream: tuple[str, Calls],
) -> None:
    base, _ = upstream
    failure = failure_of(bus, url=base, protocol="openai.chat", body={"model": "m", "messages": "hi", "x": 1})
    assert failure.reason == "InvalidRequest"
    assert "messages" in failure.message


def test_a_service_announced_before_the_worker_started_is_found_in_the_registry(
    invoke_settings: Settings, start_worker: Callable[..., WorkerHandle], bus: ModelBus,
    upstream: tuple[str, Calls],
) -> None:
    from tests.invoke.upstream_app import ready_event_data
    from workers.registry import ServiceRecord, ServiceRegistry

    base, calls = upstream
    ready = ready_event_data("early-bird", base)
    ServiceRegistry(invoke_settings.state_dir).upsert(ServiceRecord(
        name="early-bird", backend="local", status="ready", model_name="model", path=ready["path"],
        task=ready["task"], url=base, endpoints=ready["endpoints"]))
    start_worker(invoke_settings)
    answer = bus.invoke("early-bird", json={"instances": ["abcd", "abc"]})
    assert answer == {"predictions": [1, 0]}
    assert calls.log == [("v1", 2)]
