"""`cache.store_set_cookie` through the real proxy: a stored response's Set-Cookie goes to
the client whose request filled the entry, never from the entry to anyone else (memory,
Redis, a 304's fields); a per-user entry gives its user the cookie back."""

from __future__ import annotations

import aiohttp
import redis.asyncio
from aiohttp import web

from tests.conftest import Origin, StartProxy, get
from tests.e2e.test_shared_cache import shared
from tests.redis_servers import RedisServer


def _with_cookie(request: web.Request) -> web.Response:
    resp = web.Response(text=f"body of {request.path}", headers={"Cache-Control": "max-age=60"})
    resp.headers.add("Set-Cookie", f"lb={request.path}; Path=/")
    resp.headers.add("Set-Cookie", "consent=0; Path=/")
    return resp


async def test_the_filling_client_gets_the_cookie_and_hits_for_others_do_not(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    origin.respond = _with_cookie
    proxy = await start_proxy(origin.url, cache={"store_set_cookie": True})
    resp, body = await get(http, proxy, "/a")
    assert resp.headers.getall("Set-Cookie") == ["lb=/a; Path=/", "consent=0; Path=/"]
    assert body == b"body of /a"
    for _ in range(2):  # the first hit makes the prepared head, the second is sent from it
        resp, body = await get(http, proxy, "/a")
        assert resp.headers["X-Cache"] == "HIT"
        assert "Set-Cookie" not in resp.headers
        assert body == b"body of /a"
    # A HEAD miss fills the entry too: its client gets the cookie, the GET after it not.
    async with http.head(f"http://127.0.0.1:{proxy.proxy_port}/b") as resp:
        assert "lb=/b; Path=/" in resp.headers.getall("Set-Cookie")
    resp, _ = await get(http, proxy, "/b")
    assert resp.headers["X-Cache"] == "HIT" and "Set-Cookie" not in resp.headers
    assert origin.hits == {"/a": 1, "/b": 1}


async def test_without_store_set_cookie_such_responses_are_not_stored(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    origin.respond = _with_cookie
    proxy = await start_proxy(origin.url, cache={})
    for _ in range(2):
        resp, _ = await get(http, proxy, "/a")
        assert "lb=/a; Path=/" in resp.headers.getall("Set-Cookie")
    assert origin.hits["/a"] == 2


async def test_a_per_user_entry_gives_its_user_the_cookie_back(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    def per_user(request: web.Request) -> web.Response:
        who = request.headers.get("X-Api-Key", "anon")
        resp = web.Response(text=f"data of {who}", headers={"Cache-Control": "max-age=60"})
        resp.headers["Set-Cookie"] = f"sid={who}"
        return resp

    origin.respond = per_user
    proxy = await start_proxy(
        origin.url,
        cache={"store_set_cookie": True, "per_user": {"header": "X-Api-Key"}},
    )
    for user in ("u1", "u2", "u1", "u2"):
        resp, body = await get(http, proxy, "/me", headers={"X-Api-Key": user})
        assert body == f"data of {user}".encode()
        assert resp.headers.getall("Set-Cookie") == [f"sid={user}"]
    assert origin.hits["/me"] == 2
    # An anonymous request on the same route shares its entry: the cookie stays with
    # the first anonymous client.
    first, _ = await get(http, proxy, "/me")
    again, _ = await get(http, proxy, "/me")
    assert first.headers.getall("Set-Cookie") == ["sid=anon"]
    assert again.headers["X-Cache"] == "HIT" and "Set-Cookie" not in again.headers


async def test_redis_never_holds_a_shared_entrys_cookie(
    origin: Origin,
    start_proxy: StartProxy,
    http: aiohttp.ClientSession,
    redis_server: RedisServer,
) -> None:
    origin.respond = _with_cookie
    config = shared({"url": redis_server.url}, store_set_cookie=True)
    a = await start_proxy(origin.url, **config)
    resp, _ = await get(http, a, "/a")
    assert "lb=/a; Path=/" in resp.headers.getall("Set-Cookie")
    (key,) = redis_server.cli("--scan", "--pattern", "*:k:*").split()
    client = redis.asyncio.Redis.from_url(redis_server.url)
    try:
        stored = await client.get(key)
    finally:
        await client.aclose()
    assert isinstance(stored, bytes)
    assert b"body of /a" in stored and b"cookie" not in stored.lower()
    b = await start_proxy(origin.url, **config)
    resp, body = await get(http, b, "/a")
    assert resp.headers["X-Cache"] == "HIT" and body == b"body of /a"
    assert "Set-Cookie" not in resp.headers
    assert origin.hits["/a"] == 1


async def test_a_304s_cookie_never_joins_a_shared_entry(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    def validated(request: web.Request) -> web.Response:
        headers = {"Cache-Control": "no-cache", "ETag": '"v1"'}
        if request.headers.get("If-None-Match") == '"v1"':
            resp = web.Response(status=304, headers=headers)
            resp.headers["Set-Cookie"] = f"seen={origin.hits[request.path]}"
            return resp
        return web.Response(text="v1", headers=headers)

    origin.respond = validated
    proxy = await start_proxy(origin.url, cache={})  # store_set_cookie off: a 200 has none
    await get(http, proxy, "/v")
    for _ in range(2):  # each is revalidated, the second from what the first stored
        resp, body = await get(http, proxy, "/v")
        assert resp.headers["X-Cache"] == "REVALIDATED" and body == b"v1"
        assert "Set-Cookie" not in resp.headers
    assert origin.hits["/v"] == 3


async def test_a_compressing_route_encodes_the_fillers_response_and_keeps_its_cookie(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    def big(request: web.Request) -> web.Response:
        resp = web.Response(text="x" * 4000, headers={"Cache-Control": "max-age=60"})
        resp.headers["Set-Cookie"] = "lb=1"
        return resp

    origin.respond = big
    proxy = await start_proxy(
        origin.url,
        cache={"store_set_cookie": True},
        compression={"algorithms": ["gzip"]},
    )
    gzip = {"Accept-Encoding": "gzip"}
    filled, body = await get(http, proxy, "/z", headers=gzip)
    assert filled.headers["Set-Cookie"] == "lb=1"
    assert filled.headers["Content-Encoding"] == "gzip" and len(body) < 4000
    hit, again = await get(http, proxy, "/z", headers=gzip)
    assert hit.headers["X-Cache"] == "HIT" and "Set-Cookie" not in hit.headers
    assert hit.headers["Content-Encoding"] == "gzip" and len(again) < 4000
    assert origin.hits["/z"] == 1


async def test_an_empty_body_filler_gets_its_cookie_without_waiting(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    def empty(request: web.Request) -> web.Response:
        return web.Response(headers={"Cache-Control": "max-age=60", "Set-Cookie": "lb=1"})

    origin.respond = empty
    proxy = await start_proxy(origin.url, cache={"store_set_cookie": True})
    filled, body = await get(http, proxy, "/e", timeout=aiohttp.ClientTimeout(total=5))
    assert filled.headers["Set-Cookie"] == "lb=1" and body == b""
    hit, body = await get(http, proxy, "/e")
    assert hit.headers["X-Cache"] == "HIT" and "Set-Cookie" not in hit.headers and body == b""
