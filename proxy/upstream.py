"""The pooled connection to upstreams: one ClientSession per process."""

from __future__ import annotations

import asyncio
import logging
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


class UpstreamClient:
    def __init__(self, config: Upstream) -> None:
        self.config = config
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        pool, timeouts = self.config.pool, self.config.timeouts
        connector = aiohttp.TCPConnector(
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
    ) -> aiohttp.ClientResponse:
        """Send one request; the caller reads and releases the response.

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
