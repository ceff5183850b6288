"""The micro-batcher: pending requests grouped per target ("lane") and compatibility key.

Pure logic with the time passed in, so the rules are tested without I/O or real waiting. The
invoke service owns the clock and the concurrency of each lane; this module only answers
"which requests go together" and "is this group due".

A group is due when any of these holds:

* it is full (`max_size` rows), or it is a solo group (requests that are never combined);
* the lane is idle (nothing in flight for that target): at low load a request is sent at once
  instead of waiting for company that is not coming;
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


class MicroBatcher(Generic[T]):
    """Group requests by (lane, key); hand out due groups of at most `max_size` rows.

    Args:
        max_size: rows per batch (an item with more rows than this still travels, alone).
        max_wait_s: longest a request waits for company while its lane has a free slot.

    Example:
        >>> b = MicroBatcher[str](max_size=2, max_wait_s=0.005)
        >>> b.add("svc", "k", "r1", now=0.0); b.add("svc", "k", "r2", now=0.001)
        >>> b.due("svc", now=0.001, idle=False)
        ['k']
        >>> b.take("svc", "k").items
        ['r1', 'r2']
    """

    def __init__(self, *, max_size: int, max_wait_s: float) -> None:
        if max_size < 1:
            raise ValueError("max_size must be at least 1")
        self.max_size = max_size
        self.max_wait_s = max_wait_s
        self._lanes: dict[Hashable, dict[Hashable, _Group[T]]] = {}

    def add(self, lane: Hashable, key: Hashable, item: T, *, now: float, rows: int = 1, solo: bool = False) -> None:
        """Queue `item` (worth `rows` rows) in its group; solo groups are never combined."""
        groups = self._lanes.setdefault(lane, {})
        group = groups.get(key)
        if group is None:
            group = groups[key] = _Group(solo=solo)
        group.pending.append((item, rows, now))
        group.rows += rows

    def _ready(self, group: _Group[T], *, now: float, idle: bool) -> bool:
        if not group.pending:
            return False
        return group.solo or idle or group.rows >= self.max_size or now - group.oldest >= self.max_wait_s

    def due(self, lane: Hashable, *, now: float, idle: bool) -> list[Hashable]:
        """Keys of the lane's groups that should be sent now, oldest request first."""
        groups = self._lanes.get(lane, {})
        ready = [k for k, g in groups.items() if self._ready(g, now=now, idle=idle)]
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

    def next_deadline(self, lane: Hashable) -> float | None:
        """When the lane's oldest waiting group reaches `max_wait_s` (None if nothing waits)."""
        groups = self._lanes.get(lane)
        if not groups:
            return None
        return min(g.oldest for g in groups.values()) + self.max_wait_s

    def lanes(self) -> list[Hashable]:
        return list(self._lanes)

    def pending(self, lane: Hashable | None = None) -> int:
        """Number of waiting requests (in one lane, or in all)."""
        lanes = [lane] if lane is not None else list(self._lanes)
        return sum(len(g.pending) for ln in lanes for g in self._lanes.get(ln, {}).values())
