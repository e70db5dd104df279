"""Heads made in one pass (proxy/respond/head.py) say what the general path says:
forward_response_headers, the encoding stage, CORS and the rate limit applied to a header
multidict one after another, then serialised as aiohttp would."""

from __future__ import annotations

import itertools

import pytest
from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDict, CIMultiDictProxy

from proxy.cache.status import BYPASS
from proxy.config.loader import parse_config
from proxy.edge.compression.headers import vary_accept_encoding
from proxy.edge.cors import CorsRules
from proxy.edge.ratelimit.limiter import UNCHECKED, Counts
from proxy.edge.route import LoadedRoute
from proxy.http.headers import NAME_KEPT_MAX, forward_response_headers
from proxy.pipeline.routes import RouteTable
from proxy.respond import head as response_head
from proxy.respond.encoding import stream_coding
from proxy.respond.exchange import Exchange
from proxy.respond.head import forwarded_head, stored_head
from proxy.respond.prepared import serialise
from proxy.respond.responder import _BYPASS_LINES

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
    # A caching route: the surrogate fields are this cache's, never a client's.
    "caching": "cache: {tags_header: [Cache-Tag, xkey]}",
    "caching, keeping them": "cache: {keep_surrogate_headers: true}",
}
SURROGATE = [
    ("Surrogate-Control", "max-age=60"),
    ("cache-tag", "a,b"),
    ("Surrogate-Key", "c"),
    ("XKey", "d"),
]
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
    "surrogate fields": [*JSON, *SURROGATE],
}
CLIENTS = {
    "none": [],
    "allowed origin": [("Origin", APP)],
    "allowed origin, gzip": [("Origin", APP), ("Accept-Encoding", "gzip")],
    "refused origin, identity": [("Origin", "https://x.example"), ("Accept-Encoding", "identity")],
    "two origins": [("Origin", APP), ("Origin", APP)],
}


def route_of(config: str) -> LoadedRoute:
    no_cache = "" if config.startswith("cache:") else "cache: false\n"
    text = f"upstream: {{url: 'http://127.0.0.1:9'}}\n{no_cache}{config}\n"
    return RouteTable(parse_config(text, env={})).match("GET", "/x")


def general(
    route: LoadedRoute,
    fields: CIMultiDictProxy[str],
    request: CIMultiDictProxy[str],
    counts: Counts,
) -> bytes | None:
    """What Responder.relay's general path sends; None: a body coder is needed."""
    headers = forward_response_headers(fields)
    for name in hidden(route):
        headers.popall(name, None)
    headers.update(BYPASS.fields())
    if route.compression is not None:
        accept = request.get("Accept-Encoding")
        length = int(fields["Content-Length"])
        headers, coder = stream_coding(route.compression, accept, 200, headers, length)
        if coder is not None:
            return None
    exchange(route, request, counts).apply_edge(headers)
    headers.popall("Content-Length", None)
    return serialise(200, "OK", headers, int(fields["Content-Length"]))


def hidden(route: LoadedRoute) -> frozenset[str]:
    return frozenset() if route.cache is None else route.cache.hidden


def exchange(
    route: LoadedRoute, request: CIMultiDictProxy[str], counts: Counts = UNCHECKED
) -> Exchange:
    """An Exchange for a request with these header fields (no socket needed)."""
    return Exchange(make_mocked_request("GET", "/x", headers=request), route, counts)


def lines(head: bytes) -> list[str]:
    """The head's lines, sorted by name (repeated fields keep their order)."""
    first, *rest = head.decode().split("\r\n")
    return [first, *sorted((x for x in rest if x), key=lambda x: x.partition(":")[0].lower())]


@pytest.mark.parametrize("config", CONFIGS)
def test_the_one_pass_head_is_the_general_paths(config: str) -> None:
    route = route_of(CONFIGS[config])
    counts = (0, 42, 17)  # what the rate-limit stage found
    made_here = 0
    for (kind, upstream), (client, request) in itertools.product(UPSTREAM.items(), CLIENTS.items()):
        fields = CIMultiDictProxy(CIMultiDict(upstream))
        request_headers = CIMultiDictProxy(CIMultiDict(request))
        length = int(fields["Content-Length"])
        ex = exchange(route, request_headers, counts)
        made = forwarded_head(
            route, 200, "OK", fields, request_headers, length, _BYPASS_LINES, ex.edge_lines
        )
        expected = general(route, fields, request_headers, counts)
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


def test_fields_past_the_names_remembered_are_handled_as_the_first_ones() -> None:
    """What to do with each field name is remembered, up to a bound: names seen again, and
    names seen after the bound is reached, go out (or not) as the general path sends them."""
    route = route_of(CONFIGS["everything"])
    counts = (0, 42, 17)
    odd = [("VARY", "X-Mode"), ("access-control-max-age", "5"), ("VIA", "1.0 edge")]
    many = [(f"X-Name-{i}", str(i)) for i in range(600)]  # more than a route remembers
    later = [("vary", "X-Other"), ("Access-Control-Allow-Origin", "*"), ("Via", "1.0 b")]
    # An id field of this test's own: a memo no other test has filled.
    id_field = "x-remembered-names-id"
    long = [("X-" + "l" * 200, "v"), ("VIA-" + "l" * 200, "v")]  # handled, never kept
    uploads = ([*JSON, *odd], [*JSON, *odd], [*JSON, *long], [*JSON, *many], [*JSON, *later, *odd])
    for upstream in uploads:
        fields = CIMultiDictProxy(CIMultiDict(upstream))
        request: CIMultiDictProxy[str] = CIMultiDictProxy(CIMultiDict([("Origin", APP)]))
        edge = exchange(route, request, counts).edge_lines
        made = forwarded_head(
            route, 200, "OK", fields, request, 2000, _BYPASS_LINES, edge, id_field
        )
        expected = general(route, fields, request, counts)
        assert made is not None and expected is not None
        assert lines(made[0]) == lines(expected)


def test_a_field_name_too_long_to_keep_is_written_and_not_kept() -> None:
    drop, id_field = frozenset({"via"}), "x-long-names-id"  # a memo of this test's own
    name = "X-" + "l" * NAME_KEPT_MAX
    out: list[str] = []
    fields = CIMultiDictProxy(CIMultiDict([(name, "v"), ("X-Short", "s")]))
    response_head._fields(out, fields, drop, None, False, False, id_field)
    assert out == [f"{name}: v\r\nX-Short: s\r\n"]
    assert list(response_head._kinds(drop, False, False, id_field)) == ["X-Short"]


def test_fields_listed_in_connection_take_the_general_path() -> None:
    fields = CIMultiDictProxy(CIMultiDict([*JSON, ("Connection", "X-Secret"), ("X-Secret", "1")]))
    head = forwarded_head(
        route_of(""), 200, "OK", fields, CIMultiDictProxy(CIMultiDict()), 2000, "", ""
    )
    assert head is None


def test_with_unknown_counts_only_the_policy_line_goes_out() -> None:
    route = route_of(CONFIGS["rate limit"])
    fields = CIMultiDictProxy(CIMultiDict(JSON))
    none: CIMultiDictProxy[str] = CIMultiDictProxy(CIMultiDict())
    lines_ = exchange(route, none, None).edge_lines  # the counts are unknown (Redis down)
    made = forwarded_head(route, 200, "OK", fields, none, 2000, _BYPASS_LINES, lines_)
    assert made is not None and lines(made[0]) == lines(general(route, fields, none, None) or b"")


def test_before_the_rate_limit_stage_the_general_path_responds() -> None:
    """A response sent before the stage ran keeps the origin's rate-limit fields: only the
    general path can."""
    route = route_of(CONFIGS["rate limit"])
    fields = CIMultiDictProxy(CIMultiDict(JSON))
    none: CIMultiDictProxy[str] = CIMultiDictProxy(CIMultiDict())
    lines_ = exchange(route, none).edge_lines
    assert lines_ is None
    assert forwarded_head(route, 200, "OK", fields, none, 2000, _BYPASS_LINES, lines_) is None


@pytest.mark.parametrize("value", ["a\r\nX-Injected: 1", "a\nb", "a\rb"])
def test_a_field_with_a_line_break_is_refused(value: str) -> None:
    fields = CIMultiDictProxy(CIMultiDict([*JSON, ("X-Bad", value)]))
    with pytest.raises(ValueError, match="CR or LF"):
        none: CIMultiDictProxy[str] = CIMultiDictProxy(CIMultiDict())
        forwarded_head(route_of(""), 200, "OK", fields, none, 2000, "", "")


# --- the constant part of responses from a stored form --------------------------------------

STORED = {
    "json": [*JSON, ("Date", "Tue, 01 Jan 2030 00:00:00 GMT"), ("Via", "1.1 cacheproxy")],
    "bare": [("Content-Length", "2000")],
    "what each response sets, and the origin's CORS and limits": [
        *JSON,
        ("Age", "12"),
        ("X-Cache", "HIT"),
        ("Cache-Status", "other; hit"),
        ("Vary", "Accept-Language"),
        ("Access-Control-Allow-Origin", "https://evil.example"),
        ("Access-Control-Expose-Headers", "X-Secret"),
        ("X-RateLimit-Remaining", "5"),
        ("RateLimit", '"x";r=1;t=2'),
        ("Set-Cookie", "a=1"),
        ("Set-Cookie", "b=2"),
        ("Via", "1.0 edge, 1.1 cacheproxy"),
    ],
    "vary star": [*JSON, ("Vary", "*")],
    "empty": [("Content-Length", "0")],
    "surrogate fields": [*JSON, *SURROGATE],
}
_PER_REQUEST = ("Age", "X-Cache", "Cache-Status", "Content-Length")
_LIMITS = ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset", "RateLimit")


def general_stored(
    route: LoadedRoute, fields: CIMultiDictProxy[str], vary_encoding: bool
) -> tuple[bytes, bool]:
    """A stored form's head as made from a header multidict, stage by stage."""
    out = CIMultiDict(fields)
    if vary_encoding:
        vary_accept_encoding(out)
    for name in (*_PER_REQUEST, *hidden(route)):
        out.popall(name, None)
    if route.cors is not None:
        route.cors.apply(CIMultiDict(), out)  # no Origin: what never depends on the request
    if route.rate_limit is not None:
        for name in (*_LIMITS, "RateLimit-Policy"):
            out.popall(name, None)
    return serialise(200, "OK", out, int(fields["Content-Length"])), "Date" in out


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("vary_encoding", [False, True])
def test_a_stored_forms_head_is_the_general_paths(config: str, vary_encoding: bool) -> None:
    route = route_of(CONFIGS[config])
    for kind, stored in STORED.items():
        fields = CIMultiDictProxy(CIMultiDict(stored))
        length = int(fields["Content-Length"])
        static, dated = stored_head(route, 200, "OK", fields, length, vary_encoding)
        expected, expected_dated = general_stored(route, fields, vary_encoding)
        assert dated == expected_dated, kind
        assert lines(static) == lines(expected), kind


def test_per_request_cors_lines_are_left_to_each_answer() -> None:
    route = route_of(CONFIGS["cors credentials"])
    assert isinstance(route.cors, CorsRules)
    fields = CIMultiDictProxy(CIMultiDict(JSON))
    static, _ = stored_head(route, 200, "OK", fields, 2000, False)
    assert b"Access-Control" not in static and b"Vary: Origin\r\n" in static
    route = route_of(CONFIGS["cors any origin"])  # `*`: the same for every request
    static, _ = stored_head(route, 200, "OK", fields, 2000, False)
    assert b"Access-Control-Allow-Origin: *\r\n" in static and b"Vary" not in static


def test_a_caching_route_leaves_the_surrogate_fields_out_of_both_heads() -> None:
    fields = CIMultiDictProxy(CIMultiDict([*JSON, *SURROGATE]))
    none: CIMultiDictProxy[str] = CIMultiDictProxy(CIMultiDict())
    names = {name.lower() for name, _ in SURROGATE}
    for config, kept in (
        ("caching", {"surrogate-key"}),  # no tags field of that route: not this cache's
        ("caching, keeping them", names),
        ("plain", names),  # no cache, no surrogate
    ):
        route = route_of(CONFIGS[config])
        stored, _ = stored_head(route, 200, "OK", fields, 2000, False)
        made = forwarded_head(route, 200, "OK", fields, none, 2000, "", "")
        assert made is not None
        for head in (stored, made[0]):
            sent = {line.partition(":")[0].lower() for line in lines(head)[1:]}
            assert sent & names == kept, (config, sent)
