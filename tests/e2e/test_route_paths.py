"""Routes are matched on the path as an origin reads it; the request is forwarded as sent.

The pure readings first, then through the real proxy: a spelling never takes a request out
of its route's rate limit or cache rules.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.config.loader import parse_config
from proxy.http.target import normalise_escapes, path_readings, remove_dot_segments
from proxy.pipeline.routes import AmbiguousPath, RouteTable
from tests.conftest import Origin, StartProxy, raw_exchange

# --- pure ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        ("/api/auth/log%69n", "/api/auth/login"),
        ("/%7Euser/%7eme", "/~user/~me"),
        ("/a%2fb", "/a%2Fb"),  # reserved: stays escaped, in upper case
        ("/a%20b%3f", "/a%20b%3F"),
        ("/a%zzb%", "/a%zzb%"),  # not an escape: left alone
        ("/100%", "/100%"),
        ("/a%2", "/a%2"),
        ("/plain", "/plain"),
    ],
)
def test_normalise_escapes(raw: str, normal: str) -> None:
    assert normalise_escapes(raw) == normal


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        ("/a/b/../c", "/a/c"),
        ("/a/./b", "/a/b"),
        ("/a/..", "/"),
        ("/../../x", "/x"),
        ("/a/b/.", "/a/b/"),
        ("/a//b", "/a//b"),
        ("/.well-known/x", "/.well-known/x"),
    ],
)
def test_remove_dot_segments(raw: str, normal: str) -> None:
    assert remove_dot_segments(raw) == normal


def test_readings_list_what_origins_disagree_on() -> None:
    assert path_readings("/api/auth/log%69n") == ["/api/auth/login"]  # one reading only
    assert path_readings("/a/../b") == ["/b", "/a/../b"]
    assert path_readings("/x//y") == ["/x//y", "/x/y"]
    assert path_readings("/a/..%2Fb") == ["/a/..%2Fb", "/a/../b", "/b"]
    assert path_readings("/a#frag") == ["/a"]  # never forwarded


@given(st.text(alphabet="/.%2fFA-a~#", max_size=40).map(lambda s: "/" + s))
def test_readings_never_raise_and_the_first_is_stable(path: str) -> None:
    readings = path_readings(path)
    assert readings and all(r.startswith("/") for r in readings)
    assert path_readings(readings[0])[0] == readings[0]


TABLE = """
upstream: {url: "http://127.0.0.1:1"}
routes:
  - {name: login, match: {prefix: /api/auth/login}}
  - {name: files, match: {prefix: /api/files/}}
  - {name: exact, match: {path: /api/%7eme}}
"""


def test_route_for_matches_the_normalised_path_and_refuses_ambiguity() -> None:
    table = RouteTable(parse_config(TABLE, env={}))
    assert table.route_for("GET", "/api/auth/log%69n").name == "login"
    assert table.route_for("GET", "/api/auth/LOG%69N").name == "default"  # paths are case-sensitive
    assert table.route_for("GET", "/api/~me").name == "exact"  # the pattern is normalised too
    assert table.route_for("GET", "/api/files/a%2Fb").name == "files"  # every reading agrees
    assert table.route_for("GET", "/api/files/x/../y").name == "files"
    for path in ("/api/x/../auth/login", "/api/x/..%2Fauth/login", "/api//auth/login"):
        with pytest.raises(AmbiguousPath):
            table.route_for("GET", path)
        assert table.match("GET", path).name in ("login", "default")  # purge, warming: no raise


# --- through the proxy -------------------------------------------------------------------------


def request(path: str, extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: x\r\n{extra}Connection: close\r\n\r\n".encode()


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


async def test_an_escaped_spelling_stays_under_its_routes_rate_limit(
    origin: Origin, start_proxy: StartProxy
) -> None:
    proxy = await start_proxy(
        origin.url,
        routes=[{"match": {"prefix": "/api/auth/login"}, "rate_limit": {"limits": ["5/minute"]}}],
        rate_limit={"limits": ["1000/minute"]},
    )
    statuses = [
        status_of(await raw_exchange(proxy.proxy_port, request("/api/auth/log%69n")))
        for _ in range(10)
    ]
    assert statuses.count(200) == 5 and statuses.count(429) == 5
    # Forwarded byte for byte: the origin decides what it means.
    assert {r.raw_path for r in origin.requests} == {"/api/auth/log%69n"}


async def test_an_escaped_spelling_cannot_leave_a_route_that_does_not_cache(
    origin: Origin, start_proxy: StartProxy
) -> None:
    proxy = await start_proxy(
        origin.url, cache={"ttl": 60}, routes=[{"match": {"prefix": "/live"}, "cache": False}]
    )
    for _ in range(3):
        response = await raw_exchange(proxy.proxy_port, request("/l%69ve/quote"))
        assert status_of(response) == 200
    assert len(origin.requests) == 3  # never served from the cache


async def test_a_path_origins_could_route_differently_is_refused(
    origin: Origin, start_proxy: StartProxy
) -> None:
    proxy = await start_proxy(
        origin.url,
        routes=[{"match": {"prefix": "/api/auth/login"}, "rate_limit": {"limits": ["5/minute"]}}],
    )
    for path in ("/api/x/..%2Fauth/login", "/api/x/%2E%2E/auth/login", "/api//auth/login"):
        response = await raw_exchange(proxy.proxy_port, request(path))
        assert status_of(response) == 400, path
        assert b'"error":"ambiguous_path"' in response
    # An encoded slash inside one route's path is fine, and goes upstream as sent.
    response = await raw_exchange(proxy.proxy_port, request("/api/files/a%2fb"))
    assert status_of(response) == 200
    assert [r.raw_path for r in origin.requests] == ["/api/files/a%2fb"]
