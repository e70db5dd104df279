"""The I/O-free parts of the core: request targets, header hygiene, route matching."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDict

from proxy.config.loader import parse_config
from proxy.edge.route import UpstreamTarget
from proxy.http.headers import ForwardingRules, forward_response_headers
from proxy.http.target import BadTarget, parse_target
from proxy.pipeline.routes import RouteTable
from tests.conftest import forward_request_headers


@pytest.mark.parametrize(
    ("raw", "path", "query", "authority"),
    [
        ("/a/b?x=1&y", "/a/b", "x=1&y", None),
        ("/a%2Fb", "/a%2Fb", "", None),
        ("http://API.example:9000/p?q", "/p", "q", ("api.example", 9000)),
        ("http://api.example", "/", "", ("api.example", 80)),
        ("https://api.example?x", "/", "x", ("api.example", 443)),
        ("http://user:pw@h:81/p", "/p", "", ("h", 81)),
        ("http://[::1]:8080/p", "/p", "", ("::1", 8080)),
    ],
)
def test_parse_target(raw: str, path: str, query: str, authority: tuple[str, int] | None) -> None:
    target = parse_target(raw)
    assert (target.path, target.query, target.authority) == (path, query, authority)


@pytest.mark.parametrize(
    "raw", ["*", "ftp://h/x", "http://:80/x", "http://h:99999/", "http://[::1"]
)
def test_parse_target_rejects(raw: str) -> None:
    with pytest.raises(BadTarget):
        parse_target(raw)


@given(st.text())
def test_parse_target_never_raises_anything_but_bad_target(raw: str) -> None:
    try:
        target = parse_target(raw)
    except BadTarget:
        return
    assert target.path.startswith("/")


def test_request_headers_drop_hop_by_hop_and_connection_named() -> None:
    incoming = CIMultiDict(
        [
            ("Host", "public.example"),
            ("Connection", "close, X-Hop"),
            ("X-Hop", "1"),
            ("Transfer-Encoding", "chunked"),
            ("Upgrade", "websocket"),
            ("Cookie", "a=1"),
            ("Via", "1.0 edge"),
            ("X-Forwarded-For", "10.0.0.1"),
        ]
    )
    out = forward_request_headers(
        incoming,
        ForwardingRules.build(None, None),
        peer="127.0.0.9",
        peer_trusted=True,
        proto="http",
        client_host="public.example",
        upstream_host="api:9000",
    )
    assert out["Host"] == "api:9000"
    assert "Content-Length" not in out  # framing is the connection's (http1.request_head)
    assert out["Cookie"] == "a=1"
    assert out["Via"] == "1.0 edge, 1.1 cacheproxy"
    assert out["X-Forwarded-For"] == "10.0.0.1, 127.0.0.9"
    assert out["X-Forwarded-Host"] == "public.example"
    for gone in ("Connection", "X-Hop", "Transfer-Encoding", "Upgrade"):
        assert gone not in out


def test_response_headers_keep_repeats_in_order() -> None:
    out = forward_response_headers(
        CIMultiDict([("Set-Cookie", "a=1"), ("Keep-Alive", "x"), ("Set-Cookie", "b=2")])
    )
    assert out.getall("Set-Cookie") == ["a=1", "b=2"]
    assert "Keep-Alive" not in out


def test_upstream_target_parsing() -> None:
    t = UpstreamTarget.parse("http://API.internal:9000/base/")
    assert t.origin == "http://api.internal:9000"
    assert t.base_path == "/base"
    assert t.authorities == {("api.internal", 9000)}
    assert UpstreamTarget.parse("https://h").authorities == {("h", 443)}
    # Cache keys start with what is fetched: two base paths of one origin are two URLs.
    assert t.key_origin == "api.internal:9000/base"
    assert UpstreamTarget.parse("http://H:8080/Base").key_origin == "h:8080/Base"


def test_route_table_first_match_wins_with_methods() -> None:
    config = parse_config(
        """
upstream: {url: http://main:1}
routes:
  - {name: exact, match: {path: /api/x}}
  - {name: posts, match: {prefix: /api/, methods: [POST]}}
  - {name: re, match: {regex: '/api/[0-9]+$'}, upstream: 'http://other:2'}
  - {name: api, match: {prefix: /api/}}
""",
        env={},
    )
    table = RouteTable(config)
    assert table.match("GET", "/api/x").name == "exact"
    assert table.match("POST", "/api/42").name == "posts"
    assert table.match("GET", "/api/42").name == "re"
    assert table.match("GET", "/api/42").upstream.authorities == {("other", 2)}
    assert table.match("GET", "/api/42x").name == "api"
    assert table.match("GET", "/other").name == "default"
    assert table.authorities == {("main", 1), ("other", 2)}
