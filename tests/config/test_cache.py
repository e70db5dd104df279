"""The cache config section: sizes, shorthands, top-level defaults merged into routes."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from proxy.cache.route import RouteCache
from proxy.config.cache import WarmingSettings, parse_size
from proxy.config.loader import ConfigError, parse_config
from proxy.pipeline.routes import RouteTable


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("256MB", 256 * 2**20),
        ("8 MiB", 8 * 2**20),
        ("512k", 512 * 1024),
        ("1.5GB", 3 * 2**29),
        (1048576, 1048576),
        ("100", 100),
        ("2b", 2),
    ],
)
def test_parse_size(text: object, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("bad", ["lots", "-1MB", "1 PB", True, "MB"])
def test_parse_size_rejects(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_size(bad)


def table(text: str) -> RouteTable:
    return RouteTable(parse_config(text, env={}))


def test_route_overrides_top_level_key_by_key() -> None:
    routes = table(
        """
upstream: {url: http://a}
cache: {ttl: 10, stale_if_error: 300, max_entry_size: 1MB}
routes:
  - {name: own, match: {prefix: /own}, cache: {ttl: 60, per_user: true}}
  - {name: disabled, match: {prefix: /off}, cache: false}
  - {name: inherit, match: {prefix: /inherit}}
"""
    )
    own = routes.match("GET", "/own").cache
    assert own is not None
    assert (own.rules.ttl, own.rules.stale_if_error, own.rules.user_header) == (
        60,
        300,
        "Authorization",
    )
    assert own.keys.rules.per_user_header == "Authorization"
    assert own.max_entry_size == 2**20
    assert routes.match("GET", "/off").cache is None
    inherit = routes.match("GET", "/inherit").cache
    assert inherit is not None and inherit.rules.ttl == 10


def test_credentials_are_the_same_on_every_route() -> None:
    # A header one route keys users by identifies users everywhere; extras are configured.
    routes = table(
        """
upstream: {url: http://a}
cache: {credential_headers: [x-session]}
routes:
  - {match: {prefix: /k}, cache: {per_user: {header: X-Api-Key}}}
  - {match: {prefix: /plain}, cache: {credential_headers: [X-Session, X-Token]}}
"""
    )
    keyed, plain = routes.match("GET", "/k").cache, routes.match("GET", "/plain").cache
    assert keyed is not None and plain is not None
    assert keyed.rules.credentials == ("Authorization", "Cookie", "X-Api-Key", "x-session")
    assert plain.rules.credentials == (
        "Authorization",
        "Cookie",
        "X-Api-Key",
        "X-Session",
        "X-Token",
    )
    assert (keyed.rules.user_header, plain.rules.user_header) == ("X-Api-Key", None)
    assert routes.default.cache is not None  # unmatched requests use the top-level cache


def test_no_cache_section_means_no_caching_and_false_disables_globally() -> None:
    assert table("upstream: {url: http://a}").default.cache is None
    routes = table(
        """
upstream: {url: http://a}
cache: false
routes: [{name: r, match: {prefix: /r}, cache: {ttl: 5}}]
"""
    )
    assert routes.default.cache is None
    assert routes.match("GET", "/r").cache is not None  # a route's own section enables it


def test_cache_mistakes_are_reported_with_paths() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(
            """
upstream: {url: http://a}
cache: {max_memory: lots}
routes:
  - match: {prefix: /a}
    cache: {ttl: -5, per_user: {header: 1, extra: 2}, max_memory: 1MB, key: {query: {ignore: x}}}
""",
            env={},
        )
    joined = "\n".join(info.value.problems)
    for fragment in (
        "cache.max_memory: not a size",
        "routes[0].cache.ttl:",
        "routes[0].cache.per_user.extra: unknown key",
        "routes[0].cache.key.query.ignore:",
    ):
        assert fragment in joined, (fragment, joined)


def test_force_ttl_needs_a_ttl() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config("upstream: {url: http://a}\ncache: {force_ttl: true}", env={})
    assert info.value.problems == ["cache: force_ttl: true needs a ttl"]


@pytest.mark.parametrize("key", ["ttl", "stale_while_revalidate", "stale_if_error"])
def test_durations_must_be_finite(key: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(f"upstream: {{url: http://a}}\ncache: {{{key}: .inf}}\n", env={})
    assert err.value.problems[0].startswith(f"cache.{key}: ")


def test_warming_settings_defaults_and_errors() -> None:
    s = WarmingSettings()
    assert (s.refresh_ahead, s.popular.top, s.max_rate, s.rate) == (0.8, 100, "10/second", 10)
    assert WarmingSettings(urls=["/a", "/a", "/b?x=1"]).urls == ("/a", "/b?x=1")
    with pytest.raises(ValidationError) as e:
        WarmingSettings(urls=["api/x"], max_rate="fast", refresh_ahead=1)
    assert {err["loc"][0] for err in e.value.errors()} == {"urls", "max_rate", "refresh_ahead"}


def test_tags_headers_take_a_name_or_a_list_and_are_hidden_from_clients() -> None:
    routes = table(
        """
upstream: {url: http://a}
cache: {}
routes:
  - {match: {prefix: /two}, cache: {tags_header: [Cache-Tag, xkey]}}
  - {match: {prefix: /none}, cache: {tags_header: null}}
  - {match: {prefix: /empty}, cache: {tags_header: []}}
  - {match: {prefix: /kept}, cache: {keep_surrogate_headers: true}}
  - {match: {prefix: /plain}, cache: false}
"""
    )

    def cache(path: str) -> RouteCache:
        found = routes.match("GET", path).cache
        assert found is not None
        return found

    default = cache("/x")  # Fastly's field unless told otherwise
    assert default.tags.names == {"surrogate-key"}
    assert default.hidden == {"surrogate-key", "surrogate-control"}
    assert cache("/two").tags.names == {"cache-tag", "xkey"}
    assert cache("/two").hidden == {"cache-tag", "xkey", "surrogate-control"}
    for path in ("/none", "/empty"):
        assert cache(path).tags.names == frozenset()
        assert cache(path).hidden == {"surrogate-control"}  # still meant for this cache
    assert cache("/kept").tags.names == {"surrogate-key"}  # read, but clients get them
    assert cache("/kept").hidden == frozenset()
    assert routes.match("GET", "/plain").cache is None  # a route that does not cache hides none


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("'Surrogate Key'", "tags_header[0]: invalid name 'Surrogate Key': not an HTTP token"),
        ("[ok, 'x:y']", "tags_header[1]: invalid name 'x:y': not an HTTP token"),
        ("{a: 1}", "tags_header: Input should be a valid tuple"),
    ],
)
def test_a_tags_header_that_is_no_field_name_is_refused(value: str, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(
            f"upstream: {{url: http://a}}\nroutes:\n"
            f"  - {{match: {{prefix: /a}}, cache: {{tags_header: {value}}}}}\n",
            env={},
        )
    [found] = info.value.problems
    assert found.startswith(f"routes[0].cache.{problem}"), found


def test_store_set_cookie_is_off_unless_set_and_a_route_may_set_it() -> None:
    routes = table(
        """
upstream: {url: http://a}
cache: {}
routes:
  - {name: cookies, match: {prefix: /c}, cache: {store_set_cookie: true}}
"""
    )
    cookies, default = routes.match("GET", "/c").cache, routes.match("GET", "/x").cache
    assert cookies is not None and cookies.rules.store_set_cookie
    assert default is not None and not default.rules.store_set_cookie


def test_store_set_cookie_takes_a_switch_only() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config("upstream: {url: http://a}\ncache: {store_set_cookie: sometimes}\n", env={})
    assert err.value.problems[0].startswith("cache.store_set_cookie: ")
