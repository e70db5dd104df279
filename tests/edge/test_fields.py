"""EdgeFields: a request's CORS and rate-limit fields, the same whether they go out as lines
(prepared heads) or onto a header multidict (every other response)."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from proxy.config.loader import parse_config
from proxy.edge.fields import EdgeFields, unchecked
from proxy.edge.ratelimit.limiter import UNCHECKED, Counts
from proxy.edge.route import LoadedRoute
from proxy.pipeline.routes import RouteTable

APP = "https://app.example.com"
BOTH = f"cors: {{allow_origins: ['{APP}']}}\nrate_limit: {{limits: ['100/minute']}}"


def route_of(config: str) -> LoadedRoute:
    text = f"upstream: {{url: 'http://127.0.0.1:9'}}\ncache: false\n{config}\n"
    return RouteTable(parse_config(text, env={})).match("GET", "/x")


def request(*fields: tuple[str, str]) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict(fields))


def as_lines(headers: CIMultiDict[str]) -> str:
    return "".join(f"{name}: {value}\r\n" for name, value in headers.items())


@pytest.mark.parametrize("counts", [(0, 42, 17), None])
@pytest.mark.parametrize("origin", [APP, "https://other.example"])
def test_lines_are_what_apply_sets(counts: Counts, origin: str) -> None:
    route = route_of(BOTH)
    edge = EdgeFields(route, request(("Origin", origin)), counts)
    applied: CIMultiDict[str] = CIMultiDict()
    edge.apply(applied)
    assert applied.popall("Vary") == ["Origin"]  # lines leave Vary to the head's own merge
    assert edge.lines == as_lines(applied)
    assert ("Access-Control-Allow-Origin" in applied) == (origin == APP)
    assert ("X-RateLimit-Remaining" in applied) == (counts is not None)


def test_before_the_rate_limit_stage_the_origins_fields_stay() -> None:
    route = route_of(BOTH)
    edge = unchecked(route, request(("Origin", APP)))
    assert edge.lines is None  # no prepared head can keep the origin's fields
    headers = CIMultiDict([("X-RateLimit-Remaining", "5")])
    edge.apply(headers)
    assert headers["X-RateLimit-Remaining"] == "5"
    assert headers["Access-Control-Allow-Origin"] == APP


def test_a_route_without_cors_or_limits_adds_nothing() -> None:
    edge = EdgeFields(route_of(""), request(("Origin", APP)), UNCHECKED)
    headers: CIMultiDict[str] = CIMultiDict()
    edge.apply(headers)
    assert edge.lines == "" and not headers
