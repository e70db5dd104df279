"""The revocation list and what it reads of a bearer token: pure, no sockets.

Through the proxy: tests/e2e/test_revocation.py (in memory), test_revocation_shared.py
(through Redis), test_revocation_restart.py (across restarts).
"""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.config.revocation import RevocationSettings
from proxy.edge.revocation import RevocationList, bearer_token, jti_member, jwt_id, token_member


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt(claims: Any) -> str:
    header = b64(orjson.dumps({"alg": "HS256", "typ": "JWT"}))
    return f"{header}.{b64(orjson.dumps(claims))}.{b64(b'not-checked-signature')}"


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
    assert await revoked.revoke(token_member("t3"), 10) is None  # full
    await revoked.revoke(token_member("t1"), 30)  # known: extends, needs no room
    clock.now += 25
    assert revoked.revoked("t1")
    assert not revoked.revoked(jwt({"jti": "id-9"}))
    clock.now += 10
    assert not revoked.revoked("t1")
    assert revoked.count() == 0 and not revoked.any


async def test_a_list_hands_its_live_entries_to_another() -> None:
    now = [1000.0]
    source = RevocationList(RevocationSettings(), clock=lambda: now[0])
    await source.revoke(token_member("a"), 10)
    await source.revoke(token_member("b"), 100)
    now[0] += 20
    entries = source.entries()
    assert entries == [(token_member("b"), 1100.0)]  # the expired one is not handed on
    other = RevocationList(RevocationSettings(), clock=lambda: now[0])
    other.load(entries)
    assert other.any and other.revoked("b") and not other.revoked("a")
    other.load([("t:junk", 0.0), ("bad", 5000.0)])  # expired or not a member: ignored
    assert other.count() == 1
