"""A batch file is validated whole before anything is sent; every bad line is reported by number."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from producers.batch import BatchState, BatchStore, InvalidBatch, parse_endpoint, parse_window, validate_lines
from producers.batch.submit import Target, create_batch, parse_metadata
from producers.batch.validate import Limits, validate_file
from schemas.settings import Settings
from schemas.types import InvokeProtocol

V2_BODY = {"inputs": [{"name": "input-0", "shape": [1], "datatype": "BYTES", "data": ["hello"]}]}
CHAT_BODY = {"model": "gen", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}


def line(custom_id: str, url: str = "/v1/chat/completions", body: dict | None = None, **extra: object) -> str:
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": url, "body": body or CHAT_BODY, **extra})


@pytest.mark.parametrize(("url", "protocol", "model"), [
    ("/v2/models/sentiment/infer", InvokeProtocol.v2, "sentiment"),
    ("/v1/models/sentiment:predict", InvokeProtocol.v1, "sentiment"),
    ("/v1/chat/completions", InvokeProtocol.openai_chat, None),
    ("/openai/v1/chat/completions", InvokeProtocol.openai_chat, None),
    ("/v1/completions", InvokeProtocol.openai_completions, None),
    ("/openai/v1/completions", InvokeProtocol.openai_completions, None),
    ("/v1/embeddings", InvokeProtocol.openai_embeddings, None),
])
def test_known_endpoints_map_to_invoke_protocols(url: str, protocol: InvokeProtocol, model: str | None) -> None:
    found = parse_endpoint(url)
    assert (found.protocol, found.model_name) == (protocol, model)


def test_an_unknown_endpoint_is_refused_naming_the_known_ones() -> None:
    with pytest.raises(ValueError, match="/v1/chat/completions"):
        parse_endpoint("/v1/images/generations")


def test_a_valid_openai_batch_file_becomes_requests_in_line_order() -> None:
    report = validate_lines([line("a"), "", line("b", "/openai/v1/chat/completions")])
    assert report.ok
    assert [(r.line, r.custom_id, r.protocol) for r in report.requests] == [
        (1, "a", InvokeProtocol.openai_chat), (3, "b", InvokeProtocol.openai_chat)]
    assert report.endpoint is not None
    assert report.endpoint.protocol is InvokeProtocol.openai_chat


def test_plain_v2_bodies_are_accepted_with_line_numbers_as_custom_ids() -> None:
    report = validate_lines([json.dumps(V2_BODY), json.dumps(V2_BODY)], endpoint="/v2/models/cls/infer")
    assert report.ok
    assert [(r.custom_id, r.protocol, r.model_name) for r in report.requests] == [
        ("line-1", InvokeProtocol.v2, "cls"), ("line-2", InvokeProtocol.v2, "cls")]


def test_every_bad_line_is_reported_with_its_number_and_reason() -> None:
    lines = [
        line("ok-1"),
        "{not json",
        line("ok-1"),  # duplicate
        line("bad-url", "/v1/images/generations"),
        line("get", method="GET"),
        line("stream", body={**CHAT_BODY, "stream": True}),
        line("other-protocol", "/v1/embeddings", body={"input": "x"}),
        json.dumps({"custom_id": 7, "url": "/v1/chat/completions", "body": CHAT_BODY}),
        line("no-messages", body={"model": "gen"}),
        "[1, 2]",
    ]
    report = validate_lines(lines)
    assert not report.ok
    assert [(e.line, e.code) for e in report.errors] == [
        (2, "invalid_json"), (3, "duplicate_custom_id"), (4, "invalid_url"), (5, "invalid_method"),
        (6, "invalid_body"), (7, "endpoint_mismatch"), (8, "invalid_custom_id"), (9, "invalid_body"),
        (10, "invalid_request"),
    ]
    assert "line 3 (ok-1): duplicate_custom_id: the custom_id is a duplicate of line 1" in report.summary()


def test_size_limits_apply_to_lines_and_to_the_line_count() -> None:
    limits = Limits(max_lines=2, max_line_bytes=300)
    report = validate_lines([line("a"), line("b", body={**CHAT_BODY, "pad": "x" * 400}), line("c"), line("d")],
                            limits=limits)
    assert [(e.line, e.code) for e in report.errors] == [(2, "line_too_large"), (3, "too_many_requests")]


def test_a_file_over_the_byte_limit_is_refused_whole(tmp_path: Path) -> None:
    path = tmp_path / "big.jsonl"
    path.write_text("\n".join(line(str(i)) for i in range(50)))
    report = validate_file(path, limits=Limits(max_file_bytes=1000))
    assert [e.code for e in report.errors] == ["file_too_large"]


def test_an_empty_file_is_refused() -> None:
    assert [e.code for e in validate_lines(["", "  "]).errors] == ["empty_file"]


def test_an_invalid_file_is_recorded_as_failed_and_nothing_is_queued(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path)
    store = BatchStore(tmp_path)
    with pytest.raises(InvalidBatch) as caught:
        create_batch(settings, store, [line("a"), "oops", line("a")], target=Target(service="writer"))
    assert "line 2: invalid_json" in str(caught.value)
    assert "line 3 (a): duplicate_custom_id" in str(caught.value)
    record = store.get(caught.value.record.id)
    assert record.state is BatchState.failed
    assert [e["line"] for e in record.errors] == [2, 3]
    assert store.counts(record.id).total == 0


def test_skip_invalid_keeps_the_good_lines_and_counts_the_bad(tmp_path: Path) -> None:
    store = BatchStore(tmp_path)
    record = create_batch(Settings(state_dir=tmp_path), store, [line("a"), "oops", line("b")],
                          target=Target(service="writer"), skip_invalid=True, metadata=["team=search"])
    assert (record.state, record.total, record.skipped, record.metadata) == (
        BatchState.validating, 2, 1, {"team": "search"})
    assert store.counts(record.id).pending == 2


@pytest.mark.parametrize(("text", "seconds"), [("24h", 86_400), ("90m", 5400), ("3600s", 3600), ("2d", 172_800),
                                               ("30", 30)])
def test_completion_windows_read_as_durations(text: str, seconds: float) -> None:
    assert parse_window(text) == seconds


@pytest.mark.parametrize("text", ["forever", "0s", "31d", "-1h"])
def test_completion_windows_outside_one_second_to_thirty_days_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="completion window"):
        parse_window(text)


def test_metadata_follows_the_openai_limits() -> None:
    assert parse_metadata(["a=1", "b=x=y"]) == {"a": "1", "b": "x=y"}
    with pytest.raises(ValueError, match="key=value"):
        parse_metadata(["novalue"])
    with pytest.raises(ValueError, match="at most 16"):
        parse_metadata({f"k{i}": "v" for i in range(17)})
    with pytest.raises(ValueError, match="64 characters"):
        parse_metadata({"k" * 65: "v"})
