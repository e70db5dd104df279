"""Per-user routes through the real proxy: nobody is ever served another user's data."""

from __future__ import annotations

import asyncio
import random
from collections import Counter

import aiohttp
import pytest
from aiohttp import web

from tests.conftest import Origin, StartProxy, get

USERS = 50


def _identity(request: web.Request) -> str:
    """Who a naive origin thinks is asking: any credential it recognises, else nobody."""
    if key := request.headers.get("X-Api-Key"):
        return key.removeprefix("key-")
    if auth := request.headers.get("Authorization"):
        return auth.removeprefix("Bearer ")
    if sid := request.cookies.get("sid"):
        return sid
    return "anon"


def _personalised(request: web.Request) -> web.Response:
    who = _identity(request)
    # Half the paths say `private` for signed-in users, as they should; the other half
    # forget to, as real APIs do. Anonymous responses are public.
    forgets = request.path.endswith(("/1", "/3"))
    private = who != "anon" and not forgets
    cc = "private, max-age=60" if private else "max-age=60"
    return web.Response(text=f"data of {who}", headers={"Cache-Control": cc})


# How a request identifies its user u (or does not).
KINDS = {
    "authorization": lambda u: {"Authorization": f"Bearer {u}"},
    "api-key": lambda u: {"X-Api-Key": f"key-{u}"},
    "cookie": lambda u: {"Cookie": f"sid={u}"},
    "authorization+cookie": lambda u: {"Authorization": f"Bearer {u}", "Cookie": f"sid={u}"},
    "api-key+authorization": lambda u: {"X-Api-Key": f"key-{u}", "Authorization": f"Bearer {u}"},
    "anonymous": lambda u: {},
}


async def test_mixed_users_never_see_each_others_data(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    origin.respond = _personalised
    proxy = await start_proxy(
        origin.url,
        cache={"ttl": 60},
        routes=[
            {"match": {"prefix": "/a/"}, "cache": {"per_user": True}},
            {"match": {"prefix": "/k/"}, "cache": {"per_user": {"header": "X-Api-Key"}}},
        ],
    )
    rng = random.Random(7)
    plan = [
        (
            f"/{rng.choice('ak')}/{rng.randrange(4)}",
            f"u{rng.randrange(USERS)}",
            rng.choice(list(KINDS)),
        )
        for _ in range(10_000)
    ]
    limit = asyncio.Semaphore(50)
    foreign: list[tuple[str, str, str, str]] = []
    outcomes: Counter[str] = Counter()

    async def one(path: str, user: str, kind: str) -> None:
        async with limit:
            resp, body = await get(http, proxy, path, headers=KINDS[kind](user))
        assert resp.status == 200
        outcomes[resp.headers["X-Cache"]] += 1
        expected = "anon" if kind == "anonymous" else user
        if body.decode() != f"data of {expected}":
            foreign.append((path, user, kind, body.decode()))

    await asyncio.gather(*(one(*p) for p in plan))
    assert foreign == [], f"{len(foreign)} responses held another user's data: {foreign[:5]}"
    # The cache still does its job for everyone it may serve.
    assert outcomes["HIT"] > 5_000, outcomes
    assert outcomes["BYPASS"] > 1_000, outcomes  # credentials the route does not key by


async def test_session_cookie_on_authorization_route_bypasses_the_cache(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    origin.respond = _personalised
    proxy = await start_proxy(origin.url, cache={"per_user": True, "ttl": 60})
    _, a = await get(http, proxy, "/me/0", headers={"Cookie": "sid=alice"})
    second, b = await get(http, proxy, "/me/0", headers={"Cookie": "sid=bob"})
    assert (a, b) == (b"data of alice", b"data of bob")
    assert second.headers["X-Cache"] == "BYPASS"
    assert second.headers["Cache-Status"] == "cacheproxy;fwd=bypass;detail=credentials"
    assert origin.hits["/me/0"] == 2


async def test_anonymous_requests_on_per_user_route_follow_shared_rules(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    # An anonymous response marked private is not stored where the next anonymous
    # client (a different person) would get it.
    origin.respond = lambda r: web.Response(
        text="cart of this visitor", headers={"Cache-Control": "private, max-age=60"}
    )
    proxy = await start_proxy(origin.url, cache={"per_user": True})
    first, _ = await get(http, proxy, "/cart")
    second, _ = await get(http, proxy, "/cart")
    assert first.headers["Cache-Status"] == "cacheproxy;fwd=miss;detail=private"
    assert second.headers["X-Cache"] == "MISS"
    assert origin.hits["/cart"] == 2


async def test_api_key_route_bypasses_requests_signed_another_way(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    origin.respond = _personalised
    proxy = await start_proxy(origin.url, cache={"per_user": {"header": "X-Api-Key"}, "ttl": 60})
    for user in ("alice", "bob"):
        resp, body = await get(http, proxy, "/k/0", headers={"Authorization": f"Bearer {user}"})
        assert body == f"data of {user}".encode()
        assert resp.headers["X-Cache"] == "BYPASS"
    _, body = await get(http, proxy, "/k/0", headers={"X-Api-Key": "key-carol"})
    resp, again = await get(http, proxy, "/k/0", headers={"X-Api-Key": "key-carol"})
    assert (body, again, resp.headers["X-Cache"]) == (b"data of carol", b"data of carol", "HIT")


def _signed_in_differently(request: web.Request) -> web.Response:
    # An API that responds to signed-in users differently without saying Vary or private.
    who = request.headers.get("Authorization", "anonymous")
    cc = "public, max-age=60" if request.path == "/public" else "max-age=60"
    return web.Response(text=f"page for {who}", headers={"Cache-Control": cc})


@pytest.mark.parametrize(
    ("mode", "signed_in_sees", "x_cache"),
    [
        ("explicit", b"page for Bearer alice", "MISS"),
        ("lookup", b"page for anonymous", "HIT"),
        ("pass", b"page for Bearer alice", "BYPASS"),
    ],
)
async def test_on_credentials_modes(
    origin: Origin,
    start_proxy: StartProxy,
    http: aiohttp.ClientSession,
    mode: str,
    signed_in_sees: bytes,
    x_cache: str,
) -> None:
    origin.respond = _signed_in_differently
    proxy = await start_proxy(origin.url, cache={"on_credentials": mode})
    alice = {"Authorization": "Bearer alice"}
    await get(http, proxy, "/home")
    resp, body = await get(http, proxy, "/home", headers=alice)
    assert (body, resp.headers["X-Cache"]) == (signed_in_sees, x_cache)
    # Whatever the mode, a signed-in response never lands where anonymous users read.
    resp, body = await get(http, proxy, "/home")
    assert (body, resp.headers["X-Cache"]) == (b"page for anonymous", "HIT")


async def test_explicitly_public_entries_serve_credentialed_requests(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    origin.respond = _signed_in_differently
    proxy = await start_proxy(origin.url, cache={})
    await get(http, proxy, "/public")
    resp, body = await get(http, proxy, "/public", headers={"Authorization": "Bearer alice"})
    assert (body, resp.headers["X-Cache"]) == (b"page for anonymous", "HIT")
