"""A forwarded answer's head made in one pass (proxy/forward_head.py) says what the
general path says: forward_response_headers, the encoding stage, CORS and the rate limit
applied to a header multidict one after another, then serialised as aiohttp would."""

from __future__ import annotations

import itertools

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from proxy.config import parse_config
from proxy.encoding import plan_stream
from proxy.forward_head import forward_head
from proxy.headers import forward_response_headers
from proxy.prepared import serialise
from proxy.ratelimit.limiter import COUNTS
from proxy.respond import _BYPASS, _BYPASS_LINES
from proxy.routes import RoutePolicy, RouteTable

APP = "https://app.example.com"

CONFIGS = {
    "plain": "",
    "cors allowlist": f"cors: {{allow_origins: ['{APP}'], expose_headers: [X-Cache]}}",
    "cors credentials": f"cors: {{allow_origins: ['{APP}'], allow_credentials: true}}",
    "cors any origin": "cors: {allow_origins: ['*'], expose_headers: [ETag]}",
    "compression": "compression: {algorithms: [br, gzip]}",
    "rate limit": "rate_limit: {limits: ['100/minute', '1000/hour']}",
    "everything": (
        f"cors: {{allow_origins: ['{APP}']}}\n"
        "compression: {algorithms: [br, gzip]}\n"
        "rate_limit: {limits: ['100/minute']}"
    ),
}
JSON = [("Content-Type", "application/json"), ("Content-Length", "2000")]
UPSTREAM = {
    "json": [*JSON, ("Date", "Tue, 01 Jan 2030 00:00:00 GMT"), ("Server", "origin")],
    "bare": [("Content-Length", "2000")],
    "vary, via, cors and limits of the origin's": [
        *JSON,
        ("Vary", "Accept-Language"),
        ("vary", "accept-encoding, X-Mode"),
        ("Via", "1.0 edge"),
        ("Access-Control-Allow-Origin", "https://evil.example"),
        ("X-RateLimit-Remaining", "5"),
        ("RateLimit-Policy", '"x";q=1'),
        ("X-Cache", "HIT"),
        ("Set-Cookie", "a=1"),
        ("Set-Cookie", "b=2"),
    ],
    "vary star": [*JSON, ("Vary", "*")],
    "hop-by-hop": [*JSON, ("Keep-Alive", "timeout=5"), ("Transfer-Encoding", "chunked")],
    "already gzip": [*JSON, ("Content-Encoding", "gzip"), ("ETag", '"e"')],
    "no-transform": [*JSON, ("Cache-Control", "no-transform")],
    "small": [("Content-Type", "application/json"), ("Content-Length", "20")],
}
CLIENTS = {
    "none": [],
    "allowed origin": [("Origin", APP)],
    "allowed origin, gzip": [("Origin", APP), ("Accept-Encoding", "gzip")],
    "refused origin, identity": [("Origin", "https://x.example"), ("Accept-Encoding", "identity")],
    "two origins": [("Origin", APP), ("Origin", APP)],
}


def route_of(config: str) -> RoutePolicy:
    text = f"upstream: {{url: 'http://127.0.0.1:9'}}\ncache: false\n{config}\n"
    return RouteTable(parse_config(text, env={})).match("GET", "/x")


def general(
    route: RoutePolicy, fields: CIMultiDictProxy[str], request: CIMultiDictProxy[str]
) -> bytes | None:
    """What Responder.relay's general path sends; None: a body coder is needed."""
    headers = forward_response_headers(fields)
    headers.update(_BYPASS)
    if route.compression is not None:
        accept = request.get("Accept-Encoding")
        length = int(fields["Content-Length"])
        headers, coder = plan_stream(route.compression, accept, 200, headers, length)
        if coder is not None:
            return None
    if route.cors is not None:
        route.cors.apply(request, headers)
    if route.rate_limit is not None:
        route.rate_limit.apply(None, headers)  # type: ignore[arg-type]
    headers.popall("Content-Length", None)
    return serialise(200, "OK", headers, int(fields["Content-Length"]))


def lines(head: bytes) -> list[str]:
    """The head's lines, sorted by name (repeated fields keep their order)."""
    first, *rest = head.decode().split("\r\n")
    return [first, *sorted((x for x in rest if x), key=lambda x: x.partition(":")[0].lower())]


@pytest.mark.parametrize("config", CONFIGS)
def test_the_one_pass_head_is_the_general_paths(config: str) -> None:
    route = route_of(CONFIGS[config])
    COUNTS.set((0, 42, 17))  # what the rate-limit stage leaves for the answer
    made_here = 0
    for (kind, upstream), (client, request) in itertools.product(UPSTREAM.items(), CLIENTS.items()):
        fields = CIMultiDictProxy(CIMultiDict(upstream))
        request_headers = CIMultiDictProxy(CIMultiDict(request))
        length = int(fields["Content-Length"])
        made = forward_head(route, 200, "OK", fields, request_headers, length, _BYPASS_LINES)
        expected = general(route, fields, request_headers)
        where = f"{kind}, {client}"
        if expected is None:  # the body is (de)compressed: not made in one pass
            assert made is None, where
            continue
        assert made is not None, where
        made_here += 1
        static, dated = made
        assert dated == ("Date" in fields), where
        assert lines(static) == lines(expected), where
    assert made_here >= len(UPSTREAM) * len(CLIENTS) // 2


def test_fields_listed_in_connection_take_the_general_path() -> None:
    fields = CIMultiDictProxy(CIMultiDict([*JSON, ("Connection", "X-Secret"), ("X-Secret", "1")]))
    head = forward_head(route_of(""), 200, "OK", fields, CIMultiDictProxy(CIMultiDict()), 2000, "")
    assert head is None


def test_without_the_rate_limit_stage_the_general_path_answers() -> None:
    route = route_of(CONFIGS["rate limit"])
    COUNTS.set(None)  # the counts are unknown (Redis down): the policy line only
    fields = CIMultiDictProxy(CIMultiDict(JSON))
    none = CIMultiDictProxy(CIMultiDict())
    made = forward_head(route, 200, "OK", fields, none, 2000, _BYPASS_LINES)
    assert made is not None and lines(made[0]) == lines(general(route, fields, none) or b"")


@pytest.mark.parametrize("value", ["a\r\nX-Injected: 1", "a\nb", "a\rb"])
def test_a_field_with_a_line_break_is_refused(value: str) -> None:
    fields = CIMultiDictProxy(CIMultiDict([*JSON, ("X-Bad", value)]))
    with pytest.raises(ValueError, match="CR or LF"):
        forward_head(route_of(""), 200, "OK", fields, CIMultiDictProxy(CIMultiDict()), 2000, "")
