"""Whose cache a request may use (RFC 9111 §3.5): scopes, credentials. Pure."""

from __future__ import annotations

import pytest

from proxy.cache.policy.directives import parse_cache_control
from proxy.cache.policy.rules import CacheRules
from proxy.cache.policy.scope import Scope, may_reuse, request_scope
from proxy.cache.policy.storable import StoreDecision, storability
from tests.cache.policy.samples import AUTH, h

SCOPES = [
    # id, request headers, the route's credential header, scope
    ("shared-route-credentials", [AUTH, ("Cookie", "s=1")], None, Scope.CREDENTIALED),
    ("shared-route-anonymous", [("Accept", "*/*")], None, Scope.SHARED),
    ("anonymous", [("Accept", "*/*")], "Authorization", Scope.SHARED),
    ("own-credential", [AUTH], "Authorization", Scope.USER),
    ("own-plus-cookie", [AUTH, ("Cookie", "s=1")], "Authorization", Scope.USER),
    ("cookie-only", [("Cookie", "s=1")], "Authorization", Scope.PASS),
    ("empty-credential", [("Authorization", "  ")], "Authorization", Scope.PASS),
    ("empty-credential-on-key-route", [("X-Api-Key", "")], "X-Api-Key", Scope.PASS),
    ("api-key", [("x-api-key", "k1")], "X-Api-Key", Scope.USER),
    ("authorization-on-key-route", [AUTH], "X-Api-Key", Scope.PASS),
    ("cookie-on-key-route", [("Cookie", "s=1")], "X-Api-Key", Scope.PASS),
    ("cookie-keyed-route", [("Cookie", "s=1")], "Cookie", Scope.USER),
    ("authorization-on-cookie-route", [AUTH], "Cookie", Scope.PASS),
    ("second-line-carries-it", [("X-Api-Key", ""), ("X-Api-Key", "k")], "X-Api-Key",
     Scope.USER),
]  # fmt: skip


@pytest.mark.parametrize(
    ("req", "user_header", "scope"),
    [case[1:] for case in SCOPES],
    ids=[case[0] for case in SCOPES],
)
def test_request_scope(req: list[tuple[str, str]], user_header: str | None, scope: Scope) -> None:
    credentials = ("Authorization", "Cookie", user_header or "Cookie")
    rules = CacheRules(user_header=user_header, credentials=credentials)
    assert request_scope(h(*req), rules) is scope


@pytest.mark.parametrize(
    ("mode", "scope"),
    [("explicit", Scope.CREDENTIALED), ("lookup", Scope.SHARED), ("pass", Scope.PASS)],
)
def test_on_credentials_decides_for_shared_routes(mode: str, scope: Scope) -> None:
    rules = CacheRules(on_credentials=mode)
    assert request_scope(h(("Cookie", "sid=1")), rules) is scope
    assert request_scope(h(), rules) is Scope.SHARED
    # Per-user routes are decided by their own credential, whatever the mode.
    per_user = CacheRules(user_header="Authorization", on_credentials=mode)
    assert request_scope(h(AUTH), per_user) is Scope.USER


@pytest.mark.parametrize(
    ("cache_control", "allowed"),
    [
        ("max-age=60", False),
        ("public, max-age=60", True),
        ("s-maxage=60", True),
        ("must-revalidate, max-age=60", True),
    ],
)
def test_credentialed_requests_only_take_explicitly_shareable_entries(
    cache_control: str, allowed: bool
) -> None:
    cc = parse_cache_control([cache_control])
    assert may_reuse(Scope.CREDENTIALED, cc) is allowed
    assert may_reuse(Scope.SHARED, cc) and may_reuse(Scope.USER, cc)


def test_configured_credentials_count_like_authorization() -> None:
    rules = CacheRules(user_header="Authorization", credentials=("Authorization", "X-Token"))
    assert request_scope(h(("x-token", "t")), rules) is Scope.PASS
    shared = CacheRules(credentials=("Authorization", "X-Token"))
    decision = storability(
        "GET", 200, h(("X-Token", "t")), h(("Cache-Control", "max-age=60")), shared
    )
    assert decision == StoreDecision(False, "authorization")
