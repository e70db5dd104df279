"""Adaptive concurrency: an in-flight limit that follows the upstream's latency. Pure.

A gradient limiter after Netflix's concurrency-limits `Gradient2Limit`, with the slow
start of Envoy's adaptive concurrency filter (which measures the no-load latency first):

- Latencies (send to response head, successful exchanges and timeouts) are averaged over a
  window of `window` seconds: one measurement, one update.
- The *baseline* estimates the latency of an unloaded upstream. It is seeded by the
  first window, which runs at `min_limit`; a lower measurement pulls it halfway down at
  once (noise only ever adds latency, and the very first requests pay for connecting),
  a higher one moves it up slowly (a moving average with time constant
  `BASELINE_SECONDS`).
- gradient = clamp(tolerance * baseline / measured, 0.5, 1): 1 while the upstream is at
  most `tolerance` times slower than its baseline, less as requests pile up inside it.
- Slow start: until the first window with gradient < 1, the limit doubles each window.
  Then each window: target = limit * gradient + sqrt(limit) / 2 (a little headroom, so
  the limit probes upwards while latency holds); a rise is taken at once, a fall halfway.
  So the limit settles where the upstream's latency is about `tolerance` times its
  baseline, and grows back when it recovers.
- A window in which fewer than half the slots were used says nothing about more load:
  the limit does not grow (the "app-limited" rule).
- Because the baseline moves, a lasting change in the upstream (a slower release) becomes
  the new normal within a few minutes; under lasting overload it creeps up likewise (the
  price of not stopping traffic to re-measure it, as Envoy does).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

BASELINE_SECONDS = 60.0  # the baseline's moving average forgets with this time constant
_SHRINK_SMOOTHING = 0.5  # a lower target is approached halfway per window
_FALL = 0.5  # share of the way a lower measurement pulls the baseline down, per window
_MIN_GRADIENT = 0.5  # at most halve per window, whatever one noisy window says


class GradientLimit:
    def __init__(
        self,
        max_limit: int,
        min_limit: int = 1,
        tolerance: float = 1.5,
        window: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_limit = max_limit
        self.min_limit = min(min_limit, max_limit)
        self.tolerance = tolerance
        self.window = window
        self._clock = clock
        self._limit = float(self.min_limit)
        self.baseline: float | None = None  # seconds
        self.last_measured: float | None = None  # seconds, the last window's mean
        self.slow_start = True
        self._window_start: float | None = None
        self._sum = 0.0
        self._count = 0
        self._max_in_flight = 0

    @property
    def limit(self) -> int:
        return max(self.min_limit, min(self.max_limit, int(self._limit)))

    def sample(self, latency: float, in_flight: int) -> int:
        """One exchange's latency, with the in-flight count it saw; the limit after it."""
        now = self._clock()
        if self._window_start is None:
            self._window_start = now
        self._sum += latency
        self._count += 1
        self._max_in_flight = max(self._max_in_flight, in_flight)
        elapsed = now - self._window_start
        if elapsed >= self.window:
            self._update(self._sum / self._count, self._max_in_flight, elapsed)
            self._window_start = now
            self._sum, self._count, self._max_in_flight = 0.0, 0, 0
        return self.limit

    def _update(self, measured: float, max_in_flight: int, elapsed: float) -> None:
        self.last_measured = measured
        if self.baseline is None:
            self.baseline = measured
        elif measured < self.baseline:
            self.baseline += (measured - self.baseline) * _FALL
        else:
            self.baseline += (measured - self.baseline) * (
                1 - math.exp(-elapsed / BASELINE_SECONDS)
            )
        if measured <= 0:
            return
        gradient = max(_MIN_GRADIENT, min(1.0, self.tolerance * self.baseline / measured))
        limit = self._limit
        if gradient >= 1.0 and max_in_flight < limit / 2:
            return  # app-limited: no evidence the upstream takes more
        if self.slow_start:
            if gradient >= 1.0:
                self._limit = min(float(self.max_limit), limit * 2)
                return
            self.slow_start = False
        target = limit * gradient + math.sqrt(limit) / 2
        if target < limit:
            target = limit + (target - limit) * _SHRINK_SMOOTHING
        self._limit = max(float(self.min_limit), min(float(self.max_limit), target))
