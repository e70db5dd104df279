"""HTTP caching through the real proxy, against a real upstream on loopback."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from email.utils import formatdate
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from proxy.server.app import ProxyServer
from tests.conftest import Origin, StartProxy, get, url_of

CACHED = {"cache": {"ttl": 60}}


async def test_miss_then_hit_serves_origin_headers_unchanged(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    origin.respond = lambda r: web.Response(
        text="quote",
        headers={"Cache-Control": "max-age=60", "ETag": '"v1"', "X-Origin": "yes"},
    )
    proxy = await start_proxy(origin.url, **CACHED)
    first, body1 = await get(http, proxy, "/q")
    assert first.headers["X-Cache"] == "MISS"
    assert first.headers["Cache-Status"].startswith("cacheproxy;fwd=miss;stored")
    second, body2 = await get(http, proxy, "/q")
    assert second.headers["X-Cache"] == "HIT"
    assert second.headers["Cache-Status"].startswith("cacheproxy;hit;ttl=")
    assert int(second.headers["Age"]) >= 0
    assert body1 == body2 == b"quote"
    added = {"Age", "X-Cache", "Cache-Status", "Date", "Server", "X-Request-ID"}
    origin_view = {k: v for k, v in first.headers.items() if k not in added}
    assert {k: v for k, v in second.headers.items() if k not in added} == origin_view
    assert origin.hits["/q"] == 1


async def test_age_accounts_for_upstream_age(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    origin.respond = lambda r: web.Response(
        text="x", headers={"Cache-Control": "max-age=120", "Age": "100"}
    )
    proxy = await start_proxy(origin.url, cache={})
    await get(http, proxy, "/aged")
    resp, _ = await get(http, proxy, "/aged")
    assert resp.headers["X-Cache"] == "HIT"
    assert 100 <= int(resp.headers["Age"]) <= 102
    ttl = int(resp.headers["Cache-Status"].rpartition("ttl=")[2])
    assert 18 <= ttl <= 20


@pytest.mark.parametrize(
    ("response_headers", "request_headers", "reason"),
    [
        ({"Cache-Control": "no-store"}, {}, "no-store"),
        ({"Cache-Control": "private, max-age=60"}, {}, "private"),
        ({"Cache-Control": "max-age=60", "Set-Cookie": "s=1"}, {}, "set-cookie"),
        ({"Cache-Control": "max-age=60"}, {"Authorization": "Bearer a"}, "authorization"),
        ({"Cache-Control": "max-age=60"}, {"Cookie": "sid=a"}, "authorization"),
        ({"Cache-Control": "max-age=60", "Vary": "*"}, {}, "vary-star"),
        ({"Cache-Control": "max-age=60"}, {"Cache-Control": "no-store"}, "no-store"),
    ],
)
async def test_responses_a_shared_cache_must_not_store(
    origin: Origin,
    start_proxy: StartProxy,
    http: aiohttp.ClientSession,
    response_headers: dict[str, str],
    request_headers: dict[str, str],
    reason: str,
) -> None:
    origin.respond = lambda r: web.Response(
        text=r.headers.get("Authorization", "anon"), headers=response_headers
    )
    proxy = await start_proxy(origin.url, cache={})
    for _ in range(2):
        resp, _ = await get(http, proxy, "/p", headers=request_headers)
        assert resp.headers["X-Cache"] == "MISS"
        assert resp.headers["Cache-Status"] == f"cacheproxy;fwd=miss;detail={reason}"
    assert origin.hits["/p"] == 2


async def test_status_cacheability(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    statuses = {"/404": 404, "/500": 500, "/500-explicit": 500, "/301": 301}

    def respond(r: web.Request) -> web.Response:
        cc = "max-age=60" if r.path == "/500-explicit" else ""
        headers = {"Cache-Control": cc} if cc else {}
        if r.path == "/301":
            headers["Location"] = "/elsewhere"
        return web.Response(status=statuses[r.path], text="s", headers=headers)

    origin.respond = respond
    proxy = await start_proxy(origin.url, cache={"ttl": 30})
    for path in statuses:
        await get(http, proxy, path, allow_redirects=False)
        await get(http, proxy, path, allow_redirects=False)
    # 404 and 301 are cacheable by default (route ttl applies); a 500 only when explicit.
    assert origin.hits == Counter({"/404": 1, "/301": 1, "/500": 2, "/500-explicit": 1})


async def test_per_user_entries_never_cross_users(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    origin.respond = lambda r: web.Response(
        text=f"portfolio of {r.headers.get('Authorization', 'nobody')}",
        headers={"Cache-Control": "private, max-age=60"},
    )
    proxy = await start_proxy(origin.url, cache={"per_user": True, "ttl": 60})
    alice, bob = {"Authorization": "Bearer alice"}, {"Authorization": "Bearer bob"}
    r1, b1 = await get(http, proxy, "/me", headers=alice)
    r2, b2 = await get(http, proxy, "/me", headers=bob)
    r3, b3 = await get(http, proxy, "/me", headers=alice)
    r4, b4 = await get(http, proxy, "/me", headers=bob)
    r5, b5 = await get(http, proxy, "/me")
    assert (b1, b3) == (b"portfolio of Bearer alice",) * 2
    assert (b2, b4) == (b"portfolio of Bearer bob",) * 2
    assert b5 == b"portfolio of nobody"
    assert [r.headers["X-Cache"] for r in (r1, r2, r3, r4, r5)] == [
        "MISS",
        "MISS",
        "HIT",
        "HIT",
        "MISS",
    ]


async def test_per_user_by_api_key_header(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    origin.respond = lambda r: web.Response(
        text=r.headers.get("X-Api-Key", "-"), headers={"Cache-Control": "max-age=60"}
    )
    proxy = await start_proxy(origin.url, cache={"per_user": {"header": "X-Api-Key"}})
    _, a = await get(http, proxy, "/k", headers={"X-Api-Key": "key-a"})
    _, b = await get(http, proxy, "/k", headers={"X-Api-Key": "key-b"})
    resp, a2 = await get(http, proxy, "/k", headers={"X-Api-Key": "key-a"})
    assert (a, b, a2) == (b"key-a", b"key-b", b"key-a")
    assert resp.headers["X-Cache"] == "HIT"


async def test_vary_keeps_one_variant_per_header_value(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    origin.respond = lambda r: web.Response(
        text=f"lang={r.headers.get('Accept-Language', '')}",
        headers={"Cache-Control": "max-age=60", "Vary": "Accept-Language"},
    )
    proxy = await start_proxy(origin.url, cache={})
    en, de = {"Accept-Language": "en"}, {"Accept-Language": "de"}
    bodies = [(await get(http, proxy, "/v", headers=h))[1] for h in (en, de, en, de)]
    assert bodies == [b"lang=en", b"lang=de", b"lang=en", b"lang=de"]
    assert origin.hits["/v"] == 2


async def test_query_normalisation_and_key_headers(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    proxy = await start_proxy(
        origin.url,
        cache={
            "ttl": 60,
            "key": {"query": {"ignore": ["utm_*", "_"], "sort": True}, "headers": ["X-Region"]},
        },
    )
    await get(http, proxy, "/s?b=2&a=1&utm_source=x")
    resp, body = await get(http, proxy, "/s?a=1&b=2&_=123")
    assert resp.headers["X-Cache"] == "HIT"
    # The upstream saw the client's query in its order, without what the key ignores.
    assert body == b"body of /s?b=2&a=1"
    resp, _ = await get(http, proxy, "/s?a=1&b=2", headers={"X-Region": "eu"})
    assert resp.headers["X-Cache"] == "MISS"


async def test_client_conditional_requests_are_served_from_cache(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    origin.respond = lambda r: web.Response(
        text="data",
        headers={
            "Cache-Control": "max-age=60",
            "ETag": '"abc"',
            "Last-Modified": "Mon, 02 Nov 2026 10:00:00 GMT",
        },
    )
    proxy = await start_proxy(origin.url, cache={})
    # On a miss the client's condition is not forwarded: the full response is stored.
    resp, body = await get(http, proxy, "/c", headers={"If-None-Match": '"abc"'})
    assert resp.status == 304 and body == b""
    assert "If-None-Match" not in origin.requests[-1].headers
    resp, _ = await get(http, proxy, "/c", headers={"If-None-Match": 'W/"abc", "zzz"'})
    assert resp.status == 304
    assert resp.headers["ETag"] == '"abc"'
    assert resp.headers["X-Cache"] == "HIT"
    resp, _ = await get(
        http, proxy, "/c", headers={"If-Modified-Since": "Tue, 03 Nov 2026 10:00:00 GMT"}
    )
    assert resp.status == 304
    resp, body = await get(http, proxy, "/c", headers={"If-None-Match": '"other"'})
    assert resp.status == 200 and body == b"data"
    assert origin.hits["/c"] == 1


async def test_if_modified_since_without_last_modified_compares_the_stored_date(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    # RFC 9111 §4.3.2: no Last-Modified, so the stored Date stands in for it.
    stored_date = int(time.time()) - 30
    origin.respond = lambda r: web.Response(
        text="data",
        headers={"Cache-Control": "max-age=600", "Date": formatdate(stored_date, usegmt=True)},
    )
    proxy = await start_proxy(origin.url, cache={})
    await get(http, proxy, "/d")
    for offset, status, body in ((0, 304, b""), (5, 304, b""), (-1, 200, b"data")):
        ims = formatdate(stored_date + offset, usegmt=True)
        resp, got = await get(http, proxy, "/d", headers={"If-Modified-Since": ims})
        assert (resp.status, got) == (status, body), offset
        assert resp.headers["X-Cache"] == "HIT"
    assert origin.hits["/d"] == 1


async def test_stale_entry_is_revalidated_and_a_304_refreshes_it(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    version = {"n": 0}

    def respond(r: web.Request) -> web.Response:
        version["n"] += 1
        if r.headers.get("If-None-Match") == '"v1"':
            return web.Response(
                status=304,
                headers={"ETag": '"v1"', "Cache-Control": "max-age=1", "X-Seen": str(version["n"])},
            )
        return web.Response(
            text="payload", headers={"ETag": '"v1"', "Cache-Control": "max-age=1", "X-Seen": "1"}
        )

    origin.respond = respond
    proxy = await start_proxy(origin.url, cache={})
    await get(http, proxy, "/r")
    await asyncio.sleep(1.2)
    resp, body = await get(http, proxy, "/r")
    assert resp.headers["X-Cache"] == "REVALIDATED"
    assert resp.headers["Cache-Status"].startswith("cacheproxy;fwd=stale;fwd-status=304")
    assert body == b"payload"
    assert resp.headers["X-Seen"] == "2"  # headers updated from the 304 (§4.3.4)
    assert origin.requests[-1].headers["If-None-Match"] == '"v1"'
    resp, _ = await get(http, proxy, "/r")
    assert resp.headers["X-Cache"] == "HIT"
    assert resp.headers["X-Seen"] == "2"


async def test_request_directives(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    proxy = await start_proxy(origin.url, cache={})
    resp, _ = await get(http, proxy, "/d", headers={"Cache-Control": "only-if-cached"})
    assert resp.status == 504
    assert origin.hits["/d"] == 0
    await get(http, proxy, "/d")
    resp, _ = await get(http, proxy, "/d", headers={"Cache-Control": "only-if-cached"})
    assert resp.status == 200 and resp.headers["X-Cache"] == "HIT"
    for headers in (
        {"Cache-Control": "no-cache"},
        {"Pragma": "no-cache"},
        {"Cache-Control": "max-age=0"},
        {"Cache-Control": "min-fresh=3600"},
    ):
        before = origin.hits["/d"]
        resp, _ = await get(http, proxy, "/d", headers=headers)
        assert resp.status == 200
        assert origin.hits["/d"] == before + 1, headers
    resp, _ = await get(http, proxy, "/d", headers={"Pragma": "no-cache", "Cache-Control": "x"})
    assert resp.headers["X-Cache"] == "HIT"  # Pragma counts only without Cache-Control


async def test_head_is_served_from_a_stored_get(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    proxy = await start_proxy(origin.url, cache={})
    await get(http, proxy, "/h")
    async with http.head(url_of(proxy, "/h")) as resp:
        assert resp.headers["X-Cache"] == "HIT"
        assert resp.headers["Content-Length"] == str(len("body of /h"))
        assert await resp.read() == b""
    assert origin.hits["/h"] == 1


async def test_unsafe_requests_invalidate_url_and_location(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    def respond(r: web.Request) -> web.Response:
        if r.method == "POST":
            return web.Response(status=201, headers={"Location": "/items/2"})
        if r.method == "DELETE":
            return web.Response(status=500)
        return web.Response(
            text=f"{r.path} #{origin.hits[r.path]}", headers={"Cache-Control": "max-age=60"}
        )

    origin.respond = respond
    proxy = await start_proxy(
        origin.url,
        routes=[{"match": {"prefix": "/items", "methods": ["GET", "HEAD"]}, "cache": {}}],
    )
    for path in ("/items", "/items/2", "/items/3"):
        await get(http, proxy, path)
    async with http.post(url_of(proxy, "/items"), data=b"{}") as resp:
        assert resp.status == 201
    async with http.delete(url_of(proxy, "/items/3")) as resp:
        assert resp.status == 500  # a failed unsafe request invalidates nothing
    results = {
        p: (await get(http, proxy, p))[0].headers["X-Cache"]
        for p in ("/items", "/items/2", "/items/3")
    }
    assert results == {"/items": "MISS", "/items/2": "MISS", "/items/3": "HIT"}


async def test_concurrent_misses_make_one_upstream_request(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    origin.delay = 0.5
    proxy = await start_proxy(
        origin.url, cache={}, upstream={"url": origin.url, "pool": {"max_connections": 200}}
    )
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as many:
        started = time.monotonic()
        results = await asyncio.gather(*(get(many, proxy, "/hot") for _ in range(100)))
        elapsed = time.monotonic() - started
    assert origin.hits["/hot"] == 1
    assert {body for _, body in results} == {b"body of /hot"}
    collapsed = sum("collapsed" in r.headers["Cache-Status"] for r, _ in results)
    assert collapsed == 99
    assert elapsed < 5  # woken when stored, not after polling or timeouts


async def test_failed_coalesced_fetch_does_not_hang_waiters(
    origin: Origin, start_proxy: StartProxy
) -> None:
    origin.delay = 0.3
    proxy = await start_proxy(
        origin.url, cache={}, upstream={"url": origin.url, "timeouts": {"read": 0.1}}
    )
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as many:
        results = await asyncio.wait_for(
            asyncio.gather(*(get(many, proxy, "/down") for _ in range(20))), 10
        )
    assert {r.status for r, _ in results} == {504}
    assert origin.hits["/down"] == 1


async def test_uncacheable_response_is_fetched_by_each_waiter(
    origin: Origin, start_proxy: StartProxy
) -> None:
    origin.delay = 0.2
    origin.respond = lambda r: web.Response(text="p", headers={"Cache-Control": "private"})
    proxy = await start_proxy(origin.url, cache={})
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as many:
        results = await asyncio.gather(*(get(many, proxy, "/priv") for _ in range(5)))
    assert [body for _, body in results] == [b"p"] * 5
    assert origin.hits["/priv"] == 5  # a private response is never handed to another client


async def test_stale_while_revalidate_serves_at_once_and_refreshes_once(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    # The first version goes stale after 1 s; the refreshed one stays fresh.
    origin.respond = lambda r: web.Response(
        text=f"v{origin.hits['/swr']}",
        headers={"Cache-Control": "max-age=1" if origin.hits["/swr"] == 1 else "max-age=60"},
    )
    proxy = await start_proxy(origin.url, cache={"stale_while_revalidate": 30})
    await get(http, proxy, "/swr")
    await asyncio.sleep(1.2)
    origin.delay = 0.5
    started = time.monotonic()
    stale = await asyncio.gather(*(get(http, proxy, "/swr") for _ in range(5)))
    assert time.monotonic() - started < 0.4  # nobody waited for the slow upstream
    assert {r.headers["X-Cache"] for r, _ in stale} == {"STALE"}
    assert {body for _, body in stale} == {b"v1"}
    await asyncio.sleep(0.8)
    resp, body = await get(http, proxy, "/swr")
    assert (resp.headers["X-Cache"], body) == ("HIT", b"v2")
    assert origin.hits["/swr"] == 2  # one background refresh for five stale hits


async def test_stale_if_error_when_the_upstream_fails(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    origin.respond = lambda r: web.Response(text="good", headers={"Cache-Control": "max-age=1"})
    proxy = await start_proxy(origin.url, cache={"stale_if_error": 300})
    await get(http, proxy, "/sie")
    await asyncio.sleep(1.2)
    origin.respond = lambda r: web.Response(status=503, text="down")
    resp, body = await get(http, proxy, "/sie")
    assert (resp.status, body, resp.headers["X-Cache"]) == (200, b"good", "STALE")
    assert "stale-if-error" in resp.headers["Cache-Status"]


async def test_stale_if_error_when_the_upstream_is_gone(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    origin.respond = lambda r: web.Response(text="good", headers={"Cache-Control": "max-age=1"})
    proxy = await start_proxy(origin.url, cache={"stale_if_error": 300})
    await get(http, proxy, "/gone")
    await asyncio.sleep(1.2)
    assert origin.upstream.runner is not None
    await origin.upstream.runner.cleanup()  # connections refused from now on
    resp, body = await get(http, proxy, "/gone")
    assert (resp.status, body, resp.headers["X-Cache"]) == (200, b"good", "STALE")
    # Without a stored entry, the same failure is a clean 502.
    resp, _ = await get(http, proxy, "/never-cached")
    assert resp.status == 502
    assert (await resp.json())["error"] == "upstream_unavailable"


async def test_entries_over_max_entry_size_stream_through(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    big = b"B" * 300_000

    async def respond(r: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Cache-Control": "max-age=60"})
        await resp.prepare(r)  # chunked: the size is only found out while reading
        for i in range(0, len(big), 50_000):
            await resp.write(big[i : i + 50_000])
        return resp

    origin.respond = respond
    proxy = await start_proxy(origin.url, cache={"max_entry_size": "100KB"})
    for _ in range(2):
        resp, body = await get(http, proxy, "/big")
        assert body == big
        assert resp.headers["Cache-Status"] == "cacheproxy;fwd=miss;detail=too-large"
    assert origin.hits["/big"] == 2


async def test_memory_bound_evicts_least_recently_used(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    origin.respond = lambda r: web.Response(
        body=b"x" * 2000, headers={"Cache-Control": "max-age=60"}
    )
    proxy = await start_proxy(origin.url, cache={"max_memory": "32KB"})
    store = proxy.pipeline.cache.store
    await get(http, proxy, "/e/keep")
    for i in range(40):
        await get(http, proxy, f"/e/{i}")
        await get(http, proxy, "/e/keep")  # recently used: survives
        assert store.bytes <= 32 * 1024
    assert store.snapshot().evictions > 20
    assert (await get(http, proxy, "/e/keep"))[0].headers["X-Cache"] == "HIT"
    assert (await get(http, proxy, "/e/0"))[0].headers["X-Cache"] == "MISS"


async def test_force_ttl_overrides_origin_freshness(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    origin.respond = lambda r: web.Response(text="f", headers={"Cache-Control": "max-age=0"})
    proxy = await start_proxy(origin.url, cache={"ttl": 60, "force_ttl": True})
    await get(http, proxy, "/f")
    resp, _ = await get(http, proxy, "/f")
    assert resp.headers["X-Cache"] == "HIT"
    plain = await start_proxy(origin.url, cache={"ttl": 60})
    await get(http, plain, "/f")
    resp, _ = await get(http, plain, "/f")
    assert resp.headers["X-Cache"] != "HIT"  # origin's max-age=0 wins without force_ttl


async def test_routes_without_cache_and_unsafe_methods_say_bypass(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    proxy = await start_proxy(
        origin.url, routes=[{"match": {"prefix": "/nocache"}, "cache": False}], cache={}
    )
    resp, _ = await get(http, proxy, "/nocache/x")
    assert resp.headers["X-Cache"] == "BYPASS"
    async with http.post(url_of(proxy, "/cached")) as resp:
        assert resp.headers["X-Cache"] == "BYPASS"


async def test_a_post_response_is_never_stored_nor_served_from_the_cache(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    # RFC 9110 §9.3.3 would allow storing this one for later GETs of /p; we do not
    # (docs/caching.md, "Optimal behaviours").
    def respond(r: web.Request) -> web.Response:
        return web.Response(
            text=f"{r.method} #{origin.hits[r.path]}",
            headers={"Cache-Control": "public, max-age=60", "Content-Location": "/p"},
        )

    origin.respond = respond
    proxy = await start_proxy(origin.url, cache={})
    async with http.post(url_of(proxy, "/p"), data=b"{}") as resp:
        assert (resp.headers["X-Cache"], await resp.read()) == ("BYPASS", b"POST #1")
    resp, body = await get(http, proxy, "/p")
    assert (resp.headers["X-Cache"], body) == ("MISS", b"GET #2")  # the POST was not stored
    resp, body = await get(http, proxy, "/p")
    assert (resp.headers["X-Cache"], body) == ("HIT", b"GET #2")
    async with http.post(url_of(proxy, "/p"), data=b"{}") as resp:
        # Not the stored GET: the POST goes upstream, and its success invalidates /p.
        assert (resp.headers["X-Cache"], await resp.read()) == ("BYPASS", b"POST #3")
    resp, body = await get(http, proxy, "/p")
    assert (resp.headers["X-Cache"], body) == ("MISS", b"GET #4")
    assert origin.hits["/p"] == 4


async def admin(
    proxy: ProxyServer, method: str, path: str, token: str | None = None, json: Any = None
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        aiohttp.ClientSession() as s,
        s.request(
            method, f"http://127.0.0.1:{proxy.admin_port}{path}", json=json, headers=headers
        ) as resp,
    ):
        return resp.status, await resp.json()


async def test_purge_by_url_prefix_and_tag(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    origin.respond = lambda r: web.Response(
        text="t",
        headers={"Cache-Control": "max-age=60", "Surrogate-Key": f"all user-{r.query.get('u')}"},
    )
    proxy = await start_proxy(
        origin.url,
        cache={"tags_header": "Surrogate-Key", "per_user": True},
        admin={"token": "s3cret"},
    )
    paths = ["/api/x?y=1&u=1", "/api/x?u=2", "/api/signals/a?u=1", "/api/signals/b?u=3"]
    for path in paths:
        await get(http, proxy, path)
        await get(http, proxy, path, headers={"Authorization": "Bearer bob"})
    assert len(proxy.pipeline.cache.store) == 8

    assert (await admin(proxy, "POST", "/cache/purge", json={"url": "/api/x?u=1"}))[0] == 401
    assert (await admin(proxy, "POST", "/cache/purge", "wrong", {"url": "/x"}))[0] == 401
    status, body = await admin(proxy, "POST", "/cache/purge", "s3cret", {"url": "/api/x?y=1&u=1"})
    assert (status, body) == (200, {"purged": 2})  # both users' variants of that URL
    status, body = await admin(proxy, "POST", "/cache/purge", "s3cret", {"tag": "user-3"})
    assert body == {"purged": 2}
    status, body = await admin(proxy, "POST", "/cache/purge", "s3cret", {"prefix": "/api/signals/"})
    assert body == {"purged": 2}
    assert len(proxy.pipeline.cache.store) == 2
    status, body = await admin(proxy, "POST", "/cache/purge", "s3cret", {"colour": "x"})
    assert status == 400
    status, body = await admin(proxy, "POST", "/cache/purge", "s3cret", ["url"])
    assert status == 400
    resp, _ = await get(http, proxy, "/api/x?y=1&u=1")
    assert resp.headers["X-Cache"] == "MISS"


async def test_a_response_fetched_before_an_invalidation_is_not_stored(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    version = {"v": 1}

    async def respond(r: web.Request) -> web.Response:
        if r.method == "PUT":
            version["v"] = 2
            return web.Response(status=204)
        seen = version["v"]
        await asyncio.sleep(0.5)  # the GET is slow; the PUT lands meanwhile
        return web.Response(text=f"v{seen}", headers={"Cache-Control": "max-age=60"})

    origin.respond = respond
    proxy = await start_proxy(origin.url, cache={})
    slow_get = asyncio.ensure_future(get(http, proxy, "/doc"))
    await asyncio.sleep(0.1)
    async with http.put(url_of(proxy, "/doc"), data=b"new") as resp:
        assert resp.status == 204
    later_get = asyncio.ensure_future(get(http, proxy, "/doc"))  # joins the in-flight GET
    first, body = await slow_get
    assert body == b"v1"  # the client that asked before the PUT gets what it asked for
    assert "stored" not in first.headers["Cache-Status"]
    _, body = await later_get
    assert body == b"v2"  # one that asked after it is not handed the overtaken response
    resp, body = await get(http, proxy, "/doc")
    assert (resp.headers["X-Cache"], body) == ("HIT", b"v2")  # stored by the later GET


async def test_a_get_with_a_body_is_forwarded_with_it_and_never_cached(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    async def respond(r: web.Request) -> web.Response:
        return web.Response(text=await r.text(), headers={"Cache-Control": "max-age=60"})

    origin.respond = respond
    proxy = await start_proxy(origin.url, cache={})
    bodies = []
    for query in (b'{"q": "a"}', b'{"q": "b"}'):
        resp, body = await get(http, proxy, "/_search", data=query)
        assert resp.headers["X-Cache"] == "BYPASS"
        bodies.append(body)
    assert bodies == [b'{"q": "a"}', b'{"q": "b"}']


async def test_a_body_broken_off_mid_fill_is_a_clean_502_for_every_waiter(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    broken = True

    async def respond(request: web.Request) -> web.StreamResponse:
        if not broken:
            return web.Response(text="whole", headers={"Cache-Control": "max-age=60"})
        resp = web.StreamResponse(headers={"Cache-Control": "max-age=60"})
        resp.content_length = 100
        await resp.prepare(request)
        await resp.write(b"0123456789")
        await asyncio.sleep(0.3)  # the second client's request joins this fetch meanwhile
        assert request.transport is not None
        request.transport.close()  # 90 bytes short
        return resp

    origin.respond = respond
    proxy = await start_proxy(origin.url, cache={})
    first, second = await asyncio.gather(get(http, proxy, "/cut"), get(http, proxy, "/cut"))
    for resp, body in (first, second):
        assert resp.status == 502
        assert orjson.loads(body)["error"] == "upstream_unavailable"
    assert origin.hits["/cut"] == 1  # one fetch, its failure told to the waiter
    broken = False
    resp, body = await get(http, proxy, "/cut")  # nothing half-stored
    assert (resp.status, body, resp.headers["X-Cache"]) == (200, b"whole", "MISS")
