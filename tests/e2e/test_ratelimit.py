"""Rate limiting through the real proxy (memory backend), in front of a real upstream."""

from __future__ import annotations

from typing import Any

import aiohttp
import http_sf
import orjson
from aiohttp import web

from proxy.server.app import ProxyServer
from tests.conftest import Origin, StartProxy, free_port, get, url_of

LIMITED = {"limits": ["3/minute"]}
RL_HEADERS = ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset", "RateLimit")


def sf_list(field: str) -> list[Any]:
    """A Structured Fields List, its members as the tests read them: (item, parameters)."""
    parsed = http_sf.parse(field.encode(), tltype="list")
    assert isinstance(parsed, list), field
    return parsed


def limit_state(resp: aiohttp.ClientResponse) -> tuple[int, int, int]:
    """(limit, remaining, reset) from X-RateLimit-*, checked against the IETF fields."""
    limit = int(resp.headers["X-RateLimit-Limit"])
    remaining = int(resp.headers["X-RateLimit-Remaining"])
    reset = int(resp.headers["X-RateLimit-Reset"])
    [(name, params)] = sf_list(resp.headers["RateLimit"])
    assert params == {"r": remaining, "t": reset}
    policies = sf_list(resp.headers["RateLimit-Policy"])
    assert any(n == name and p["q"] == limit for n, p in policies)
    return limit, remaining, reset


async def test_exactly_n_requests_then_429_with_retry_after(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    proxy = await start_proxy(origin.url, cache={"ttl": 60}, rate_limit=LIMITED)
    states = []
    for _ in range(3):
        resp, _ = await get(http, proxy, "/api/x")
        assert resp.status == 200
        states.append(limit_state(resp))
    assert [s[:2] for s in states] == [(3, 2), (3, 1), (3, 0)]
    assert all(0 < s[2] <= 120 for s in states)
    assert resp.headers["RateLimit-Policy"] == '"3/minute";q=3;w=60'

    resp, body = await get(http, proxy, "/api/x")
    assert resp.status == 429
    retry = int(resp.headers["Retry-After"])
    assert 0 < retry <= 120
    assert orjson.loads(body)["error"] == "rate_limited"
    assert orjson.loads(body)["retry_after"] == retry
    assert resp.headers["Content-Type"] == "application/json"
    assert limit_state(resp) == (3, 0, retry)
    assert origin.hits["/api/x"] == 1  # one miss, two hits, and the 429 never went upstream
    # A refused request counts nothing: the next one is refused with the same wait or less.
    resp, _ = await get(http, proxy, "/api/x")
    assert resp.status == 429 and int(resp.headers["Retry-After"]) <= retry


async def test_every_response_of_a_limited_route_carries_the_headers(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    big = b"x" * 300_000

    def respond(request: web.Request) -> web.Response:
        if request.path == "/big":  # streamed through, not read whole
            return web.Response(body=big, headers={"Cache-Control": "no-store"})
        return web.Response(
            text="hello",
            headers={
                "Cache-Control": "max-age=60",
                "ETag": '"v1"',
                # The origin's own limit headers: on a limited route the proxy owns them.
                "X-RateLimit-Remaining": "999",
                "RateLimit": '"origin";r=999',
            },
        )

    origin.respond = respond
    dead = f"http://127.0.0.1:{free_port()}"
    proxy = await start_proxy(
        origin.url,
        cache={"ttl": 60},
        rate_limit={"limits": ["100/minute"]},
        routes=[{"match": {"prefix": "/dead"}, "upstream": dead}],
    )
    seen: list[int] = []

    async def check(resp: aiohttp.ClientResponse, status: int) -> None:
        assert resp.status == status
        for name in RL_HEADERS:
            assert len(resp.headers.getall(name)) == 1, name
        seen.append(limit_state(resp)[1])

    resp, _ = await get(http, proxy, "/page")  # miss, stored
    await check(resp, 200)
    resp, _ = await get(http, proxy, "/page")  # hit
    assert resp.headers["X-Cache"] == "HIT"
    await check(resp, 200)
    resp, _ = await get(http, proxy, "/page", headers={"If-None-Match": '"v1"'})
    await check(resp, 304)
    async with http.post(url_of(proxy, "/page"), data=b"{}") as resp:  # forwarded whole
        await check(resp, 200)
    resp, body = await get(http, proxy, "/big")  # streamed
    assert body == big
    await check(resp, 200)
    resp, _ = await get(http, proxy, "/dead/x")  # the proxy's own error response
    await check(resp, 502)
    assert seen == [99, 98, 97, 96, 95, 94]  # one shared count across all of them


async def test_spoofed_forwarded_for_from_an_untrusted_peer_is_ignored(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    proxy = await start_proxy(origin.url, rate_limit=LIMITED)
    statuses = []
    for i in range(5):
        spoof = {"X-Forwarded-For": f"198.51.100.{i}", "Forwarded": f"for=198.51.100.{i}"}
        resp, _ = await get(http, proxy, "/api", headers=spoof)
        statuses.append(resp.status)
    assert statuses == [200, 200, 200, 429, 429]


async def test_behind_a_trusted_proxy_each_client_has_its_own_window(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    proxy = await start_proxy(origin.url, rate_limit=LIMITED, trusted_proxies=["127.0.0.1"])
    for client in ("203.0.113.1", "203.0.113.2"):
        statuses = []
        for i in range(4):
            # What the client wrote itself (left of its real address) is never read.
            xff = {"X-Forwarded-For": f"10.9.9.{i}, {client}"}
            resp, _ = await get(http, proxy, "/api", headers=xff)
            statuses.append(resp.status)
        assert statuses == [200, 200, 200, 429], client


async def key_statuses(
    http: aiohttp.ClientSession, proxy: ProxyServer, headers: list[dict[str, str]]
) -> list[int]:
    statuses = []
    for h in headers:
        resp, _ = await get(http, proxy, "/api", headers=h)
        statuses.append(resp.status)
    return statuses


async def test_key_by_header_hashed_and_falling_back_to_the_address(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    proxy = await start_proxy(
        origin.url, rate_limit={"limits": ["2/minute"], "key": "header:X-Api-Key"}
    )
    a, b = {"X-Api-Key": "key-a-secret"}, {"X-Api-Key": "key-b-secret"}
    none: dict[str, str] = {}
    assert await key_statuses(http, proxy, [a, a, a, b, b, b, none, none, none]) == [
        200, 200, 429, 200, 200, 429, 200, 200, 429,
    ]  # fmt: skip
    limiter = proxy.pipeline.routes.default.rate_limit
    assert limiter is not None
    tracked = list(limiter.memory._states)
    assert len(tracked) == 3 and "127.0.0.1" in tracked
    assert not any("secret" in key for key in tracked)  # only digests are kept


async def test_key_by_bearer_token(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    proxy = await start_proxy(origin.url, rate_limit={"limits": ["2/minute"], "key": "bearer"})
    a = {"Authorization": "Bearer token-a"}
    b = {"Authorization": "bearer token-b"}
    basic = {"Authorization": "Basic dXNlcjpwYXNz"}  # not a bearer token: keyed by address
    assert await key_statuses(http, proxy, [a, a, a, b, b, b, basic, {}, basic]) == [
        200, 200, 429, 200, 200, 429, 200, 200, 429,
    ]  # fmt: skip
    limiter = proxy.pipeline.routes.default.rate_limit
    assert limiter is not None
    assert not any("token" in key for key in limiter.memory._states)


async def test_key_global_counts_every_client_together(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    proxy = await start_proxy(
        origin.url,
        rate_limit={"limits": ["3/minute"], "key": "global"},
        trusted_proxies=["127.0.0.1"],
    )
    clients = [{"X-Forwarded-For": f"203.0.113.{i}"} for i in range(5)]
    assert await key_statuses(http, proxy, clients) == [200, 200, 200, 429, 429]


async def test_routes_own_limits_inherited_limits_and_off(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    proxy = await start_proxy(
        origin.url,
        rate_limit={"limits": ["2/minute"]},
        routes=[
            {"match": {"prefix": "/login"}, "rate_limit": {"limits": ["1/minute", "5/hour"]}},
            {"match": {"prefix": "/free"}, "rate_limit": False},
            {"match": {"prefix": "/a"}},  # inherits the defaults: counts with unmatched
        ],
    )

    async def status(path: str) -> int:
        resp, _ = await get(http, proxy, path)
        return resp.status

    assert [await status("/login") for _ in range(2)] == [200, 429]
    assert [await status("/free") for _ in range(5)] == [200] * 5
    resp, _ = await get(http, proxy, "/free")
    assert "X-RateLimit-Limit" not in resp.headers and "RateLimit" not in resp.headers
    assert [await status(p) for p in ("/a", "/other", "/a")] == [200, 200, 429]
    resp, _ = await get(http, proxy, "/login")
    assert resp.headers["RateLimit-Policy"] == '"1/minute";q=1;w=60, "5/hour";q=5;w=3600'


async def test_refusals_carry_cors_headers_for_browsers(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    proxy = await start_proxy(
        origin.url,
        rate_limit={"limits": ["1/minute"]},
        cors={"allow_origins": ["https://app.example"], "expose_headers": ["Retry-After"]},
    )
    cors = {"Origin": "https://app.example"}
    await get(http, proxy, "/api", headers=cors)
    resp, _ = await get(http, proxy, "/api", headers=cors)
    assert resp.status == 429
    assert resp.headers["Access-Control-Allow-Origin"] == "https://app.example"
    # A preflight is served before the limit, and does not use up the quota.
    async with http.options(
        url_of(proxy, "/api"), headers={**cors, "Access-Control-Request-Method": "GET"}
    ) as resp:
        assert resp.status == 204
