"""Vary normalisation (RFC 9111 §4.1) through a running proxy: equivalent spellings of a
selecting field share one variant, in memory and in Redis; different preferences do not."""

from __future__ import annotations

import uuid

import aiohttp
from aiohttp import web

from tests.conftest import Origin, StartProxy, get
from tests.redis_servers import RedisServer


def _varying_origin(origin: Origin, field: str) -> None:
    origin.respond = lambda r: web.Response(
        text=f"{field}={r.headers.get(field, '')}",
        headers={"Cache-Control": "max-age=60", "Vary": field},
    )


async def test_equivalent_accept_language_spellings_share_a_variant(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    _varying_origin(origin, "Accept-Language")
    proxy = await start_proxy(origin.url, cache={})
    first, body = await get(http, proxy, "/l", headers={"Accept-Language": "en, fr;q=0.5"})
    assert (first.headers["X-Cache"], body) == ("MISS", b"Accept-Language=en, fr;q=0.5")
    for spelling in ("EN,FR;Q=0.50", "fr ; q=0.500 , En", "en-x"):
        resp, again = await get(http, proxy, "/l", headers={"Accept-Language": spelling})
        if spelling == "en-x":  # another language: another variant
            assert (resp.headers["X-Cache"], again) == ("MISS", b"Accept-Language=en-x")
        else:
            assert (resp.headers["X-Cache"], again) == ("HIT", body), spelling
    # Equal weights keep their order: servers break ties by it.
    resp, other = await get(http, proxy, "/l", headers={"Accept-Language": "fr, en"})
    assert (resp.headers["X-Cache"], other) == ("MISS", b"Accept-Language=fr, en")
    assert origin.hits["/l"] == 3


async def test_media_types_match_case_insensitively_but_not_their_parameter_values(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    _varying_origin(origin, "Accept")
    proxy = await start_proxy(origin.url, cache={})
    await get(http, proxy, "/a", headers={"Accept": "application/json;v=A, */*;q=0.1"})
    resp, _ = await get(http, proxy, "/a", headers={"Accept": "*/*;q=0.1,Application/JSON;V=A"})
    assert resp.headers["X-Cache"] == "HIT"
    resp, _ = await get(http, proxy, "/a", headers={"Accept": "application/json;v=a, */*;q=0.1"})
    assert resp.headers["X-Cache"] == "MISS"
    assert origin.hits["/a"] == 2


async def test_equivalent_spellings_share_a_variant_through_redis(
    origin: Origin,
    start_proxy: StartProxy,
    http: aiohttp.ClientSession,
    redis_server: RedisServer,
) -> None:
    _varying_origin(origin, "Accept-Language")
    config = {
        "redis": {"url": redis_server.url, "key_prefix": f"t{uuid.uuid4().hex[:6]}:"},
        "cache": {"tiers": ["memory", "redis"], "ttl": 60},
    }
    a, b = await start_proxy(origin.url, **config), await start_proxy(origin.url, **config)
    _, body = await get(http, a, "/r", headers={"Accept-Language": "de-CH, de;q=0.8"})
    resp, again = await get(http, b, "/r", headers={"Accept-Language": "DE;Q=0.80,de-ch"})
    assert (resp.headers["X-Cache"], again) == ("HIT", body)
    assert resp.headers["Cache-Status"].startswith("cacheproxy;hit;detail=shared")
    resp, _ = await get(http, b, "/r", headers={"Accept-Language": "de-CH, de;q=0.7"})
    assert resp.headers["X-Cache"] == "MISS"
    assert origin.hits["/r"] == 2
