"""Retry spacing and the circuit breaker that keeps a dead target from stalling the rest."""

from __future__ import annotations

from workers.invoke.resilience import BreakerState, CircuitBreaker, backoff_delay


def test_retry_delays_grow_exponentially_with_jitter_and_stay_under_the_cap() -> None:
    lows = [backoff_delay(n, base_s=0.1, cap_s=1.0, rand=lambda: 0.0) for n in range(1, 7)]
    highs = [backoff_delay(n, base_s=0.1, cap_s=1.0, rand=lambda: 1.0) for n in range(1, 7)]
    assert highs == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert lows == [h / 2 for h in highs]


def test_the_circuit_opens_after_consecutive_failures_and_lets_one_probe_through_after_the_reset() -> None:
    now = [0.0]
    cb = CircuitBreaker(failures=3, reset_s=10.0, clock=lambda: now[0])
    cb.record_failure()
    cb.record_failure()
    cb.record_success()  # a success in between resets the count
    cb.record_failure()
    cb.record_failure()
    assert cb.allow()
    cb.record_failure()
    assert cb.state is BreakerState.open
    assert not cb.allow()
    assert cb.retry_in() == 10.0
    now[0] = 10.0
    assert cb.allow()          # the probe
    assert not cb.allow()      # nobody else while it runs
    cb.record_failure()        # probe failed: open again for a full period
    now[0] = 15.0
    assert not cb.allow()
    now[0] = 20.0
    assert cb.allow()
    cb.record_success()
    assert cb.state is BreakerState.closed
    assert cb.allow()
