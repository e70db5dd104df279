"""`PURGE /path` on the proxy port (Varnish, nginx cache_purge): carried out for `purge.allow`
peers or the admin token, refused 405 for anyone else; never forwarded upstream."""

from __future__ import annotations

import base64

import aiohttp
from aiohttp import web

from tests.conftest import Origin, StartProxy

TOKEN = "s3cret-admin-token"


def varying(request: web.Request) -> web.Response:
    headers = {"Cache-Control": "max-age=60", "Vary": "Accept-Language"}
    return web.Response(text=request.headers.get("Accept-Language", "-"), headers=headers)


async def cached_twice(http: aiohttp.ClientSession, base: str, path: str) -> None:
    """Two variants of `path` stored, then each one a hit."""
    for _ in range(2):
        for language in ("en", "fr"):
            async with http.get(base + path, headers={"Accept-Language": language}) as resp:
                assert resp.status == 200
    for language in ("en", "fr"):
        async with http.get(base + path, headers={"Accept-Language": language}) as resp:
            assert resp.headers["X-Cache"] == "HIT"


async def test_an_allowed_peer_purges_every_variant_and_nothing_goes_upstream(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    origin.respond = varying
    proxy = await start_proxy(origin.url, cache={}, purge={"allow": ["127.0.0.1"]})
    base = f"http://127.0.0.1:{proxy.proxy_port}"
    await cached_twice(http, base, "/api/q?x=1")
    async with http.request("PURGE", base + "/api/q?x=1") as resp:
        assert resp.status == 200
        assert await resp.json() == {"purged": 2}
        assert resp.headers["X-Request-ID"]
    async with http.get(base + "/api/q?x=1", headers={"Accept-Language": "en"}) as resp:
        assert resp.headers["X-Cache"] == "MISS"
    assert all(r.method != "PURGE" for r in origin.requests)


async def test_anyone_else_gets_405_and_the_entry_stays(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    origin.respond = varying
    proxy = await start_proxy(origin.url, cache={}, purge={"allow": ["10.0.0.0/8"]})
    base = f"http://127.0.0.1:{proxy.proxy_port}"
    await cached_twice(http, base, "/api/q")
    async with http.request("PURGE", base + "/api/q") as resp:
        assert resp.status == 405
        assert (await resp.json())["error"] == "method_not_allowed"
        assert "PURGE" not in resp.headers["Allow"]
    async with http.get(base + "/api/q", headers={"Accept-Language": "en"}) as resp:
        assert resp.headers["X-Cache"] == "HIT"
    assert all(r.method != "PURGE" for r in origin.requests)


async def test_the_admin_token_purges_from_anywhere_a_wrong_one_does_not(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    origin.respond = varying
    proxy = await start_proxy(origin.url, cache={}, admin={"token": TOKEN})
    base = f"http://127.0.0.1:{proxy.proxy_port}"
    await cached_twice(http, base, "/api/t")
    wrong = {"Authorization": f"Bearer {TOKEN}x"}
    async with http.request("PURGE", base + "/api/t", headers=wrong) as resp:
        assert resp.status == 405
    right = {"Authorization": f"Bearer {TOKEN}"}
    async with http.request("PURGE", base + "/api/t", headers=right) as resp:
        assert resp.status == 200 and await resp.json() == {"purged": 2}
    async with http.request("PURGE", base + "/api/never-stored", headers=right) as resp:
        assert resp.status == 200 and await resp.json() == {"purged": 0}
    # The admin API's one check: the token as Basic auth's password does too.
    basic = {"Authorization": "Basic " + base64.b64encode(f"any:{TOKEN}".encode()).decode()}
    async with http.request("PURGE", base + "/api/never-stored", headers=basic) as resp:
        assert resp.status == 200
