"""The dynamic batcher on its own: plain coroutines, no model, no torch."""

from __future__ import annotations

import asyncio
from collections.abc import Hashable
from typing import Any

import pytest

from serving.batching import DynamicBatcher


class Recorder:
    """A ``run_batch`` that records the batches it was given and doubles each item."""

    def __init__(self, *, gate: asyncio.Event | None = None) -> None:
        self.batches: list[list[Any]] = []
        self.gate = gate

    async def __call__(self, items: list[Any]) -> list[Any]:
        self.batches.append(list(items))
        if self.gate is not None:
            await self.gate.wait()
        return [item * 2 for item in items]


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout=10))


def test_concurrent_submissions_share_one_batch() -> None:
    async def scenario() -> tuple[list[int], list[list[int]], list[int]]:
        runner, sizes = Recorder(), []
        batcher = DynamicBatcher(runner, max_batch_size=8, max_wait=0.05, on_batch=sizes.append)
        results = await asyncio.gather(*(batcher.submit(i) for i in range(5)))
        await batcher.close()
        return results, runner.batches, sizes

    results, batches, sizes = run(scenario())
    assert results == [0, 2, 4, 6, 8]
    assert batches == [[0, 1, 2, 3, 4]]
    assert sizes == [5]


def test_a_full_batch_goes_out_without_waiting_for_the_window() -> None:
    async def scenario() -> list[list[int]]:
        runner = Recorder()
        batcher = DynamicBatcher(runner, max_batch_size=3, max_wait=60.0)  # the window would time the test out
        await asyncio.gather(*(batcher.submit(i) for i in range(6)))
        await batcher.close()
        return runner.batches

    assert run(scenario()) == [[0, 1, 2], [3, 4, 5]]


def test_rows_count_against_the_batch_size_and_an_oversized_request_runs_alone() -> None:
    async def scenario() -> list[list[str]]:
        runner = Recorder()
        batcher = DynamicBatcher(runner, max_batch_size=4, max_wait=0.05)
        await asyncio.gather(batcher.submit("a", rows=3), batcher.submit("b", rows=2),
                             batcher.submit("c", rows=9), batcher.submit("d", rows=1))
        await batcher.close()
        return runner.batches

    # a(3)+d(1) fill one batch; b(2) waits for the next; c(9) is bigger than the cap and runs alone
    batches = run(scenario())
    assert sorted(map(sorted, batches)) == [["a", "d"], ["b"], ["c"]]


def test_requests_with_different_keys_never_share_a_batch() -> None:
    async def scenario() -> list[list[int]]:
        runner = Recorder()
        batcher = DynamicBatcher(runner, max_batch_size=8, max_wait=0.05)
        keys: list[Hashable] = ["greedy", "sample", "greedy", "sample", "greedy"]
        await asyncio.gather(*(batcher.submit(i, key=k) for i, k in enumerate(keys)))
        await batcher.close()
        return runner.batches

    assert run(scenario()) == [[0, 2, 4], [1, 3]]


def test_max_batch_size_one_turns_batching_off() -> None:
    async def scenario() -> list[list[int]]:
        runner = Recorder()
        batcher = DynamicBatcher(runner, max_batch_size=1, max_wait=0.05)
        await asyncio.gather(*(batcher.submit(i) for i in range(4)))
        await batcher.close()
        return runner.batches

    assert run(scenario()) == [[0], [1], [2], [3]]


def test_requests_arriving_during_a_batch_form_the_next_one() -> None:
    async def scenario() -> tuple[list[list[int]], list[int]]:
        gate = asyncio.Event()
        runner, depths = Recorder(gate=gate), []
        batcher = DynamicBatcher(runner, max_batch_size=16, max_wait=0.0, on_queue_depth=depths.append)
        first = asyncio.ensure_future(batcher.submit(0))
        while not runner.batches:  # the first batch is running (held at the gate)
            await asyncio.sleep(0)
        later = [asyncio.ensure_future(batcher.submit(i)) for i in range(1, 6)]
        await asyncio.sleep(0)
        gate.set()
        await asyncio.gather(first, *later)
        await batcher.close()
        return runner.batches, depths

    batches, depths = run(scenario())
    assert batches == [[0], [1, 2, 3, 4, 5]]
    assert max(depths) == 5
    assert depths[-1] == 0


def test_an_error_result_fails_only_its_request_and_a_raising_batch_fails_all() -> None:
    async def scenario() -> list[Any]:
        async def run_batch(items: list[int]) -> list[Any]:
            if 99 in items:
                raise RuntimeError("model crashed")
            return [ValueError(f"bad {i}") if i % 2 else i for i in items]

        batcher = DynamicBatcher(run_batch, max_batch_size=8, max_wait=0.02)
        first = await asyncio.gather(*(batcher.submit(i) for i in range(3)), return_exceptions=True)
        second = await asyncio.gather(batcher.submit(99), batcher.submit(4), return_exceptions=True)
        await batcher.close()
        return [*first, *second]

    zero, one, two, crashed, neighbour = run(scenario())
    assert (zero, two) == (0, 2)
    assert isinstance(one, ValueError)
    assert isinstance(crashed, RuntimeError)
    assert isinstance(neighbour, RuntimeError)


def test_a_cancelled_request_is_dropped_from_its_batch() -> None:
    async def scenario() -> list[list[int]]:
        runner = Recorder()
        batcher = DynamicBatcher(runner, max_batch_size=8, max_wait=0.05)
        doomed = asyncio.ensure_future(batcher.submit(1))
        kept = asyncio.ensure_future(batcher.submit(2))
        await asyncio.sleep(0)
        doomed.cancel()
        assert await kept == 4
        await batcher.close()
        return runner.batches

    assert run(scenario()) == [[2]]


def test_closed_batcher_refuses_work() -> None:
    async def scenario() -> None:
        batcher = DynamicBatcher(Recorder(), max_batch_size=2, max_wait=0.0)
        await batcher.submit(1)
        await batcher.close()
        with pytest.raises(RuntimeError, match="closed"):
            await batcher.submit(2)

    run(scenario())


def test_invalid_policy_is_rejected() -> None:
    with pytest.raises(ValueError, match="max_batch_size"):
        DynamicBatcher(Recorder(), max_batch_size=0, max_wait=0.0)
    with pytest.raises(ValueError, match="max_wait"):
        DynamicBatcher(Recorder(), max_batch_size=1, max_wait=-1)
