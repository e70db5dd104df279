"""Soft purges through running proxies: entries kept, made stale, served once more while one
conditional request per instance revalidates them; in memory, and through a real Redis shared
by two instances."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from proxy.server.app import ProxyServer
from tests.conftest import Origin, StartProxy, get, url_of
from tests.e2e.test_shared_cache import admin, eventually, shared
from tests.redis_servers import RedisServer

SOFT = {"Soft-Purge": "1"}


class Versioned:
    """An origin with an ETag: a conditional request it answers 304 (after `delay`), unless
    the version changed; `conditional` holds the validators each conditional one sent."""

    def __init__(self, origin: Origin, cache_control: str = "max-age=60", etag: bool = True):
        self.version = 1
        self.delay = 0.0
        self.cache_control = cache_control
        self.etag = etag
        self.fail = False
        self.conditional: list[tuple[str | None, str | None]] = []
        origin.respond = self.respond

    async def respond(self, request: web.Request) -> web.Response:
        inm, ims = request.headers.get("If-None-Match"), request.headers.get("If-Modified-Since")
        headers = {"Cache-Control": self.cache_control, "Surrogate-Key": "quotes"}
        if self.etag:
            headers["ETag"] = f'"v{self.version}"'
        if inm is not None or ims is not None:
            self.conditional.append((inm, ims))
            await asyncio.sleep(self.delay)
            if self.fail:
                return web.Response(status=503, text="down")
            if inm == headers.get("ETag"):
                return web.Response(status=304, headers=headers)
        return web.Response(text=f"v{self.version}", headers=headers)


async def burst(
    http: aiohttp.ClientSession, proxies: list[ProxyServer], path: str, each: int
) -> list[tuple[str, str, bytes]]:
    """`each` GETs of `path` at once on every proxy: (X-Cache, Cache-Status, body) each."""

    async def one(proxy: ProxyServer) -> tuple[str, str, bytes]:
        resp, body = await get(http, proxy, path)
        return resp.headers["X-Cache"], resp.headers["Cache-Status"], body

    return list(await asyncio.gather(*(one(p) for p in proxies for _ in range(each))))


async def x_cache(http: aiohttp.ClientSession, proxy: ProxyServer, path: str) -> str:
    resp, _ = await get(http, proxy, path)
    return resp.headers["X-Cache"]


def hit_on(http: aiohttp.ClientSession, proxy: ProxyServer, path: str) -> Callable[[], Any]:
    async def check() -> bool:
        return await x_cache(http, proxy, path) == "HIT"

    return check


async def soft_purge(
    http: aiohttp.ClientSession, proxy: ProxyServer, how: str, path: str
) -> dict[str, Any]:
    """Soft-purge `path` (tagged "quotes") one of the ways there are; the response body."""
    if how == "PURGE":
        async with http.request("PURGE", url_of(proxy, path), headers=SOFT) as resp:
            assert resp.status == 200
            sent: dict[str, Any] = await resp.json()
            return sent
    specs: dict[str, dict[str, Any]] = {
        "url": {"url": path, "soft": True},
        "url-header": {"url": path},
        "prefix": {"prefix": path.rpartition("/")[0] + "/", "soft": True},
        "tag": {"tag": "quotes", "soft": True},
    }
    spec = specs[how]
    headers = SOFT if how == "url-header" else {}
    status, body = await admin(http, proxy, "POST", "/cache/purge", json=spec, headers=headers)
    assert status == 200, body
    return body


# --- one instance, memory only ---------------------------------------------------------


@pytest.mark.parametrize("how", ["PURGE", "url", "url-header", "prefix", "tag"])
async def test_after_a_soft_purge_a_burst_is_served_stale_while_one_conditional_request_revalidates(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession, how: str
) -> None:
    up = Versioned(origin)
    up.delay = 0.5  # the revalidation outlasts the burst
    proxy = await start_proxy(
        origin.url, cache={"tags_header": "Surrogate-Key"}, purge={"allow": ["127.0.0.1"]}
    )
    await get(http, proxy, "/api/q")
    assert await x_cache(http, proxy, "/api/q") == "HIT"
    assert await soft_purge(http, proxy, how, "/api/q") == {"purged": 1, "soft": True}
    served = await burst(http, [proxy], "/api/q", 8)
    assert {(x, body) for x, _, body in served} == {("STALE", b"v1")}
    assert all(";detail=soft-purged" in status for _, status, _ in served)
    await eventually(hit_on(http, proxy, "/api/q"), within=3.0)
    assert up.conditional == [('"v1"', None)]  # one, conditional, for the whole burst
    assert origin.hits["/api/q"] == 2


async def test_what_changed_is_served_once_its_revalidation_brought_it(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    up = Versioned(origin)
    proxy = await start_proxy(origin.url, cache={}, purge={"allow": ["127.0.0.1"]})
    await get(http, proxy, "/api/q")
    up.version = 2
    await soft_purge(http, proxy, "PURGE", "/api/q")
    resp, body = await get(http, proxy, "/api/q")
    assert (resp.headers["X-Cache"], body) == ("STALE", b"v1")  # once

    async def new_version() -> bool:
        resp, body = await get(http, proxy, "/api/q")
        return (resp.headers["X-Cache"], body) == ("HIT", b"v2")

    await eventually(new_version, within=3.0)
    assert up.conditional == [('"v1"', None)]


@pytest.mark.parametrize(
    ("cache_control", "etag", "x_cache", "validated"),
    [
        # Without a validator its revalidation would refetch what was declared out of date:
        # it is merely stale, and the next request waits for the new one.
        ("max-age=60", False, "MISS", False),
        # The origin forbids serving it stale: the next request waits for its revalidation.
        ("max-age=60, must-revalidate", True, "REVALIDATED", True),
        ("no-cache", True, "REVALIDATED", True),
    ],
)
async def test_without_a_validator_or_leave_to_serve_stale_there_is_no_grace(
    origin: Origin,
    start_proxy: StartProxy,
    http: aiohttp.ClientSession,
    cache_control: str,
    etag: bool,
    x_cache: str,
    validated: bool,
) -> None:
    up = Versioned(origin, cache_control, etag)
    proxy = await start_proxy(origin.url, cache={}, purge={"allow": ["127.0.0.1"]})
    await get(http, proxy, "/api/q")
    assert await soft_purge(http, proxy, "PURGE", "/api/q") == {"purged": 1, "soft": True}
    resp, body = await get(http, proxy, "/api/q")
    assert (resp.headers["X-Cache"], body) == (x_cache, b"v1")
    assert bool(up.conditional) is validated


async def test_the_grace_lasts_one_revalidation_a_failed_one_leaves_the_entry_merely_stale(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    up = Versioned(origin)
    proxy = await start_proxy(origin.url, cache={}, purge={"allow": ["127.0.0.1"]})
    await get(http, proxy, "/api/q")
    up.fail = True
    await soft_purge(http, proxy, "PURGE", "/api/q")
    assert await x_cache(http, proxy, "/api/q") == "STALE"

    async def refused() -> bool:  # never stale for ever: the next request waits, and fails
        resp, _ = await get(http, proxy, "/api/q")
        return resp.status == 503

    await eventually(refused, within=3.0)
    # The grace's, then the client's own (and the upstream retry policy's, if any).
    assert len(up.conditional) >= 2


async def test_bad_soft_purge_requests_are_refused_and_purge_nothing(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    Versioned(origin)
    proxy = await start_proxy(origin.url, cache={}, purge={"allow": ["127.0.0.1"]})
    await get(http, proxy, "/api/q")
    async with http.request("PURGE", url_of(proxy, "/api/q"), headers={"Soft-Purge": "y"}) as r:
        assert (r.status, (await r.json())["error"]) == (400, "bad_request")
    for spec, headers in [
        ({"url": "/api/q", "soft": "yes"}, {}),
        ({"url": "/api/q", "soft": 1}, {}),
        ({"url": "/api/q", "soft": False}, SOFT),
        ({"soft": True}, {}),
        ({"url": "/api/q"}, {"Soft-Purge": "2"}),
    ]:
        status, body = await admin(http, proxy, "POST", "/cache/purge", json=spec, headers=headers)
        assert (status, body["error"]) == (400, "bad_request"), spec
    assert await x_cache(http, proxy, "/api/q") == "HIT"
    status, body = await admin(http, proxy, "POST", "/cache/purge", json={"url": "/nothing"})
    assert (status, body) == (200, {"purged": 0})


# --- instances sharing a Redis ------------------------------------------------------------


async def soft_purged_here(http: aiohttp.ClientSession, proxy: ProxyServer) -> int:
    _, stats = await admin(http, proxy, "GET", "/cache/stats")
    count: int = stats["soft_purged"]
    return count


async def test_a_soft_purge_on_one_instance_makes_both_serve_stale_and_revalidate_once_each(
    origin: Origin,
    start_proxy: StartProxy,
    http: aiohttp.ClientSession,
    redis_server: RedisServer,
) -> None:
    up = Versioned(origin)
    up.delay = 0.5
    config = shared({"url": redis_server.url})
    a = await start_proxy(origin.url, **config, purge={"allow": ["127.0.0.1"]})
    b = await start_proxy(origin.url, **config)
    await get(http, a, "/api/q")
    assert await x_cache(http, b, "/api/q") == "HIT"  # from Redis, now in B's memory too
    assert await soft_purge(http, a, "PURGE", "/api/q") == {"purged": 1, "soft": True}

    async def b_marked_it() -> bool:  # through the purge log: marked there, not dropped
        return await soft_purged_here(http, b) == 1

    await eventually(b_marked_it)
    served = await burst(http, [a, b], "/api/q", 5)
    assert {(x, body) for x, _, body in served} == {("STALE", b"v1")}
    assert all(";detail=soft-purged" in status for _, status, _ in served)
    await eventually(hit_on(http, a, "/api/q"), within=3.0)
    await eventually(hit_on(http, b, "/api/q"), within=3.0)
    assert 1 <= len(up.conditional) <= 2  # one per instance at most, for ten requests
    assert set(up.conditional) == {('"v1"', None)}
    assert origin.hits["/api/q"] == 1 + len(up.conditional)


async def test_an_instance_reading_a_soft_purged_entry_from_redis_serves_it_stale_not_fresh(
    origin: Origin,
    start_proxy: StartProxy,
    http: aiohttp.ClientSession,
    redis_server: RedisServer,
) -> None:
    up = Versioned(origin)
    config = shared({"url": redis_server.url})
    a, b = await start_proxy(origin.url, **config), await start_proxy(origin.url, **config)
    await get(http, a, "/api/q")  # in Redis; B's memory never had it
    spec = {"tag": "quotes", "soft": True}
    status, body = await admin(http, a, "POST", "/cache/purge", json=spec)
    assert (status, body) == (200, {"purged": 1, "purged_shared": 1, "soft": True})

    async def b_followed_it() -> bool:
        # A request that B looks up while the purge's notice arrives is revalidated at once
        # (its memory refuses the copy it read: a purge came since), which is correct but not
        # what this test is about.
        _, stats = await admin(http, b, "GET", "/cache/stats")
        applied: int = stats["shared"]["purges_applied"]
        return applied >= 1

    await eventually(b_followed_it)
    resp, body = await get(http, b, "/api/q")
    assert (resp.headers["X-Cache"], body) == ("STALE", b"v1")  # not Redis's fresh-looking copy
    assert ";detail=soft-purged" in resp.headers["Cache-Status"]
    await eventually(hit_on(http, b, "/api/q"), within=3.0)
    assert up.conditional == [('"v1"', None)]
    # B stored what it revalidated in Redis, unmarked: A's memory finds it there.
    resp, _ = await get(http, a, "/api/q")
    assert resp.headers["Cache-Status"].startswith("cacheproxy;hit;detail=shared")
    assert up.conditional == [('"v1"', None)]
