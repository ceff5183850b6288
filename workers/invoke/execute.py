"""Run one micro-batch upstream and turn the outcome into one answer per request.

`execute` is the handler of the invoke worker: a plain async function with its dependencies
passed in. It merges the bodies (see `protocols`), makes one call, and splits the response. When
a combined call is refused as a whole with a client error (one malformed request among many), or
its response cannot be split, the requests are sent one by one so each gets its own verdict.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from schemas.types import InvokeProtocol
from workers.invoke import protocols
from workers.invoke.results import FailureInfo
from workers.invoke.upstream import Upstream, UpstreamFailure


@dataclass(frozen=True)
class Answer:
    """What one request gets: a response body, or a failure."""

    body: dict[str, Any] | None = None
    status_code: int = 200
    attempts: int = 0
    batch_size: int = 1
    failure: FailureInfo | None = None


def _failure(exc: UpstreamFailure) -> Answer:
    info = FailureInfo(exc.reason, exc.message, status_code=exc.status_code, body=exc.body,
                       retryable=exc.retryable, attempts=exc.attempts)
    return Answer(attempts=exc.attempts, failure=info)


def _refused_as_a_whole(exc: UpstreamFailure) -> bool:
    return exc.reason == "UpstreamRejected" and exc.status_code not in (401, 403, 404)


async def execute(
    protocol: InvokeProtocol,
    *,
    lane: str,
    url: str,
    bodies: Sequence[dict[str, Any]],
    deadlines: Sequence[float | None],
    upstream: Upstream,
    on_attempt: Callable[[float], None] | None = None,
) -> list[Answer]:
    """Call `url` once for the batch `bodies` and return one `Answer` per body, in order.

    Args:
        lane: the target's lane (pool, breaker, concurrency).
        deadlines: per request, monotonic; the call may run until the latest of them.
        on_attempt: receives each upstream attempt's duration, in seconds.
    """
    deadline = None if any(d is None for d in deadlines) else max(d for d in deadlines if d is not None)
    if len(bodies) == 1:
        return [await _single(lane, url, bodies[0], deadline, upstream=upstream, on_attempt=on_attempt)]
    try:
        reply = await upstream.post(lane, url, protocols.merge(protocol, bodies), deadline=deadline,
                                    on_attempt=on_attempt)
    except UpstreamFailure as exc:
        if not _refused_as_a_whole(exc):
            return [_failure(exc) for _ in bodies]
        return await _one_by_one(lane, url, bodies, deadlines, upstream=upstream, on_attempt=on_attempt)
    try:
        parts = protocols.split(protocol, reply.body, bodies)
    except protocols.SplitError:
        return await _one_by_one(lane, url, bodies, deadlines, upstream=upstream, on_attempt=on_attempt)
    return [Answer(body=part, status_code=reply.status_code, attempts=reply.attempts, batch_size=len(bodies))
            for part in parts]


async def _single(lane: str, url: str, body: dict[str, Any], deadline: float | None, *,
                  upstream: Upstream, on_attempt: Callable[[float], None] | None) -> Answer:
    try:
        reply = await upstream.post(lane, url, body, deadline=deadline, on_attempt=on_attempt)
    except UpstreamFailure as exc:
        return _failure(exc)
    return Answer(body=reply.body, status_code=reply.status_code, attempts=reply.attempts)


async def _one_by_one(lane: str, url: str, bodies: Sequence[dict[str, Any]], deadlines: Sequence[float | None], *,
                      upstream: Upstream, on_attempt: Callable[[float], None] | None) -> list[Answer]:
    limit = asyncio.Semaphore(max(1, upstream.settings.concurrency_per_target))

    async def one(body: dict[str, Any], deadline: float | None) -> Answer:
        async with limit:
            return await _single(lane, url, body, deadline, upstream=upstream, on_attempt=on_attempt)

    return list(await asyncio.gather(*(one(b, d) for b, d in zip(bodies, deadlines, strict=True))))
