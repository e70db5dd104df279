"""What the start-up log says was loaded, and the reachability it reports: through a real
proxy, with a real upstream and a real redis-server (or none listening)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from proxy.config.loader import parse_config
from proxy.server.app import ProxyServer
from tests.conftest import Origin, config_text, free_port
from tests.redis_servers import RedisServer

CONFIG = {
    "cache": {"max_memory": "64MB"},
    "routes": [
        {"name": "quotes", "match": {"prefix": "/api/quotes/", "methods": ["GET"]},
         "cache": {"ttl": 30}, "rate_limit": {"limits": ["100/minute"]}},
        {"name": "orders", "match": {"path": "/api/orders", "hosts": ["a.example", "*.b.example"]},
         "cache": False},
    ],
}  # fmt: skip


async def started(upstream_url: str, **sections: object) -> ProxyServer:
    config = parse_config(config_text(upstream_url, **sections), env={})
    server = ProxyServer(config)
    await server.start()
    return server


async def report(caplog: pytest.LogCaptureFixture, server: ProxyServer) -> list[str]:
    try:
        for _ in range(100):  # the reachability lines come from a task of their own
            if any("reachable" in r.getMessage() for r in caplog.records):
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.1)
    finally:
        await server.stop()
    return [r.getMessage() for r in caplog.records if r.name == "cacheproxy"]


async def test_it_says_what_was_loaded_and_that_the_upstream_answers(
    origin: Origin, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="cacheproxy")
    lines = await report(caplog, await started(origin.url, **CONFIG))
    assert "config (built in): 3 routes, 1 worker" in lines
    assert (
        f"route quotes: prefix /api/quotes/ [GET] -> {origin.url}; cache on (ttl 30 s); "
        "rate limit 100/minute per ip (in memory)"
    ) in lines
    assert (
        f"route orders: path /api/orders on a.example, *.b.example -> {origin.url}; cache off; "
        "no rate limit"
    ) in lines
    assert any(line.startswith("route default: everything else -> ") for line in lines)
    assert "memory cache: at most 64 MiB; redis: none (everything stays in this process)" in lines
    assert any(line.startswith(f"upstream {origin.url}: reachable (") for line in lines)


async def test_it_names_every_target_and_how_they_are_balanced(
    origin: Origin, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="cacheproxy")
    other = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    upstream = {"url": None, "targets": [origin.url, {"url": other, "weight": 3}]}
    lines = await report(caplog, await started(origin.url, upstream=upstream))
    assert (
        f"route default: everything else -> {origin.url}, {other} (round robin, weights 1/3); "
        "cache off; no rate limit"
    ) in lines
    # The start-up check probes every target: one of two is down.
    assert any(
        line.startswith(f"upstream {origin.url}, {other}: NOT reachable at start") for line in lines
    )


async def test_it_warns_when_the_upstream_or_redis_does_not_answer_and_serves_anyway(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="cacheproxy")
    nobody = f"http://127.0.0.1:{free_port()}"
    server = await started(
        nobody, redis={"url": f"redis://127.0.0.1:{free_port()}", "timeout": 0.2}
    )
    assert server.proxy_port  # the port is open anyway
    lines = await report(caplog, server)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    text = [w.getMessage() for w in warnings]
    assert any(t.startswith(f"upstream {nobody}: NOT reachable at start (") for t in text), text
    assert any(t.startswith("redis: NOT reachable at start (") for t in text), text
    assert any(
        line.startswith("memory cache: at most 256 MiB; redis: redis://127.0.0.1:")
        for line in lines
    )


async def test_a_reachable_redis_is_reported_too(
    origin: Origin, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="cacheproxy")
    lines = await report(caplog, await started(origin.url, redis={"url": redis_server.url}))
    assert any(line.startswith("redis: reachable (") for line in lines), lines
