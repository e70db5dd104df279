"""Retry decisions, pure: the budget (no retry storms), the backoff, Retry-After.

The budget is Linkerd's and Envoy's remedy for retry storms: when an upstream fails, every
client request turning into 1 + `attempts` upstream requests multiplies its load exactly
when it can least take it. Retries are allowed while they stay under `ratio` of the
requests of the last `window` seconds, plus a floor of `min_per_second` so that a quiet
proxy still retries.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from math import floor

from proxy.http.dates import parse_http_date

BUDGET_WINDOW = 10.0  # seconds of traffic the budget looks at
_BUCKETS = 10


class RetryBudget:
    """Requests and retries counted in one-second buckets over a sliding window."""

    def __init__(
        self,
        ratio: float,
        min_per_second: float,
        window: float = BUDGET_WINDOW,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ratio = ratio
        self.min_per_second = min_per_second
        self.window = window
        self._width = window / _BUCKETS
        self._clock = clock
        self._requests = [0] * _BUCKETS
        self._retries = [0] * _BUCKETS
        self._epoch = 0  # index of the bucket last written, in bucket units since time 0
        self.denied = 0

    def _advance(self, now: float | None = None) -> int:
        now_bucket = floor((self._clock() if now is None else now) // self._width)
        if now_bucket <= self._epoch:  # the bucket last written (every request, as a rule)
            return self._epoch % _BUCKETS
        stale = min(_BUCKETS, now_bucket - self._epoch)
        for i in range(1, stale + 1):  # clear buckets the window moved past
            j = (self._epoch + i) % _BUCKETS
            self._requests[j] = self._retries[j] = 0
        self._epoch = max(self._epoch, now_bucket)
        return self._epoch % _BUCKETS

    def request(self, now: float | None = None) -> None:
        """A client request (not a retry) went upstream; `now`: the clock, when the caller
        has just read it (a read less per request)."""
        # _advance's common case written out (a call less per request); floor(), not int():
        # the same integer for half the cost (int() of a float is a type call).
        bucket = floor((self._clock() if now is None else now) // self._width)
        epoch = self._epoch
        i = epoch % _BUCKETS if bucket <= epoch else self._advance(now)
        self._requests[i] += 1

    def try_retry(self) -> bool:
        """May one more retry go now? If so it is counted."""
        i = self._advance()
        allowed = max(self.ratio * sum(self._requests), self.min_per_second * self.window)
        if sum(self._retries) + 1 > allowed:
            self.denied += 1
            return False
        self._retries[i] += 1
        return True


def backoff_delay(
    retry: int, base: float, cap: float, rand: Callable[[], float] = random.random
) -> float:
    """AWS's "full jitter": uniform in [0, min(cap, base * 2**retry)] for retry 0, 1, ...

    Spreading retries at random keeps clients that failed together from retrying together.
    """
    return rand() * min(cap, base * 2.0 ** min(retry, 32))


def retry_after_seconds(value: str | None, now: float) -> float | None:
    """RFC 9110 §10.2.3: delay-seconds or an HTTP-date; None when absent or invalid."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    when = parse_http_date(value)
    return None if when is None else max(0.0, when - now)
