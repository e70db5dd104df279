"""One Redis budget per request, pools that wait alike, and the rate limiter's Redis
failures in /metrics, /health and the summary the dashboard reads."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from typing import Any

import aiohttp
import pytest

from proxy.server.app import ProxyServer
from tests.conftest import Origin, StartProxy, get
from tests.e2e.test_shared_cache import admin
from tests.redis_servers import RedisCluster, RedisSentinel, RedisServer


async def metrics(http: aiohttp.ClientSession, proxy: ProxyServer) -> str:
    url = f"http://127.0.0.1:{proxy.admin_port}/metrics"
    async with http.get(url, headers={"Accept-Encoding": "identity"}) as resp:
        return await resp.text()


def metric(text: str, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        match = re.fullmatch(rf"{name}(?:\{{([^}}]*)\}})? (\S+)", line)
        if match and (match.group(1) or "") == want:
            return float(match.group(2))
    raise AssertionError(f"no {name}{{{want}}} in /metrics")


async def test_a_request_waits_on_redis_for_one_timeout_in_all(
    origin: Origin,
    start_proxy: StartProxy,
    http: aiohttp.ClientSession,
    redis_server: RedisServer,
) -> None:
    # A rate limit and the cache tier on Redis: a miss asks Redis several times.
    proxy = await start_proxy(
        origin.url,
        redis={"url": redis_server.url, "key_prefix": f"t{uuid.uuid4().hex[:6]}:", "timeout": 0.5},
        cache={"tiers": ["memory", "redis"], "ttl": 60},
        rate_limit={"limits": ["100/minute"]},
    )
    await get(http, proxy, "/warm")  # connections made, scripts loaded
    redis_server.cli("CLIENT", "PAUSE", "4000", "ALL")  # connected, but silent
    started = time.monotonic()
    resp, _ = await get(http, proxy, "/cold")
    elapsed = time.monotonic() - started
    assert (resp.status, resp.headers["X-Cache"]) == (200, "MISS")
    # One timeout (0.5 s) for the rate limit, the lookup and the store together, where each
    # call used to wait its own.
    assert elapsed < 0.85, elapsed
    assert proxy.redis is not None
    assert sum(proxy.redis.guard.errors.values()) == 1  # what was skipped is not Redis's fault
    text = await metrics(http, proxy)
    assert metric(text, "cacheproxy_redis_skipped_total", reason="budget") >= 1
    redis_server.cli("CLIENT", "UNPAUSE")


def _kind(kind: str, request: pytest.FixtureRequest) -> dict[str, Any]:
    if kind == "node":
        return {"url": request.getfixturevalue("redis_server").url}
    if kind == "cluster":
        cluster: RedisCluster = request.getfixturevalue("redis_cluster")
        return {"cluster": {"nodes": cluster.urls}}
    sentinel: RedisSentinel = request.getfixturevalue("redis_sentinel")
    return {"sentinel": {"nodes": [sentinel.sentinel_url], "service": sentinel.service}}


@pytest.mark.parametrize("kind", ["node", "cluster", "sentinel"])
async def test_a_burst_waits_for_connections_and_never_opens_the_breaker(
    origin: Origin,
    start_proxy: StartProxy,
    http: aiohttp.ClientSession,
    request: pytest.FixtureRequest,
    kind: str,
) -> None:
    redis = {
        **_kind(kind, request),
        "key_prefix": f"t{uuid.uuid4().hex[:6]}:",
        "timeout": 2,
        "max_connections": 3,
    }
    proxy = await start_proxy(
        origin.url,
        redis=redis,
        cache={"tiers": ["memory", "redis"], "ttl": 60},
        rate_limit={"limits": ["1000/minute"]},
    )
    await get(http, proxy, "/warm")
    results = await asyncio.gather(*(get(http, proxy, f"/burst/{i}") for i in range(150)))
    assert [r.status for r, _ in results] == [200] * 150
    assert proxy.redis is not None
    guard = proxy.redis.guard
    # Every call waited for one of the 3 connections: none failed, the breaker stayed shut.
    assert (dict(guard.errors), guard.healthy) == ({}, True)
    limiter = proxy.pipeline.routes.default.rate_limit
    assert limiter is not None and limiter.store_errors == 0
    status, health = await admin(http, proxy, "GET", "/health")
    assert (status, health["status"]) == (200, "healthy")
    resp, _ = await get(http, proxy, "/burst/7")
    assert resp.headers["X-Cache"] == "HIT"


async def test_rate_limit_store_errors_show_in_metrics_health_and_summary(
    origin: Origin,
    start_proxy: StartProxy,
    http: aiohttp.ClientSession,
    redis_server: RedisServer,
) -> None:
    proxy = await start_proxy(
        origin.url,
        redis={"url": redis_server.url, "timeout": 1},
        rate_limit={"limits": ["100/minute"], "on_store_error": "local"},
    )
    await get(http, proxy, "/a")
    status, health = await admin(http, proxy, "GET", "/health")
    assert health["checks"]["rate_limits"]["status"] == "up"
    redis_server.stop()
    for _ in range(2):
        resp, _ = await get(http, proxy, "/a")
        assert resp.status == 200  # limited locally meanwhile
    text = await metrics(http, proxy)
    assert metric(text, "cacheproxy_ratelimit_store_errors_total", limiter="default") == 2
    assert metric(text, "cacheproxy_ratelimit_degraded", limiter="default") == 1
    status, health = await admin(http, proxy, "GET", "/health")
    check = health["checks"]["rate_limits"]
    assert (status, health["status"], check["status"]) == (200, "degraded", "down")
    assert check["limiters"]["default"]["store_errors"] == 2
    assert check["limiters"]["default"]["on_store_error"] == "local"
    _, summary = await admin(http, proxy, "GET", "/performance/summary")
    assert (summary["rate_limit"]["store_errors"], summary["rate_limit"]["degraded"]) == (2, 1)
