"""The pooled connection to upstreams: one pool per process (http1.py), guarded per origin.

`send` is one client request's whole exchange up to the response head:

    target (balancer, leaving out targets that are out) -> circuit breaker -> FIFO queue
    for a slot (bounded) -> request -> verdict (breaker, ejection, adaptive limit) ->
    retry? (idempotent, budget, backoff with jitter, client's time left), on another target

A target is an origin: each has its own guard (queue, limit, breaker, ejection, figures).

The slot is held until the caller releases the response, so the bound counts requests
whose bodies are still streaming too. Only what the upstream did is a verdict: a request
whose client's body stalled or broke off, or whose client went, is abandoned instead.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from proxy.config.upstream import Upstream
from proxy.http.errors import ClientBodyError, UpstreamError
from proxy.upstream.connect import Connector
from proxy.upstream.ejection import Outlier, max_out
from proxy.upstream.guard import OriginGuard, OriginStats
from proxy.upstream.health_checks import HealthChecks
from proxy.upstream.http1 import (
    IDEMPOTENT,
    CertificateFailed,
    ConnectTimeout,
    ExchangeError,
    Interim,
    InvalidResponse,
    OriginKey,
    Pool,
    ReadTimeout,
    RequestBodyFailed,
    StreamedBody,
    TlsFailed,
    UpstreamResponse,
)
from proxy.upstream.retry import backoff_delay, retry_after_seconds
from proxy.upstream.targets import TargetGroup

__all__ = ["IDEMPOTENT", "UpstreamClient", "UpstreamError", "UpstreamResponse"]

log = logging.getLogger("cacheproxy.upstream")


@dataclass(frozen=True, slots=True)
class PoolStats:
    max_connections: int
    active: int  # lent to a request
    idle: int  # kept alive, waiting for one
    opened: int  # ever; every other request reused a connection


# Pool.request's arguments: method, origin key, target, fields, body, interim, length, upgrade.
_Request = tuple[
    str,
    OriginKey,
    str,
    Sequence[str],
    bytes | StreamedBody | None,
    Interim | None,
    int | None,
    bool,
]

# (route name, status or "error"/"timeout"/"aborted", seconds to the response head)
Observe = Callable[[str, int | str, float], None]


class UpstreamClient:
    def __init__(
        self,
        config: Upstream,
        origins: Mapping[str, str] | None = None,
        observe: Observe | None = None,
        clock: Callable[[], float] = time.monotonic,
        rand: Callable[[], float] = random.random,
    ) -> None:
        """`origins`: origin (scheme://host:port) -> the name its figures go by. `observe`
        is told of every request's outcome (the metrics)."""
        self.config = config
        self._pool: Pool | None = None
        self.observe = observe
        self._clock = clock
        self._rand = rand
        self._guards = {
            origin: OriginGuard(name, origin, config, clock)
            for origin, name in (origins or {}).items()
        }
        self._total = config.total_timeout
        self.checks = HealthChecks(config, rand)
        self._retry_statuses = frozenset(config.retries.on_status)

    async def start(self) -> None:
        self._pool = self._new_pool()
        self.checks.start(self._pool)

    def _new_pool(self) -> Pool:
        pool, timeouts = self.config.pool, self.config.timeouts
        return Pool(timeouts.connect, timeouts.read, pool.keepalive_timeout, self.connector())

    def connector(self) -> Connector:
        """How the pool opens connections: addresses, Happy Eyeballs, TLS (connect.py)."""
        return Connector(self.config.dns, self.config.tls)

    async def close(self) -> None:
        await self.checks.close()
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    def pool_stats(self) -> PoolStats:
        """What the pool holds now. `max_connections` is the bound of every origin together:
        each has its own."""
        bound = self.config.pool.max_connections * max(1, len(self._guards))
        if self._pool is None:
            return PoolStats(bound, 0, 0, 0)
        return PoolStats(bound, self._pool.active, self._pool.idle, self._pool.opened)

    def guard(self, origin: str) -> OriginGuard:
        guard = self._guards.get(origin)
        if guard is None:  # an origin no route named at start-up: guarded all the same
            guard = self._guards[origin] = OriginGuard(origin, origin, self.config, self._clock)
        return guard

    def bind(self, group: TargetGroup) -> list[OriginGuard]:
        """The guards of `group`'s targets, kept on it (done for each group at start-up and
        reload, else on its first request). Targets of a group of several are ejected when
        they keep failing, and checked if health checks are on; a lone target never is out:
        it gets every request either way."""
        guards = [self.guard(t.origin) for t in group.targets]
        if group.only is None:
            ejection = self.config.ejection
            for guard, target in zip(guards, group.targets, strict=True):
                host = target.host_line[len("Host: ") :] if target.host_line else group.host_header
                self.checks.watch(guard, target.key, host)
                if ejection.enabled and guard.outlier is None:
                    guard.outlier = Outlier(
                        ejection.consecutive_failures,
                        ejection.base_time,
                        ejection.max_time,
                        self._clock,
                    )
            group.max_out = max_out(len(guards), ejection.max_percent)
        group.guards = guards
        return guards

    def _choose(self, group: TargetGroup, guards: list[OriginGuard], key: str, tried: int) -> int:
        """The target for an attempt: by the balancer, among those in and not `tried` (a
        bit per index), or, when more than `max_out` are out, among all (panic mode)."""
        now = self._clock()
        n = len(guards)
        usable = [True] * n
        out = 0
        # A loop, not a comprehension and sum(): on every request of a group (in Python 3.11
        # a comprehension is a function made and called).
        for i, guard in enumerate(guards):
            if not guard.available(now):
                usable[i] = False
                out += 1
        if out > group.max_out:
            usable, out = [True] * n, 0
        if tried:
            usable = [u and not tried >> i & 1 for i, u in enumerate(usable)]
            if not any(usable):  # every one in was tried: one out, before one tried again
                usable = [not tried >> i & 1 for i in range(n)]
                if not any(usable):
                    usable = [True] * n
        elif out == n:
            usable = [True] * n
        assert group.balancer is not None

        def load(i: int) -> int:
            gate = guards[i].gate
            return gate.in_flight + gate.queued

        return group.balancer.pick(usable, key, load)

    def stats(self) -> list[OriginStats]:
        """Queue, limit, breaker and retry figures, one entry per upstream origin."""
        return [guard.stats() for guard in self._guards.values()]

    async def send(
        self,
        method: str,
        upstream: TargetGroup,
        target: str,
        fields: Sequence[str],
        body: bytes | StreamedBody | None = None,
        route: str = "",
        interim: Interim | None = None,
        content_length: int | None = None,
        background: bool = False,
        upgrade: bool = False,
    ) -> UpstreamResponse:
        """Send one request for `route`; the caller reads and releases the response.

        `upstream`: the targets it may go to; `target` and `fields` are the request target
        and header lines (see Pool.request), `fields[0]` the Host line of the group's first
        target (replaced by the target's own where it differs).
        `interim` hears of 1xx responses before the final one (for the client, not stored).
        `background`: no client waits on it (a background refresh, warming): it never
        queues, never probes an open circuit and is never retried. `upgrade`: `fields` ask
        to switch protocols, and a 101 is the final response (Pool.request); its slot is
        given back when it is released, as any response's.

        Retried (up to `retries.attempts` times) when idempotent, with no body or a
        buffered one (a streamed body cannot be replayed), and no client is waiting on
        it in the background: after a connection failure before any response, or a
        response in `retries.on_status`. A response that could not be retried is
        returned as it is. A retry goes to a target not tried yet, when there is one; so
        does a request an open circuit refused before anything was sent (not a retry).
        (One coroutine, not a wrapper around another: each frame is paid again on every
        resumption.)
        """
        # What the breaker tells apart: one endpoint failing while others respond is not
        # the origin failing (proxy/upstream/breaker.py).
        endpoint = f"{method} {target.partition('?')[0]}"
        observe = self.observe
        started = time.perf_counter()
        guards = upstream.guards or self.bind(upstream)
        chosen = upstream.only
        if chosen is not None:
            guard = guards[0]
            tried = 0
        else:
            i = self._choose(upstream, guards, target, 0)
            chosen, guard, tried = upstream.targets[i], guards[i], 1 << i
        lines = fields if chosen.host_line is None else [chosen.host_line, *fields[1:]]
        request = (method, chosen.key, target, lines, body, interim, content_length, upgrade)
        first = guard  # its budget pays for the retries
        buffered = body is None or isinstance(body, bytes)
        # An upload's head comes after its body, which takes what the client takes (the
        # listener bounds its silences): only the queue and read timeouts bound it.
        now = self._clock()
        deadline = now + self._total if buffered else math.inf
        replayable = not background and method in IDEMPOTENT and buffered
        guard.requests += 1
        guard.budget.request(now)
        retry = 0
        read: float | None = now  # the first attempt's clock is this read
        try:
            while True:
                try:
                    up = await self._attempt(guard, request, endpoint, deadline, background, read)
                except _Resendable as exc:
                    delay = self._retry_delay(first, retry, deadline) if replayable else None
                    if delay is None:
                        raise exc.error from exc.__cause__
                    detail = exc.error.detail
                    log.info("retrying %s %s in %.2f s: %s", method, target, delay, detail)
                except UpstreamError as exc:
                    # Refused by an open circuit, nothing sent: another target, at once.
                    if not exc.circuit_open or not tried or tried == (1 << len(guards)) - 1:
                        raise
                    delay = None
                else:
                    if not replayable or up.status not in self._retry_statuses:
                        break
                    asked = retry_after_seconds(up.headers.get("Retry-After"), time.time())
                    if (delay := self._retry_delay(first, retry, deadline, asked)) is None:
                        break
                    up.release()
                    status = up.status
                    log.info("retrying %s %s in %.2f s: status %d", method, target, delay, status)
                read = None  # a later attempt reads the clock itself
                if delay is not None:
                    first.retries += 1
                    retry += 1
                    await asyncio.sleep(delay)
                if tried:
                    i = self._choose(upstream, guards, target, tried)
                    chosen, guard = upstream.targets[i], guards[i]
                    tried |= 1 << i
                    lines = fields if chosen.host_line is None else [chosen.host_line, *fields[1:]]
                    request = (
                        method,
                        chosen.key,
                        target,
                        lines,
                        body,
                        interim,
                        content_length,
                        upgrade,
                    )
        except UpstreamError as exc:
            if observe is not None:
                outcome = "timeout" if exc.status == 504 else "error"
                observe(route, outcome, time.perf_counter() - started)
            raise
        except ClientBodyError:
            if observe is not None:
                observe(route, "aborted", time.perf_counter() - started)
            raise
        if observe is not None:
            observe(route, up.status, time.perf_counter() - started)
        return up

    def _retry_delay(
        self, guard: OriginGuard, retry: int, deadline: float, asked: float | None = None
    ) -> float | None:
        """Seconds to wait before retry number `retry` (from 0), or None: do not retry."""
        r = self.config.retries
        if retry >= r.attempts:
            return None
        delay = backoff_delay(retry, r.backoff, r.max_backoff, self._rand)
        if asked is not None:
            if asked > r.max_backoff:
                return None  # the upstream asks for a longer pause than a client should wait
            delay = max(delay, asked)
        if self._clock() + delay >= deadline:
            return None  # the client's time would run out before the retry's response
        if not guard.budget.try_retry():
            return None
        return delay

    async def _attempt(
        self,
        guard: OriginGuard,
        request: _Request,
        endpoint: str,
        deadline: float,
        background: bool,
        now: float | None = None,
    ) -> UpstreamResponse:
        """One attempt: a slot, the exchange up to the response head, the verdict. `now`: the
        clock's time, when the caller has just read it (the first attempt: send's)."""
        started = self._clock() if now is None else now
        remaining = deadline - started
        if remaining <= 0:
            raise self._timed_out(self._total, "timeouts.total")
        if guard.admit_now():
            probe = False
        else:
            wait = min(self.config.pool.queue_timeout, remaining)
            probe = await self._queue(guard, wait, background, endpoint)
            started = self._clock()  # the upstream's latency starts with its slot
        assert self._pool is not None, "UpstreamClient.start() was not awaited"
        # The head's deadline goes to the connection's own lazy timer: asyncio.timeout would
        # arm and cancel a timer per request (a tenth of a miss's CPU).
        timeout = None if deadline == math.inf else deadline - started
        try:
            up = await self._pool.request(*request, timeout)
        except RequestBodyFailed as exc:  # the client's doing: no verdict on the upstream
            guard.release()
            guard.abandon(endpoint, probe)
            raise ClientBodyError(exc.timed_out, str(exc), exc.too_large) from exc
        except (TimeoutError, ExchangeError, OSError) as exc:
            # A timeout is the slowest latency sample of all; an error is none at all (a
            # refused connection is quick, and would look like a fast upstream).
            timed_out = isinstance(exc, TimeoutError) and not isinstance(exc, ConnectTimeout)
            latency = self._clock() - started if timed_out else None
            guard.verdict(endpoint, probe, True, latency)
            guard.release()
            error = self._classify(exc, guard)
            if isinstance(exc, ExchangeError) and exc.resendable:
                raise _Resendable(error) from exc
            raise error from exc
        except BaseException:  # cancelled: the client went, or the listener ended it
            guard.release()
            guard.abandon(endpoint, probe)
            raise
        failed = up.status in guard.failure_statuses
        now = self._clock()  # one read for the latency and the breaker's window
        guard.verdict(endpoint, probe, failed, None if failed else now - started, now)
        up.give_back = guard.release
        return up

    async def _queue(
        self, guard: OriginGuard, wait: float, background: bool, endpoint: str
    ) -> bool:
        """Wait for a slot behind the requests queued first (a tracing client times it):
        whether the slot is the open circuit's probe."""
        return await guard.admit(wait, background, endpoint)

    def _classify(self, exc: BaseException, guard: OriginGuard) -> UpstreamError:
        """The client's response to a failed attempt: a stable code and a sentence without
        the upstream's address or the OS's words, which only the log gets (`detail`)."""
        timeouts = self.config.timeouts
        if isinstance(exc, ConnectTimeout):
            return UpstreamError(
                504,
                "upstream_timeout",
                f"The upstream API did not accept a connection within {timeouts.connect:g} s",
                detail=f"upstream {guard.name} ({guard.origin}): {exc}",
            )
        if isinstance(exc, ReadTimeout):
            return self._timed_out(timeouts.read, "timeouts.read")
        if isinstance(exc, TimeoutError):
            return self._timed_out(self._total, "timeouts.total")
        if isinstance(exc, InvalidResponse):
            return UpstreamError(
                502,
                "upstream_invalid_response",
                "The upstream API sent a response that is not valid HTTP",
                detail=f"upstream {guard.name} ({guard.origin}) sent {exc}",
            )
        detail = f"upstream {guard.name} ({guard.origin}) is unreachable: {exc}"
        if isinstance(exc, CertificateFailed):
            message = "The upstream API is unreachable: its TLS certificate is not trusted"
            return UpstreamError(502, "upstream_unavailable", message, detail=detail)
        if isinstance(exc, TlsFailed):
            message = "The upstream API is unreachable: the TLS handshake failed"
            return UpstreamError(502, "upstream_unavailable", message, detail=detail)
        return UpstreamError(
            502, "upstream_unavailable", "The upstream API is unreachable", detail=detail
        )

    @staticmethod
    def _timed_out(seconds: float, key: str) -> UpstreamError:
        return UpstreamError(
            504,
            "upstream_timeout",
            f"The upstream API did not answer within {seconds:g} s (upstream.{key})",
        )


class _Resendable(Exception):
    """An attempt failed before any response began; `error` is what the client gets."""

    def __init__(self, error: UpstreamError) -> None:
        super().__init__(error.message)
        self.error = error
