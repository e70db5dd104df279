"""The rate_limit section: errors with key paths, route overrides key by key, `false`."""

from __future__ import annotations

import pytest

from proxy.config.loader import ConfigError, parse_config
from proxy.config.rates import Rate
from proxy.pipeline.routes import RouteTable

BASE = "upstream: {url: 'http://api:9000'}\n"


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(BASE + text, env={})
    return info.value.problems


def test_bad_values_are_reported_with_their_key_paths() -> None:
    found = problems(
        """
rate_limit: {limits: ["100/minute", "5/fortnight"], key: cookie, on_store_error: maybe}
routes:
  - match: {prefix: /a}
    rate_limit: {limits: ["5/minute", "7/60s"], max_clients: 5}
  - match: {prefix: /b}
    rate_limit: {limits: [], key: "header:Bad Header"}
  - match: {prefix: /c}
    rate_limit: {limits: ["1/second", "often"]}
"""
    )
    joined = "\n".join(found)
    for expected in (
        "rate_limit.limits[1]: not a rate: '5/fortnight'",
        "rate_limit.key: must be one of ip, global, bearer or header:<Header-Name>",
        "rate_limit.on_store_error:",
        "routes[0].rate_limit.limits: '7/60s' and '5/minute' have the same window",
        "routes[1].rate_limit.limits: must list at least one rate",
        "routes[1].rate_limit.key: 'header:Bad Header': 'Bad Header' is not a header name",
        "routes[2].rate_limit.limits[1]: not a rate: 'often'",
    ):
        assert expected in joined, (expected, joined)


def test_whole_config_problems_name_the_route() -> None:
    found = problems(
        """
routes:
  - match: {prefix: /a}
    rate_limit: {key: bearer}
  - match: {prefix: /b}
    rate_limit: {limits: ["1/second"], max_clients: 10}
"""
    )
    assert found == [
        "routes[0].rate_limit: no limits to apply: set `limits` here or in the top-level "
        "rate_limit",
        "routes[1].rate_limit: max_clients bounds every limiter alike: set it in the "
        "top-level rate_limit",
    ]
    assert problems("rate_limit: {key: ip}") == [
        "rate_limit: no limits anywhere: list some in `limits` (e.g. ['100/minute'])"
    ]


def test_routes_override_key_by_key_share_the_defaults_or_switch_off() -> None:
    config = parse_config(
        BASE
        + """
rate_limit: {limits: ["100/minute"], key: bearer, on_store_error: deny, max_clients: 500}
routes:
  - {name: login, match: {prefix: /login}, rate_limit: {limits: ["5/minute", "20/hour"]}}
  - {name: keyed, match: {prefix: /keyed}, rate_limit: {key: "header:X-Api-Key"}}
  - {name: free, match: {prefix: /free}, rate_limit: false}
  - {name: plain, match: {prefix: /plain}}
  - {name: also, match: {prefix: /also}}
""",
        env={},
    )
    table = RouteTable(config)
    default = table.default.rate_limit
    login, keyed, free, plain, also = (p.rate_limit for p in table.compiled[1:])
    assert default is not None and login is not None and keyed is not None
    assert default.settings.rates == (Rate(100, 60, "100/minute"),)
    assert (default.settings.key, default.settings.on_store_error) == ("bearer", "deny")
    assert login.settings.rates == (Rate(5, 60, "5/minute"), Rate(20, 3600, "20/hour"))
    assert (login.settings.key, login.settings.name) == ("bearer", "route:login")
    assert keyed.settings.key == "header:X-Api-Key"
    assert keyed.settings.rates == default.settings.rates
    assert free is None
    # Routes without a section of their own count together with unmatched requests.
    assert plain is default and also is default
    assert len(table.limiters) == 3
    assert all(limiter.memory.max_clients == 500 for limiter in table.limiters)


def test_no_section_anywhere_limits_nothing() -> None:
    table = RouteTable(parse_config(BASE + "routes: [{match: {prefix: /a}}]", env={}))
    assert all(p.rate_limit is None for p in table.compiled)
    assert table.limiters == []


def test_a_route_can_switch_limits_on_with_only_its_own_section() -> None:
    table = RouteTable(
        parse_config(
            BASE + "routes: [{match: {path: /x}, rate_limit: {limits: ['1/second']}}]", env={}
        )
    )
    assert table.default.rate_limit is None
    assert table.compiled[1].rate_limit is not None
    assert table.compiled[1].rate_limit.settings.name == "route:routes[0]"
