"""Invoke through the broker against real `serving` processes: the seed's calls work verbatim,
concurrent requests are micro-batched and each gets its own answer, redeliveries are idempotent."""

from __future__ import annotations

import ast
import json
from collections.abc import Callable, Iterator

import httpx
import pika
import pytest
from prometheus_client import REGISTRY
from typer.testing import CliRunner

from producers.cli.main import app
from producers.client import ModelBus, Service
from producers.errors import ReplyTimeout
from producers.publisher import Publisher
from schemas.envelope import CloudEvent, amqp_properties, encode, new_event
from schemas.events import InvokeRequested, ServiceReady
from schemas.settings import Settings
from schemas.topology import EXCHANGE, INVOKE_QUEUE
from tests.invoke.conftest import WorkerHandle
from tests.invoke.upstream_app import ready_event_data
from tests.models import build_minilm_classifier, build_tiny_generator
from tests.serving_process import start_server

SEED_V2 = {"inputs": [{"name": "input-0", "shape": [2], "datatype": "BYTES",
                       "data": ["Hello, my dog is cute", "I am feeling sad"]}]}
SEED_COMPLETIONS = {"model": "gen", "prompt": "Hello, my dog is cute", "max_tokens": 8}
SEED_CHAT = {"model": "gen", "messages": [{"role": "system", "content": "Answer with just the number."},
                                          {"role": "user", "content": "2+2="}], "max_tokens": 8}


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A classifier (raw logits, so every text's answer is recognisable) and a generator, started together."""
    root = tmp_path_factory.mktemp("invoke-models")
    classifier = build_minilm_classifier(root / "cls")
    generator = build_tiny_generator(root / "gen")
    procs = {
        "cls": start_server(["--model_name", "cls", "--model_dir", str(classifier), "--return_raw_logits"]),
        "gen": start_server(["--model_name", "gen", "--model_dir", str(generator)]),
    }
    try:
        yield {name: proc.wait_ready(120) for name, proc in procs.items()}
    finally:
        for proc in procs.values():
            proc.stop()


@pytest.fixture
def services(worker: WorkerHandle, bus: ModelBus, servers: dict[str, str],
             announce: Callable[..., None]) -> dict[str, Service]:
    announce(worker, "sentiment", servers["cls"], model_name="cls")
    announce(worker, "writer", servers["gen"], model_name="gen", task="text_generation")
    return {
        "sentiment": Service(bus, ServiceReady(**ready_event_data("sentiment", servers["cls"], model_name="cls"))),
        "writer": Service(bus, ServiceReady(**ready_event_data("writer", servers["gen"], model_name="gen",
                                                               task="text_generation"))),
    }


def direct(url: str, body: dict[str, object]) -> dict[str, object]:
    response = httpx.post(url, json=body, timeout=60)
    response.raise_for_status()
    result: dict[str, object] = response.json()
    return result


def logits(answers: list[str]) -> list[float]:
    """Raw-logit answers (`"{0: -2.15, 1: 2.51}"`) as one flat list of floats."""
    return [value for answer in answers for value in ast.literal_eval(answer).values()]


def without_ids(body: dict[str, object]) -> dict[str, object]:
    return {k: v for k, v in body.items() if k not in ("id", "created")}


def test_the_seed_v2_classification_call_answers_like_the_server_itself(
    services: dict[str, Service], servers: dict[str, str],
) -> None:
    answer = services["sentiment"].invoke(json=SEED_V2)
    expected = direct(f"{servers['cls']}/v2/models/cls/infer", SEED_V2)
    assert answer["outputs"][0]["shape"] == [2]
    assert answer["outputs"][0]["datatype"] == "BYTES"
    assert logits(answer["outputs"][0]["data"]) == pytest.approx(
        logits(expected["outputs"][0]["data"]), abs=1e-5)  # type: ignore[index]


def test_the_seed_completions_and_chat_calls_answer_like_the_server_itself(
    services: dict[str, Service], servers: dict[str, str],
) -> None:
    writer = services["writer"]
    completion = writer.invoke(json=SEED_COMPLETIONS)
    assert without_ids(completion) == without_ids(direct(f"{servers['gen']}/openai/v1/completions",
                                                         SEED_COMPLETIONS))
    chat = writer.invoke(json=SEED_CHAT)
    assert chat["object"] == "chat.completion"
    assert without_ids(chat) == without_ids(direct(f"{servers['gen']}/openai/v1/chat/completions", SEED_CHAT))


def send_together(channel: pika.adapters.blocking_connection.BlockingChannel, bus: ModelBus,
                  requests: list[InvokeRequested]) -> list[CloudEvent[InvokeRequested]]:
    """Publish requests back to back, as concurrent callers do (`bus.send` waits for each confirm)."""
    events = [new_event(r.model_copy(update={"reply_to": bus.reply_queue}), source="/tests") for r in requests]
    for event in events:
        channel.basic_publish(EXCHANGE, event.routing_key, encode(event),
                              pika.BasicProperties(**amqp_properties(event)), mandatory=True)
    return events


def test_concurrent_completions_with_equal_parameters_share_a_call_and_keep_their_own_choice(
    services: dict[str, Service], bus: ModelBus, channel: pika.adapters.blocking_connection.BlockingChannel,
) -> None:
    prompts = ["Hello, my dog is cute", "I am feeling sad", "The capital of France is Paris.",
               "modelbus serves models"]
    sent = send_together(channel, bus, [InvokeRequested(  # type: ignore[arg-type]
        service="writer", protocol="openai.completions", body={"model": "gen", "prompt": p, "max_tokens": 4},
    ) for p in prompts])
    results = [bus.wait(request, timeout=60).data for request in sent]
    for prompt, result in zip(prompts, results, strict=True):
        alone = services["writer"].invoke(json={"model": "gen", "prompt": prompt, "max_tokens": 4})
        assert result.body["choices"] == alone["choices"]
        assert [c["index"] for c in result.body["choices"]] == [0]
    assert max(r.batch_size for r in results) > 1


def test_two_hundred_concurrent_single_text_requests_are_batched_and_each_gets_its_own_answer(
    services: dict[str, Service], servers: dict[str, str], bus: ModelBus, worker: WorkerHandle,
    channel: pika.adapters.blocking_connection.BlockingChannel,
) -> None:
    texts = [f"request number {i} says {'good' if i % 3 else 'bad'} things" for i in range(200)]
    expected = direct(f"{servers['cls']}/v2/models/cls/infer",
                      {"inputs": [{"name": "input-0", "shape": [200], "datatype": "BYTES", "data": texts}]})
    sent = [bus.send(InvokeRequested(service="sentiment", body={"inputs": [
        {"name": "input-0", "shape": [1], "datatype": "BYTES", "data": [text]}]})) for text in texts]
    results = [bus.wait(request, timeout=120).data for request in sent]
    for i, result in enumerate(results):
        output = result.body["outputs"][0]
        assert output["shape"] == [1]
        own = expected["outputs"][0]["data"][i]  # type: ignore[index]
        assert logits(output["data"]) == pytest.approx(logits([own]), abs=1e-5)
    assert max(r.batch_size for r in results) > 1
    # Every answered request was acknowledged: once the worker is gone, nothing comes back to the queue.
    worker.stop()
    assert channel.queue_declare(INVOKE_QUEUE.name, passive=True).method.message_count == 0


def duplicates_seen() -> float:
    return REGISTRY.get_sample_value("modelbus_invoke_duplicates_total") or 0.0


def test_a_redelivered_request_does_not_produce_a_second_distinct_result(
    services: dict[str, Service], bus: ModelBus, invoke_settings: Settings, worker: WorkerHandle,
    start_worker: Callable[..., WorkerHandle], announce: Callable[..., None], servers: dict[str, str],
) -> None:
    request = bus.send(InvokeRequested(service="sentiment", body=SEED_V2))
    first = bus.wait(request, timeout=30)
    # The same event again (a producer retry, or the broker redelivering it): answered from memory.
    before = duplicates_seen()
    with Publisher(invoke_settings.broker) as publisher:
        publisher.publish(request)
        _wait_for(lambda: duplicates_seen() > before)
        with pytest.raises(ReplyTimeout):
            bus.wait(request, timeout=0.5)
        # A worker that never saw it (restarted, or another replica) answers with the same result id.
        worker.stop()
        announce(start_worker(invoke_settings), "sentiment", servers["cls"], model_name="cls")
        publisher.publish(request)
    again = bus.wait(request, timeout=30)
    assert again.id == first.id
    assert again.data.request_id == request.id
    assert again.data.body["outputs"] == first.data.body["outputs"]


def test_the_cli_prints_the_response_body(services: dict[str, Service], invoke_settings: Settings) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["invoke", "sentiment", "--json", json.dumps(SEED_V2)],
                           env={"MODELBUS_BROKER__URL": invoke_settings.broker.url})
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert body["outputs"][0]["shape"] == [2]


def test_the_cli_reports_a_failure_with_its_reason(worker: WorkerHandle, invoke_settings: Settings) -> None:
    result = CliRunner().invoke(app, ["invoke", "nobody-home", "--json", json.dumps(SEED_V2)],
                                env={"MODELBUS_BROKER__URL": invoke_settings.broker.url})
    assert result.exit_code == 1
    assert "UnknownService" in result.output


def _wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    import time

    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "condition not met in time"
        time.sleep(0.02)
