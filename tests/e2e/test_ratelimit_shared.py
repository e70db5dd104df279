"""Rate limits shared through one real Redis by two proxy instances, and Redis failing."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from proxy.server.app import ProxyServer
from tests.conftest import Origin, StartProxy, get
from tests.redis_servers import RedisCluster, RedisServer


def redis_config(url: str, **extra: Any) -> dict[str, Any]:
    # A fast breaker probe, so the tests see Redis come back within a second; a timeout
    # that a loaded test machine does not trip (a dead Redis refuses at once anyway).
    return {"url": url, "timeout": 1, "circuit_breaker": {"reset_after": 0.2}, **extra}


async def statuses(http: aiohttp.ClientSession, proxies: list[ProxyServer], n: int) -> list[int]:
    """`n` requests, round robin over the instances; none may hang."""
    out = []
    for i in range(n):
        started = time.monotonic()
        resp, _ = await get(http, proxies[i % len(proxies)], "/api/x")
        assert time.monotonic() - started < 3, "a request hung on Redis"
        out.append(resp.status)
    return out


async def two_instances(
    start_proxy: StartProxy, origin: Origin, redis: dict[str, Any], **rate_limit: Any
) -> list[ProxyServer]:
    sections = {
        "cache": {"ttl": 60},
        "rate_limit": {"limits": ["4/minute"], **rate_limit},
        "redis": redis,
    }
    return [await start_proxy(origin.url, **sections) for _ in range(2)]


async def test_two_instances_enforce_one_combined_limit(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession, redis_server: RedisServer
) -> None:
    a, b = await two_instances(start_proxy, origin, redis_config(redis_server.url))
    assert await statuses(http, [a, b], 6) == [200, 200, 200, 200, 429, 429]
    resp, _ = await get(http, b, "/api/x")
    assert resp.headers["X-RateLimit-Remaining"] == "0"
    assert int(resp.headers["Retry-After"]) > 0


async def test_cluster_shares_limits_too(
    origin: Origin,
    start_proxy: StartProxy,
    http: aiohttp.ClientSession,
    redis_cluster: RedisCluster,
) -> None:
    redis = {
        "cluster": {"nodes": redis_cluster.urls},
        "key_prefix": f"shared{time.time_ns()}:",
        "timeout": 1,  # the first call also maps the cluster's slots
    }
    a, b = await two_instances(start_proxy, origin, redis)
    assert await statuses(http, [a, b], 6) == [200, 200, 200, 200, 429, 429]


async def test_redis_down_local_limits_each_instance_then_shares_again(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession, redis_server: RedisServer
) -> None:
    a, b = await two_instances(start_proxy, origin, redis_config(redis_server.url))
    assert await statuses(http, [a, b], 2) == [200, 200]
    redis_server.stop()
    # Each process now limits on its own: 4 each, from fresh local windows.
    assert await statuses(http, [a, b], 10) == [200] * 8 + [429, 429]
    limiters = []
    for proxy in (a, b):
        limiter = proxy.pipeline.routes.default.rate_limit
        assert limiter is not None and limiter.degraded and limiter.store_errors >= 5
        assert limiter.last_error
        limiters.append(limiter)
    redis_server.start()
    deadline = time.monotonic() + 5
    while any(limiter.degraded for limiter in limiters):
        assert time.monotonic() < deadline, "the limiters did not go back to Redis"
        await asyncio.sleep(0.1)  # past the breaker's probe delay
        await statuses(http, [a, b], 2)  # the probes
    redis_server.cli("FLUSHALL")  # what the probes counted
    assert await statuses(http, [a, b], 6) == [200, 200, 200, 200, 429, 429]


async def test_redis_down_allow_lets_requests_through_without_counts(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession, redis_server: RedisServer
) -> None:
    # The origin's own count headers must not pass for the proxy's while counts are unknown.
    origin.respond = lambda r: web.Response(
        text="x", headers={"Cache-Control": "max-age=60", "X-RateLimit-Remaining": "7"}
    )
    a, b = await two_instances(
        start_proxy, origin, redis_config(redis_server.url), on_store_error="allow"
    )
    assert await statuses(http, [a, b], 4) == [200] * 4
    redis_server.stop()
    assert await statuses(http, [a, b], 10) == [200] * 10
    resp, _ = await get(http, a, "/api/x")
    assert resp.headers["RateLimit-Policy"] == '"4/minute";q=4;w=60'
    assert "X-RateLimit-Remaining" not in resp.headers and "RateLimit" not in resp.headers


async def test_redis_down_deny_responds_503(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession, redis_server: RedisServer
) -> None:
    a, b = await two_instances(
        start_proxy, origin, redis_config(redis_server.url), on_store_error="deny"
    )
    assert await statuses(http, [a, b], 2) == [200, 200]
    redis_server.stop()
    assert await statuses(http, [a, b], 4) == [503] * 4
    resp, body = await get(http, a, "/api/x")
    assert orjson.loads(body)["error"] == "rate_limit_unavailable"
    assert int(resp.headers["Retry-After"]) >= 1
    assert origin.hits["/api/x"] == 2  # each instance's first miss, nothing since
