"""The route table with virtual hosts (routes[].match.hosts), built from a config: which route
a method, path and Host select."""

from __future__ import annotations

import pytest

from proxy.config.loader import parse_config
from proxy.pipeline.routes import AmbiguousPath, RouteTable

VHOSTS = """
upstream: {url: "http://127.0.0.1:1"}
routes:
  - {name: status, match: {path: /status}}
  - {name: any-shop, match: {prefix: /shop/, hosts: ['*.example.com']}}
  - {name: api-shop, match: {prefix: /shop/, hosts: [api.example.com], methods: [GET]}}
  - {name: api, match: {prefix: /, hosts: [api.example.com, api.example.org]}}
  - {name: eu, match: {prefix: /, hosts: ['*.eu.example.com']}}
  - {name: wild, match: {prefix: /, hosts: ['*.example.com']}}
  - {name: catch-all, match: {prefix: /v1/}}
  - {name: docs, match: {prefix: /docs/, hosts: [docs.example.com]}}
"""


@pytest.mark.parametrize(
    ("method", "path", "host", "route"),
    [
        # An exact name beats a wildcard listed before it; methods still count.
        ("GET", "/shop/x", "api.example.com", "api-shop"),
        ("POST", "/shop/x", "api.example.com", "api"),  # the host's own routes first
        ("GET", "/shop/x", "www.example.com", "any-shop"),
        ("GET", "/x", "api.example.com", "api"),
        ("GET", "/x", "api.example.org:8443", "api"),
        # The longer wildcard first, then the table's order.
        ("GET", "/x", "a.eu.example.com", "eu"),
        ("GET", "/shop/x", "a.eu.example.com", "eu"),  # before any-shop, listed earlier
        ("GET", "/x", "www.example.com", "wild"),
        # A host's own routes that do not take the path: on to its wildcards, then the rest.
        ("GET", "/docs/x", "docs.example.com", "docs"),
        ("GET", "/x", "docs.example.com", "wild"),
        # Routes naming a host come before those naming none, wherever they are listed.
        ("GET", "/status", "api.example.com", "api"),
        ("GET", "/status", "other.example.net", "status"),
        # Case, port and a trailing dot do not matter.
        ("GET", "/x", "API.EXAMPLE.COM.:8080", "api"),
        # Other hosts, and none, get the routes naming no host, then the default.
        ("GET", "/v1/x", "example.com", "catch-all"),
        ("GET", "/v1/x", None, "catch-all"),
        ("GET", "/x", "example.com", "default"),
        ("GET", "/x", None, "default"),
    ],
)
def test_route_for_a_host(method: str, path: str, host: str | None, route: str) -> None:
    table = RouteTable(parse_config(VHOSTS, env={}))
    assert table.route_for(method, path, host).name == route
    assert table.match(method, path, host).name == route  # purge and invalidation agree


def test_ambiguity_is_judged_among_the_hosts_routes() -> None:
    table = RouteTable(parse_config(VHOSTS, env={}))
    with pytest.raises(AmbiguousPath):  # /shop/../x: api-shop's or api's
        table.route_for("GET", "/shop/../x", "api.example.com")
    # Only the catch-all's routes for another host: every reading is the default's.
    assert table.route_for("GET", "/shop/../x", "other.example.net").name == "default"


def test_a_table_without_hosts_never_reads_the_host() -> None:
    table = RouteTable(parse_config("upstream: {url: 'http://127.0.0.1:1'}\n" + """
routes:
  - {name: a, match: {prefix: /a/}}
""", env={}))  # fmt: skip
    assert table.by_host is None
    assert table.route_for("GET", "/a/x", "anything.example.com").name == "a"
    assert table.route_for("GET", "/a/x").name == "a"
