"""The pooled connection to upstreams: one ClientSession per process, guarded per origin.

`send` is one client request's whole exchange up to the response head:

    circuit breaker -> FIFO queue for a slot (bounded) -> request -> verdict (breaker,
    adaptive limit) -> retry? (idempotent, budget, backoff with jitter, client's time left)

The slot is held until the caller releases the response, so the bound counts requests
whose bodies are still streaming too.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
import warnings
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import aiohttp
from multidict import CIMultiDict
from yarl import URL

from proxy.errors import UpstreamError
from proxy.origin_guard import OriginGuard, OriginStats
from proxy.retry import backoff_delay, retry_after_seconds
from proxy.upstream_settings import Upstream

__all__ = ["BACKGROUND", "IDEMPOTENT", "UpstreamClient", "UpstreamError"]

log = logging.getLogger("cacheproxy.upstream")

# RFC 9110 §9.2.2: safe to send twice. POST/PATCH never are, whatever went wrong.
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})

# aiohttp adds these when absent; a transparent proxy must not invent request headers.
_NO_AUTO_HEADERS = ("User-Agent", "Accept", "Accept-Encoding", "Content-Type")

# Set in a task whose upstream requests no client waits on (background refresh, warming):
# they never queue, never probe an open circuit and are never retried.
BACKGROUND: ContextVar[bool] = ContextVar("cacheproxy_background_request", default=False)


def _resent_safely(exc: BaseException) -> bool:
    """Did the attempt fail before any response began, in a way worth trying again?

    Refused, reset or closed before a response head; a connect timeout. Not a read
    timeout: the upstream is slow, and a second try doubles both the wait and its load.
    Not a TLS certificate failure: it will fail the same way.
    """
    if isinstance(exc, aiohttp.ClientSSLError):
        return False
    return isinstance(
        exc,
        aiohttp.ClientConnectorError
        | aiohttp.ConnectionTimeoutError
        | aiohttp.ServerDisconnectedError
        | aiohttp.ClientOSError,
    )


class _SlotResponse(aiohttp.ClientResponse):
    """A response that gives its origin's slot back once: released, closed or collected."""

    _give_back: Callable[[], None] | None = None

    def _return_slot(self) -> None:
        give_back, self._give_back = self._give_back, None
        if give_back is not None:
            give_back()

    def release(self) -> Any:
        try:
            return super().release()
        finally:
            self._return_slot()

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._return_slot()

    def __del__(self, _warnings: Any = warnings) -> None:
        self._return_slot()  # a leak must not shrink the pool for good
        super().__del__(_warnings)


@dataclass(frozen=True, slots=True)
class PoolStats:
    max_connections: int
    active: int  # lent to a request
    idle: int  # kept alive, waiting for one
    opened: int  # ever; every other request reused a connection


class _CountingConnector(aiohttp.TCPConnector):
    """Counts the connections it opens: reuse is what the pool is for."""

    opened = 0

    async def _create_connection(self, *args: Any, **kwargs: Any) -> Any:
        proto = await super()._create_connection(*args, **kwargs)
        self.opened += 1
        return proto


# (route name, status or "error"/"timeout", seconds to the response head)
Observe = Callable[[str, int | str, float], None]


class UpstreamClient:
    def __init__(
        self,
        config: Upstream,
        origins: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
        rand: Callable[[], float] = random.random,
    ) -> None:
        """`origins`: origin (scheme://host:port) -> the name its figures go by."""
        self.config = config
        self._session: aiohttp.ClientSession | None = None
        self.observe: Observe | None = None  # told of every request's outcome
        self._clock = clock
        self._rand = rand
        self._guards = {
            origin: OriginGuard(name, origin, config, clock)
            for origin, name in (origins or {}).items()
        }
        self._total = config.total_timeout
        self._retry_statuses = frozenset(config.retries.on_status)

    async def start(self) -> None:
        pool, timeouts = self.config.pool, self.config.timeouts
        connector = _CountingConnector(
            # Our gates bound each origin; this per-host limit is only a backstop for a
            # connection still finishing its request body after its slot came back.
            limit=0,
            limit_per_host=pool.max_connections,
            keepalive_timeout=pool.keepalive_timeout or None,
            force_close=pool.keepalive_timeout == 0,
            ttl_dns_cache=60,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(
                total=None,
                connect=timeouts.connect,
                sock_connect=timeouts.connect,
                sock_read=timeouts.read,
            ),
            auto_decompress=False,  # Content-Encoding passes through untouched
            # Never keep one client's cookies to send with another's request.
            cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=_NO_AUTO_HEADERS,
            max_field_size=65536,
            max_line_size=65536,
            read_bufsize=2**18,
            response_class=_SlotResponse,
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def pool_stats(self) -> PoolStats:
        """What the pool holds now (aiohttp has no public view: its two fields are read).

        `max_connections` is the bound of every origin together: each has its own."""
        bound = self.config.pool.max_connections * max(1, len(self._guards))
        connector = self._session.connector if self._session is not None else None
        if not isinstance(connector, _CountingConnector):
            return PoolStats(bound, 0, 0, 0)
        return PoolStats(
            bound,
            len(connector._acquired),
            sum(len(idle) for idle in connector._conns.values()),
            connector.opened,
        )

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "UpstreamClient.start() was not awaited"
        return self._session

    def guard(self, origin: str) -> OriginGuard:
        guard = self._guards.get(origin)
        if guard is None:  # an origin no route named at start-up: guarded all the same
            guard = self._guards[origin] = OriginGuard(origin, origin, self.config, self._clock)
        return guard

    def stats(self) -> list[OriginStats]:
        """Queue, limit, breaker and retry figures, one entry per upstream origin."""
        return [guard.stats() for guard in self._guards.values()]

    async def send(
        self,
        method: str,
        url: URL,
        headers: CIMultiDict[str],
        body: Any = None,
        origin: str = "",
        route: str = "",
    ) -> aiohttp.ClientResponse:
        """Send one request for `route`; the caller reads and releases the response."""
        observe = self.observe
        if observe is None:
            return await self._send(method, url, headers, body, origin)
        started = time.perf_counter()
        try:
            up = await self._send(method, url, headers, body, origin)
        except UpstreamError as exc:
            outcome = "timeout" if exc.status == 504 else "error"
            observe(route, outcome, time.perf_counter() - started)
            raise
        observe(route, up.status, time.perf_counter() - started)
        return up

    async def _send(
        self, method: str, url: URL, headers: CIMultiDict[str], body: Any, origin: str
    ) -> aiohttp.ClientResponse:
        """One request, retried as below.

        Retried (up to `retries.attempts` times) when idempotent, with no body or a
        buffered one (a streamed body cannot be replayed), and no client is waiting on
        it in the background: after a connection failure before any response, or a
        response in `retries.on_status`. A response that could not be retried is
        returned as it is.
        """
        guard = self.guard(origin or str(url.origin()))
        background = BACKGROUND.get()
        buffered = body is None or isinstance(body, bytes)
        # An upload's head comes after its body, which takes what the client takes (the
        # listener bounds its silences): only the queue and read timeouts bound it.
        deadline = self._clock() + self._total if buffered else math.inf
        replayable = not background and method in IDEMPOTENT and buffered
        guard.requests += 1
        guard.budget.request()
        retry = 0
        while True:
            try:
                up = await self._attempt(guard, method, url, headers, body, deadline, background)
            except _Resendable as exc:
                if not replayable or (delay := self._retry_delay(guard, retry, deadline)) is None:
                    raise exc.error from exc.__cause__
                log.info("retrying %s %s in %.2f s: %s", method, url.path, delay, exc.error.message)
            else:
                if not replayable or up.status not in self._retry_statuses:
                    return up
                asked = retry_after_seconds(up.headers.get("Retry-After"), time.time())
                if (delay := self._retry_delay(guard, retry, deadline, asked)) is None:
                    return up
                up.release()
                log.info("retrying %s %s in %.2f s: status %d", method, url.path, delay, up.status)
            guard.retries += 1
            retry += 1
            await asyncio.sleep(delay)

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
            return None  # the client's time would run out before the retry's answer
        if not guard.budget.try_retry():
            return None
        return delay

    async def _attempt(
        self,
        guard: OriginGuard,
        method: str,
        url: URL,
        headers: CIMultiDict[str],
        body: Any,
        deadline: float,
        background: bool,
    ) -> aiohttp.ClientResponse:
        remaining = deadline - self._clock()
        if remaining <= 0:
            raise self._timed_out(self._total, "timeouts.total")
        probe = await guard.admit(min(self.config.pool.queue_timeout, remaining), background)
        started = self._clock()
        try:
            async with asyncio.timeout(None if deadline == math.inf else deadline - started):
                up = await self.session.request(
                    method,
                    url,
                    headers=headers,
                    data=body,
                    allow_redirects=False,
                    compress=None,
                )
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            # A timeout is the slowest latency sample of all; an error is none at all (a
            # refused connection is quick, and would look like a fast upstream).
            timed_out = isinstance(exc, TimeoutError) and not isinstance(
                exc, aiohttp.ConnectionTimeoutError
            )
            guard.verdict(probe, True, self._clock() - started if timed_out else None)
            guard.release()
            error = self._classify(exc, guard.origin)
            if _resent_safely(exc):
                raise _Resendable(error) from exc
            raise error from exc
        except BaseException:
            guard.release()
            guard.abandon(probe)
            raise
        failed = up.status in guard.failure_statuses
        guard.verdict(probe, failed, None if failed else self._clock() - started)
        if isinstance(up, _SlotResponse):
            up._give_back = guard.release
        else:  # pragma: no cover - start() always installs _SlotResponse
            guard.release()
        return up

    def _classify(self, exc: BaseException, origin: str) -> UpstreamError:
        timeouts = self.config.timeouts
        if isinstance(exc, aiohttp.ConnectionTimeoutError):
            return UpstreamError(
                504,
                "upstream_timeout",
                f"The upstream API did not accept a connection within {timeouts.connect:g} s",
            )
        if isinstance(exc, aiohttp.ServerTimeoutError):
            return self._timed_out(timeouts.read, "timeouts.read")
        if isinstance(exc, TimeoutError):
            return self._timed_out(self._total, "timeouts.total")
        return UpstreamError(
            502, "upstream_unavailable", f"The upstream API at {origin} is unreachable: {exc}"
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
