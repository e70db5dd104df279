"""What protects one upstream origin: its queue and limit, its breaker, its retry budget,
and, as a target of an upstream with several, whether it is out of their balancing.

One per origin (scheme://host:port) and process, built at start-up. It admits attempts
(or refuses them at once with a classified 503), takes each attempt's verdict, and keeps
the figures health and metrics show. The HTTP exchange itself is proxy/upstream/client.py's.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from proxy.config.upstream import Upstream
from proxy.http.errors import UpstreamError
from proxy.shared.breaker import CLOSED, HALF_OPEN, OPEN, State
from proxy.upstream.adaptive import GradientLimit
from proxy.upstream.breaker import RateBreaker
from proxy.upstream.ejection import Checked, Outlier
from proxy.upstream.gate import Gate, QueueFull, QueueTimeout
from proxy.upstream.retry import RetryBudget

log = logging.getLogger("cacheproxy.upstream")

# What a refused request suggests to its client: a full queue usually drains in seconds.
BUSY_RETRY_AFTER = 1.0


@dataclass(frozen=True, slots=True)
class OriginStats:
    """One origin's figures, for health, metrics and /performance/connections."""

    name: str  # the route (or "default") that first names this origin
    origin: str  # scheme://host:port, never a password
    in_flight: int
    limit: int  # the in-flight limit now (moves with `adaptive`)
    max_connections: int
    adaptive: bool
    queued: int
    max_queue: int
    oldest_wait: float  # seconds the first request in the queue has waited
    admitted: int
    queue_waits: int  # admitted after waiting
    queue_wait_seconds: float  # their total wait
    queue_full: int  # 503 at once: the queue was full
    queue_timeouts: int  # 503 after queue_timeout
    requests: int  # client requests sent (retries not counted)
    retries: int
    retries_denied: int  # a retry the budget refused
    failures: int  # attempts that failed (connection, timeout, a failure status)
    circuit: str  # closed | open | half-open | disabled
    circuit_opened: int
    circuit_retry_in: float  # seconds until the next probe while open
    # What the breaker judges by: attempts and failures in its window now, their ratio.
    window_requests: int
    window_failures: int
    failure_rate: float | None  # None: no request in the window
    latency_baseline: float | None  # adaptive: the upstream's unloaded latency, seconds
    latency_measured: float | None  # adaptive: the last window's mean latency, seconds
    # As a target of an upstream with several (None: a lone target, never out):
    ejected: bool | None  # out of the balancing after failures in a row
    ejected_for: float  # seconds until it is back in
    ejections: int
    health_check: str | None  # up | down; None: not checked


class OriginGuard:
    def __init__(
        self,
        name: str,
        origin: str,
        config: Upstream,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.origin = origin
        self._clock = clock
        pool, adaptive, cb, retries = (
            config.pool,
            config.pool.adaptive,
            config.circuit_breaker,
            config.retries,
        )
        self.max_connections = pool.max_connections
        self.limiter: GradientLimit | None = None
        if adaptive.enabled:
            self.limiter = GradientLimit(
                pool.max_connections,
                adaptive.min_limit,
                adaptive.tolerance,
                adaptive.window,
                clock,
            )
        initial = self.limiter.limit if self.limiter else pool.max_connections
        self.gate = Gate(initial, pool.max_queue, clock)
        self.breaker: RateBreaker | None = None
        # What counts as a failure, for the breaker and ejection alike.
        self.failure_statuses: frozenset[int] = frozenset(cb.on_status)
        if cb.enabled:
            self.breaker = RateBreaker(
                cb.failure_rate,
                cb.min_requests,
                cb.window,
                cb.reset_after,
                cb.probes,
                cb.consecutive_failures,
                clock,
            )
        self.budget = RetryBudget(retries.budget, retries.min_per_second, clock=clock)
        self.requests = 0
        self.retries = 0
        self.failures = 0
        # Set when a group of several targets holds this one (UpstreamClient.bind, the checks).
        self.outlier: Outlier | None = None
        self.checked: Checked | None = None

    def available(self, now: float) -> bool:
        """Whether the balancer may pick it: not ejected, not failing its checks, and not
        behind an open circuit that would refuse it now."""
        outlier, checked, breaker = self.outlier, self.checked, self.breaker
        if outlier is not None and now < outlier.out_until:
            return False
        if checked is not None and not checked.up:
            return False
        return breaker is None or breaker.state is not OPEN or breaker.retry_in() <= 0

    def admit_now(self) -> bool:
        """A slot at once, when the circuit is closed and one is free: what `admit` would
        give then (no probe), without a coroutine. False: call `admit`."""
        breaker = self.breaker
        if breaker is not None and breaker.state is not CLOSED:
            return False
        return self.gate.try_acquire()

    async def admit(self, wait: float, background: bool, endpoint: str) -> bool:
        """A slot for one attempt at `endpoint`, waiting at most `wait` s; True if it is one
        of the breaker's probes.

        Raises UpstreamError (503) at once when the circuit is open or the queue full, or
        after `wait` seconds in the queue. A background request (no client waits on it:
        a refresh, warming) never queues and never probes: it yields to client traffic.
        """
        probe = False
        breaker = self.breaker
        if breaker is not None:
            if background and breaker.state is not CLOSED:
                raise self._circuit_open()
            before = breaker.state
            allowed = breaker.allow(endpoint)
            if breaker.state is not before:
                self._log_transition(breaker, before)
            if not allowed:
                raise self._circuit_open()
            probe = breaker.state is HALF_OPEN
        try:
            if background:
                if not self.gate.try_acquire():
                    raise UpstreamError(
                        503, "upstream_busy", "The upstream API is busy", BUSY_RETRY_AFTER
                    )
            else:
                await self.gate.acquire(wait)
        except QueueFull:
            self.abandon(endpoint, probe)
            raise UpstreamError(
                503,
                "upstream_busy",
                f"The upstream API is busy: its queue is full ({self.gate.queued} waiting)",
                BUSY_RETRY_AFTER,
            ) from None
        except QueueTimeout:
            self.abandon(endpoint, probe)
            raise UpstreamError(
                503,
                "upstream_busy",
                f"The upstream API is busy: no connection came free within {wait:.3g} s",
                BUSY_RETRY_AFTER,
            ) from None
        except BaseException:
            self.abandon(endpoint, probe)
            raise
        return probe

    def _circuit_open(self) -> UpstreamError:
        assert self.breaker is not None
        wait = self.breaker.retry_in()
        paused = f"paused for {math.ceil(wait)} s" if wait > 0 else "paused while a few are tried"
        return UpstreamError(
            503,
            "upstream_unavailable",
            f"The upstream API is failing; requests to it are {paused}",
            retry_after=wait,
            circuit_open=True,
        )

    def verdict(
        self,
        endpoint: str,
        probe: bool,
        failed: bool,
        latency: float | None,
        now: float | None = None,
    ) -> None:
        """How an attempt at `endpoint` went (its slot still held); `latency` None: not a
        sample. `now`: the clock's time, when the caller has just read it."""
        if failed:
            self.failures += 1
        breaker = self.breaker
        if breaker is not None:
            before = breaker.state
            breaker.record(endpoint, failed, probe, now)
            if breaker.state is not before:
                self._log_transition(breaker, before)
        outlier = self.outlier
        if outlier is not None:
            on_return = outlier.probation
            if outlier.record(failed):
                log.warning(
                    "upstream %s: left out of the balancing for %.3g s: %s",
                    self.name,
                    outlier.out_until - self._clock(),
                    "it failed again on its return"
                    if on_return
                    else f"{outlier.consecutive} failures in a row",
                )
        if self.limiter is not None and latency is not None:
            self.gate.limit = self.limiter.sample(latency, self.gate.in_flight)

    def _log_transition(self, breaker: RateBreaker, before: State) -> None:
        if breaker.state is not OPEN:
            log.warning("upstream %s: circuit %s", self.name, breaker.state.value)
        elif before is HALF_OPEN:
            log.warning(
                "upstream %s: circuit open again: no probe succeeded; nothing is sent for %g s",
                self.name,
                breaker.reset_after,
            )
        else:
            requests, failures = breaker.last_opened
            log.warning(
                "upstream %s: circuit open: %d of %d requests failed within %g s; "
                "nothing is sent for %g s",
                self.name,
                failures,
                requests,
                breaker.window,
                breaker.reset_after,
            )

    def abandon(self, endpoint: str, probe: bool) -> None:
        """An admitted attempt ended with no verdict (its client went, say)."""
        if self.breaker is not None:
            self.breaker.abandon(endpoint, probe)

    def release(self) -> None:
        self.gate.release()

    def stats(self) -> OriginStats:
        gate, limiter, breaker = self.gate, self.limiter, self.breaker
        outlier, checked = self.outlier, self.checked
        now = self._clock()
        g = gate.stats
        seen = breaker.seen() if breaker is not None else (0, 0)
        return OriginStats(
            name=self.name,
            origin=self.origin,
            in_flight=gate.in_flight,
            limit=gate.limit,
            max_connections=self.max_connections,
            adaptive=limiter is not None,
            queued=gate.queued,
            max_queue=gate.max_queue,
            oldest_wait=gate.oldest_wait(),
            admitted=g.admitted,
            queue_waits=g.waited,
            queue_wait_seconds=g.wait_seconds,
            queue_full=g.queue_full,
            queue_timeouts=g.queue_timeouts,
            requests=self.requests,
            retries=self.retries,
            retries_denied=self.budget.denied,
            failures=self.failures,
            circuit=breaker.state.value if breaker is not None else "disabled",
            circuit_opened=breaker.opened if breaker is not None else 0,
            circuit_retry_in=breaker.retry_in() if breaker is not None else 0.0,
            window_requests=seen[0],
            window_failures=seen[1],
            failure_rate=round(seen[1] / seen[0], 4) if seen[0] else None,
            latency_baseline=limiter.baseline if limiter is not None else None,
            latency_measured=limiter.last_measured if limiter is not None else None,
            ejected=outlier.out(now) if outlier is not None else None,
            ejected_for=round(outlier.out_for(now), 3) if outlier is not None else 0.0,
            ejections=outlier.ejections if outlier is not None else 0,
            health_check=None if checked is None else "up" if checked.up else "down",
        )
