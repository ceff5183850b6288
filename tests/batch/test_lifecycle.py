"""The lifecycle rules of a batch, decided from its counts, its queue and the clock (no broker needed)."""

from __future__ import annotations

import pytest

from producers.batch.status import Step, next_step, status_of
from producers.batch.store import BatchRecord, BatchState, Counts
from schemas.types import InvokeProtocol

T0 = 1_700_000_000.0


def record(state: BatchState = BatchState.in_progress, **fields: object) -> BatchRecord:
    return BatchRecord(id="batch_x", state=state, service="s", endpoint="/v1/chat/completions",
                       protocol=InvokeProtocol.openai_chat, results_queue="q", total=10, created_at=T0,
                       in_progress_at=T0, expires_at=T0 + 3600, **fields)


def step(rec: BatchRecord, counts: Counts, depth: int = 0, now: float = T0 + 10) -> Step:
    return next_step(rec, counts, depth, now, cancel_grace_s=600)


def test_a_batch_with_requests_out_stays_in_progress() -> None:
    assert step(record(), Counts(total=10, sent=10, completed=4, open=6)) is Step.none


def test_a_batch_whose_results_all_arrived_is_finalized_then_completed() -> None:
    waiting = Counts(total=10, sent=10, completed=4, open=6)
    assert step(record(), waiting, depth=6) is Step.finalize
    assert step(record(BatchState.finalizing), waiting, depth=6) is Step.none
    done = Counts(total=10, sent=10, completed=8, failed=2)
    assert step(record(BatchState.finalizing), done) is Step.complete
    assert step(record(), done) is Step.complete


def test_a_batch_past_its_window_with_requests_unanswered_expires() -> None:
    counts = Counts(total=10, sent=5, pending=5, completed=5, open=5)
    assert step(record(), counts, now=T0 + 3599) is Step.none
    assert step(record(), counts, now=T0 + 3600) is Step.expire


def test_a_batch_whose_results_are_all_in_does_not_expire() -> None:
    assert step(record(), Counts(total=10, sent=10, completed=4, open=6), depth=6, now=T0 + 7200) is Step.finalize


def test_a_cancelling_batch_waits_for_the_results_of_requests_already_sent() -> None:
    cancelling = record(BatchState.cancelling, cancelling_at=T0 + 5)
    in_flight = Counts(total=10, sent=4, withdrawn=6, completed=2, open=2)
    assert step(cancelling, in_flight) is Step.none
    assert step(cancelling, Counts(total=10, sent=4, withdrawn=6, completed=4)) is Step.cancelled


def test_a_cancelling_batch_gives_up_on_lost_results_after_the_grace_period() -> None:
    cancelling = record(BatchState.cancelling, cancelling_at=T0)
    in_flight = Counts(total=10, sent=4, withdrawn=6, completed=2, open=2)
    assert step(cancelling, in_flight, now=T0 + 599) is Step.none
    assert step(cancelling, in_flight, now=T0 + 600) is Step.cancelled


@pytest.mark.parametrize("state", [BatchState.completed, BatchState.failed, BatchState.expired,
                                   BatchState.cancelled, BatchState.validating])
def test_finished_or_unstarted_batches_take_no_step(state: BatchState) -> None:
    assert step(record(state), Counts(total=10, pending=10, open=10), now=T0 + 7200) is Step.none


def test_status_counts_results_waiting_in_the_queue_as_done_and_estimates_the_rest() -> None:
    status = status_of(record(), Counts(total=10, sent=10, completed=3, failed=1, open=6), depth=2, now=T0 + 10)
    assert (status.done, status.pending, status.awaiting_collection) == (6, 4, 2)
    assert status.rate == pytest.approx(0.6)
    assert status.eta_s == pytest.approx(4 / 0.6)


def test_a_finished_batch_keeps_the_rate_it_ran_at() -> None:
    finished = record(BatchState.completed, completed_at=T0 + 20)
    status = status_of(finished, Counts(total=10, sent=10, completed=10), depth=0, now=T0 + 1000)
    assert (status.rate, status.eta_s, status.pending) == (0.5, 0.0, 0)
