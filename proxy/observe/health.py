"""`GET /health`: the detailed report. A cheap upstream probe and a Redis PING.

Results are reused for `upstream.health_cache` seconds and a probe under way is shared, so
however often monitors ask, the upstream and Redis see at most one probe each per interval.
/health needs no token: errors are described by kind only (`timeout`, `connection refused`),
never naming a host or port; the failure's own message (`detail`) is added only for a
request that carries the admin token, when one is configured.

Readiness is not decided here (proxy/admin/app.py, `/readyz`): an upstream or Redis that is down
makes the report `degraded`, never a 503, since every replica sees the same upstream and one
that can serve from its cache must stay in the load balancer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import aiohttp
from yarl import URL

from proxy.cache.memory import StoreUnavailable
from proxy.config.connect import Dns, UpstreamTls
from proxy.config.loader import redact_urls
from proxy.shared.redis import SharedRedis
from proxy.shared.tier import SharedTier
from proxy.upstream.connect import Connector, tls_context

PROBE_TIMEOUT = 2.0  # seconds: well inside what load balancers give a health check

Check = dict[str, Any]


def overall(checks: dict[str, Check], draining: bool) -> tuple[str, int]:
    """(status, HTTP status): 503 only when this process cannot take traffic (draining);
    anything down is `degraded`: it still serves, from its cache or with clean errors."""
    if draining:
        return "draining", 503
    if any(c.get("status") == "down" for c in checks.values()):
        return "degraded", 200
    return "healthy", 200


def without_detail(checks: dict[str, Check]) -> dict[str, Check]:
    """The checks as anyone may see them: no failure's own message."""
    return {name: {k: v for k, v in c.items() if k != "detail"} for name, c in checks.items()}


def _kind(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, ConnectionRefusedError | aiohttp.ClientConnectorError):
        return "connection refused"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "disconnected"
    return type(exc).__name__  # a class name never holds a host, a port or a password


def _detail(exc: BaseException) -> str:
    return redact_urls(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)


class _Probe(asyncio.Protocol):
    """A TCP connection that is only opened and closed."""

    transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport


class _Cached:
    """One check's last result, reused for `ttl` seconds; concurrent askers share a probe."""

    def __init__(self, probe: Callable[[], Awaitable[Check]], ttl: float) -> None:
        self._probe = probe
        self._ttl = ttl
        self._result: Check | None = None
        self._taken = 0.0
        self._running: asyncio.Task[Check] | None = None

    async def get(self) -> Check:
        now = time.monotonic()
        if self._result is not None and now - self._taken < self._ttl:
            return self._result
        if self._running is None:
            self._running = asyncio.create_task(self._run())
        return await asyncio.shield(self._running)

    async def _run(self) -> Check:
        try:
            self._result = await self._probe()
            self._taken = time.monotonic()
            return self._result
        finally:
            self._running = None


class HealthChecker:
    def __init__(
        self,
        upstream_urls: Sequence[str],
        health_path: str | None,
        ttl: float,
        redis: SharedRedis | None,
        shared: SharedTier | None,
        dns: Dns | None = None,
        tls: UpstreamTls | None = None,
    ) -> None:
        """`upstream_urls`: every target of `upstream`; each is probed. `dns` and `tls`:
        upstream.dns and upstream.tls, so that the probe finds and trusts the upstream as the
        pool does (its name servers, its CA, its client certificate), or it would call down
        an upstream every request reaches."""
        urls = [URL(u) for u in upstream_urls]
        self._addresses = [(url.host or "", url.port or 80) for url in urls]
        self._probe_urls = [url.with_path(health_path) for url in urls] if health_path else None
        self._dns, self._tls = dns or Dns(), tls or UpstreamTls()
        self._connector: Connector | None = None  # the TCP probe's, made with the loop
        self._redis = redis
        self._shared = shared
        self._session: aiohttp.ClientSession | None = None
        self._checks: dict[str, _Cached] = {"upstream": _Cached(self._upstream, ttl)}
        if redis is not None:
            self._checks["redis"] = _Cached(self._ping, ttl)

    def add(self, name: str, state: Callable[[], Check]) -> None:
        """A check of the process's own state (no probe: read at every request)."""

        async def read() -> Check:
            return state()

        self._checks[name] = _Cached(read, 0.0)

    async def start(self) -> None:
        if self._probe_urls is None:
            # Its own addresses and lookups: a probe goes where a new connection would.
            self._connector = Connector(self._dns)
        else:
            # A session of its own: a busy pool must not make a healthy upstream look dead,
            # and each probe opens a fresh connection, as a new client would.
            https = any(url.scheme == "https" for url in self._probe_urls)
            servers = list(self._dns.nameservers)
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=2,
                    force_close=True,
                    ssl=tls_context(self._tls) if https else True,
                    resolver=aiohttp.AsyncResolver(nameservers=servers) if servers else None,
                ),
                timeout=aiohttp.ClientTimeout(total=PROBE_TIMEOUT),
                auto_decompress=False,
                cookie_jar=aiohttp.DummyCookieJar(),
            )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._connector is not None:
            await self._connector.close()
            self._connector = None

    async def check(self) -> dict[str, Check]:
        """Every check, with `detail` on failures (without_detail() before showing anyone)."""
        names = list(self._checks)
        results = await asyncio.gather(*(self._checks[n].get() for n in names))
        return dict(zip(names, results, strict=True))

    async def probe(self) -> dict[str, Check]:
        """The upstream and Redis probed now, nothing kept for /health: what start-up
        reports (a result cached then would answer /health with the state at start)."""
        probes = {"upstream": self._upstream}
        if self._redis is not None:
            probes["redis"] = self._ping
        results = await asyncio.gather(*(probe() for probe in probes.values()))
        return dict(zip(probes, results, strict=True))

    async def _upstream(self) -> Check:
        """One target: its probe. Several: down if any is, with how many are."""
        if len(self._addresses) == 1:
            return await self._target(0)
        results = await asyncio.gather(*(self._target(i) for i in range(len(self._addresses))))
        down = [r for r in results if r["status"] == "down"]
        result = down[0] if down else dict(results[0])
        result["latency_ms"] = max(r["latency_ms"] for r in results)
        result.pop("http_status", None)
        result.update(targets=len(results), targets_down=len(down))
        return result

    async def _target(self, i: int) -> Check:
        started = time.perf_counter()
        probe_urls = self._probe_urls
        result: Check = {"status": "up", "probe": "http" if probe_urls else "tcp"}
        try:
            if self._session is not None and probe_urls is not None:
                name = self._tls.server_name
                async with self._session.get(
                    probe_urls[i], allow_redirects=False, server_hostname=name
                ) as resp:
                    result["http_status"] = resp.status
                    if resp.status >= 500:
                        result.update(status="down", error=f"status {resp.status}")
            else:
                assert self._connector is not None, "HealthChecker.start() was not awaited"
                async with asyncio.timeout(PROBE_TIMEOUT):
                    probe = await self._connector.open("http", *self._addresses[i], _Probe)
                if probe.transport is not None:
                    probe.transport.close()
        except Exception as exc:  # whatever it was, the upstream did not respond: down
            result.update(status="down", error=_kind(exc), detail=_detail(exc))
        result["latency_ms"] = round((time.perf_counter() - started) * 1000, 3)
        return result

    async def _ping(self) -> Check:
        assert self._redis is not None
        guard = self._redis.guard
        started = time.perf_counter()
        client = self._redis.client
        try:
            await self._redis.run("ping", client.ping)
        except StoreUnavailable as exc:  # the guard's own failure is its cause
            cause = exc.__cause__
            return {
                "status": "down",
                "error": "circuit open" if cause is None else _kind(cause),
                "detail": redact_urls(guard.last_error or str(exc)),
            }
        latency = round((time.perf_counter() - started) * 1000, 3)
        if self._shared is not None and not self._shared.subscribed:
            # Purges from other instances would be missed.
            return {"status": "down", "error": "purge subscription lost", "latency_ms": latency}
        return {"status": "up", "error": None, "latency_ms": latency}
