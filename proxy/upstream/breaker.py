"""The upstream's circuit breaker: stop calling a failing origin, probe it now and then.

Pure state over a clock passed in, so it is tested without sockets or sleeps. (Redis has its
own, simpler breaker that counts failures: proxy/shared/breaker.py, with the `State` both use.)

`RateBreaker` guards an upstream origin (proxy/upstream/guard.py), whose traffic is what
clients choose to send: counting failures would let a few requests to one broken endpoint
close the origin for everyone. It opens on a failure rate over a minimum volume, as
Hystrix and Resilience4j do, and only when the origin as a whole fails: the rate must
hold without the endpoint (method and path) with the most failures, as Envoy's outlier
detection takes out one failing host, never the cluster, while the others respond.

    closed --(in the last `window` s: at least `min_requests` requests, at least
              `failure_rate` of them failed, and as many without the worst endpoint;
              or `consecutive` failures in a row, if set)--> open
    open --(`reset_after` s)--> half-open: up to `probes` requests, one per endpoint
    half-open --a probe succeeds--> closed
              --the probes of `probes` endpoints (fewer if the window had fewer) failed,
                or `reset_after` s passed without a success--> open again
"""

from __future__ import annotations

import time
from collections.abc import Callable
from math import floor

from proxy.shared.breaker import CLOSED, HALF_OPEN, OPEN, State

# The window is this many buckets of window/_BUCKETS seconds each (1 s for the default 10 s).
_BUCKETS = 10
# Endpoints counted apart, per origin: at most this many that failed in the window, and as
# many others (the most recently asked for), so that one that starts failing brings its
# recent successes along. Past the first bound, new failing ones count only for the origin.
MAX_ENDPOINTS = 256


class _Window:
    """Requests and failures in the last _BUCKETS buckets, as running totals: O(1) a verdict."""

    __slots__ = ("_epoch", "_failures", "_requests", "failures", "requests")

    def __init__(self) -> None:
        self._requests = [0] * _BUCKETS
        self._failures = [0] * _BUCKETS
        self._epoch = 0  # the bucket the totals are up to, in buckets since time 0
        self.requests = 0
        self.failures = 0

    def at(self, bucket: int) -> _Window:
        """Brought up to `bucket` (never back): what left the window leaves the totals."""
        epoch = self._epoch
        if bucket > epoch:
            for b in range(epoch + 1, min(bucket, epoch + _BUCKETS) + 1):
                i = b % _BUCKETS
                self.requests -= self._requests[i]
                self.failures -= self._failures[i]
                self._requests[i] = self._failures[i] = 0
            self._epoch = bucket
        return self

    def add(self, bucket: int, failed: bool) -> None:
        """One verdict, in `bucket` (brought up to it first) or, if that is behind, in the
        latest: one call per verdict, the window's own, on every upstream response."""
        if bucket > self._epoch:
            self.at(bucket)
        i = self._epoch % _BUCKETS
        self._requests[i] += 1
        self.requests += 1
        if failed:
            self._failures[i] += 1
            self.failures += 1


class RateBreaker:
    """One origin's breaker by failure rate; `endpoint` names what a request asked for."""

    def __init__(
        self,
        failure_rate: float = 0.5,
        min_requests: int = 20,
        window: float = 10.0,
        reset_after: float = 10.0,
        probes: int = 3,
        consecutive: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.failure_rate = failure_rate
        self.min_requests = min_requests
        self.window = window
        self.reset_after = reset_after
        self.probes = probes
        self.consecutive = consecutive
        self._width = window / _BUCKETS
        self._clock = clock
        self._all = _Window()
        self._failing: dict[str, _Window] = {}  # endpoints with a failure in the window
        self._others: dict[str, _Window] = {}  # the rest, least recently asked for first
        self._swept = -1  # the bucket of the last sweep of _failing
        self._worst: _Window | None = None  # the endpoint with most failures...
        self._worst_at = -1  # ...as of this bucket (within a bucket counts only grow)
        self.in_a_row = 0  # failures since the last success
        self.state: State = CLOSED
        self.opened = 0  # times it opened: a counter for metrics
        self.last_opened: tuple[int, int] = (0, 0)  # (requests, failures) that opened it
        self._opened_at = 0.0
        self._half_open_at = 0.0
        self._probed: set[str] = set()  # endpoints given a probe in this half-open spell
        self._failed_probes = 0
        self._needed = 1  # failed probes that open it again

    def _bucket(self) -> int:
        return floor(self._clock() // self._width)

    # --- admission ----------------------------------------------------------------------

    def allow(self, endpoint: str) -> bool:
        """May a request to `endpoint` go now? While half-open, True makes it a probe."""
        if self.state is CLOSED:
            return True
        now = self._clock()
        if self.state is OPEN:
            if now - self._opened_at < self.reset_after:
                return False
            self.state = HALF_OPEN
            self._half_open_at = now
            self._probed.clear()
            self._failed_probes = 0
        elif now - self._half_open_at >= self.reset_after:
            # The probes neither failed nor succeeded in time (a slow upstream, or one
            # endpoint's traffic only): rest again, then probe afresh.
            self._open(now)
            return False
        # One probe per endpoint: a client hammering one endpoint cannot take every probe
        # and keep the circuit open for the others.
        if endpoint in self._probed or len(self._probed) >= self.probes:
            return False
        self._probed.add(endpoint)
        return True

    def retry_in(self) -> float:
        """Seconds until probes may go (0 when calls are allowed): for Retry-After."""
        if self.state is not OPEN:
            return 0.0
        return max(0.0, self.reset_after - (self._clock() - self._opened_at))

    def abandon(self, endpoint: str, probe: bool) -> None:
        """An allowed call ended with no verdict (cancelled, never sent, its client went):
        a probe's endpoint may probe again."""
        if probe:
            self._probed.discard(endpoint)

    # --- verdicts -----------------------------------------------------------------------

    def record(
        self, endpoint: str, failed: bool, probe: bool = False, now: float | None = None
    ) -> None:
        """How a call to `endpoint` went (`probe`: allowed as one); `now`: the clock's time,
        when the caller has just read it (a read of the clock costs as much as the rest)."""
        state = self.state
        if state is not CLOSED:
            # A call sent before the circuit opened says nothing about the upstream now.
            if state is HALF_OPEN and probe and endpoint in self._probed:
                if not failed:
                    self._close()
                else:
                    self._failed_probes += 1
                    if self._failed_probes >= self._needed:
                        self._open(self._clock())
            return
        # floor(), not int(): the same integer for half the cost (int() of a float is a
        # type call).
        bucket = floor((self._clock() if now is None else now) // self._width)
        if not failed:
            # Every success of every request comes here: `_Window.add` and the endpoint's
            # lookup written out (three calls were about half of a miss's 7k in the breaker).
            total = self._all
            if bucket > total._epoch:
                total.at(bucket)
            total._requests[total._epoch % _BUCKETS] += 1
            total.requests += 1
            entry = self._failing.get(endpoint)
            if entry is None:
                others = self._others
                entry = others.pop(endpoint, None)
                if entry is None:
                    entry = _Window()
                    if len(others) >= MAX_ENDPOINTS:
                        del others[next(iter(others))]  # the least recently asked for
                others[endpoint] = entry
            if bucket > entry._epoch:
                entry.at(bucket)
            entry._requests[entry._epoch % _BUCKETS] += 1
            entry.requests += 1
            self.in_a_row = 0
            return
        self._all.add(bucket, True)
        entry = self._failing_endpoint(endpoint, bucket)
        if entry is not None:
            entry.add(bucket, True)
        self.in_a_row += 1
        worst = self._worst
        if entry is not None and self._worst_at == bucket:
            self._worst = entry if worst is None or entry.failures > worst.failures else worst
        consecutive = self.consecutive
        if (consecutive is not None and self.in_a_row >= consecutive) or self._origin_fails(bucket):
            self._open(self._clock())

    def _origin_fails(self, bucket: int) -> bool:
        """At least `failure_rate` of at least `min_requests` failed, with or without the
        endpoint that failed most: one endpoint failing while others respond is that
        endpoint's trouble (or one client's doing), not the origin's."""
        total, rate = self._all, self.failure_rate
        if total.requests < self.min_requests or total.failures < rate * total.requests:
            return False
        worst = self._worst_endpoint(bucket)
        if worst is None:
            return True
        rest = total.requests - worst.requests
        # Nothing else was asked for in the window: that endpoint's rate is the origin's.
        return rest == 0 or total.failures - worst.failures >= rate * rest

    def _worst_endpoint(self, bucket: int) -> _Window | None:
        """Found by a scan at most once a bucket; `record` keeps it up within the bucket."""
        if self._worst_at != bucket:
            counted = (w.at(bucket) for w in self._failing.values())
            self._worst = max(counted, key=lambda w: w.failures, default=None)
            self._worst_at = bucket
        return self._worst

    def _failing_endpoint(self, endpoint: str, bucket: int) -> _Window | None:
        """The window a failure at `endpoint` goes to, moved among the failing ones (not
        brought up to `bucket`: `add` does); None: no room there. A success's window is
        found in `record` itself."""
        entry = self._failing.get(endpoint)
        if entry is not None:
            return entry
        entry = self._others.pop(endpoint, None)
        if len(self._failing) >= MAX_ENDPOINTS and not self._sweep(bucket):
            return None
        if entry is None:
            entry = _Window()
        self._failing[endpoint] = entry
        return entry

    def _sweep(self, bucket: int) -> bool:
        """Room among the failing endpoints, dropping those whose failures left the window;
        at most once a bucket, so a flood of failing paths costs one scan a bucket."""
        if self._swept == bucket:
            return False
        self._swept = bucket
        self._worst_at = -1
        failing = {k: w for k, w in self._failing.items() if w.at(bucket).failures}
        self._failing = failing
        return len(failing) < MAX_ENDPOINTS

    def _open(self, now: float) -> None:
        if self.state is CLOSED:
            bucket = self._bucket()
            total = self._all.at(bucket)
            self.last_opened = (total.requests, total.failures)
            endpoints = (*self._failing.values(), *self._others.values())
            seen = sum(1 for w in endpoints if w.at(bucket).requests)
            self._needed = max(1, min(self.probes, seen))
            self._all = _Window()
            self._failing, self._others = {}, {}
            self._worst, self._worst_at = None, -1
        self.state = OPEN
        self.opened += 1
        self._opened_at = now
        self.in_a_row = 0

    def _close(self) -> None:
        self.state = CLOSED
        self.in_a_row = 0
        self._probed.clear()

    # --- figures ------------------------------------------------------------------------

    def seen(self) -> tuple[int, int]:
        """(requests, failures) in the window now: what the breaker judges by."""
        total = self._all.at(self._bucket())
        return total.requests, total.failures
