"""The micro-batcher: pending requests grouped per target ("lane") and compatibility key.

Pure logic with the time passed in, so the rules are tested without I/O or real waiting. The
invoke service owns the clock and the concurrency of each lane; this module only answers
"which requests go together" and "is this group due".

A group is due when any of these holds:

* it is full (`max_size` rows), or it is a solo group (requests that are never combined);
* the lane is idle (nothing in flight for that target): at low load a request is sent at once
  instead of waiting for company that is not coming. While requests for the lane arrive more
  often than once per `linger_s` (a moving average of the gaps), an idle lane lingers up to
  `linger_s` for company first: under a stream of requests to a fast server, calls of one or
  two requests would otherwise spend per call what a batch spends once;
* its oldest request has waited `max_wait_s`.

While every call slot of a lane is busy nothing is sent, so groups grow towards `max_size`
under load: batches get larger exactly when the server is the bottleneck.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Iterator
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")

#: Weight of the newest gap in the moving average of the time between two requests of a lane.
_GAP_WEIGHT = 0.2
#: Lanes whose arrivals are remembered while nothing of theirs waits, at most.
_MAX_IDLE_LANES = 4096


@dataclass(frozen=True)
class Batch(Generic[T]):
    """Requests sent upstream together, in arrival order."""

    lane: Hashable
    key: Hashable
    items: list[T]
    rows: int


@dataclass
class _Group(Generic[T]):
    solo: bool
    pending: deque[tuple[T, int, float]] = field(default_factory=deque)  # (item, rows, arrived)
    rows: int = 0

    @property
    def oldest(self) -> float:
        return self.pending[0][2]


@dataclass
class _Arrivals:
    """When a lane's latest request came, and the moving average of the gaps between requests."""

    last: float
    gap: float | None = None


class MicroBatcher(Generic[T]):
    """Group requests by (lane, key); hand out due groups of at most `max_size` rows.

    Args:
        max_size: rows per batch (an item with more rows than this still travels, alone).
        max_wait_s: longest a request waits for company while its lane is busy.
        linger_s: longest a request waits for company on an idle lane while requests stream in
            (0: an idle lane always sends at once).

    Example:
        >>> b = MicroBatcher[str](max_size=2, max_wait_s=0.005)
        >>> b.add("svc", "k", "r1", now=0.0); b.add("svc", "k", "r2", now=0.001)
        >>> b.due("svc", now=0.001, idle=False)
        ['k']
        >>> b.take("svc", "k").items
        ['r1', 'r2']
    """

    def __init__(self, *, max_size: int, max_wait_s: float, linger_s: float = 0.0) -> None:
        if max_size < 1:
            raise ValueError("max_size must be at least 1")
        self.max_size = max_size
        self.max_wait_s = max_wait_s
        self.linger_s = min(linger_s, max_wait_s)
        self._lanes: dict[Hashable, dict[Hashable, _Group[T]]] = {}
        self._arrivals: dict[Hashable, _Arrivals] = {}

    def add(self, lane: Hashable, key: Hashable, item: T, *, now: float, rows: int = 1, solo: bool = False) -> None:
        """Queue `item` (worth `rows` rows) in its group; solo groups are never combined."""
        groups = self._lanes.setdefault(lane, {})
        group = groups.get(key)
        if group is None:
            group = groups[key] = _Group(solo=solo)
        group.pending.append((item, rows, now))
        group.rows += rows
        arrivals = self._arrivals.get(lane)
        if arrivals is None:
            if len(self._arrivals) >= _MAX_IDLE_LANES:  # many one-off targets: keep only the busy ones
                self._arrivals = {k: v for k, v in self._arrivals.items() if k in self._lanes}
            self._arrivals[lane] = _Arrivals(now)
        else:
            gap = max(0.0, now - arrivals.last)
            arrivals.gap = gap if arrivals.gap is None else arrivals.gap + _GAP_WEIGHT * (gap - arrivals.gap)
            arrivals.last = now

    def streaming(self, lane: Hashable) -> bool:
        """Whether the lane's requests arrive, on average, more often than once per `linger_s`."""
        arrivals = self._arrivals.get(lane)
        return arrivals is not None and arrivals.gap is not None and arrivals.gap < self.linger_s

    def _wait(self, lane: Hashable, idle: bool) -> float:
        """How long the lane's oldest request may wait for company now."""
        if not idle:
            return self.max_wait_s
        return self.linger_s if self.streaming(lane) else 0.0

    def due(self, lane: Hashable, *, now: float, idle: bool) -> list[Hashable]:
        """Keys of the lane's groups that should be sent now, oldest request first."""
        groups = self._lanes.get(lane, {})
        wait = self._wait(lane, idle)
        ready = [k for k, g in groups.items()
                 if g.solo or g.rows >= self.max_size or now - g.oldest >= wait]
        return sorted(ready, key=lambda k: groups[k].oldest)

    def take(self, lane: Hashable, key: Hashable) -> Batch[T]:
        """Remove and return the next batch of a group: one item if solo, else up to `max_size` rows."""
        groups = self._lanes[lane]
        group = groups[key]
        items: list[T] = []
        rows = 0
        while group.pending:
            item, n, _ = group.pending[0]
            if items and (group.solo or rows + n > self.max_size):
                break
            group.pending.popleft()
            items.append(item)
            rows += n
        group.rows -= rows
        if not group.pending:
            del groups[key]
            if not groups:
                del self._lanes[lane]
        return Batch(lane, key, items, rows)

    def take_all(self, lane: Hashable) -> Iterator[Batch[T]]:
        """Empty a lane (shutdown, or a target that must fail fast), batch by batch."""
        while lane in self._lanes:
            key = next(iter(self._lanes[lane]))
            yield self.take(lane, key)

    def next_deadline(self, lane: Hashable, *, idle: bool = False) -> float | None:
        """When the lane's oldest waiting group is due by waiting (None if nothing waits)."""
        groups = self._lanes.get(lane)
        if not groups:
            return None
        return min(g.oldest for g in groups.values()) + self._wait(lane, idle)

    def lanes(self) -> list[Hashable]:
        return list(self._lanes)

    def pending(self, lane: Hashable | None = None) -> int:
        """Number of waiting requests (in one lane, or in all)."""
        lanes = [lane] if lane is not None else list(self._lanes)
        return sum(len(g.pending) for ln in lanes for g in self._lanes.get(ln, {}).values())
