"""Token revocation end to end through the real proxy (in memory).

The pure parts are tested in tests/edge/test_revocation.py, the Redis-shared list (two
instances, pub/sub, resync, Redis down) in tests/e2e/test_revocation_shared.py.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp
import orjson
import pytest

from proxy.server.app import ProxyServer
from tests.conftest import Origin, StartProxy, get
from tests.edge.test_revocation import jwt

ADMIN = "admin-secret-token"


async def revoke(
    http: aiohttp.ClientSession, proxy: ProxyServer, spec: Any, token: str | None = ADMIN
) -> tuple[int, Any]:
    auth = {"Authorization": f"Bearer {token}"} if token else {}
    async with http.post(
        f"http://127.0.0.1:{proxy.admin_port}/tokens/revoke",
        data=orjson.dumps(spec),
        headers=auth,
    ) as resp:
        return resp.status, orjson.loads(await resp.read())


async def revoked_count(http: aiohttp.ClientSession, proxy: ProxyServer) -> int:
    url = f"http://127.0.0.1:{proxy.admin_port}/tokens/revoked/count"
    async with http.get(url, headers={"Authorization": f"Bearer {ADMIN}"}) as resp:
        assert resp.status == 200
        return int(orjson.loads(await resp.read())["count"])


async def test_a_revoked_token_is_refused_even_for_cached_responses(
    origin: Origin,
    start_proxy: StartProxy,
    http: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    # on_credentials: lookup, so the signed-in request is a hit on the shared entry.
    cache = {"ttl": 60, "on_credentials": "lookup"}
    proxy = await start_proxy(origin.url, cache=cache, admin={"token": ADMIN})
    token = "opaque-Secret-Token-123"
    bearer = {"Authorization": f"Bearer {token}"}
    resp, _ = await get(http, proxy, "/api/shared")  # stored for everyone
    resp, _ = await get(http, proxy, "/api/shared", headers=bearer)
    assert resp.status == 200 and resp.headers["X-Cache"] == "HIT"

    status, body = await revoke(http, proxy, {"token": token, "ttl": 600})
    assert status == 200 and body["revoked"] is True and body["count"] == 1
    assert token not in orjson.dumps(body).decode()

    hits = origin.hits["/api/shared"]
    resp, body = await get(http, proxy, "/api/shared", headers=bearer)
    assert resp.status == 401
    assert orjson.loads(body)["error"] == "token_revoked"
    assert resp.headers["WWW-Authenticate"].startswith('Bearer error="invalid_token"')
    async with http.post(f"http://127.0.0.1:{proxy.proxy_port}/api/w", headers=bearer) as r:
        assert r.status == 401
    assert origin.hits["/api/shared"] == hits and origin.hits["/api/w"] == 0
    # Other tokens, and requests without one, go on as before.
    resp, _ = await get(http, proxy, "/api/shared", headers={"Authorization": "Bearer other"})
    assert resp.status == 200
    resp, _ = await get(http, proxy, "/api/shared")
    assert resp.status == 200
    assert await revoked_count(http, proxy) == 1
    assert token not in caplog.text


async def test_revoke_by_jti(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    proxy = await start_proxy(origin.url, admin={"token": ADMIN})
    stolen, fresh = jwt({"sub": "u1", "jti": "jti-1"}), jwt({"sub": "u1", "jti": "jti-2"})
    status, _ = await revoke(http, proxy, {"jti": "jti-1", "ttl": 60})
    assert status == 200
    resp, _ = await get(http, proxy, "/api", headers={"Authorization": f"Bearer {stolen}"})
    assert resp.status == 401
    resp, _ = await get(http, proxy, "/api", headers={"Authorization": f"Bearer {fresh}"})
    assert resp.status == 200
    # A second Authorization line cannot hide the revoked one: two are refused outright.
    two = [("Authorization", f"Bearer {fresh}"), ("Authorization", f"Bearer {stolen}")]
    resp, _ = await get(http, proxy, "/api", headers=two)
    assert resp.status == 400


async def test_a_revoked_token_works_again_after_its_ttl(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    proxy = await start_proxy(origin.url, admin={"token": ADMIN})
    bearer = {"Authorization": "Bearer short-lived"}
    assert (await revoke(http, proxy, {"token": "short-lived", "ttl": 0.4}))[0] == 200
    resp, _ = await get(http, proxy, "/api", headers=bearer)
    assert resp.status == 401
    await asyncio.sleep(0.5)
    resp, _ = await get(http, proxy, "/api", headers=bearer)
    assert resp.status == 200
    assert await revoked_count(http, proxy) == 0


@pytest.mark.parametrize(
    "spec",
    [
        "not an object",
        {},
        {"token": "a", "jti": "b", "ttl": 5},
        {"token": "a"},
        {"token": "a", "ttl": 0},
        {"token": "a", "ttl": -1},
        {"token": "a", "ttl": True},
        {"token": "a", "ttl": "60"},
        {"token": "a", "ttl": 10**9},
        {"token": "", "ttl": 5},
        {"token": "Bearer abc", "ttl": 5},
        {"token": 5, "ttl": 5},
        {"jti": "x" * 2000, "ttl": 5},
        {"token": "a", "ttl": 5, "extra": 1},
    ],
)
async def test_bad_revocations_get_a_400(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession, spec: Any
) -> None:
    proxy = await start_proxy(origin.url, admin={"token": ADMIN})
    status, body = await revoke(http, proxy, spec)
    assert status == 400 and body["error"] == "bad_request"


async def test_revocation_endpoints_need_the_admin_token(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    proxy = await start_proxy(origin.url, admin={"token": ADMIN})
    status, _ = await revoke(http, proxy, {"token": "t", "ttl": 5}, token=None)
    assert status == 401
    status, _ = await revoke(http, proxy, {"token": "t", "ttl": 5}, token="wrong")
    assert status == 401
    async with http.get(f"http://127.0.0.1:{proxy.admin_port}/tokens/revoked/count") as resp:
        assert resp.status == 401
    assert await revoked_count(http, proxy) == 0


async def test_a_full_list_refuses_new_entries_with_507(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    proxy = await start_proxy(origin.url, admin={"token": ADMIN}, revocation={"max_entries": 1})
    assert (await revoke(http, proxy, {"token": "first", "ttl": 60}))[0] == 200
    status, body = await revoke(http, proxy, {"jti": "second", "ttl": 60})
    assert status == 507 and body["error"] == "list_full"
    assert (await revoke(http, proxy, {"token": "first", "ttl": 120}))[0] == 200  # extends
    assert await revoked_count(http, proxy) == 1
