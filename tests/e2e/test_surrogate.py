"""Surrogate keys and Surrogate-Control through the real proxy: they steer this cache and never
reach a client, on any path a response takes."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from proxy.server.app import ProxyServer
from tests.conftest import Origin, StartProxy, get, url_of
from tests.e2e.test_shared_cache import shared
from tests.redis_servers import RedisServer

SURROGATE = {"Surrogate-Key": "a b", "Surrogate-Control": "max-age=60"}
HIDDEN = ("Surrogate-Key", "Surrogate-Control")


def hides(resp: aiohttp.ClientResponse, names: tuple[str, ...] = HIDDEN) -> bool:
    return not any(name in resp.headers for name in names)


def ttl(resp: aiohttp.ClientResponse) -> int:
    return int(resp.headers["Cache-Status"].rpartition("ttl=")[2])


async def purge(proxy: ProxyServer, body: dict[str, str]) -> tuple[int, Any]:
    url = f"http://127.0.0.1:{proxy.admin_port}/cache/purge"
    async with (
        aiohttp.ClientSession() as s,
        s.post(url, json=body, headers={"Authorization": "Bearer s3cret"}) as resp,
    ):
        return resp.status, await resp.json()


async def test_surrogate_control_keeps_an_entry_60_s_and_clients_see_neither_field(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    origin.respond = lambda r: web.Response(
        text="quote", headers={"Cache-Control": "max-age=0", "ETag": '"v1"', **SURROGATE}
    )
    proxy = await start_proxy(origin.url, cache={}, admin={"token": "s3cret"})
    miss, body = await get(http, proxy, "/q")
    assert (miss.headers["X-Cache"], body) == ("MISS", b"quote")
    assert miss.headers["Cache-Status"].startswith("cacheproxy;fwd=miss;stored;ttl=")
    assert 59 <= ttl(miss) <= 60
    assert miss.headers["Cache-Control"] == "max-age=0"  # the browser's, untouched
    hit, body = await get(http, proxy, "/q")
    assert (hit.headers["X-Cache"], body) == ("HIT", b"quote")
    # Its age counts from the origin's Date, whole seconds: up to a second before the store,
    # and the hit may come a moment after a second's turn (CI saw 58).
    assert 58 <= ttl(hit) <= 60
    ranged, part = await get(http, proxy, "/q", headers={"Range": "bytes=0-1"})
    assert (ranged.status, part) == (206, b"qu")
    other, _ = await get(http, proxy, "/q", headers={"If-None-Match": '"v0"'})
    same, _ = await get(http, proxy, "/q", headers={"If-None-Match": '"v1"'})
    assert (other.status, same.status) == (200, 304)
    async with http.head(url_of(proxy, "/q")) as head:
        assert head.headers["X-Cache"] == "HIT"
    for resp in (miss, hit, ranged, other, same, head):
        assert hides(resp), resp.headers
    assert origin.hits["/q"] == 1
    # The stored entry keeps both: for tag purge, and for instances reading it from Redis.
    [entry] = proxy.pipeline.cache.store._entries.values()
    assert entry.headers["Surrogate-Key"] == "a b" and entry.tags == ("a", "b")

    assert await purge(proxy, {"tag": "a"}) == (200, {"purged": 1})
    again, _ = await get(http, proxy, "/q")
    assert again.headers["X-Cache"] == "MISS" and hides(again)
    assert origin.hits["/q"] == 2


async def test_stale_revalidated_and_stale_if_error_responses_hide_them_too(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    state = {"down": False}

    def respond(r: web.Request) -> web.Response:
        if state["down"]:
            return web.Response(status=503, text="down")
        headers = {
            "Cache-Control": "no-cache",
            "Surrogate-Key": "s",
            "Surrogate-Control": "max-age=2, stale-while-revalidate=3, stale-if-error=60",
            "ETag": '"e"',
        }
        if r.headers.get("If-None-Match") == '"e"':
            return web.Response(status=304, headers=headers)
        return web.Response(text="v", headers=headers)

    # Windows of seconds, each waited past with room: a loaded machine has taken most of a
    # second per request, which turned a 1 s window's STALE into REVALIDATED.
    origin.respond = respond
    proxy = await start_proxy(origin.url, cache={})
    await get(http, proxy, "/s")
    fresh, _ = await get(http, proxy, "/s")
    assert fresh.headers["X-Cache"] == "HIT"  # no-cache was the browser's
    await asyncio.sleep(2.1)
    stale, _ = await get(http, proxy, "/s")
    assert stale.headers["X-Cache"] == "STALE"  # Surrogate-Control's stale-while-revalidate
    await asyncio.sleep(0.3)  # its background refresh: a 304
    await asyncio.sleep(5.5)  # past both windows but stale-if-error's
    revalidated, _ = await get(http, proxy, "/s")
    assert revalidated.headers["X-Cache"] == "REVALIDATED"
    await asyncio.sleep(5.5)
    state["down"] = True
    on_error, body = await get(http, proxy, "/s")
    assert (on_error.headers["X-Cache"], body) == ("STALE", b"v")
    assert "stale-if-error" in on_error.headers["Cache-Status"]
    for resp in (fresh, stale, revalidated, on_error):
        assert hides(resp), resp.headers


async def test_responses_a_caching_route_does_not_store_hide_them_and_others_pass_them(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    big = "x" * 200_000  # past the size of a response sent in one write: streamed

    def respond(r: web.Request) -> web.Response:
        text = big if "big" in r.path else "ok"
        return web.Response(
            text=text, headers={"Surrogate-Control": "no-store", "Surrogate-Key": "k"}
        )

    origin.respond = respond
    proxy = await start_proxy(
        origin.url,
        cache={},
        routes=[{"name": "plain", "match": {"prefix": "/plain/"}, "cache": False}],
    )
    seen = []
    for path in ("/no", "/no", "/big"):
        resp, _ = await get(http, proxy, path)
        assert resp.headers["Cache-Status"] == "cacheproxy;fwd=miss;detail=no-store"
        seen.append(resp)
    for method, outcome in (("POST", "BYPASS"), ("HEAD", "MISS")):
        async with http.request(method, url_of(proxy, "/no")) as resp:
            assert resp.headers["X-Cache"] == outcome
            seen.append(resp)
    async with http.get(url_of(proxy, "/big"), headers={"Authorization": "Bearer a"}) as resp:
        await resp.read()
        seen.append(resp)
    for resp in seen:
        assert hides(resp), resp.headers
    assert origin.hits["/no"] == 4
    # A route that does not cache is no surrogate: the fields are someone else's.
    plain, _ = await get(http, proxy, "/plain/x")
    assert (plain.headers["Surrogate-Control"], plain.headers["Surrogate-Key"]) == (
        "no-store",
        "k",
    )


async def test_keep_surrogate_headers_hands_them_on_for_a_cdn_in_front(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    origin.respond = lambda r: web.Response(
        text="q", headers={"Cache-Control": "max-age=0", **SURROGATE}
    )
    proxy = await start_proxy(origin.url, cache={"keep_surrogate_headers": True})
    for expected in ("MISS", "HIT"):
        resp, _ = await get(http, proxy, "/k")
        assert resp.headers["X-Cache"] == expected
        assert {name: resp.headers[name] for name in HIDDEN} == SURROGATE


async def test_cdn_cache_control_wins_over_surrogate_control(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    origin.respond = lambda r: web.Response(
        text="c",
        headers={"CDN-Cache-Control": "max-age=30", "Cache-Control": "no-store", **SURROGATE},
    )
    proxy = await start_proxy(origin.url, cache={})
    miss, _ = await get(http, proxy, "/c")
    assert miss.headers["Cache-Status"].startswith("cacheproxy;fwd=miss;stored;ttl=")
    assert 29 <= ttl(miss) <= 30
    hit, _ = await get(http, proxy, "/c")
    assert hit.headers["X-Cache"] == "HIT" and 29 <= ttl(hit) <= 30
    assert hides(miss) and hides(hit)


async def test_surrogate_no_store_is_never_stored(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    origin.respond = lambda r: web.Response(
        text="n", headers={"Cache-Control": "public, max-age=60", "Surrogate-Control": "no-store"}
    )
    proxy = await start_proxy(origin.url, cache={"ttl": 60})
    for _ in range(2):
        resp, _ = await get(http, proxy, "/n")
        assert resp.headers["Cache-Status"] == "cacheproxy;fwd=miss;detail=no-store"
    assert origin.hits["/n"] == 2
    assert len(proxy.pipeline.cache.store) == 0


async def test_a_configured_cache_tag_comma_list_tags_entries_and_is_hidden(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    origin.respond = lambda r: web.Response(
        text=r.path,
        headers={
            "Cache-Control": "max-age=60",
            "Cache-Tag": f"quotes, {r.path.rsplit('/', 1)[1]},,",
            "Surrogate-Key": "not-ours",  # not configured: not a tag, nor hidden
        },
    )
    proxy = await start_proxy(
        origin.url,
        cache={"tags_header": "Cache-Tag"},
        admin={"token": "s3cret"},
    )
    for path in ("/q/aapl", "/q/msft"):
        resp, _ = await get(http, proxy, path)
        assert "Cache-Tag" not in resp.headers and resp.headers["Surrogate-Key"] == "not-ours"
    assert await purge(proxy, {"tag": "not-ours"}) == (200, {"purged": 0})
    assert await purge(proxy, {"tag": "msft"}) == (200, {"purged": 1})
    assert (await get(http, proxy, "/q/aapl"))[0].headers["X-Cache"] == "HIT"
    assert await purge(proxy, {"tag": "quotes"}) == (200, {"purged": 1})
    assert len(proxy.pipeline.cache.store) == 0


async def test_compressed_variants_hide_them(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    origin.respond = lambda r: web.Response(
        text="y" * 5000,
        content_type="application/json",
        headers={"Cache-Control": "max-age=0", **SURROGATE},
    )
    proxy = await start_proxy(origin.url, cache={}, compression={"algorithms": ["gzip"]})
    seen = []
    for coding in ("gzip", "gzip", "identity", "identity"):
        resp, _ = await get(http, proxy, "/z", headers={"Accept-Encoding": coding})
        seen.append(resp)
    assert [r.headers.get("Content-Encoding") for r in seen] == ["gzip", "gzip", None, None]
    assert [r.headers["X-Cache"] for r in seen] == ["MISS", "HIT", "HIT", "HIT"]
    for resp in seen:
        assert hides(resp), resp.headers


@pytest.mark.parametrize("keyed", [False, True])
async def test_an_instance_reading_the_entry_from_redis_obeys_surrogate_control_and_tags(
    origin: Origin,
    start_proxy: StartProxy,
    http: aiohttp.ClientSession,
    redis_server: RedisServer,
    keyed: bool,
) -> None:
    # Cache-Control alone would make every read a revalidation: the field the clients never
    # see must reach the other instance, in the stored head.
    origin.respond = lambda r: web.Response(
        text="r", headers={"Cache-Control": "no-cache", **SURROGATE}
    )
    config = shared({"url": redis_server.url}, ttl=None)
    if keyed:
        config["cache"]["key_secret"] = "s" * 16
    config["admin"] = {"token": "s3cret"}
    a, b = await start_proxy(origin.url, **config), await start_proxy(origin.url, **config)
    first, _ = await get(http, a, "/r")
    assert first.headers["X-Cache"] == "MISS"
    from_redis, _ = await get(http, b, "/r")
    assert from_redis.headers["Cache-Status"].startswith("cacheproxy;hit;detail=shared")
    assert 58 <= ttl(from_redis) <= 60
    again, _ = await get(http, b, "/r")
    assert again.headers["X-Cache"] == "HIT"
    assert hides(first) and hides(from_redis) and hides(again)
    assert origin.hits["/r"] == 1
    assert await purge(b, {"tag": "b"}) == (200, {"purged": 1, "purged_shared": 1})
