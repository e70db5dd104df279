"""Token revocation: the pure parts, then end to end through the real proxy (in memory).

The Redis-shared list (two instances, pub/sub, resync, Redis down) is tested in
tests/e2e/test_revocation_shared.py.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from typing import Any

import aiohttp
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.config.revocation import RevocationSettings
from proxy.edge.revocation import (
    ListFull,
    RevocationList,
    bearer_token,
    jti_member,
    jwt_id,
    token_member,
)
from proxy.server.app import ProxyServer
from tests.conftest import Origin, StartProxy, get

ADMIN = "admin-secret-token"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt(claims: Any) -> str:
    header = b64(orjson.dumps({"alg": "HS256", "typ": "JWT"}))
    return f"{header}.{b64(orjson.dumps(claims))}.{b64(b'not-checked-signature')}"


# --- pure ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "token"),
    [
        ("Bearer abc.def", "abc.def"),
        ("bearer   abc", "abc"),
        ("BEARER abc ", "abc"),
        ("Basic dXNlcg==", None),
        ("Bearer", None),
        ("Bearer ", None),
        ("Bearerabc", None),
        ("", None),
    ],
)
def test_bearer_token(value: str, token: str | None) -> None:
    assert bearer_token(value) == token


def test_jwt_id_reads_the_jti_claim_without_verifying() -> None:
    assert jwt_id(jwt({"sub": "42", "jti": "id-1"})) == "id-1"
    payload = b64(orjson.dumps({"jti": "x" * 3}))  # lengths needing every padding
    assert jwt_id(f"a.{payload}.c") == "xxx"
    assert jwt_id(f"a.{payload}=.c") == "xxx"  # padded too


@pytest.mark.parametrize(
    "token",
    [
        jwt({"sub": "42"}),  # no jti
        jwt({"jti": 7}),
        jwt({"jti": ""}),
        jwt({"jti": "x" * 1025}),
        jwt(["jti"]),
        jwt("jti"),
        "a.b.c.d.e",  # JWE: the payload is encrypted
        "opaque-token",
        "a.!!!.c",
        "a." + b64(b"\xff\xfe not json") + ".c",
        "a." + b64(b"[" * 5000 + b"]" * 5000) + ".c",
        "a.eyJqdGkiOiJ4In0+.c",  # '+' is base64, not base64url
        "a.e.c",  # one base64 character is never a whole byte
        jwt({"jti": "x", "pad": "y" * 20_000}),  # over the size bound
    ],
)
def test_anything_else_is_simply_not_a_jwt(token: str) -> None:
    assert jwt_id(token) is None


@given(st.text(max_size=200))
def test_jwt_id_never_raises(token: str) -> None:
    result = jwt_id(token)
    assert result is None or isinstance(result, str)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


async def test_in_memory_list_expires_entries_and_is_bounded() -> None:
    clock = Clock()
    revoked = RevocationList(RevocationSettings(max_entries=2), clock=clock)
    assert not revoked.any
    await revoked.revoke(token_member("t1"), 10)
    await revoked.revoke(jti_member("id-9"), 20)
    assert revoked.any and revoked.count() == 2
    assert revoked.revoked("t1")
    assert revoked.revoked(jwt({"jti": "id-9"}))
    assert not revoked.revoked("t2")
    with pytest.raises(ListFull):
        await revoked.revoke(token_member("t3"), 10)
    await revoked.revoke(token_member("t1"), 30)  # known: extends, needs no room
    clock.now += 25
    assert revoked.revoked("t1")
    assert not revoked.revoked(jwt({"jti": "id-9"}))
    clock.now += 10
    assert not revoked.revoked("t1")
    assert revoked.count() == 0 and not revoked.any


# --- through the proxy ------------------------------------------------------------


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


async def test_a_revoked_token_is_refused_even_for_cached_answers(
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
