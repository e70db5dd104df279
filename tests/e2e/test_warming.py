"""Warming end to end: configured URLs fetched at start-up and kept fresh, popular keys
refreshed ahead of expiry, and the rate, the queue and the breaker respected."""

from __future__ import annotations

import asyncio
import time
from typing import Any, cast

import aiohttp
from aiohttp import web

from proxy.cache.entry import Entry
from proxy.http.target import parse_target
from proxy.pipeline.url_warmer import WarmingRequest
from tests.conftest import Origin, StartProxy, get
from tests.e2e.test_upstream_protection import fresh_date, health, until


def fresh_for(seconds: int) -> dict[str, str]:
    return {"Cache-Control": f"max-age={seconds}", "Date": fresh_date()}


def warming(**settings: Any) -> dict[str, Any]:
    return {"warming": settings}


async def test_a_popular_key_is_refreshed_before_it_expires(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    origin.respond = lambda r: web.Response(text=f"v{origin.hits[r.path]}", headers=fresh_for(1))
    cache = warming(refresh_ahead=0.5, popular={"top": 10}, max_rate="50/second")
    proxy = await start_proxy(origin.url, cache=cache)
    seen = []
    deadline = time.monotonic() + 2.6  # more than two lifetimes of the entry
    while time.monotonic() < deadline:
        resp, body = await get(http, proxy, "/hot")
        seen.append((resp.headers["X-Cache"], resp.headers["Age"], body))
        await asyncio.sleep(0.05)
    assert seen[0][0] == "MISS"
    # Across every expiry the clients saw: hits only, never an entry past its lifetime.
    assert {x_cache for x_cache, _, _ in seen[1:]} == {"HIT"}
    assert {age for _, age, _ in seen} == {"0"}
    assert origin.hits["/hot"] >= 3  # refreshed in the background, ahead of time
    assert len({body for _, _, body in seen}) >= 3  # and clients got the new versions


async def test_configured_urls_are_fetched_at_start_up_and_kept_fresh(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    origin.respond = lambda r: web.Response(
        text=f"{r.path_qs} v{origin.hits[r.path]}", headers=fresh_for(1)
    )
    urls = ["/api/market/summary", "/api/quotes?symbol=ACME"]
    proxy = await start_proxy(
        origin.url, cache=warming(urls=urls, refresh_ahead=0.5, max_rate="20/second")
    )
    await until(lambda: origin.hits["/api/market/summary"] > 0 and origin.hits["/api/quotes"] > 0)
    # A warming request is a plain GET with its query, from nobody.
    first = origin.requests[0]
    assert first.method == "GET" and "X-Forwarded-For" not in first.headers
    assert {r.path_qs for r in origin.requests} == set(urls)
    resp, body = await get(http, proxy, "/api/quotes?symbol=ACME")
    assert resp.headers["X-Cache"] == "HIT" and body.startswith(b"/api/quotes?symbol=ACME v")
    await asyncio.sleep(1.5)  # past the first entry's lifetime: it was kept fresh
    resp, _ = await get(http, proxy, "/api/market/summary")
    assert resp.headers["X-Cache"] == "HIT"
    assert origin.hits["/api/market/summary"] >= 3


async def test_warming_never_exceeds_its_rate(origin: Origin, start_proxy: StartProxy) -> None:
    arrivals: list[float] = []

    def respond(_: web.Request) -> web.Response:
        arrivals.append(time.monotonic())
        return web.Response(text="x", headers=fresh_for(60))

    origin.respond = respond
    urls = [f"/w/{i}" for i in range(20)]
    await start_proxy(origin.url, cache=warming(urls=urls, max_rate="5/second"))
    await asyncio.sleep(1.3)
    # One request per 0.2 s: about 7 by now, not 20; at most 5 in any second (+1 for the
    # jitter between sending one and the upstream seeing it).
    assert 4 <= len(arrivals) <= 8
    for i, start in enumerate(arrivals):
        assert len([t for t in arrivals[i:] if t < start + 1.0]) <= 6


async def test_warming_pauses_while_the_circuit_is_open(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    origin.respond = lambda r: web.Response(status=503, text="down")
    urls = [f"/w/{i}" for i in range(10)]
    settings = {
        "url": origin.url,
        "circuit_breaker": {"min_requests": 3, "window": 10, "reset_after": 30},
    }
    proxy = await start_proxy(
        origin.url, upstream=settings, cache=warming(urls=urls, max_rate="50/second")
    )
    await until(lambda: sum(origin.hits.values()) == 3)
    await asyncio.sleep(0.3)  # 15 more would have gone at 50/second
    assert sum(origin.hits.values()) == 3
    upstreams = (await health(http, proxy))["checks"]["circuits"]["upstreams"]
    assert upstreams == {"default": {"status": "down", "circuit": "open"}}


async def test_warming_does_not_queue_behind_clients(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    release = asyncio.Event()

    async def respond(r: web.Request) -> web.Response:
        if r.path == "/client":
            await release.wait()
        return web.Response(text="x", headers=fresh_for(60))

    origin.respond = respond
    settings = {"url": origin.url, "pool": {"max_connections": 1}}
    proxy = await start_proxy(origin.url, upstream=settings, cache={})
    client = asyncio.create_task(get(http, proxy, "/client"))
    await until(lambda: origin.hits["/client"] == 1)
    waiting = asyncio.create_task(get(http, proxy, "/client2"))
    await until(lambda: proxy.upstream.stats()[0].queued == 1)
    # A warm-up now would have to wait: it is refused instead, and the client keeps its turn.
    route = proxy.pipeline.routes.match("GET", "/w")

    async def warm() -> Entry | None:
        request = cast(web.BaseRequest, WarmingRequest("/w"))
        return await proxy.pipeline.cache.warm(request, route, parse_target("/w"))

    assert await asyncio.create_task(warm()) is None
    assert origin.hits["/w"] == 0
    release.set()
    assert [(await t)[0].status for t in (client, waiting)] == [200, 200]
