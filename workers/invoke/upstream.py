"""The HTTP adapter of the invoke worker: pooled HTTP clients, retries, deadlines, circuit breakers.

One `aiohttp.ClientSession` (keep-alive pool) and one `CircuitBreaker` per target lane. A call is
retried with exponential backoff and jitter on connect errors, timeouts, 429 and 5xx (honouring
`Retry-After`), never past the request deadline. HTTP library exceptions stop here: callers get an
`UpstreamReply` or an `UpstreamFailure` carrying reason, message, status code and upstream body.

aiohttp rather than httpx on this path: every request of the worker crosses it, and on the
benchmark's instant endpoint an aiohttp call costs about a fifth of the CPU of an httpx call
(~0.1 ms against ~0.5 ms per call on one core, see docs/invoke.md).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from multidict import CIMultiDictProxy

from schemas.settings import InvokeSettings
from workers.invoke.metrics import BREAKER_OPEN, RETRIES
from workers.invoke.resilience import CircuitBreaker, backoff_delay

_MAX_ERROR_TEXT = 1000


@dataclass(frozen=True)
class UpstreamReply:
    status_code: int
    body: dict[str, Any]
    attempts: int
    seconds: float


class UpstreamFailure(Exception):
    """A call that did not produce a usable response (after retries where they make sense)."""

    def __init__(self, reason: str, message: str, *, status_code: int | None = None,
                 body: dict[str, Any] | None = None, retryable: bool = False, attempts: int = 0) -> None:
        super().__init__(message)
        self.reason = reason
        self.status_code = status_code
        self.body = body
        self.retryable = retryable
        self.attempts = attempts

    @property
    def message(self) -> str:
        return str(self)


@dataclass(frozen=True)
class _Response:
    """What is kept of an HTTP response once its body has been read (the connection is back in the pool)."""

    status_code: int
    headers: CIMultiDictProxy[str]
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")


def _error_body(response: _Response) -> tuple[dict[str, Any] | None, str]:
    """The upstream's error as JSON (if it is) and as short text for the message."""
    text = response.text[:_MAX_ERROR_TEXT]
    try:
        parsed = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return None, text
    if not isinstance(parsed, dict):
        return {"error": parsed}, text
    err = parsed.get("error")
    if isinstance(err, dict) and isinstance(err.get("message"), str):
        text = err["message"]
    elif isinstance(err, str):
        text = err
    return parsed, text[:_MAX_ERROR_TEXT]


def _retry_after(response: _Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


class Upstream:
    """POST JSON to model servers with pooling, retries and a breaker per lane.

    Args:
        settings: timeouts, attempts, backoff, concurrency and breaker thresholds.
        clock, sleep, rand: injected so retry timing is testable without waiting.
    """

    def __init__(
        self,
        settings: InvokeSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.settings = settings
        self._clock = clock
        self._sleep = sleep
        self._rand = rand
        self._clients: dict[str, aiohttp.ClientSession] = {}
        self._breakers: dict[str, CircuitBreaker] = {}

    def breaker(self, lane: str) -> CircuitBreaker:
        found = self._breakers.get(lane)
        if found is None:
            found = self._breakers[lane] = CircuitBreaker(
                failures=self.settings.breaker_failures, reset_s=self.settings.breaker_reset_s, clock=self._clock
            )
        return found

    def _client(self, lane: str) -> aiohttp.ClientSession:
        client = self._clients.get(lane)
        if client is None:
            slots = max(1, self.settings.concurrency_per_target)
            client = self._clients[lane] = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=slots * 2, limit_per_host=slots * 2),
                headers={"content-type": "application/json", "accept": "application/json"},
                cookie_jar=aiohttp.DummyCookieJar(),  # model servers set no cookies worth keeping
                trust_env=False,  # model servers are called directly, never through HTTP(S)_PROXY
            )
        return client

    async def _send(self, lane: str, url: str, content: bytes, timeout: float) -> _Response:
        async with self._client(lane).post(url, data=content, timeout=aiohttp.ClientTimeout(total=timeout),
                                           allow_redirects=False) as response:
            return _Response(response.status, response.headers, await response.read())

    async def aclose(self) -> None:
        clients, self._clients = self._clients, {}
        for client in clients.values():
            await client.close()

    async def post(self, lane: str, url: str, body: dict[str, Any], *, deadline: float | None,
                   on_attempt: Callable[[float], None] | None = None) -> UpstreamReply:
        """POST `body` to `url`; retry transient failures until attempts or the deadline run out.

        Args:
            lane: the target's lane (pool, breaker).
            deadline: monotonic instant after which no attempt starts and none may run.
            on_attempt: called with each attempt's duration (seconds), for metrics.

        Raises:
            UpstreamFailure: reasons `CircuitOpen`, `DeadlineExceeded`, `UpstreamUnreachable`,
                `UpstreamTimeout`, `UpstreamOverloaded` (429), `UpstreamError` (5xx),
                `UpstreamRejected` (other 4xx) or `InvalidResponse`.
        """
        content = orjson.dumps(body)
        breaker = self.breaker(lane)
        max_attempts = max(1, self.settings.max_attempts)
        started = self._clock()
        last: UpstreamFailure | None = None
        for attempt in range(1, max_attempts + 1):
            if not breaker.allow():
                BREAKER_OPEN.labels(lane).set(1)
                cause = f"; last error: {last.message}" if last else ""
                raise UpstreamFailure(
                    "CircuitOpen",
                    f"{lane} failed {breaker.failures} times in a row; not calling it for another "
                    f"{breaker.retry_in():.1f}s{cause}",
                    status_code=503, retryable=True, attempts=attempt - 1,
                )
            timeout = self.settings.timeout_s
            if deadline is not None:
                timeout = min(timeout, deadline - self._clock())
                if timeout <= 0:
                    raise self._deadline(last, attempt - 1)
            outcome, hint = await self._attempt(lane, url, content, timeout=timeout, breaker=breaker,
                                               on_attempt=on_attempt)
            if isinstance(outcome, UpstreamReply):
                return UpstreamReply(outcome.status_code, outcome.body, attempt, self._clock() - started)
            last = outcome
            if not last.retryable or attempt == max_attempts:
                break
            RETRIES.labels(last.reason).inc()
            delay = backoff_delay(attempt, base_s=self.settings.backoff_s, cap_s=self.settings.backoff_max_s,
                                  rand=self._rand)
            if hint is not None:
                delay = min(max(delay, hint), self.settings.backoff_max_s)
            if deadline is not None and self._clock() + delay >= deadline:
                raise self._deadline(last, attempt)
            await self._sleep(delay)
        assert last is not None
        last.attempts = attempt
        if last.retryable:
            last.args = (f"{last.message} (after {attempt} attempts)",)
        raise last

    async def _attempt(
        self, lane: str, url: str, content: bytes, *, timeout: float, breaker: CircuitBreaker,
        on_attempt: Callable[[float], None] | None,
    ) -> tuple[UpstreamReply | UpstreamFailure, float | None]:
        """One HTTP attempt: the reply, or the failure and any `Retry-After` hint."""
        t0 = self._clock()
        try:
            response = await self._send(lane, url, content, timeout)
        except TimeoutError as exc:  # aiohttp's timeouts are TimeoutError subclasses
            breaker.record_failure()
            return UpstreamFailure("UpstreamTimeout", f"no answer from {url} within {timeout:.3g}s "
                                   f"({type(exc).__name__})", status_code=504, retryable=True), None
        except (aiohttp.ClientError, OSError) as exc:
            breaker.record_failure()
            return UpstreamFailure("UpstreamUnreachable", f"cannot reach {url}: {type(exc).__name__}: {exc}",
                                   status_code=502, retryable=True), None
        if on_attempt is not None:
            on_attempt(self._clock() - t0)
        if response.status_code >= 400:
            failure = self._http_failure(url, response, breaker)
            hint = _retry_after(response) if response.status_code in (429, 503) else None
            return failure, hint
        breaker.record_success()
        BREAKER_OPEN.labels(lane).set(0)
        try:
            parsed = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            parsed = None
        if not isinstance(parsed, dict):
            return UpstreamFailure("InvalidResponse", f"{url} answered {response.status_code} with something "
                                   f"other than a JSON object: {response.text[:200]!r}", status_code=502), None
        return UpstreamReply(response.status_code, parsed, 1, self._clock() - t0), None

    @staticmethod
    def _http_failure(url: str, response: _Response, breaker: CircuitBreaker) -> UpstreamFailure:
        code = response.status_code
        body, text = _error_body(response)
        if code == 429:
            breaker.record_success()  # overloaded, not dead: back off without opening the circuit
            return UpstreamFailure("UpstreamOverloaded", f"{url} answered 429: {text}", status_code=code,
                                   body=body, retryable=True)
        if code >= 500:
            breaker.record_failure()
            return UpstreamFailure("UpstreamError", f"{url} answered {code}: {text}", status_code=code,
                                   body=body, retryable=True)
        breaker.record_success()
        return UpstreamFailure("UpstreamRejected", f"{url} answered {code}: {text}", status_code=code, body=body)

    @staticmethod
    def _deadline(last: UpstreamFailure | None, attempts: int) -> UpstreamFailure:
        cause = f"; last error: {last.message}" if last else ""
        return UpstreamFailure("DeadlineExceeded", f"the request's deadline passed{cause}", status_code=504,
                               body=last.body if last else None, attempts=attempts)
