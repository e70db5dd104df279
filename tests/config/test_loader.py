"""Config parsing: typed, frozen, and every mistake reported at once with its key path."""

from __future__ import annotations

import pytest

from proxy.config.env import resolve, suggestion
from proxy.config.loader import ConfigError, Settings, parse_config, with_overrides
from tests.conftest import ROOT


def problems(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, env=env or {})
    return info.value.problems


def test_shipped_example_parses_with_its_defaults() -> None:
    config = parse_config((ROOT / "config.yaml").read_text(), env={})
    assert config.listen.port == 8080
    assert config.upstream.url == "http://127.0.0.1:9000"
    assert config.admin.host == "127.0.0.1"
    assert config.admin.token is None  # `${ADMIN_TOKEN:-}` -> no token
    assert [r.name for r in config.routes] == ["quotes", "signals", "portfolio", "uncached"]


def test_minimal_config_gets_safe_defaults() -> None:
    config = parse_config("upstream: {url: http://api:9000}", env={})
    assert config.admin.host == "127.0.0.1"  # admin stays on loopback unless told
    assert config.upstream.pool.max_connections == 20
    assert config.routes == ()


def test_several_mistakes_are_all_reported_with_key_paths() -> None:
    found = problems(
        """
upstream: {url: 'not a url', timeouts: {read: -1}}
listen: {port: 70000}
routes:
  - match: {prefix: /ok/}
  - match: {regex: 'a(b', methods: [GET]}
    extra: 1
  - match: {prefix: /x, path: /y}
  - match: {path: nope}
"""
    )
    joined = "\n".join(found)
    for path in (
        "upstream.url:",
        "upstream.timeouts.read:",
        "listen.port:",
        "routes[1].match.regex:",
        "routes[1].extra: unknown key",
        "routes[2].match: needs exactly one of prefix, path, regex",
        "routes[3].match.path: must start with '/'",
    ):
        assert path in joined, (path, joined)
    assert len(found) == 7


def test_duplicate_keys_are_errors_with_their_path_and_line() -> None:
    found = problems("upstream: {url: http://a}\nroutes:\n  - match: {prefix: /a, prefix: /b}\n")
    assert found == ["routes[0].match.prefix: duplicate key (line 3)"]


def test_missing_upstream_and_empty_file() -> None:
    assert problems("listen: {port: 1}") == [
        "upstream: required key is missing (in the file, or CACHEPROXY_UPSTREAM__URL)"
    ]
    assert "empty" in problems("")[0]
    assert "mapping" in problems("- a\n- b")[0]


def test_yaml_syntax_error_is_reported_not_raised() -> None:
    found = problems("upstream: {url: http://a\n  bad: [")
    assert found[0].startswith("(yaml)")


def test_environment_substitution() -> None:
    text = "listen: {port: '${PORT}'}\nupstream: {url: '${UP:-http://fallback:1}/base'}\n"
    config = parse_config(text, env={"PORT": "9999"})
    assert config.listen.port == 9999
    assert config.upstream.url == "http://fallback:1/base"
    found = problems("upstream: {url: '${MISSING}'}")
    assert found[0] == "upstream.url: environment variable MISSING is not set (no default)"


def test_methods_are_validated_and_uppercased() -> None:
    config = parse_config(
        "upstream: {url: http://a}\nroutes: [{match: {prefix: /, methods: [get, m-search]}}]",
        env={},
    )
    assert config.routes[0].match.methods == ("GET", "M-SEARCH")
    assert (
        "not HTTP method names"
        in problems(
            "upstream: {url: http://a}\nroutes: [{match: {prefix: /, methods: ['GET /']}}]"
        )[0]
    )


def test_overrides_are_validated_too() -> None:
    config = parse_config("upstream: {url: http://a}", env={})
    assert with_overrides(config, port=1234).listen.port == 1234
    with pytest.raises(ConfigError) as info:
        with_overrides(config, upstream="gopher://x")
    assert info.value.problems[0].startswith("upstream.url:")


def test_config_is_frozen() -> None:
    config = parse_config("upstream: {url: http://a}", env={})
    with pytest.raises(Exception, match="frozen"):
        config.listen.port = 1  # type: ignore[misc]  # frozen: the point of the test


@pytest.mark.parametrize(
    "host", ["0.0.0.0", "::", "192.168.1.10", "10.0.0.1", "api.example", "localhost.example", ""]
)
def test_admin_off_loopback_without_a_token_is_refused(host: str) -> None:
    found = problems(f"upstream: {{url: http://a}}\nadmin: {{host: '{host}'}}")
    assert len(found) == 1 and found[0].startswith("admin.host: "), found
    assert "admin.token" in found[0] and "admin.allow_insecure" in found[0]
    # An empty `${ADMIN_TOKEN:-}` is no token either.
    text = f"upstream: {{url: http://a}}\nadmin: {{host: '{host}', token: '${{T:-}}'}}"
    assert problems(text)[0].startswith("admin.host: ")


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.10", "::1", "localhost", "LocalHost"])
def test_admin_on_loopback_needs_no_token(host: str) -> None:
    config = parse_config(f"upstream: {{url: http://a}}\nadmin: {{host: '{host}'}}", env={})
    assert config.admin.host == host and config.admin.token is None


def test_admin_off_loopback_with_a_token_or_deliberately_open_is_accepted() -> None:
    text = "upstream: {url: http://a}\nadmin: {host: 0.0.0.0, token: '${T}'}"
    assert parse_config(text, env={"T": "abc"}).admin.token == "abc"
    text = "upstream: {url: http://a}\nadmin: {host: '::', allow_insecure: true}"
    admin = parse_config(text, env={}).admin
    assert (admin.host, admin.token, admin.allow_insecure) == ("::", None, True)


# --- secrets are never echoed in a config error ------------------------------

SECRET = "hunter2-Zq9"


def report(text: str, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(text, env=env or {})
    return info.value.report() + str(info.value)


def test_a_value_from_the_environment_is_not_echoed_whatever_its_key() -> None:
    # The real mistake this guards against: a token landing in the wrong key.
    found = report(
        "upstream: {url: http://a}\nadmin: {port: '${ADMIN_TOKEN}'}", {"ADMIN_TOKEN": SECRET}
    )
    assert SECRET not in found
    assert "admin.port: Input should be a valid integer" in found
    assert "${ADMIN_TOKEN}" in found  # says where the value came from, not what it is


def test_a_value_from_the_environment_is_not_echoed_by_a_validator_either() -> None:
    env = {"UP": f"ftp://{SECRET}.internal/x", "ORIGIN": f"https://{SECRET}.example:99999"}
    found = report(
        "upstream: {url: '${UP}'}\ncors: {allow_origins: ['https://ok.example', '${ORIGIN}']}",
        env,
    )
    assert SECRET not in found
    assert "upstream.url: must be an http:// or https:// URL" in found
    assert "cors.allow_origins[1]: invalid origin" in found


@pytest.mark.parametrize(
    ("yaml_text", "secret"),
    [
        ("admin: {token: 987654321987}", "987654321987"),  # not a string: pydantic says so
        (f"admin: {{token: ['{SECRET}']}}", SECRET),
        (f"admin: [{{token: '{SECRET}'}}]", SECRET),  # inside a value echoed whole
    ],
)
def test_a_value_under_a_secret_key_is_not_echoed(yaml_text: str, secret: str) -> None:
    found = report("upstream: {url: http://a}\n" + yaml_text)
    assert "admin" in found and secret not in found


@pytest.mark.parametrize(
    "url",
    [
        f"redis://:{SECRET}@cache:6379/0",
        f"ftp://user:{SECRET}@files.example/x",
        f"http://user:{SECRET}@api.example/x?q=1",
        f"http://user:{SECRET}@exa\u2100mple.com/",  # urllib quotes the netloc in its error
    ],
)
def test_the_password_in_a_url_is_masked(url: str) -> None:
    found = report(
        f"upstream: {{url: 'http://a'}}\nroutes: [{{match: {{prefix: /}}, upstream: '{url}'}}]"
    )
    assert SECRET not in found
    assert "routes[0].upstream: " in found
    if "mple.com" not in url:
        assert url.replace(SECRET, "***") in found  # the rest of the URL still helps
    config = parse_config("upstream: {url: http://a}", env={})
    with pytest.raises(ConfigError) as info:
        with_overrides(config, upstream=url)
    assert SECRET not in info.value.report() and "upstream.url: " in info.value.report()


@pytest.mark.parametrize(
    "yaml_text",
    [
        f"upstream: {{url: http://a}}\nadmin: {{token: '{SECRET}' host: x}}\n",  # parser
        f"upstream: {{url: http://a}}\nadmin:\n  token: {SECRET}\n   port: 1\n",  # scanner
        f"upstream: {{url: http://a}}\nadmin: {{token: !x '{SECRET}'}}\n",  # constructor
    ],
)
def test_a_yaml_error_gives_its_position_not_the_offending_line(yaml_text: str) -> None:
    found = report(yaml_text)
    assert SECRET not in found
    assert "(yaml) line " in found


@pytest.mark.parametrize("value", ["2001-13-45", "!!int zz", "!!float nope"])
def test_a_yaml_value_its_type_cannot_hold_is_reported_not_raised(value: str) -> None:
    found = report(f"upstream: {{url: http://a}}\nshutdown_grace: {value}\n")
    assert "(yaml) line 2, column 17: " in found, found


def test_the_redis_tier_needs_a_redis_section() -> None:
    text = """
upstream: {url: http://a}
cache: {tiers: [memory, redis]}
routes:
  - {match: {prefix: /x}, cache: {tiers: [memory, redis]}}
  - {match: {prefix: /y}, cache: {tiers: [memory]}}
"""
    with pytest.raises(ConfigError) as err:
        parse_config(text, env={})
    assert err.value.problems == [
        "cache.tiers: lists redis, but there is no `redis:` section",
        "routes[0].cache.tiers: lists redis, but there is no `redis:` section",
    ]
    ok = parse_config(text + "redis: {url: redis://r}", env={})
    assert ok.redis is not None and ok.redis.url == "redis://r"
    with pytest.raises(ConfigError) as err:
        parse_config(text.replace("tiers: [memory]}", "tiers: [redis]}"), env={})
    # The field error does not hide the other routes' problems across sections.
    assert err.value.problems == [
        "cache.tiers: lists redis, but there is no `redis:` section",
        "routes[0].cache.tiers: lists redis, but there is no `redis:` section",
        "routes[1].cache.tiers: must be [memory] or [memory, redis]: memory is always the L1",
    ]


def test_global_coalescing_needs_the_redis_tier() -> None:
    text = """
upstream: {url: http://a}
redis: {url: redis://r}
cache: {tiers: [memory, redis]}
routes:
  - {match: {prefix: /x}, cache: {coalesce: global}}
  - {match: {prefix: /y}, cache: {coalesce: global, tiers: [memory]}}
"""
    with pytest.raises(ConfigError) as err:
        parse_config(text, env={})
    assert err.value.problems == ["routes[1].cache.coalesce: global needs tiers: [memory, redis]"]


def test_retries_as_an_int_still_means_that_many_attempts() -> None:
    for text, attempts in (("1", 1), ("3", 3), ("'${RETRIES:-2}'", 2)):
        config = parse_config(f"upstream: {{url: http://a, retries: {text}}}", env={})
        retries = config.upstream.retries
        assert (retries.attempts, retries.on_status, retries.budget) == (
            attempts,
            (502, 503, 504),
            0.2,
        )
    mapping = parse_config(
        "upstream: {url: http://a, retries: {attempts: 2, backoff: 0.5, on_status: [503]}}",
        env={},
    ).upstream.retries
    assert (mapping.attempts, mapping.backoff, mapping.on_status) == (2, 0.5, (503,))


def test_upstream_protection_defaults() -> None:
    upstream = parse_config("upstream: {url: http://a}", env={}).upstream
    assert (upstream.pool.max_queue, upstream.pool.queue_timeout) == (200, 10)
    assert not upstream.pool.adaptive.enabled
    cb = upstream.circuit_breaker
    assert (cb.enabled, cb.failure_rate, cb.min_requests, cb.window) == (True, 0.5, 20, 10)
    assert (cb.consecutive_failures, cb.reset_after, cb.probes) == (None, 10, 3)
    assert (upstream.buffer_body, upstream.timeouts.client_body) == (64 * 1024, 5)
    assert upstream.total_timeout == 10 + 5 + 30  # queue + connect + read
    shorthand = parse_config(
        "upstream: {url: http://a, pool: {adaptive: true}, circuit_breaker: false}", env={}
    ).upstream
    assert shorthand.pool.adaptive.enabled and not shorthand.circuit_breaker.enabled


def test_upstream_protection_mistakes_are_reported_with_key_paths() -> None:
    found = problems(
        """
upstream:
  url: http://a
  timeouts: {total: 0}
  pool: {max_connections: 4, max_queue: -1, adaptive: {min_limit: 8}}
  retries: {attempts: 99, on_status: [200], budget: 2}
  circuit_breaker: {failure_rate: 0, min_requests: 0, reset_after: -1, on_status: [429]}
  buffer_body: lots
"""
    )
    joined = "\n".join(found)
    for path in (
        "upstream.timeouts.total:",
        "upstream.pool.max_queue:",
        "upstream.retries.attempts:",
        "upstream.retries.on_status: only 4xx and 5xx",
        "upstream.retries.budget:",
        "upstream.circuit_breaker.failure_rate:",
        "upstream.circuit_breaker.min_requests:",
        "upstream.circuit_breaker.reset_after:",
        "upstream.circuit_breaker.on_status: only 5xx statuses can count as failures",
        "upstream.buffer_body: not a size: 'lots'",
    ):
        assert path in joined, (path, joined)
    # The old count is refused by name, pointing at what replaced it.
    assert problems("upstream: {url: http://a, circuit_breaker: {failures: 5}}") == [
        "upstream.circuit_breaker: `failures` is gone: the breaker opens on a failure rate "
        "now; set failure_rate (0.5) and min_requests (20), and consecutive_failures for a "
        "count of failures in a row"
    ]
    sized = "upstream: {url: http://a, buffer_body: 1MB, timeouts: {client_body: 2}}"
    assert parse_config(sized, env={}).upstream.buffer_body == 2**20
    assert problems("upstream: {url: http://a, retries: true}") == [
        "upstream.retries: must be a number of retries or a mapping, got True"
    ]
    assert problems("upstream: {url: http://a, retries: {backoff: 3, max_backoff: 1}}") == [
        "upstream.retries: max_backoff (1) is below backoff (3)"
    ]
    assert problems(
        "upstream: {url: http://a, pool: {max_connections: 4, adaptive: {min_limit: 8}}}"
    ) == ["upstream.pool: adaptive.min_limit (8) is above max_connections (4)"]


def test_warming_is_top_level_and_its_urls_must_be_cached() -> None:
    found = problems(
        """
upstream: {url: http://a}
cache:
  warming: {urls: [/ok, "/q?x=1", /orders/1, /r/x, nope], max_rate: 10/fortnight}
routes:
  - {name: orders, match: {prefix: /orders/}, cache: false}
  - {match: {prefix: /r/}, cache: {warming: {urls: [/r/x]}}}
"""
    )
    assert found == [
        "cache.warming.urls: must be paths starting with '/' (a query is fine): ['nope']",
        "cache.warming.max_rate: not a rate: '10/fortnight' "
        "(use N/second, N/minute, N/hour, N/day or N/<seconds>s, e.g. '100/minute' or '10/30s')",
        "routes[1].cache: warming is one for the process: set it in the top-level cache",
    ]
    found = problems(
        """
upstream: {url: http://a}
cache: {warming: {urls: [/ok, "/q?x=1", /orders/1]}}
routes:
  - {name: orders, match: {prefix: /orders/}, cache: false}
"""
    )
    assert found == [
        "cache.warming.urls[2]: '/orders/1' is on route 'orders', which does not cache: "
        "it cannot be warmed"
    ]


# --- environment overrides (proxy/config/env.py) ----------------------------------------


def test_override_names_map_to_key_paths_and_complex_keys_take_json() -> None:
    assert resolve("CACHEPROXY_WORKERS", Settings) == (("workers",), False)
    assert resolve("CACHEPROXY_SHUTDOWN_DELAY", Settings) == (("shutdown_delay",), False)
    assert resolve("cacheproxy_redis__url", Settings) == (("redis", "url"), False)
    assert resolve("CACHEPROXY_UPSTREAM__POOL__MAX_CONNECTIONS", Settings) == (
        ("upstream", "pool", "max_connections"),
        False,
    )
    for name in ("CACHEPROXY_CACHE__TIERS", "CACHEPROXY_TRUSTED_PROXIES", "CACHEPROXY_REDIS"):
        resolved = resolve(name, Settings)
        assert resolved is not None and resolved[1], name
    for unknown in ("CACHEPROXY_LISTEN_HOST", "CACHEPROXY_ROUTES__0__NAME", "CACHEPROXY_"):
        assert resolve(unknown, Settings) is None
    assert suggestion("CACHEPROXY_LISTEN_HOST", Settings) == "CACHEPROXY_LISTEN__HOST"
    assert suggestion("CACHEPROXY_ADMIN_PORT", Settings) == "CACHEPROXY_ADMIN__PORT"
    assert suggestion("REDIS_URL", Settings) == "CACHEPROXY_REDIS__URL"
    assert suggestion("CACHEPROXY_NOTHING", Settings) is None


def test_overrides_beat_the_file_and_its_references_and_never_show_their_values() -> None:
    text = "upstream: {url: '${UPSTREAM_URL}'}\nlisten: {port: 8080}\ncache: {ttl: 5}\n"
    env = {
        "CACHEPROXY_UPSTREAM__URL": "http://api:8000",  # UPSTREAM_URL unset: no matter
        "CACHEPROXY_LISTEN__PORT": "8081",
        "CACHEPROXY_CACHE__KEY": '{"headers": ["Accept-Language"]}',
    }
    config = parse_config(text, env=env)
    assert (config.upstream.url, config.listen.port) == ("http://api:8000", 8081)
    assert config.cache is not None and config.cache.ttl == 5  # the rest of the section stays
    assert config.cache.key.headers == ("Accept-Language",)
    with pytest.raises(ConfigError) as caught:
        parse_config(text, env={**env, "CACHEPROXY_LISTEN__PORT": "80800-secret"})
    (problem,) = caught.value.problems
    assert problem.startswith("listen.port: ") and "CACHEPROXY_LISTEN__PORT" in problem
    assert "80800-secret" not in problem
    with pytest.raises(ConfigError) as caught:
        parse_config(
            "upstream: {url: 'http://a', retries: 2}\n",
            env={"CACHEPROXY_UPSTREAM__RETRIES__ATTEMPTS": "3"},
        )
    assert "set CACHEPROXY_UPSTREAM__RETRIES (JSON) instead" in caught.value.problems[0]


# --- routes[].match.hosts (virtual hosts) ------------------------------------------------------


def test_route_hosts_are_normalised() -> None:
    config = parse_config(
        """
upstream: {url: http://api:9000}
routes:
  - match: {prefix: /, hosts: [API.Example.com., '*.Example.NET', '[::1]']}
""",
        env={},
    )
    assert config.routes[0].match.hosts == ("api.example.com", "*.example.net", "[::1]")


def test_bad_route_hosts_are_refused_with_their_key_path() -> None:
    found = problems(
        """
upstream: {url: http://api:9000}
routes:
  - match: {prefix: /a/, hosts: [ok.example.com, 'api.example.com:8080', '*', 'a.*.com']}
  - match: {prefix: /b/, hosts: []}
"""
    )
    assert found == [
        "routes[0].match.hosts[1]: not a host name or `*.domain` wildcard: "
        "'api.example.com:8080' (leave the port out: any port matches)",
        "routes[0].match.hosts[2]: not a host name or `*.domain` wildcard: '*'",
        "routes[0].match.hosts[3]: not a host name or `*.domain` wildcard: 'a.*.com'",
        "routes[1].match.hosts: must list at least one host name (omit it to match any host)",
    ]


def test_route_hosts_that_listen_hosts_refuses_are_config_errors() -> None:
    found = problems(
        """
upstream: {url: http://api:9000}
listen: {hosts: [api.example.com, '*.shop.example.com']}
routes:
  - match: {prefix: /a/, hosts: [api.example.com, eu.shop.example.com, '*.shop.example.com']}
  - match: {prefix: /b/, hosts: ['*.example.com', '*.eu.shop.example.com']}
  - match: {prefix: /c/, hosts: [www.example.com, '*.example.org']}
"""
    )
    assert found == [
        "routes[2].match.hosts[0]: 'www.example.com' is not in listen.hosts, so its requests "
        "get 421 and never reach this route: add it there (or a wildcard that covers it)",
        "routes[2].match.hosts[1]: '*.example.org' is not in listen.hosts, so its requests "
        "get 421 and never reach this route: add it there (or a wildcard that covers it)",
    ]


def test_warming_urls_are_routed_as_requests_naming_no_host() -> None:
    found = problems(
        """
upstream: {url: http://a}
cache: {warming: {urls: [/orders/1, /api/1]}}
routes:
  - {name: vhost-orders, match: {prefix: /orders/, hosts: [shop.example.com]}}
  - {name: orders, match: {prefix: /orders/}, cache: false}
  - {name: vhost-api, match: {prefix: /api/, hosts: [api.example.com]}, cache: false}
"""
    )
    # The host's caching route is not theirs, nor is its uncached one in their way.
    assert found == [
        "cache.warming.urls[0]: '/orders/1' is on route 'orders', which does not cache: "
        "it cannot be warmed"
    ]
