"""Protecting the upstream, end to end against real upstreams that are slow, flap, refuse
connections or respond 503: the bound, the queue, retries and their budget, the breaker,
adaptive concurrency."""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import Callable
from email.utils import formatdate
from typing import Any

import aiohttp
from aiohttp import web

from proxy.server.app import ProxyServer
from proxy.server.listener import default_max_connections, open_files_limit
from tests.conftest import Origin, StartProxy, StartUpstream, free_port, get, url_of

NO_BREAKER: dict[str, Any] = {"circuit_breaker": False}


def upstream(origin: Origin, **settings: Any) -> dict[str, Any]:
    return {"url": origin.url, **settings}


def fresh_date() -> str:
    """A Date header rounded up: a truncated one would make entries look up to 1 s old."""
    return formatdate(math.ceil(time.time()), usegmt=True)


class InFlight:
    """Counts the requests an upstream handler is working on."""

    def __init__(self) -> None:
        self.now = 0
        self.peak = 0
        self.log: list[tuple[float, int]] = []  # (time, in flight) at each arrival

    async def __aenter__(self) -> None:
        self.now += 1
        self.peak = max(self.peak, self.now)
        self.log.append((time.monotonic(), self.now))

    async def __aexit__(self, *_: object) -> None:
        self.now -= 1


async def until(check: Callable[[], bool], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


async def health(http: aiohttp.ClientSession, proxy: ProxyServer) -> dict[str, Any]:
    async with http.get(f"http://127.0.0.1:{proxy.admin_port}/health") as resp:
        assert resp.status == 200
        return await resp.json()


# --- the bound and the queue ---------------------------------------------------------


async def test_the_bound_holds_at_the_upstream_and_the_queue_serves_everyone(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    working = InFlight()

    async def respond(_: web.Request) -> web.Response:
        async with working:
            await asyncio.sleep(0.1)
        return web.Response(text="ok")

    origin.respond = respond
    proxy = await start_proxy(origin.url, upstream=upstream(origin, pool={"max_connections": 3}))
    results = await asyncio.gather(*(get(http, proxy, f"/b/{i}") for i in range(12)))
    assert [r.status for r, _ in results] == [200] * 12
    assert working.peak == 3
    (stats,) = proxy.upstream.stats()
    assert (stats.name, stats.limit, stats.in_flight, stats.queued) == ("default", 3, 0, 0)
    assert stats.queue_waits == 9 and stats.queue_wait_seconds > 0 and stats.admitted == 12


async def test_a_full_queue_is_a_503_with_retry_after_at_once(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    release = asyncio.Event()

    async def respond(_: web.Request) -> web.Response:
        await release.wait()
        return web.Response(text="done")

    origin.respond = respond
    proxy = await start_proxy(
        origin.url, upstream=upstream(origin, pool={"max_connections": 1, "max_queue": 1})
    )
    first = asyncio.create_task(get(http, proxy, "/q/1"))
    await until(lambda: origin.hits["/q/1"] == 1)
    second = asyncio.create_task(get(http, proxy, "/q/2"))
    await until(lambda: proxy.upstream.stats()[0].queued == 1)
    resp, body = await get(http, proxy, "/q/3")
    assert resp.status == 503 and resp.headers["Retry-After"] == "1"
    assert resp.content_type == "application/json"
    assert b'"error":"upstream_busy"' in body and b"its queue is full (1 waiting)" in body
    assert origin.hits["/q/3"] == 0
    # Visible while it happens: /metrics and /performance/connections.
    admin = f"http://127.0.0.1:{proxy.admin_port}"
    async with http.get(f"{admin}/metrics", headers={"Accept-Encoding": "identity"}) as resp:
        metrics = await resp.text()
    for line in (
        'cacheproxy_upstream_in_flight{upstream="default"} 1.0',
        'cacheproxy_upstream_queued{upstream="default"} 1.0',
        'cacheproxy_upstream_rejected_total{reason="queue_full",upstream="default"} 1.0',
    ):
        assert line in metrics.splitlines(), line
    async with http.get(f"{admin}/performance/connections") as resp:
        (upstream_figures,) = (await resp.json())["upstreams"]
    assert upstream_figures["queued"] == 1 and upstream_figures["circuit"] == "closed"
    release.set()
    assert [(await t)[0].status for t in (first, second)] == [200, 200]
    assert proxy.upstream.stats()[0].queue_full == 1


async def test_a_wait_past_queue_timeout_is_a_503_not_a_504(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    release = asyncio.Event()

    async def respond(_: web.Request) -> web.Response:
        await release.wait()
        return web.Response(text="done")

    origin.respond = respond
    pool = {"max_connections": 1, "queue_timeout": 0.2}
    proxy = await start_proxy(origin.url, upstream=upstream(origin, pool=pool))
    first = asyncio.create_task(get(http, proxy, "/slow"))
    await until(lambda: origin.hits["/slow"] == 1)
    resp, body = await get(http, proxy, "/waits")
    assert resp.status == 503 and "Retry-After" in resp.headers
    assert b'"error":"upstream_busy"' in body and b"within 0.2 s" in body
    release.set()
    assert (await first)[0].status == 200
    assert proxy.upstream.stats()[0].queue_timeouts == 1


async def test_each_upstream_has_its_own_bound_and_queue(
    origin: Origin,
    start_upstream: StartUpstream,
    start_proxy: StartProxy,
    http: aiohttp.ClientSession,
) -> None:
    release = asyncio.Event()

    async def respond(_: web.Request) -> web.Response:
        await release.wait()
        return web.Response(text="slow one")

    origin.respond = respond
    other = Origin()
    other.upstream = await start_upstream(other.app())
    routes = [{"name": "reports", "match": {"prefix": "/reports/"}, "upstream": other.upstream.url}]
    pool = {"max_connections": 1, "max_queue": 0}
    proxy = await start_proxy(origin.url, upstream=upstream(origin, pool=pool), routes=routes)
    stuck = asyncio.create_task(get(http, proxy, "/busy"))
    await until(lambda: origin.hits["/busy"] == 1)
    resp, _ = await get(http, proxy, "/reports/1")  # the other upstream's slot is free
    assert resp.status == 200
    resp, _ = await get(http, proxy, "/more")  # this one's is not, and nobody may wait
    assert resp.status == 503
    assert [(o.name, o.admitted) for o in proxy.upstream.stats()] == [
        ("default", 1),
        ("reports", 1),
    ]
    # Descriptors are kept free for both pools.
    assert proxy.listener_stats.max_connections == default_max_connections(open_files_limit(), 2)
    release.set()
    assert (await stuck)[0].status == 200


# --- retries -------------------------------------------------------------------------


async def test_only_idempotent_requests_without_a_streamed_body_are_retried(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    origin.respond = lambda r: web.Response(status=503, text="overloaded")
    retries = {"attempts": 2, "backoff": 0, "max_backoff": 0}
    proxy = await start_proxy(origin.url, upstream=upstream(origin, retries=retries, **NO_BREAKER))

    async def streamed() -> Any:
        yield b"streamed body"  # chunked: no Content-Length, so never read whole first

    calls: list[tuple[str, str, Any]] = [
        ("GET", "/get", None),
        ("DELETE", "/delete", None),
        ("POST", "/post", b"order"),
        ("PATCH", "/patch", None),
        ("PUT", "/put", b"small body, read whole"),
        ("PUT", "/put-streamed", streamed()),
    ]
    for method, path, data in calls:
        async with http.request(method, url_of(proxy, path), data=data) as resp:
            # Retries used up: the upstream's own response, as it was.
            assert (resp.status, await resp.text()) == (503, "overloaded")
    assert {path: origin.hits[path] for _, path, _ in calls} == {
        "/get": 3,
        "/delete": 3,
        "/post": 1,
        "/patch": 1,
        "/put": 3,
        "/put-streamed": 1,
    }
    # Each retry of the PUT carried its whole body.
    puts = [r for r in origin.requests if r.path == "/put"]
    assert [r.content_length for r in puts] == [len(b"small body, read whole")] * 3


async def dropping_first_connection() -> tuple[asyncio.Server, Counter[str]]:
    """Reads each request whole; closes the first connection of each path without an
    response (as an upstream restarting does), responds 200 after that."""
    seen: Counter[str] = Counter()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        request_line, *lines = head.decode().split("\r\n")
        method, path, _ = request_line.split(" ")
        length = next(
            (
                int(v)
                for k, _, v in (x.partition(":") for x in lines)
                if k.lower() == "content-length"
            ),
            0,
        )
        await reader.readexactly(length)
        seen[f"{method} {path}"] += 1
        if seen[f"{method} {path}"] == 1:
            writer.transport.abort()
            return
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        await writer.drain()
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0), seen


async def test_a_dropped_connection_is_retried_for_get_never_for_post(
    start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    server, seen = await dropping_first_connection()
    async with server:
        url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        proxy = await start_proxy(url, upstream={"url": url, "retries": {"attempts": 1}})
        async with http.get(url_of(proxy, "/item")) as resp:
            assert (resp.status, await resp.read()) == (200, b"ok")
        async with http.post(url_of(proxy, "/order"), data=b"buy 1") as resp:
            assert resp.status == 502
            assert (await resp.json())["error"] == "upstream_unavailable"
    # The POST's bytes reached the upstream: sending it again could buy twice.
    assert seen == {"GET /item": 2, "POST /order": 1}


async def test_retries_stay_within_the_budget(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    origin.respond = lambda r: web.Response(status=503, text="overloaded")
    retries = {"attempts": 3, "backoff": 0, "max_backoff": 0, "budget": 0.2, "min_per_second": 0}
    proxy = await start_proxy(origin.url, upstream=upstream(origin, retries=retries, **NO_BREAKER))
    for _ in range(20):
        resp, _ = await get(http, proxy, "/storm")
        assert resp.status == 503
    # 20 requests allow 4 retries: without the budget, 60 retries would have gone.
    assert origin.hits["/storm"] == 24
    stats = proxy.upstream.stats()[0]
    assert (stats.requests, stats.retries) == (20, 4)


async def test_retry_after_and_the_clients_time_decide_whether_to_retry(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    asks = {"/now": "0", "/soon": "1", "/later": "5"}
    origin.respond = lambda r: web.Response(
        status=503, headers={"Retry-After": asks[r.path]}, text="busy"
    )
    settings = upstream(
        origin,
        retries={"attempts": 1, "backoff": 0.01, "max_backoff": 2},
        timeouts={"total": 0.5},
        **NO_BREAKER,
    )
    proxy = await start_proxy(origin.url, upstream=settings)
    for path in asks:
        resp, _ = await get(http, proxy, path)
        assert resp.status == 503
    # /soon: 1 s is allowed by max_backoff, but the client's 0.5 s would be over by then;
    # /later: the upstream asks for more than max_backoff.
    assert {p: origin.hits[p] for p in asks} == {"/now": 2, "/soon": 1, "/later": 1}


async def test_a_retry_gets_what_is_left_of_the_clients_time_not_all_of_it(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    async def respond(r: web.Request) -> web.Response:
        await asyncio.sleep(0.3)
        return web.Response(status=503, text="busy")

    origin.respond = respond
    settings = upstream(
        origin,
        retries={"attempts": 1, "backoff": 0, "max_backoff": 0},
        timeouts={"total": 0.5},
        **NO_BREAKER,
    )
    proxy = await start_proxy(origin.url, upstream=settings)
    started = time.monotonic()
    resp, body = await get(http, proxy, "/busy")
    # The retry starts 0.3 s in with 0.2 s left: it times out before its own 503 comes.
    assert resp.status == 504 and b"within 0.5 s" in body
    assert 0.45 <= time.monotonic() - started < 0.6
    assert origin.hits["/busy"] == 2


async def test_timeouts_total_bounds_a_wait_for_the_head_but_not_an_upload(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    async def respond(r: web.Request) -> web.Response:
        if r.path == "/slow":
            await asyncio.sleep(0.6)
        return web.Response(text=f"{r.path} ok")

    origin.respond = respond
    proxy = await start_proxy(
        origin.url, upstream=upstream(origin, timeouts={"total": 0.3}, **NO_BREAKER)
    )
    resp, body = await get(http, proxy, "/slow")
    assert resp.status == 504
    assert b'"error":"upstream_timeout"' in body and b"within 0.3 s" in body

    async def slow_upload() -> Any:
        for _ in range(4):
            yield b"part;"
            await asyncio.sleep(0.15)

    # The upstream responds once it has the whole body: 0.6 s after the start, past `total`.
    async with http.post(url_of(proxy, "/upload"), data=slow_upload()) as resp:
        assert (resp.status, await resp.text()) == (200, "/upload ok")


# --- the circuit breaker -------------------------------------------------------------


async def test_refused_connections_are_retried_then_open_the_circuit(
    start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    settings = {
        "url": url,
        "retries": {"attempts": 2, "backoff": 0, "max_backoff": 0},
        "circuit_breaker": {"min_requests": 3, "window": 10, "reset_after": 30},
    }
    proxy = await start_proxy(url, upstream=settings)
    resp, body = await get(http, proxy, "/x")
    assert resp.status == 502 and b"upstream_unavailable" in body
    stats = proxy.upstream.stats()[0]
    # Three attempts at the only endpoint asked for, all failed: at min_requests, 100%.
    assert (stats.retries, stats.failures, stats.circuit) == (2, 3, "open")
    resp, body = await get(http, proxy, "/x")
    assert resp.status == 503 and b"upstream_unavailable" in body and b"paused" in body
    assert 29 <= int(resp.headers["Retry-After"]) <= 30
    assert proxy.upstream.stats()[0].failures == 3  # nothing was tried


async def test_the_breaker_opens_serves_stale_and_closes_again(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    failing = False

    def respond(r: web.Request) -> web.Response:
        if failing:
            return web.Response(status=503, text="down")
        cc = "max-age=0, must-revalidate" if r.path == "/strict" else "max-age=0"
        return web.Response(text=f"{r.path} v1", headers={"Cache-Control": cc})

    origin.respond = respond
    breaker = {"min_requests": 5, "window": 10, "reset_after": 0.3, "probes": 3}
    settings = upstream(origin, retries=0, circuit_breaker=breaker)
    proxy = await start_proxy(origin.url, upstream=settings, cache={})
    for path in ("/cached", "/strict"):
        resp, _ = await get(http, proxy, path)
        assert resp.headers["X-Cache"] == "MISS"  # stored, stale at once (max-age=0)

    failing = True
    for i in range(3):
        resp, _ = await get(http, proxy, f"/flaky/{i}")
        assert resp.status == 503  # the upstream's own 503s: 3 of 5 requests failed
    assert (await health(http, proxy))["checks"]["circuits"] == {
        "status": "down",
        "upstreams": {"default": {"status": "down", "circuit": "open"}},
    }
    hits = sum(origin.hits.values())

    # Open: the stale entry is served at once, though it has no stale-if-error at all...
    resp, body = await get(http, proxy, "/cached")
    assert (resp.status, body, resp.headers["X-Cache"]) == (200, b"/cached v1", "STALE")
    assert resp.headers["Cache-Status"].startswith("cacheproxy;hit;detail=circuit-open")
    # ...but never one whose origin forbade stale service; nor is anything uncached sent.
    for path in ("/strict", "/new"):
        resp, body = await get(http, proxy, path)
        assert resp.status == 503 and b'"error":"upstream_unavailable"' in body
        assert int(resp.headers["Retry-After"]) >= 1
    assert sum(origin.hits.values()) == hits
    assert (await health(http, proxy))["status"] == "degraded"

    # After reset_after, probes go, one per endpoint: one endpoint failing twice proves
    # nothing; the probes of three endpoints failing open it again at once.
    await asyncio.sleep(0.35)
    for path in ("/probe/1", "/probe/1", "/probe/2", "/probe/3"):
        resp, _ = await get(http, proxy, path)
        assert resp.status == 503
    assert (origin.hits["/probe/1"], origin.hits["/probe/2"], origin.hits["/probe/3"]) == (1, 1, 1)
    resp, body = await get(http, proxy, "/new")
    assert b"paused" in body and origin.hits["/new"] == 0

    # The upstream recovers: the next probe succeeds and closes the circuit.
    failing = False
    await asyncio.sleep(0.35)
    resp, body = await get(http, proxy, "/new")
    assert (resp.status, body) == (200, b"/new v1")
    resp, body = await get(http, proxy, "/cached")
    assert (resp.headers["X-Cache"], body) == ("MISS", b"/cached v1")  # fetched again
    health_now = await health(http, proxy)
    assert health_now["status"] == "healthy"
    assert health_now["checks"]["circuits"]["upstreams"]["default"]["circuit"] == "closed"
    assert proxy.upstream.stats()[0].circuit_opened == 2


# --- adaptive concurrency ------------------------------------------------------------


async def test_adaptive_mode_lowers_the_in_flight_count_when_latency_rises(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    working = InFlight()
    latency: Callable[[int], float] = lambda n: 0.1  # noqa: E731

    async def respond(_: web.Request) -> web.Response:
        async with working:
            await asyncio.sleep(latency(working.now))
        return web.Response(text="x")

    origin.respond = respond
    pool = {"max_connections": 16, "adaptive": {"window": 0.1}}
    proxy = await start_proxy(
        origin.url, upstream=upstream(origin, pool=pool, retries=0, **NO_BREAKER)
    )
    running = True

    async def client(i: int) -> None:
        n = 0
        while running:
            n += 1
            resp, _ = await get(http, proxy, f"/a/{i}/{n}")
            assert resp.status == 200

    clients = [asyncio.create_task(client(i)) for i in range(20)]
    # Slow start while latency holds: about 1 s here, longer on a loaded machine (windows
    # whose latency a busy event loop inflated do not raise the limit).
    await until(lambda: proxy.upstream.stats()[0].limit >= 12, within=8.0)
    # Now the upstream has 2 workers: beyond 2 requests in flight, latency grows.
    latency = lambda n: 0.1 * max(1.0, n / 2)  # noqa: E731
    await asyncio.sleep(2.0)
    since = time.monotonic() - 0.5
    recent_peak = max(n for t, n in working.log if t >= since)
    stats = proxy.upstream.stats()[0]
    running = False
    await asyncio.gather(*clients)
    # About 4 expected (where latency is 1.5 times the baseline); 16 without adaptive.
    assert stats.limit <= 10 and recent_peak <= 11
    # The unloaded latency (0.1 s), not the loaded one (0.8 s at 16 in flight).
    assert stats.latency_baseline is not None and stats.latency_baseline < 0.3
