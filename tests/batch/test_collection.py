"""Submission and collection against the real broker, with results published the way the invoke worker
does (its own result builders), so every duplicate, stranger and crash leftover can be placed on purpose.

End to end with the real invoke worker and model servers: test_end_to_end.py.
"""

from __future__ import annotations

import asyncio
import io
import json
import threading
import time
from pathlib import Path
from typing import Any

import pika
import pytest
from rich.console import Console

from producers.batch import BatchState, submit_and_wait, submit_batch
from producers.batch.records import request_id, result_line
from producers.batch.runner import drive
from producers.client import ModelBus
from schemas.envelope import CloudEvent, amqp_properties, encode
from schemas.settings import Settings
from schemas.topology import INVOKE_QUEUE
from tests.batch.conftest import Channel, classifier_lines, read_jsonl, take_requests, write_jsonl
from workers.invoke.results import FailureInfo, completed, failed


def answer(channel: Channel, request: CloudEvent[Any], *, fail: bool = False) -> CloudEvent[Any]:
    """Publish the outcome of `request` to its reply queue, as the invoke worker would."""
    if fail:
        result = failed(request, FailureInfo("UpstreamRejected", "422 from the server", status_code=422,
                                             body={"error": "bad input"}))
    else:
        body = {"outputs": [{"name": "label", "data": [request.data.custom_id]}]}
        result = completed(request, target=None, body=body, status_code=200, latency_ms=1.0, batch_size=1,
                           attempts=1)
    publish(channel, result, request.data.reply_to)
    return result


def publish(channel: Channel, event: CloudEvent[Any], queue: str) -> None:
    channel.basic_publish("", queue, encode(event), pika.BasicProperties(**amqp_properties(event)))


def queue_exists(channel_factory: Any, queue: str) -> bool:
    connection = channel_factory()
    try:
        connection.channel().queue_declare(queue, passive=True)
        return True
    except pika.exceptions.ChannelClosedByBroker:
        return False
    finally:
        if connection.is_open:
            connection.close()


def wait_for_requests(channel: Channel, n: int, timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while channel.queue_declare(INVOKE_QUEUE.name, passive=True).method.message_count < n:
        assert time.monotonic() < end, f"fewer than {n} requests reached the invoke queue in {timeout}s"
        time.sleep(0.02)


def test_each_result_lands_once_in_the_openai_format_whatever_the_queue_repeats(
        batch_settings: Settings, channel: Channel, tmp_path: Path, broker_url: str) -> None:
    # Given a 30-line batch, sent
    source = write_jsonl(tmp_path / "in.jsonl", classifier_lines(30))
    batch = submit_batch(batch_settings, source, service="cls", metadata={"owner": "tests"})
    record = batch.record
    requests = take_requests(channel)
    # Then every request is tagged, answered into the batch's queue, bounded by the batch's window
    assert sorted(r.data.custom_id for r in requests) == sorted(f"req-{i}" for i in range(30))
    for request in requests:
        assert (request.data.batch_id, request.data.reply_to, request.correlationid) == (
            record.id, record.results_queue, record.id)
        assert request.data.deadline.timestamp() == pytest.approx(record.expires_at)
        assert request.data.model_name == "cls"
        assert request.id == request_id(record.id, request.data.custom_id)
    # When results arrive, every fifth a failure, with duplicates, a stranger's result and garbage among them
    results = {r.data.custom_id: answer(channel, r, fail=int(r.data.custom_id[4:]) % 5 == 0) for r in requests}
    for request in requests[:5]:
        publish(channel, results[request.data.custom_id], record.results_queue)
    stranger = requests[0].model_copy(update={"id": "someone-else", "data": requests[0].data.model_copy(
        update={"batch_id": "batch_other"})})
    answer(channel, stranger)
    channel.basic_publish("", record.results_queue, b"not an event")
    status = batch.wait(timeout=30)
    # Then the batch is complete, each custom_id once, successes and failures in their files
    assert (status.state, status.total, status.completed, status.failed, status.pending) == (
        BatchState.completed, 30, 24, 6, 0)
    out, errors = tmp_path / "out.jsonl", tmp_path / "errors.jsonl"
    batch.results(out, errors)
    ok_lines, error_lines = read_jsonl(out), read_jsonl(errors)
    assert sorted(line["custom_id"] for line in ok_lines + error_lines) == sorted(f"req-{i}" for i in range(30))
    first = next(line for line in ok_lines if line["custom_id"] == "req-1")
    assert first == {"id": results["req-1"].id, "custom_id": "req-1", "error": None,
                     "response": {"status_code": 200, "request_id": request_id(record.id, "req-1"),
                                  "body": {"outputs": [{"name": "label", "data": ["req-1"]}]}}}
    failure = next(line for line in error_lines if line["custom_id"] == "req-5")
    assert failure["error"] == {"code": "UpstreamRejected", "message": "422 from the server"}
    assert failure["response"]["status_code"] == 422
    # And the finished batch's queue is gone
    assert not queue_exists(lambda: pika.BlockingConnection(pika.URLParameters(broker_url)), record.results_queue)


def test_lines_written_before_a_crash_are_adopted_and_a_torn_line_is_cut(
        batch_settings: Settings, channel: Channel, tmp_path: Path) -> None:
    # Given a batch whose first result was collected
    batch = submit_batch(batch_settings, write_jsonl(tmp_path / "in.jsonl", classifier_lines(3)), service="cls")
    requests = {r.data.custom_id: r for r in take_requests(channel)}
    answer(channel, requests["req-0"])
    assert batch.status().completed == 1
    # And a collector that died after appending req-1's line (uncommitted, unacked) in the middle of another
    result_1 = answer(channel, requests["req-1"])
    _, line_1 = result_line(result_1)
    with batch.store.output_path(batch.id).open("ab") as handle:
        handle.write(json.dumps(line_1).encode() + b"\n" + b'{"id": "torn", "custom_')
    # When collection resumes and the last result arrives
    answer(channel, requests["req-2"])
    status = batch.wait(timeout=30)
    # Then nothing is lost or doubled, and no torn bytes remain
    assert (status.state, status.completed) == (BatchState.completed, 3)
    out = tmp_path / "out.jsonl"
    batch.results(out)
    assert sorted(line["custom_id"] for line in read_jsonl(out)) == ["req-0", "req-1", "req-2"]
    assert read_jsonl(tmp_path / "out.errors.jsonl") == []


def test_a_cancelled_batch_keeps_its_results_and_sends_nothing_more(
        batch_settings: Settings, channel: Channel, tmp_path: Path) -> None:
    # Given a 100-line batch allowed 20 requests in flight, sending in the background
    source = write_jsonl(tmp_path / "in.jsonl", classifier_lines(100))
    batch = submit_batch(batch_settings, source, service="cls", max_in_flight=20, send=False)
    sender = threading.Thread(target=batch.send, kwargs={"timeout": 60})
    sender.start()
    wait_for_requests(channel, 20)
    # When it is cancelled while the first 20 are unanswered
    cancelling = batch.cancel()
    sender.join(timeout=30)
    assert not sender.is_alive()
    assert cancelling.state is BatchState.cancelling
    sent = take_requests(channel)
    assert len(sent) == cancelling.sent == 20
    # And the requests already sent are answered
    for request in sent:
        answer(channel, request)
    status = batch.wait(timeout=30)
    # Then their results are kept, the others are reported cancelled, and no request was sent after the cancel
    assert (status.state, status.completed, status.cancelled) == (BatchState.cancelled, 20, 80)
    out, errors = tmp_path / "out.jsonl", tmp_path / "errors.jsonl"
    batch.results(out, errors)
    assert {line["custom_id"] for line in read_jsonl(out)} == {r.data.custom_id for r in sent}
    cancelled = read_jsonl(errors)
    assert len(cancelled) == 80
    assert {line["error"]["code"] for line in cancelled} == {"batch_cancelled"}
    assert take_requests(channel) == []


def test_an_expired_batch_keeps_what_finished_and_reports_the_rest_expired(
        batch_settings: Settings, channel: Channel, tmp_path: Path) -> None:
    # Given a batch with a one-hour window, all sent, a third of it answered
    source = write_jsonl(tmp_path / "in.jsonl", classifier_lines(30))
    batch = submit_batch(batch_settings, source, service="cls", completion_window="1h")
    requests = take_requests(channel)
    for request in requests[:10]:
        answer(channel, request)
    # When it is looked at after its window
    later = batch.record.expires_at + 1
    status = asyncio.run(drive(batch_settings, batch.store, batch.id, until="terminal",
                                              clock=lambda: later))
    # Then the answered requests are kept and the others are expired
    assert (status.state, status.completed, status.expired) == (BatchState.expired, 10, 20)
    batch.results(tmp_path / "out.jsonl")
    assert len(read_jsonl(tmp_path / "out.jsonl")) == 10
    assert {line["error"]["code"] for line in read_jsonl(tmp_path / "out.errors.jsonl")} == {"batch_expired"}


def test_an_expired_batch_sends_nothing_that_was_not_sent_yet(
        batch_settings: Settings, channel: Channel, tmp_path: Path) -> None:
    batch = submit_batch(batch_settings, write_jsonl(tmp_path / "in.jsonl", classifier_lines(5)), service="cls",
                         completion_window="1h", send=False)
    later = batch.record.expires_at + 1
    status = asyncio.run(drive(batch_settings, batch.store, batch.id, until="terminal",
                                              clock=lambda: later))
    assert (status.state, status.expired, status.sent) == (BatchState.expired, 5, 0)
    assert take_requests(channel) == []


def test_a_batch_cancelled_before_sending_reports_every_request_cancelled(
        batch_settings: Settings, channel: Channel, tmp_path: Path) -> None:
    batch = submit_batch(batch_settings, write_jsonl(tmp_path / "in.jsonl", classifier_lines(5)), service="cls",
                         send=False)
    status = batch.cancel()
    assert (status.state, status.cancelled, status.sent) == (BatchState.cancelled, 5, 0)
    assert batch.send().sent == 0
    assert take_requests(channel) == []


def test_submit_and_wait_shows_live_progress_and_writes_both_files(
        batch_settings: Settings, broker_url: str, tmp_path: Path) -> None:
    # Given something answering the batch's requests as they arrive
    def answer_all(n: int) -> None:
        connection = pika.BlockingConnection(pika.URLParameters(broker_url))
        try:
            own = connection.channel()
            done = 0
            end = time.monotonic() + 30
            while done < n and time.monotonic() < end:
                for request in take_requests(own):
                    answer(own, request, fail=request.data.custom_id == "req-2")
                    done += 1
                time.sleep(0.01)
        finally:
            connection.close()

    responder = threading.Thread(target=answer_all, args=(12,))
    responder.start()
    screen = io.StringIO()
    # When a batch is submitted and followed with a console
    with ModelBus(batch_settings) as bus:
        summary = submit_and_wait(bus, write_jsonl(tmp_path / "in.jsonl", classifier_lines(12)), service="cls",
                                  output=tmp_path / "out.jsonl", errors=tmp_path / "errors.jsonl",
                                  console=Console(file=screen, force_terminal=True, width=120), timeout=30)
    responder.join(timeout=30)
    # Then the bar showed the counts and the summary and files say the same
    assert "12/12" in screen.getvalue()
    assert f"{summary.id} completed: 11 completed, 1 failed of 12" in str(summary)
    assert len(read_jsonl(tmp_path / "out.jsonl")) == 11
    assert [line["custom_id"] for line in read_jsonl(tmp_path / "errors.jsonl")] == ["req-2"]
