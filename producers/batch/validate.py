"""Validation of a batch input file, all of it before anything is sent.

A line is either an OpenAI batch request, `{"custom_id", "method": "POST", "url", "body"}`, or a
plain request body (an Open Inference Protocol v2 body, say) that gets the custom id `line-<n>`.
The `url` of a line names the endpoint, and so the invoke protocol:

| url                                                     | protocol            |
|---------------------------------------------------------|---------------------|
| `/v2/models/{m}/infer`                                  | v2 (model `m`)      |
| `/v1/models/{m}:predict`                                | v1 (model `m`)      |
| `/v1/chat/completions`, `/openai/v1/chat/completions`   | openai.chat         |
| `/v1/completions`, `/openai/v1/completions`             | openai.completions  |
| `/v1/embeddings`, `/openai/v1/embeddings`               | openai.embeddings   |

As with the OpenAI Batch API, one batch speaks one protocol: the batch endpoint (given, or the first
line's) fixes it, and a line for another protocol is an error. Every problem is reported with its
line number; pure functions, no I/O beyond reading the file.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from schemas.types import InvokeProtocol

_MODEL = r"(?P<model>[A-Za-z0-9][A-Za-z0-9_.-]{0,127})"
_ENDPOINTS: tuple[tuple[re.Pattern[str], InvokeProtocol], ...] = (
    (re.compile(rf"^/v2/models/{_MODEL}(/versions/[^/]+)?/infer$"), InvokeProtocol.v2),
    (re.compile(rf"^/v1/models/{_MODEL}:predict$"), InvokeProtocol.v1),
    (re.compile(r"^(/openai)?/v1/chat/completions$"), InvokeProtocol.openai_chat),
    (re.compile(r"^(/openai)?/v1/completions$"), InvokeProtocol.openai_completions),
    (re.compile(r"^(/openai)?/v1/embeddings$"), InvokeProtocol.openai_embeddings),
)
KNOWN_ENDPOINTS = (
    "/v2/models/{model}/infer",
    "/v1/models/{model}:predict",
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
)
_CUSTOM_ID_MAX = 512
#: What an event carries besides the body (envelope, ids, routing fields), with a margin, bytes.
EVENT_OVERHEAD_BYTES = 16_384


@dataclass(frozen=True)
class Endpoint:
    """Where a line goes: the URL as written, its invoke protocol and, for v1/v2, the model name."""

    url: str
    protocol: InvokeProtocol
    model_name: str | None = None


def parse_endpoint(url: str) -> Endpoint:
    """Map an endpoint URL to its invoke protocol.

    Raises:
        ValueError: the URL is none of the known endpoints.

    Example:
        >>> parse_endpoint("/v2/models/sentiment/infer").protocol
        <InvokeProtocol.v2: 'v2'>
    """
    path = url.split("?", 1)[0].rstrip("/") or url
    for pattern, protocol in _ENDPOINTS:
        match = pattern.match(path)
        if match:
            return Endpoint(url, protocol, match.groupdict().get("model"))
    raise ValueError(f"unknown endpoint {url!r}; known: {', '.join(KNOWN_ENDPOINTS)}")


@dataclass(frozen=True)
class Limits:
    """Size limits of one batch."""

    max_lines: int = 50_000
    max_line_bytes: int = 1_000_000
    max_file_bytes: int = 200_000_000


@dataclass(frozen=True)
class BatchRequest:
    """One valid input line, ready to become an `InvokeRequested`."""

    line: int
    custom_id: str
    protocol: InvokeProtocol
    body: dict[str, Any]
    model_name: str | None = None


@dataclass(frozen=True)
class LineError:
    """What is wrong with one line (OpenAI batch `errors.data` entry: code, line, message)."""

    line: int
    code: str
    message: str
    custom_id: str | None = None

    def __str__(self) -> str:
        where = f"line {self.line}" + (f" ({self.custom_id})" if self.custom_id else "")
        return f"{where}: {self.code}: {self.message}"


@dataclass
class ValidationReport:
    """The outcome of validating a whole file: the good requests, and every bad line."""

    requests: list[BatchRequest] = field(default_factory=list)
    errors: list[LineError] = field(default_factory=list)
    endpoint: Endpoint | None = None
    lines: int = 0

    @property
    def ok(self) -> bool:
        return not self.errors and bool(self.requests)

    def summary(self, max_errors: int = 20) -> str:
        """A human report: counts, then the first `max_errors` bad lines."""
        head = f"{len(self.requests)} valid request(s), {len(self.errors)} invalid line(s) of {self.lines}"
        shown = [f"  {err}" for err in self.errors[:max_errors]]
        if len(self.errors) > max_errors:
            shown.append(f"  ... and {len(self.errors) - max_errors} more")
        return "\n".join([head, *shown])


def _check_v2(body: dict[str, Any]) -> str | None:
    inputs = body.get("inputs")
    if not isinstance(inputs, list) or not inputs or not all(isinstance(t, dict) for t in inputs):
        return "a v2 body needs 'inputs': [{name, shape, datatype, data}, ...]"
    for i, tensor in enumerate(inputs):
        missing = {"name", "shape", "datatype", "data"} - tensor.keys()
        if missing:
            return f"v2 inputs[{i}] lacks {', '.join(sorted(missing))}"
    return None


def _check_v1(body: dict[str, Any]) -> str | None:
    return None if isinstance(body.get("instances", body.get("inputs")), list) else "a v1 body needs 'instances': [...]"


def _check_chat(body: dict[str, Any]) -> str | None:
    messages = body.get("messages")
    return None if isinstance(messages, list) and messages else "a chat body needs 'messages': [{role, content}, ...]"


def _needs(field: str) -> Callable[[dict[str, Any]], str | None]:
    return lambda body: None if field in body else f"the body needs '{field}'"


_BODY_CHECKS: dict[InvokeProtocol, Callable[[dict[str, Any]], str | None]] = {
    InvokeProtocol.v2: _check_v2,
    InvokeProtocol.v1: _check_v1,
    InvokeProtocol.openai_chat: _check_chat,
    InvokeProtocol.openai_completions: _needs("prompt"),
    InvokeProtocol.openai_embeddings: _needs("input"),
}


def _check_body(protocol: InvokeProtocol, body: dict[str, Any]) -> str | None:
    """The first structural problem of a body for its protocol, or None (the worker checks the rest)."""
    if protocol not in (InvokeProtocol.v1, InvokeProtocol.v2) and body.get("stream"):
        return "streaming cannot be batched; drop 'stream'"
    return _BODY_CHECKS[protocol](body)


def _lines(path: Path) -> Iterator[bytes]:
    with path.open("rb") as handle:
        yield from handle


def validate_file(path: Path, *, endpoint: str | None = None, limits: Limits | None = None) -> ValidationReport:
    """Validate a JSONL batch file (see `validate_lines`); a file past `max_file_bytes` is refused whole.

    Raises:
        OSError: the file cannot be read.
    """
    limits = limits or Limits()
    size = path.stat().st_size
    if size > limits.max_file_bytes:
        report = ValidationReport()
        report.errors.append(LineError(0, "file_too_large",
                                       f"the file is {size} bytes, over the {limits.max_file_bytes}-byte limit"))
        return report
    return validate_lines(_lines(path), endpoint=endpoint, limits=limits)


def validate_lines(lines: Iterable[bytes | str], *, endpoint: str | None = None,
                   limits: Limits | None = None) -> ValidationReport:
    """Validate batch lines; blank lines are skipped, line numbers start at 1.

    Args:
        lines: the raw lines of the file.
        endpoint: the batch endpoint (e.g. `/v1/chat/completions`); the first valid line's `url`
            when None, and v2 for a file of plain bodies.
        limits: line count and size limits.

    Returns:
        the report; `report.ok` is True only if every line is valid.

    Raises:
        ValueError: `endpoint` itself is unknown.
    """
    limits = limits or Limits()
    report = ValidationReport(endpoint=parse_endpoint(endpoint) if endpoint else None)
    seen: dict[str, int] = {}
    for number, raw in enumerate(lines, start=1):
        text = raw if isinstance(raw, bytes) else raw.encode()
        if not text.strip():
            continue
        report.lines = number
        if len(report.requests) + len(report.errors) >= limits.max_lines:
            report.errors.append(LineError(number, "too_many_requests",
                                           f"a batch holds at most {limits.max_lines} requests"))
            break
        result = _line(number, text, report, limits)
        if isinstance(result, LineError):
            report.errors.append(result)
            continue
        first = seen.setdefault(result.custom_id, number)
        if first != number:
            report.errors.append(LineError(number, "duplicate_custom_id",
                                           f"the custom_id is a duplicate of line {first}", result.custom_id))
            continue
        report.requests.append(result)
    if not report.requests and not report.errors:
        report.errors.append(LineError(0, "empty_file", "the file has no requests"))
    return report


class _Bad(Exception):
    def __init__(self, error: LineError) -> None:
        super().__init__(str(error))
        self.error = error


def _line(number: int, text: bytes, report: ValidationReport, limits: Limits) -> BatchRequest | LineError:
    try:
        if len(text) > limits.max_line_bytes:
            raise _Bad(LineError(number, "line_too_large",
                                 f"{len(text)} bytes, over the {limits.max_line_bytes}-byte limit"))
        obj = _json_object(number, text)
        if "custom_id" not in obj and "body" not in obj:  # a plain body: the batch endpoint decides
            if report.endpoint is None:
                report.endpoint = Endpoint("/v2/models/{model}/infer", InvokeProtocol.v2)
            return _request(number, f"line-{number}", report.endpoint, obj)
        custom_id, body = _envelope(number, obj)
        return _request(number, custom_id, _where(number, custom_id, obj.get("url"), report), body)
    except _Bad as bad:
        return bad.error


def _json_object(number: int, text: bytes) -> dict[str, Any]:
    try:
        obj = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise _Bad(LineError(number, "invalid_json", str(exc))) from exc
    if not isinstance(obj, dict):
        raise _Bad(LineError(number, "invalid_request", "a line must be a JSON object"))
    return obj


def _envelope(number: int, obj: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The custom_id and body of an OpenAI batch line, its other fields checked."""
    custom_id = obj.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id or len(custom_id) > _CUSTOM_ID_MAX:
        raise _Bad(LineError(number, "invalid_custom_id", f"custom_id must be a string of 1 to {_CUSTOM_ID_MAX} "
                                                          "characters"))
    unknown = set(obj) - {"custom_id", "method", "url", "body"}
    if unknown:
        raise _Bad(LineError(number, "invalid_request", f"unknown field(s): {', '.join(sorted(unknown))}", custom_id))
    if str(obj.get("method", "POST")).upper() != "POST":
        raise _Bad(LineError(number, "invalid_method", "only POST is supported", custom_id))
    body = obj.get("body")
    if not isinstance(body, dict):
        raise _Bad(LineError(number, "invalid_body", "body must be a JSON object", custom_id))
    return custom_id, body


def _where(number: int, custom_id: str, url: Any, report: ValidationReport) -> Endpoint:
    """The endpoint of a line: its url (which must agree with the batch's protocol) or the batch's."""
    if url is None:
        if report.endpoint is None:
            raise _Bad(LineError(number, "missing_url", "no url on the line and no batch endpoint given", custom_id))
        return report.endpoint
    try:
        where = parse_endpoint(str(url))
    except ValueError as exc:
        raise _Bad(LineError(number, "invalid_url", str(exc), custom_id)) from exc
    if report.endpoint is None:
        report.endpoint = where
    elif where.protocol is not report.endpoint.protocol:
        raise _Bad(LineError(number, "endpoint_mismatch",
                             f"{url} is not the batch endpoint's protocol ({report.endpoint.protocol.value})",
                             custom_id))
    return where


def _request(number: int, custom_id: str, where: Endpoint, body: dict[str, Any]) -> BatchRequest | LineError:
    problem = _check_body(where.protocol, body)
    if problem:
        return LineError(number, "invalid_body", problem, custom_id)
    return BatchRequest(number, custom_id, where.protocol, body, where.model_name)
