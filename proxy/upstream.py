"""The pooled connection to upstreams: one ClientSession per process."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from multidict import CIMultiDict
from yarl import URL

from proxy.config import Upstream

log = logging.getLogger("cacheproxy.upstream")

# RFC 9110 §9.2.2: safe to send twice. POST/PATCH never are, whatever went wrong.
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})

# aiohttp adds these when absent; a transparent proxy must not invent request headers.
_NO_AUTO_HEADERS = ("User-Agent", "Accept", "Accept-Encoding", "Content-Type")


class UpstreamError(Exception):
    """A failure talking to the upstream, already classified for the client."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def classify(exc: BaseException, origin: str) -> UpstreamError:
    if isinstance(exc, asyncio.TimeoutError):
        return UpstreamError(504, "upstream_timeout", f"upstream {origin} did not answer in time")
    return UpstreamError(502, "upstream_unavailable", f"upstream {origin} is unreachable: {exc}")


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
    def __init__(self, config: Upstream) -> None:
        self.config = config
        self._session: aiohttp.ClientSession | None = None
        self.observe: Observe | None = None  # told of every request's outcome

    async def start(self) -> None:
        pool, timeouts = self.config.pool, self.config.timeouts
        connector = _CountingConnector(
            limit=pool.max_connections,
            limit_per_host=0,
            keepalive_timeout=pool.keepalive_timeout or None,
            force_close=pool.keepalive_timeout == 0,
            ttl_dns_cache=60,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            # `connect` covers waiting for a pooled connection plus opening one.
            timeout=aiohttp.ClientTimeout(
                total=None,
                connect=pool.queue_timeout + timeouts.connect,
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
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def pool_stats(self) -> PoolStats:
        """What the pool holds now (aiohttp has no public view: its two fields are read)."""
        connector = self._session.connector if self._session is not None else None
        if not isinstance(connector, _CountingConnector):
            return PoolStats(self.config.pool.max_connections, 0, 0, 0)
        return PoolStats(
            self.config.pool.max_connections,
            len(connector._acquired),
            sum(len(idle) for idle in connector._conns.values()),
            connector.opened,
        )

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "UpstreamClient.start() was not awaited"
        return self._session

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

        aiohttp itself resends an idempotent request once when a reused pooled
        connection turns out to be closed; on top of that, bodyless idempotent
        requests get `retries` more attempts when no connection could be made.
        """
        attempts = 1 + (self.config.retries if body is None and method in IDEMPOTENT else 0)
        for attempt in range(attempts):
            try:
                return await self.session.request(
                    method,
                    url,
                    headers=headers,
                    data=body,
                    allow_redirects=False,
                    compress=None,
                )
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                retryable = isinstance(
                    exc, aiohttp.ClientConnectorError | aiohttp.ServerDisconnectedError
                ) and not isinstance(exc, asyncio.TimeoutError)
                if retryable and attempt + 1 < attempts:
                    await asyncio.sleep(0.05 * (attempt + 1))
                    continue
                raise classify(exc, origin or str(url.origin())) from exc
        raise AssertionError("unreachable")
