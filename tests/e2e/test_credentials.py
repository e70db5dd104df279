"""One reading of `Authorization` for revocation, the `bearer` rate-limit key and per-user keys.

An origin that splits credentials on any whitespace must not be handed a token the proxy
read differently: `Bearer<TAB><revoked>` is refused, and every spelling of one token is one
client and one user.
"""

from __future__ import annotations

import aiohttp
import pytest

from proxy.http.credentials import Credentials, bearer, parse
from tests.conftest import Origin, StartProxy, get, raw_exchange
from tests.e2e.test_revocation import ADMIN, revoke

# --- pure ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        ("Bearer abc", Credentials("bearer", ("abc",))),
        ("Bearer\tabc", Credentials("bearer", ("abc",))),
        ("  bEaReR \t abc \t", Credentials("bearer", ("abc",))),
        ("Bearer\udca0abc", Credentials("bearer", ("abc",))),  # byte 0xA0: Latin-1 NBSP
        ("Basic dXNlcjpwdw==", Credentials("basic", ("dXNlcjpwdw==",))),
        ("Digest a=1, b=2", Credentials("digest", ("a=1,", "b=2"))),
        ("Bearer", Credentials("bearer", ())),
        ("", None),
        (" \t", None),
    ],
)
def test_parse(value: str, parsed: Credentials | None) -> None:
    assert parse(value) == parsed


def test_every_spelling_of_one_credential_is_one_canonical_form() -> None:
    spellings = ["Bearer x", "Bearer\tx", "bearer  x ", "BEARER\t\tx"]
    assert {c.canonical for s in spellings if (c := parse(s))} == {"Bearer x"}
    assert bearer("Bearer\tx") == "x" and bearer("Basic x") is None and bearer("Bearer") is None


# --- through the proxy -------------------------------------------------------------------------


async def test_a_tab_after_bearer_does_not_hide_a_revoked_token(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    proxy = await start_proxy(origin.url, admin={"token": ADMIN})
    assert (await revoke(http, proxy, {"token": "stolen-token", "ttl": 60}))[0] == 200
    for spelling in ("Bearer\tstolen-token", "bearer \t stolen-token", "Bearer\xa0stolen-token"):
        raw = f"GET /api HTTP/1.1\r\nHost: x\r\nAuthorization: {spelling}\r\n"
        raw += "Connection: close\r\n\r\n"
        response = await raw_exchange(proxy.proxy_port, raw.encode("latin-1"))
        assert response.startswith(b"HTTP/1.1 401 "), spelling
    # A token with a space in it could be either word to an origin: not guessed, refused.
    resp, _ = await get(http, proxy, "/api", headers={"Authorization": "Bearer ok stolen-token"})
    assert resp.status == 400
    assert origin.requests == []


async def test_two_authorization_fields_are_refused(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    proxy = await start_proxy(origin.url)  # nothing revoked: refused anyway
    two = [("Authorization", "Bearer a"), ("Authorization", "Bearer b")]
    resp, body = await get(http, proxy, "/api", headers=two)
    assert resp.status == 400 and b"more than one Authorization" in body
    assert origin.requests == []
    resp, _ = await get(http, proxy, "/api", headers={"Authorization": "Bearer a"})
    assert resp.status == 200


async def test_the_bearer_rate_limit_key_reads_every_spelling_as_one_client(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    proxy = await start_proxy(origin.url, rate_limit={"limits": ["2/minute"], "key": "bearer"})
    statuses = []
    for spelling in ("Bearer tok", "Bearer\ttok", "bearer  tok", "BEARER\ttok"):
        resp, _ = await get(http, proxy, "/api", headers={"Authorization": spelling})
        statuses.append(resp.status)
    assert statuses == [200, 200, 429, 429]


async def test_per_user_entries_read_every_spelling_as_one_user(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    proxy = await start_proxy(origin.url, cache={"ttl": 60, "per_user": True})
    resp, _ = await get(http, proxy, "/me", headers={"Authorization": "Bearer tok"})
    assert resp.headers["X-Cache"] == "MISS"
    resp, _ = await get(http, proxy, "/me", headers={"Authorization": "bearer\ttok"})
    assert resp.headers["X-Cache"] == "HIT"
    resp, _ = await get(http, proxy, "/me", headers={"Authorization": "Bearer other"})
    assert resp.headers["X-Cache"] == "MISS"
    assert len(origin.requests) == 2
