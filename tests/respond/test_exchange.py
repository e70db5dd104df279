"""Exchange's edge fields: a request's CORS and rate-limit fields, the same whether they go
out as lines (prepared heads) or onto a header multidict (every other response)."""

from __future__ import annotations

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDict

from proxy.config.loader import parse_config
from proxy.edge.ratelimit.limiter import Counts
from proxy.edge.route import LoadedRoute
from proxy.pipeline.routes import RouteTable
from proxy.respond.exchange import Exchange

APP = "https://app.example.com"
BOTH = f"cors: {{allow_origins: ['{APP}']}}\nrate_limit: {{limits: ['100/minute']}}"


def route_of(config: str) -> LoadedRoute:
    text = f"upstream: {{url: 'http://127.0.0.1:9'}}\ncache: false\n{config}\n"
    return RouteTable(parse_config(text, env={})).match("GET", "/x")


def request(*fields: tuple[str, str]) -> web.BaseRequest:
    """A request as the parser makes it, with these header fields (no socket needed)."""
    return make_mocked_request("GET", "/x", headers=CIMultiDict(fields))


def as_lines(headers: CIMultiDict[str]) -> str:
    return "".join(f"{name}: {value}\r\n" for name, value in headers.items())


@pytest.mark.parametrize("counts", [(0, 42, 17), None])
@pytest.mark.parametrize("origin", [APP, "https://other.example"])
def test_lines_are_what_apply_sets(counts: Counts, origin: str) -> None:
    route = route_of(BOTH)
    ex = Exchange(request(("Origin", origin)), route, counts)
    applied: CIMultiDict[str] = CIMultiDict()
    ex.apply_edge(applied)
    assert applied.popall("Vary") == ["Origin"]  # lines leave Vary to the head's own merge
    assert ex.edge_lines == as_lines(applied)
    assert ("Access-Control-Allow-Origin" in applied) == (origin == APP)
    assert ("X-RateLimit-Remaining" in applied) == (counts is not None)


def test_before_the_rate_limit_stage_the_origins_fields_stay() -> None:
    route = route_of(BOTH)
    ex = Exchange(request(("Origin", APP)), route)  # refused before the stage: no counts
    assert ex.edge_lines is None  # no prepared head can keep the origin's fields
    headers = CIMultiDict([("X-RateLimit-Remaining", "5")])
    ex.apply_edge(headers)
    assert headers["X-RateLimit-Remaining"] == "5"
    assert headers["Access-Control-Allow-Origin"] == APP


def test_a_route_without_cors_or_limits_adds_nothing() -> None:
    ex = Exchange(request(("Origin", APP)), route_of(""))
    headers: CIMultiDict[str] = CIMultiDict()
    ex.apply_edge(headers)
    assert ex.edge_lines == "" and not headers
