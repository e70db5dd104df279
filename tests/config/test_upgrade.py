"""A route's `upgrade:` section as loaded: off unless asked, `true` for the defaults, and
every bad value refused naming its key path."""

from __future__ import annotations

import pytest

from proxy.config.loader import ConfigError, parse_config
from proxy.http.upgrade import WEBSOCKET
from proxy.pipeline.routes import RouteTable

BASE = "upstream: {url: 'http://127.0.0.1:9'}\nroutes:\n"


def table(route: str) -> RouteTable:
    return RouteTable(parse_config(BASE + route, env={}))


def problems(route: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(BASE + route, env={})
    return info.value.problems


def test_off_unless_a_route_asks_and_true_means_the_defaults() -> None:
    routes = table(
        "- {name: plain, match: {prefix: /a}}\n"
        "- {name: disabled, match: {prefix: /b}, upgrade: false}\n"
        "- {name: ws, match: {prefix: /ws}, upgrade: true}\n"
        "- {name: tuned, match: {prefix: /t}, upgrade: {idle_timeout: 5m, max_open: 10}}\n"
    )
    by_name = {route.name: route.upgrade for route in routes.compiled}
    assert by_name["default"] is None and by_name["plain"] is None and by_name["disabled"] is None
    ws, tuned = by_name["ws"], by_name["tuned"]
    assert ws is not None and (ws.protocols, ws.idle_timeout, ws.max_open) == (WEBSOCKET, 60, 1000)
    assert tuned is not None and (tuned.idle_timeout, tuned.max_open) == (300, 10)


@pytest.mark.parametrize(
    ("section", "path"),
    [
        ("{idle_timeout: 0}", "routes[0].upgrade.idle_timeout"),
        ("{idle_timeout: soon}", "routes[0].upgrade.idle_timeout"),
        ("{max_open: 0}", "routes[0].upgrade.max_open"),
        ("{protocols: [h2c]}", "routes[0].upgrade.protocols"),
        ("yes please", "routes[0].upgrade"),
    ],
)
def test_a_bad_value_is_refused_naming_its_key(section: str, path: str) -> None:
    found = problems(f"- {{name: ws, match: {{prefix: /ws}}, upgrade: {section}}}\n")
    assert any(problem.startswith(path) for problem in found), found
