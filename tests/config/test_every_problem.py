"""check-config's promise: every problem of a file in one run, in the order of the file, checks
across sections included even while some fields fail (issue 21)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from proxy.config.loader import ConfigError, parse_config


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, env={})
    return info.value.problems


def test_a_field_error_and_a_cross_section_error_are_both_reported_in_file_order() -> None:
    found = problems(
        """
upstream: {url: http://a, timeouts: {read: -1}}
routes:
  - match: {prefix: /a}
    cache: {tiers: [memory, redis]}
  - match: {prefix: /b}
    rate_limit: {key: bearer}
listen: {port: 70000}
"""
    )
    assert [p.split(":")[0] for p in found] == [
        "upstream.timeouts.read",
        "routes[0].cache.tiers",
        "routes[1].rate_limit",
        "listen.port",
    ]
    assert found[1] == "routes[0].cache.tiers: lists redis, but there is no `redis:` section"
    assert found[2].startswith("routes[1].rate_limit: no limits to apply")


def test_checks_across_sections_run_when_the_upstream_itself_is_missing() -> None:
    found = problems("cache: {tiers: [memory, redis]}\n")
    assert found == [
        "upstream: required key is missing (in the file, or CACHEPROXY_UPSTREAM__URL)",
        "cache.tiers: lists redis, but there is no `redis:` section",
    ]


def test_a_section_that_failed_is_not_judged_by_rules_that_read_it() -> None:
    # A broken `redis:` section is still a `redis:` section: the tier is not "without" one.
    found = problems(
        "upstream: {url: http://a}\nredis: {url: 'http://not-redis'}\n"
        "cache: {tiers: [memory, redis]}\n"
    )
    assert found == ["redis.url: must be a redis:// or rediss:// URL with a host"]
    # A route whose rate_limit failed may hold limits: "no limits anywhere" cannot be said.
    found = problems(
        "upstream: {url: http://a}\nrate_limit: {key: ip}\n"
        "routes: [{match: {prefix: /}, rate_limit: {limits: [often]}}]\n"
    )
    assert [p.split(":")[0] for p in found] == ["routes[0].rate_limit.limits[0]"]
    # A route whose match failed may or may not take a warmed URL: not judged.
    found = problems(
        "upstream: {url: http://a}\ncache: {warming: {urls: [/x]}}\n"
        "routes: [{match: {prefix: nope}, cache: false}]\n"
    )
    assert [p.split(":")[0] for p in found] == ["routes[0].match.prefix"]


def test_a_route_with_a_bad_field_is_still_checked_for_the_rest() -> None:
    found = problems(
        """
upstream: {url: http://a}
routes:
  - match: {prefix: /a}
    upstream: gopher://x
    cache: {coalesce: global}
"""
    )
    assert [p.split(":")[0] for p in found] == ["routes[0].upstream", "routes[0].cache.coalesce"]


def test_check_config_prints_every_problem_and_exits_non_zero(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(
        "upstream: {url: http://a, pool: {max_connections: 0}}\ncache: {tiers: [memory, redis]}\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "proxy", "check-config", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert lines[0] == f"invalid config {config} (2 problem(s)):"
    assert lines[1].startswith("  upstream.pool.max_connections: ")
    assert lines[2] == "  cache.tiers: lists redis, but there is no `redis:` section"


def test_duplicate_route_names_are_refused_naming_both_key_paths() -> None:
    found = problems(
        """
upstream: {url: http://a}
routes:
  - {name: api, match: {prefix: /a}}
  - {name: web, match: {prefix: /w}}
  - {name: api, match: {prefix: /b}}
  - {match: {prefix: /c}}
  - {name: 'routes[3]', match: {prefix: /d}}
"""
    )
    assert found == [
        "routes[2].name: 'api' is also the name of routes[0].name: route names label metric "
        "series and rate-limit counters, so each must be unique",
        "routes[4].name: 'routes[3]' is also the name of routes[3]: route names label metric "
        "series and rate-limit counters, so each must be unique",
    ]
    distinct = (
        "upstream: {url: http://a}\nroutes: [{name: a, match: {prefix: /a}}, {match: {prefix: /b}}]"
    )
    assert [r.name for r in parse_config(distinct, env={}).routes] == ["a", None]


def test_an_unknown_key_close_to_a_known_one_gets_a_suggestion() -> None:
    found = problems(
        """
upstream: {url: http://a, timeout: {read: 1}, retries: {atempts: 2}}
routes:
  - match: {prefix: /a}
    cache: {ttll: 5, frobnicate: true}
rate_limits: {limits: [1/second]}
"""
    )
    assert found == [
        "upstream.timeout: unknown key; did you mean `timeouts`?",
        "upstream.retries.atempts: unknown key; did you mean `attempts`?",
        "routes[0].cache.ttll: unknown key; did you mean `ttl`?",
        "routes[0].cache.frobnicate: unknown key",  # nothing close: no guess
        "rate_limits: unknown key; did you mean `rate_limit`?",
    ]


def test_environment_overrides_suggest_with_the_same_helper() -> None:
    from proxy.config.env import suggestion
    from proxy.config.loader import Settings

    assert suggestion("CACHEPROXY_UPSTREAM__TIMEOUT__READ", Settings) == (
        "CACHEPROXY_UPSTREAM__TIMEOUTS__READ"
    )
    assert suggestion("CACHEPROXY_RATE_LIMITS__KEY", Settings) == "CACHEPROXY_RATE_LIMIT__KEY"
    assert suggestion("CACHEPROXY_FROBNICATE", Settings) is None
