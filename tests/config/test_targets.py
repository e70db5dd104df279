"""The upstream's targets, balance, ejection and health checks as the loader takes them."""

from __future__ import annotations

import pytest

from proxy.config.loader import ConfigError, parse_config, with_overrides


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, env={})
    return info.value.problems


def test_targets_as_urls_or_with_weights_and_url_as_one_target() -> None:
    config = parse_config(
        """
upstream:
  targets: [http://a:1, {url: http://b:2, weight: 3}]
  balance: consistent_hash
  host: api.internal
  ejection: {consecutive_failures: 2, base_time: 5s, max_time: 1m, max_percent: 30}
  health_check: {path: /ready, interval: 3s, timeout: 500ms}
routes:
  - {match: {prefix: /a}, upstream: http://c:3}
  - {match: {prefix: /b}, upstream: {targets: [http://d:4, http://e:5], balance: least_request}}
""",
        env={},
    )
    up = config.upstream
    assert [(t.url, t.weight) for t in up.target_list] == [("http://a:1", 1), ("http://b:2", 3)]
    assert (up.balance, up.host, up.urls) == (
        "consistent_hash",
        "api.internal",
        "http://a:1, http://b:2",
    )
    assert (up.ejection.base_time, up.ejection.max_time, up.ejection.max_percent) == (5, 60, 30)
    assert up.health_check.enabled and up.health_check.timeout == 0.5
    first, second = config.routes
    assert first.upstream is not None and [t.url for t in first.upstream.target_list] == [
        "http://c:3"
    ]
    assert second.upstream is not None and second.upstream.balance == "least_request"
    one = parse_config("upstream: {url: http://a:1}", env={}).upstream
    assert [t.weight for t in one.target_list] == [1] and one.balance == "round_robin"
    assert one.ejection.enabled and not one.health_check.enabled


@pytest.mark.parametrize(
    ("upstream", "expected"),
    [
        ("{url: http://a, targets: [http://b]}", "upstream: give `url` or `targets`, not both"),
        ("{targets: []}", "upstream: `url` or `targets` is required"),
        ("{targets: [gopher://a]}", "upstream.targets[0]: must be an http:// or https:// URL"),
        ("{targets: [{url: http://a, weight: 0}]}", "upstream.targets[0].weight:"),
        (
            "{targets: [http://a/v1, http://b/v2]}",
            "upstream: targets[1] has the base path '/v2', targets[0] '/v1'",
        ),
        ("{targets: [http://a:80, http://A]}", "upstream: targets[1] is targets[0] again"),
        ("{targets: [http://a], balance: random}", "upstream.balance:"),
        ("{url: http://a, host: 'a/b'}", "upstream.host: must be host or host:port"),
        (
            "{url: http://a, ejection: {base_time: 60, max_time: 30}}",
            "upstream.ejection: max_time (30) is below base_time (60)",
        ),
        (
            "{url: http://a, health_check: {interval: 2, timeout: 2}}",
            "upstream.health_check: timeout (2) must be below interval (2)",
        ),
        ("{url: http://a, health_check: {path: health}}", "upstream.health_check.path: must be"),
    ],
)
def test_bad_targets_are_named_by_key_path(upstream: str, expected: str) -> None:
    (found,) = problems(f"upstream: {upstream}\n")
    assert found.startswith(expected), found


def test_a_routes_upstream_is_checked_at_its_own_key() -> None:
    found = problems(
        """
upstream: {url: http://a}
routes:
  - {match: {prefix: /a}, upstream: ftp://x}
  - {match: {prefix: /b}, upstream: {targets: [http://x, http://x]}}
"""
    )
    assert [p.split(":")[0] for p in found] == ["routes[0].upstream", "routes[1].upstream"]


def test_the_command_line_upstream_replaces_the_targets() -> None:
    config = parse_config("upstream: {targets: [http://a, http://b]}", env={})
    overridden = with_overrides(config, upstream="http://c:9")
    assert [t.url for t in overridden.upstream.target_list] == ["http://c:9"]
