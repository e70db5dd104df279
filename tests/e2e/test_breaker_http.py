"""The upstream circuit breaker through a running proxy, with its default settings: a failure
rate over a minimum volume opens it, a few failures or one client's endpoint never do."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from proxy.server.app import ProxyServer
from tests.conftest import Origin, StartProxy, get


async def admin_json(http: aiohttp.ClientSession, proxy: ProxyServer, path: str) -> Any:
    async with http.get(f"http://127.0.0.1:{proxy.admin_port}{path}") as resp:
        return await resp.json()


async def metrics(http: aiohttp.ClientSession, proxy: ProxyServer) -> list[str]:
    url = f"http://127.0.0.1:{proxy.admin_port}/metrics"
    async with http.get(url, headers={"Accept-Encoding": "identity"}) as resp:
        return (await resp.text()).splitlines()


async def test_two_percent_of_failures_in_steady_traffic_never_open_it(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    counter = itertools.count()

    def respond(r: web.Request) -> web.Response:
        if next(counter) % 50 == 49:
            return web.Response(status=503, text="hiccup")
        return web.Response(text="ok")

    origin.respond = respond
    proxy = await start_proxy(origin.url, upstream={"retries": 0})
    statuses: list[int] = []

    async def client(c: int) -> None:
        for i in range(60):
            resp, _ = await get(http, proxy, f"/steady/{c}/{i % 7}")
            statuses.append(resp.status)

    await asyncio.gather(*(client(c) for c in range(10)))
    # Every 503 is the upstream's own: none of the proxy's, nothing refused.
    assert statuses.count(503) == 12 and statuses.count(200) == 588
    stats = proxy.upstream.stats()[0]
    assert (stats.circuit, stats.circuit_opened, stats.failures) == ("closed", 0, 12)
    assert sum(origin.hits.values()) == 600


@pytest.mark.parametrize(
    ("failing", "status"), [("/api/broken", 503), ("/api/hangs", 504)], ids=["503", "timeout"]
)
async def test_one_client_hammering_a_failing_endpoint_denies_nobody_else(
    origin: Origin,
    start_proxy: StartProxy,
    http: aiohttp.ClientSession,
    failing: str,
    status: int,
) -> None:
    async def respond(r: web.Request) -> web.Response:
        if r.path == "/api/broken":
            return web.Response(status=503, text="broken")
        if r.path == "/api/hangs":
            await asyncio.sleep(2)
        return web.Response(text="ok")

    origin.respond = respond
    routes = [{"name": "api", "match": {"prefix": "/api/"}}]
    proxy = await start_proxy(
        origin.url, upstream={"retries": 0, "timeouts": {"read": 0.3}}, routes=routes
    )
    others: list[int] = []
    attacking = True

    async def everyone_else() -> None:
        # Healthy traffic, about 20 requests a second: other paths of the same route, and
        # another route of the same origin.
        n = 0
        while attacking or n < 10:
            n += 1
            path = f"/api/ok/{n}" if n % 2 else f"/elsewhere/{n}"
            resp, _ = await get(http, proxy, path)
            others.append(resp.status)
            await asyncio.sleep(0.05)

    healthy = asyncio.create_task(everyone_else())
    try:
        await asyncio.sleep(0.2)
        # Ten at once, then twenty more: the volume is the client's to choose, and does
        # not matter. Each is sent and gets the upstream's failure, never a refusal.
        for burst in (10, 20):
            attack = await asyncio.gather(*(get(http, proxy, failing) for _ in range(burst)))
            assert [resp.status for resp, _ in attack] == [status] * burst
            assert not any(b"paused" in body for _, body in attack)
    finally:
        attacking = False
        await healthy
    assert others and set(others) == {200}
    stats = proxy.upstream.stats()[0]
    assert (stats.circuit, stats.circuit_opened, stats.failures) == ("closed", 0, 30)
    # Most of what the window saw failed: the rate alone would have opened it.
    assert stats.window_failures == 30 and stats.window_requests == 30 + len(others)
    assert stats.failure_rate is not None and stats.failure_rate >= 0.5


async def test_a_full_outage_opens_it_at_min_requests_and_shows_what_it_saw(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    origin.respond = lambda r: web.Response(status=503, text="down")
    proxy = await start_proxy(origin.url, upstream={"retries": 0})
    for i in range(20):
        resp, body = await get(http, proxy, f"/any/{i % 4}")
        assert body == b"down"  # the upstream's own responses, up to min_requests (20)
    resp, body = await get(http, proxy, "/any/0")
    assert resp.status == 503 and b"paused for 10 s" in body
    assert sum(origin.hits.values()) == 20
    # What the breaker saw when it opened; a fresh window since.
    (figures,) = (await admin_json(http, proxy, "/performance/connections"))["upstreams"]
    assert (figures["circuit"], figures["circuit_opened"], figures["failures"]) == ("open", 1, 20)
    assert (figures["window_requests"], figures["window_failures"]) == (0, 0)
    assert figures["failure_rate"] is None
    lines = await metrics(http, proxy)
    assert 'cacheproxy_upstream_circuit_open{upstream="default"} 1.0' in lines
    assert 'cacheproxy_upstream_circuit_window_requests{upstream="default"} 0.0' in lines


async def test_the_window_figures_reach_metrics_and_connections(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    origin.respond = lambda r: web.Response(
        status=503 if r.path.startswith("/bad") else 200, text="x"
    )
    proxy = await start_proxy(origin.url, upstream={"retries": 0})
    for path in ("/good/1", "/good/2", "/good/3", "/bad/1"):
        await get(http, proxy, path)
    (figures,) = (await admin_json(http, proxy, "/performance/connections"))["upstreams"]
    assert (figures["window_requests"], figures["window_failures"]) == (4, 1)
    assert (figures["failure_rate"], figures["circuit"]) == (0.25, "closed")
    lines = await metrics(http, proxy)
    for line in (
        'cacheproxy_upstream_circuit_window_requests{upstream="default"} 4.0',
        'cacheproxy_upstream_circuit_window_failures{upstream="default"} 1.0',
        'cacheproxy_upstream_circuit_failure_rate{upstream="default"} 0.25',
        'cacheproxy_upstream_circuit_open{upstream="default"} 0.0',
    ):
        assert line in lines, line


async def test_an_open_circuit_is_logged_once_then_summarised_not_per_request(
    origin: Origin,
    start_proxy: StartProxy,
    http: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    origin.respond = lambda r: web.Response(status=503, text="down")
    proxy = await start_proxy(origin.url, upstream={"retries": 0})
    proxy.pipeline.refusals.every = 0.3
    caplog.set_level("INFO", logger="cacheproxy")
    for i in range(20):
        await get(http, proxy, f"/any/{i % 4}")  # opens the circuit at min_requests
    refused = [(await get(http, proxy, "/any/0"))[0].status for _ in range(40)]
    assert refused == [503] * 40
    messages = [r.getMessage() for r in caplog.records]
    opened = [m for m in messages if "circuit open:" in m]
    assert len(opened) == 1  # the guard's line, once
    assert not any("upstream_unavailable" in m for m in messages)  # none per request
    await asyncio.sleep(0.5)
    summaries = [r.getMessage() for r in caplog.records if "refused in the last" in r.getMessage()]
    assert summaries == [
        "route default: 40 requests refused in the last 0.3 s (circuit open, upstream_unavailable)"
    ]
