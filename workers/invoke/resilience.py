"""Retry delays and the per-target circuit breaker (pure; the clock and randomness are injected).

The breaker exists so one dead service does not stall the others: after `failures` consecutive
failed calls to a target its circuit opens and requests for it fail at once (reason `CircuitOpen`,
retryable) for `reset_s`; then one probe call is let through, and its outcome closes the circuit
or opens it again.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from enum import StrEnum


def backoff_delay(attempt: int, *, base_s: float, cap_s: float, rand: Callable[[], float] = random.random) -> float:
    """Delay before retry number `attempt` (1 = first retry): exponential with "equal jitter".

    Half of `min(cap, base * 2**(attempt-1))` is fixed and half random, so retries of a batch that
    failed together spread out without collapsing to zero.

    Example:
        >>> backoff_delay(3, base_s=0.2, cap_s=5.0, rand=lambda: 1.0)
        0.8
    """
    ceiling: float = min(cap_s, base_s * float(2 ** max(0, attempt - 1)))
    return ceiling / 2 + rand() * ceiling / 2


class BreakerState(StrEnum):
    closed = "closed"
    open = "open"
    half_open = "half_open"


class CircuitBreaker:
    """Consecutive-failure circuit breaker for one target.

    Args:
        failures: consecutive failures that open the circuit.
        reset_s: how long it stays open before a probe call is allowed.
        clock: monotonic seconds.

    Example:
        >>> now = [0.0]
        >>> cb = CircuitBreaker(failures=2, reset_s=10, clock=lambda: now[0])
        >>> cb.record_failure(); cb.record_failure(); cb.allow()
        False
        >>> now[0] = 10.0; cb.allow(), cb.allow()
        (True, False)
    """

    def __init__(self, *, failures: int, reset_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.failures = max(1, failures)
        self.reset_s = reset_s
        self._clock = clock
        self._consecutive = 0
        self._opened_at: float | None = None
        self._probing = False

    @property
    def state(self) -> BreakerState:
        if self._opened_at is None:
            return BreakerState.closed
        if self._probing or self._clock() - self._opened_at >= self.reset_s:
            return BreakerState.half_open
        return BreakerState.open

    def allow(self) -> bool:
        """Whether a call may go out now (in half-open state, only the one probe)."""
        if self._opened_at is None:
            return True
        if self._probing or self._clock() - self._opened_at < self.reset_s:
            return False
        self._probing = True
        return True

    def retry_in(self) -> float:
        """Seconds until the circuit lets a probe through (0 when closed)."""
        if self._opened_at is None:
            return 0.0
        return max(0.0, self.reset_s - (self._clock() - self._opened_at))

    def record_success(self) -> None:
        self._consecutive = 0
        self._opened_at = None
        self._probing = False

    def record_failure(self) -> None:
        self._consecutive += 1
        if self._probing or self._consecutive >= self.failures:
            self._opened_at = self._clock()
            self._probing = False
