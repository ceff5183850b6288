"""When the micro-batcher sends a group, and what goes in it (pure rules, time passed in)."""

from __future__ import annotations

import pytest

from workers.invoke.batching import MicroBatcher


def batcher(max_size: int = 4, max_wait_ms: float = 5.0, linger_ms: float = 0.0) -> MicroBatcher[str]:
    return MicroBatcher(max_size=max_size, max_wait_s=max_wait_ms / 1000, linger_s=linger_ms / 1000)


def test_a_lone_request_to_an_idle_target_is_sent_at_once() -> None:
    b = batcher()
    b.add("svc", "k", "r1", now=0.0)
    assert b.due("svc", now=0.0, idle=True) == ["k"]


def test_while_a_target_is_busy_requests_wait_for_company_until_the_window_closes() -> None:
    b = batcher()
    b.add("svc", "k", "r1", now=0.0)
    b.add("svc", "k", "r2", now=0.002)
    assert b.due("svc", now=0.004, idle=False) == []
    assert b.next_deadline("svc") == 0.005
    assert b.due("svc", now=0.005, idle=False) == ["k"]
    assert b.take("svc", "k").items == ["r1", "r2"]


def test_a_full_group_is_due_without_waiting_and_holds_at_most_max_size_rows() -> None:
    b = batcher(max_size=3)
    for i in range(7):
        b.add("svc", "k", f"r{i}", now=0.0)
    assert b.due("svc", now=0.0, idle=False) == ["k"]
    assert b.take("svc", "k").items == ["r0", "r1", "r2"]
    assert b.take("svc", "k").items == ["r3", "r4", "r5"]
    assert b.pending("svc") == 1


def test_rows_count_towards_the_size_and_an_oversized_request_still_travels_alone() -> None:
    b = batcher(max_size=4)
    b.add("svc", "k", "two", now=0.0, rows=2)
    b.add("svc", "k", "three", now=0.0, rows=3)
    b.add("svc", "k", "nine", now=0.0, rows=9)
    batches = list(b.take_all("svc"))
    assert [(x.items, x.rows) for x in batches] == [(["two"], 2), (["three"], 3), (["nine"], 9)]


def test_incompatible_requests_and_other_targets_never_share_a_batch() -> None:
    b = batcher()
    b.add("svc-a", "v2", "a1", now=0.0)
    b.add("svc-a", "v1", "a2", now=0.001)
    b.add("svc-b", "v2", "b1", now=0.0)
    assert b.due("svc-a", now=1.0, idle=False) == ["v2", "v1"]  # oldest first
    assert b.take("svc-a", "v2").items == ["a1"]
    assert b.take("svc-b", "v2").items == ["b1"]


def test_solo_requests_are_due_at_once_and_go_one_per_call() -> None:
    b = batcher()
    b.add("svc", "chat", "c1", now=0.0, solo=True)
    b.add("svc", "chat", "c2", now=0.0, solo=True)
    assert b.due("svc", now=0.0, idle=False) == ["chat"]
    assert b.take("svc", "chat").items == ["c1"]
    assert b.take("svc", "chat").items == ["c2"]
    assert b.lanes() == []


def test_sparse_requests_to_an_idle_target_are_sent_at_once_even_with_a_linger() -> None:
    b = batcher(linger_ms=2.0)
    for i, now in enumerate([0.0, 0.010, 0.020]):  # one request every 10 ms
        b.add("svc", "k", f"r{i}", now=now)
        assert b.due("svc", now=now, idle=True) == ["k"]
        assert b.take("svc", "k").items == [f"r{i}"]


def test_under_a_stream_of_requests_an_idle_target_lingers_for_company_then_sends() -> None:
    b = batcher(max_size=8, linger_ms=2.0)
    for i in range(5):  # a request every 0.5 ms: a stream
        b.add("svc", "k", f"warm{i}", now=i * 0.0005)
    list(b.take_all("svc"))
    assert b.streaming("svc")
    b.add("svc", "k", "r1", now=0.0025)
    assert b.due("svc", now=0.0025, idle=True) == []
    assert b.next_deadline("svc", idle=True) == pytest.approx(0.0045)
    assert b.next_deadline("svc", idle=False) == pytest.approx(0.0075)  # busy: the full window
    b.add("svc", "k", "r2", now=0.003)
    assert b.due("svc", now=0.0046, idle=True) == ["k"]
    assert b.take("svc", "k").items == ["r1", "r2"]


def test_a_full_group_does_not_linger_and_a_stream_that_stops_no_longer_delays() -> None:
    b = batcher(max_size=2, linger_ms=2.0)
    for i in range(4):
        b.add("svc", "k", f"r{i}", now=i * 0.0005)
    assert b.due("svc", now=0.0015, idle=True) == ["k"]  # full: at once
    list(b.take_all("svc"))
    for i in range(4):  # the stream thins out to one request every 50 ms
        b.add("svc", "k", f"late{i}", now=1.0 + i * 0.05)
        list(b.take_all("svc"))
    assert not b.streaming("svc")
    b.add("svc", "k", "alone", now=2.0)
    assert b.due("svc", now=2.0, idle=True) == ["k"]


def test_the_linger_never_exceeds_the_busy_window() -> None:
    b = batcher(max_wait_ms=1.0, linger_ms=3.0)
    assert b.linger_s == 0.001
