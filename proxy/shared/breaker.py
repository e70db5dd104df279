"""The count breaker that guards Redis, and the states every breaker goes through.

Pure state over a clock passed in, so it is tested without sockets or sleeps. Every Redis
operation is the proxy's own (proxy/shared/redis.py), so a handful of failures is news: it
counts failures, where the upstream's breaker (proxy/upstream/breaker.py, `RateBreaker`)
judges a failure rate over a minimum volume.

    closed --(`failures` failures within `window` s)--> open
    open --(`reset_after` s)--> half-open: one probe call is allowed
    half-open --probe succeeds--> closed;  --probe fails--> open again
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from enum import Enum


class State(Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


# The members as module names, for code on the request path: Python 3.11's EnumType has a
# __getattr__, so every `State.CLOSED` runs its lookup hook (callgrind: ~900 instructions,
# against ~90 for a global).
CLOSED, OPEN, HALF_OPEN = State.CLOSED, State.OPEN, State.HALF_OPEN


class CircuitBreaker:
    def __init__(
        self,
        failures: int = 5,
        window: float = 10.0,
        reset_after: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.threshold = failures
        self.window = window
        self.reset_after = reset_after
        self._clock = clock
        self._failures: deque[float] = deque()
        self._opened_at = 0.0
        self._probing = False
        self.state: State = CLOSED
        self.opened = 0  # times it opened: a counter for metrics

    def allow(self) -> bool:
        """May a call go ahead now? In half-open state only one (the probe) may."""
        if self.state is CLOSED:
            return True
        if self.state is OPEN:
            if self._clock() - self._opened_at < self.reset_after:
                return False
            self.state = HALF_OPEN
            self._probing = False
        if self._probing:
            return False
        self._probing = True
        return True

    def retry_in(self) -> float:
        """Seconds until a probe may go (0 when calls are allowed): for Retry-After."""
        if self.state is not OPEN:
            return 0.0
        return max(0.0, self.reset_after - (self._clock() - self._opened_at))

    def abandon(self) -> None:
        """An allowed call ended with no verdict (cancelled, never sent): in half-open
        state the next caller may probe instead, or the circuit would never close."""
        self._probing = False

    def success(self) -> None:
        if self.state is not CLOSED:
            self.state = CLOSED
            self._failures.clear()
        self._probing = False

    def failure(self) -> None:
        now = self._clock()
        self._probing = False
        if self.state is HALF_OPEN:
            self._open(now)
            return
        self._failures.append(now)
        while self._failures and self._failures[0] <= now - self.window:
            self._failures.popleft()
        if len(self._failures) >= self.threshold:
            self._open(now)

    def _open(self, now: float) -> None:
        self.state = OPEN
        self.opened += 1
        self._opened_at = now
        self._failures.clear()
