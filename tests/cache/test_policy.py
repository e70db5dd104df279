"""Direct tests of proxy.cache.policy (RFC 9111 decisions)."""

from __future__ import annotations

import time
from email.utils import formatdate

import http_sf
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy

from proxy.cache.policy import (
    DELTA_MAX,
    EMPTY_CACHE_CONTROL,
    MAX_STALE_ANY,
    SAFE_METHODS,
    VARY_ABSENT,
    CacheControl,
    CacheRules,
    Freshness,
    Scope,
    StoreDecision,
    conditional_headers,
    current_age,
    date_value,
    effective_cache_control,
    freshness_lifetime,
    initial_age,
    invalidation_targets,
    is_unsafe_method,
    lookup_verdict,
    may_answer,
    merge_304_headers,
    not_modified_for_client,
    parse_cache_control,
    request_cache_control,
    request_scope,
    stale_if_error_allowed,
    storability,
    vary_fields,
    vary_key,
)

NOW = 1_700_000_000.0  # a whole second, so HTTP-dates round-trip exactly


def http_date(ts: float) -> str:
    return formatdate(ts, usegmt=True)


# NOW - 100 as email.utils reads it, but not an HTTP-date: "UTC" is not "GMT".
NEAR_MISS_DATE = http_date(NOW - 100).replace("GMT", "UTC")


def h(*pairs: tuple[str, str]) -> CIMultiDict[str]:
    return CIMultiDict(pairs)


def cc(value: str) -> CacheControl:
    return parse_cache_control([value])


# ---------------------------------------------------------------------------
# parse_cache_control
# ---------------------------------------------------------------------------


def test_parse_all_boolean_directives() -> None:
    parsed = cc(
        "no-store, no-cache, private, public, must-revalidate, proxy-revalidate,"
        " only-if-cached, no-transform, immutable"
    )
    assert parsed == CacheControl(
        no_store=True,
        no_cache=True,
        private=True,
        public=True,
        must_revalidate=True,
        proxy_revalidate=True,
        only_if_cached=True,
        no_transform=True,
        immutable=True,
    )


def test_parse_numeric_directives() -> None:
    parsed = cc(
        "max-age=60, s-maxage=120, stale-while-revalidate=30, stale-if-error=600,"
        " max-stale=5, min-fresh=7"
    )
    assert (parsed.max_age, parsed.s_maxage) == (60, 120)
    assert (parsed.stale_while_revalidate, parsed.stale_if_error) == (30, 600)
    assert (parsed.max_stale, parsed.min_fresh) == (5, 7)


def test_parse_is_case_and_whitespace_insensitive() -> None:
    assert cc("  MAX-AGE = 60 ,No-Store  ,PUBLIC") == CacheControl(
        max_age=60, no_store=True, public=True
    )


def test_parse_joins_multiple_field_lines() -> None:
    parsed = parse_cache_control(["public", "max-age=10", "must-revalidate"])
    assert parsed == CacheControl(public=True, max_age=10, must_revalidate=True)


def test_parse_accepts_a_bare_string() -> None:
    assert parse_cache_control("max-age=3, private") == CacheControl(max_age=3, private=True)


def test_parse_quoted_values_keep_commas_inside_quotes() -> None:
    parsed = cc('no-cache="Set-Cookie, X-Foo", max-age="60", private="Authorization"')
    assert parsed.no_cache and parsed.private
    assert parsed.max_age == 60
    assert not parsed.no_store


def test_parse_quoted_string_with_escaped_quote() -> None:
    parsed = cc(r'no-cache="a\"b, c", s-maxage=9')
    assert parsed.no_cache
    assert parsed.s_maxage == 9


def test_parse_unterminated_quote_does_not_raise() -> None:
    assert cc('no-cache="Set-Cookie, max-age=5').no_cache


@pytest.mark.parametrize(
    "value", ["max-age", "max-age=", "max-age=abc", "max-age=-1", "max-age=1.5"]
)
def test_invalid_max_age_means_stale(value: str) -> None:
    assert cc(value).max_age == 0


def test_invalid_s_maxage_means_stale() -> None:
    assert cc("s-maxage=x").s_maxage == 0


def test_non_ascii_digits_are_invalid() -> None:
    assert cc("max-age=\u00b2\u00b3").max_age == 0
    assert cc("stale-if-error=\u0663").stale_if_error is None


DUPLICATES = [
    # id, field lines, CacheControl field, value: the first occurrence counts (§4.2.1)
    ("max-age-conflict", ["max-age=10, max-age=100"], "max_age", 10),
    ("max-age-identical", ["max-age=60, max-age=60"], "max_age", 60),
    ("max-age-across-lines", ["max-age=60", "max-age=120"], "max_age", 60),
    ("max-age-case-folded", ["MAX-AGE=5, max-age=50"], "max_age", 5),
    ("max-age-invalid-later", ["max-age=10, max-age=abc"], "max_age", 10),
    ("max-age-invalid-first", ["max-age=abc, max-age=10"], "max_age", 0),
    ("max-age-bare-first", ["max-age, max-age=10"], "max_age", 0),
    ("s-maxage-conflict", ["s-maxage=60, s-maxage=1"], "s_maxage", 60),
    ("swr", ["stale-while-revalidate=50, stale-while-revalidate=10"], "stale_while_revalidate",
     50),
    ("swr-invalid-first", ["stale-while-revalidate=x, stale-while-revalidate=10"],
     "stale_while_revalidate", None),
    ("sie", ["stale-if-error=5", "stale-if-error=99"], "stale_if_error", 5),
    ("max-stale", ["max-stale=20, max-stale=3"], "max_stale", 20),
    ("max-stale-any-first", ["max-stale, max-stale=10"], "max_stale", MAX_STALE_ANY),
    ("max-stale-value-first", ["max-stale=10, max-stale"], "max_stale", 10),
    ("min-fresh", ["min-fresh=1, min-fresh=9"], "min_fresh", 1),
]  # fmt: skip


@pytest.mark.parametrize(
    ("lines", "field", "expected"),
    [case[1:] for case in DUPLICATES],
    ids=[case[0] for case in DUPLICATES],
)
def test_duplicate_directives_first_occurrence_counts(
    lines: list[str], field: str, expected: int | None
) -> None:
    assert getattr(parse_cache_control(lines), field) == expected


ARGUMENTS = [
    # id, directive, max_age: delta-seconds only, quoted or not (§1.2.2, §5.2)
    ("token", "max-age=60", 60),
    ("quoted", 'max-age="60"', 60),
    ("trailing-garbage", "max-age=10a", 0),
    ("quoted-trailing-garbage", 'max-age="10a"', 0),
    ("leading-garbage", "max-age=a10", 0),
    ("inner-space", "max-age=1 0", 0),
    ("quoted-space", 'max-age=" 60"', 0),
    ("plus-sign", "max-age=+60", 0),
    ("exponent", "max-age=6e1", 0),
    ("hex", "max-age=0x10", 0),
    ("empty-quoted", 'max-age=""', 0),
]  # fmt: skip


@pytest.mark.parametrize(
    ("value", "expected"), [case[1:] for case in ARGUMENTS], ids=[case[0] for case in ARGUMENTS]
)
def test_max_age_arguments(value: str, expected: int) -> None:
    assert cc(value).max_age == expected


def test_invalid_extension_deltas_are_ignored() -> None:
    parsed = cc("stale-while-revalidate=soon, stale-if-error, min-fresh=-3, max-stale=x")
    assert parsed.stale_while_revalidate is None
    assert parsed.stale_if_error is None
    assert parsed.min_fresh is None
    assert parsed.max_stale is None


def test_max_stale_without_value_means_any() -> None:
    assert cc("max-stale").max_stale == MAX_STALE_ANY


def test_huge_and_zero_padded_deltas() -> None:
    assert cc("max-age=99999999999999999999999999").max_age == DELTA_MAX
    assert cc("max-age=" + "9" * 5000).max_age == DELTA_MAX
    assert cc("max-age=0000060").max_age == 60
    assert cc("max-age=000").max_age == 0


def test_unknown_directives_and_empty_input() -> None:
    assert cc("foo, bar=baz, ,,") == EMPTY_CACHE_CONTROL
    assert parse_cache_control([]) == EMPTY_CACHE_CONTROL
    assert cc("") == EMPTY_CACHE_CONTROL


def test_parse_long_values_are_not_memoised_but_still_parsed() -> None:
    value = "x-padding=" + "a" * 400 + ", max-age=7"
    assert cc(value).max_age == 7


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(max_size=80), max_size=4))
def test_parse_never_raises_on_arbitrary_text(values: list[str]) -> None:
    parsed = parse_cache_control(values)
    assert isinstance(parsed, CacheControl)
    for number in (parsed.max_age, parsed.s_maxage, parsed.min_fresh, parsed.stale_if_error):
        assert number is None or 0 <= number <= DELTA_MAX
    assert parsed.max_stale is None or 0 <= parsed.max_stale <= MAX_STALE_ANY


_NUMERIC_FIELDS = {
    "max-age": "max_age",
    "s-maxage": "s_maxage",
    "stale-while-revalidate": "stale_while_revalidate",
    "stale-if-error": "stale_if_error",
    "max-stale": "max_stale",
    "min-fresh": "min_fresh",
}
_FLAG_FIELDS = {"no-store": "no_store", "private": "private", "no-cache": "no_cache"}
# Arguments as written, and the delta-seconds each means (None: not delta-seconds).
_ARGUMENTS = st.one_of(
    st.none().map(lambda _: (None, None)),
    st.integers(0, 10**12).map(lambda n: (str(n), min(n, DELTA_MAX))),
    st.integers(0, 10**6).map(lambda n: (f'"{n}"', n)),
    st.sampled_from(["10a", "abc", "-1", "1.5", '"1 0"', '"a, b"', '"x\\"y"', "", '""']).map(
        lambda a: (a, None)
    ),
)


@st.composite
def directive_lists(draw: st.DrawFn) -> tuple[list[str], list[tuple[str, str | None, int | None]]]:
    """Cache-Control field lines with repeated directives, and the directives in order."""
    names = st.sampled_from([*_NUMERIC_FIELDS, *_FLAG_FIELDS, "x-ext"])
    directives = draw(st.lists(st.tuples(names, _ARGUMENTS), max_size=10))
    rendered: list[str] = []
    parsed: list[tuple[str, str | None, int | None]] = []
    for name, (arg, seconds) in directives:
        written = name.upper() if draw(st.booleans()) else name
        rendered.append(written if arg is None else f"{written}={arg}")
        parsed.append((name, arg, seconds))
    # Split into field lines at random points, with optional whitespace around commas.
    lines: list[str] = []
    current: list[str] = []
    for part in rendered:
        current.append(part)
        if draw(st.integers(0, 3)) == 0:
            lines.append(draw(st.sampled_from([", ", ",", " , ", ",\t"])).join(current))
            current = []
    if current:
        lines.append(", ".join(current))
    return lines, parsed


@settings(max_examples=400, deadline=None)
@given(directive_lists())
def test_parse_first_occurrence_wins(
    case: tuple[list[str], list[tuple[str, str | None, int | None]]],
) -> None:
    lines, directives = case
    parsed = parse_cache_control(lines)
    first: dict[str, tuple[str | None, int | None]] = {}
    for name, arg, seconds in directives:
        first.setdefault(name, (arg, seconds))
    for name, field in _NUMERIC_FIELDS.items():
        if name not in first:
            expected = None
        else:
            arg, seconds = first[name]
            if name in ("max-age", "s-maxage"):
                expected = 0 if seconds is None else seconds  # invalid: stale
            elif name == "max-stale" and arg is None:
                expected = MAX_STALE_ANY
            else:
                expected = seconds  # invalid: ignored
        assert getattr(parsed, field) == expected, (name, lines)
    for name, field in _FLAG_FIELDS.items():
        assert getattr(parsed, field) == (name in first)
    # Dropping every later occurrence changes nothing.
    deduplicated = [name if arg is None else f"{name}={arg}" for name, (arg, _) in first.items()]
    assert parse_cache_control([", ".join(deduplicated)]) == parsed


_FLAGS = ["no-store", "no-cache", "private", "public", "must-revalidate", "immutable"]


@settings(max_examples=150, deadline=None)
@given(
    flags=st.sets(st.sampled_from(_FLAGS)),
    max_age=st.none() | st.integers(0, 10**9),
    swr=st.none() | st.integers(0, 10**6),
    upper=st.booleans(),
    quote=st.booleans(),
)
def test_parse_roundtrips_rendered_directives(
    flags: set[str], max_age: int | None, swr: int | None, upper: bool, quote: bool
) -> None:
    parts = sorted(flags)
    if max_age is not None:
        parts.append(f'max-age="{max_age}"' if quote else f"max-age={max_age}")
    if swr is not None:
        parts.append(f"stale-while-revalidate={swr}")
    rendered = ", ".join(parts)
    parsed = cc(rendered.upper() if upper else rendered)
    assert parsed.max_age == max_age
    assert parsed.stale_while_revalidate == swr
    assert parsed.no_store == ("no-store" in flags)
    assert parsed.no_cache == ("no-cache" in flags)
    assert parsed.private == ("private" in flags)
    assert parsed.public == ("public" in flags)
    assert parsed.immutable == ("immutable" in flags)


# ---------------------------------------------------------------------------
# effective / request Cache-Control
# ---------------------------------------------------------------------------


def test_cdn_cache_control_replaces_cache_control() -> None:
    headers = h(("Cache-Control", "private, no-transform"), ("CDN-Cache-Control", "max-age=60"))
    effective = effective_cache_control(headers)
    assert effective.max_age == 60
    assert not effective.private
    assert effective.no_transform  # still honoured from Cache-Control


def test_empty_cdn_cache_control_falls_back() -> None:
    headers = h(("Cache-Control", "max-age=5"), ("CDN-Cache-Control", "  "))
    assert effective_cache_control(headers).max_age == 5


UNPARSABLE_CDN = [
    # id, CDN-Cache-Control lines that are no Structured Fields Dictionary (RFC 9213 §2.1)
    ("trailing-comma", ["max-age=60,"]),
    ("upper-case-key", ["MAX-AGE=60"]),
    ("trailing-garbage", ["max-age=10a"]),
    ("space-around-equals", ["max-age = 60"]),
    ("unterminated-string", ['no-cache="Set-Cookie, max-age=60']),
    ("non-ascii", ["max-age=60, x=\u00e9"]),
    ("leading-comma", [", max-age=60"]),
    ("one-bad-line", ["max-age=60", "private;"]),
    ("integer-too-long", ["max-age=" + "9" * 16]),
]  # fmt: skip


@pytest.mark.parametrize(
    "lines", [case[1] for case in UNPARSABLE_CDN], ids=[case[0] for case in UNPARSABLE_CDN]
)
def test_unparsable_cdn_cache_control_is_ignored_entirely(lines: list[str]) -> None:
    # It must not govern, nor hide Expires: as if it were not there.
    cdn = [("CDN-Cache-Control", line) for line in lines]
    headers = h(("Cache-Control", "max-age=5, private"), *cdn)
    assert effective_cache_control(headers) == cc("max-age=5, private")
    with_expires = h(("Expires", http_date(NOW + 30)), ("Date", http_date(NOW)), *cdn)
    assert freshness_lifetime(with_expires, DEFAULT, NOW) == 30
    assert storability("GET", 200, h(), headers, DEFAULT) == StoreDecision(False, "private")


CDN_VALUES = [
    # id, CDN-Cache-Control lines, what governs (as Cache-Control would say it)
    ("integer", ["max-age=60"], "max-age=60"),
    ("flags", ["no-store, must-revalidate"], "no-store, must-revalidate"),
    ("string-list", ['private="Set-Cookie", no-cache="a, b"'], "private, no-cache"),
    ("parameters-ignored", ["max-age=60;x=1, public;y"], "max-age=60, public"),
    ("lines-combined", ["max-age=60", "public"], "max-age=60, public"),
    ("empty-line-skipped", ["", "max-age=7"], "max-age=7"),
    ("repeated-key-last-wins", ["max-age=10, max-age=20"], "max-age=20"),
    ("false-is-off", ["no-store=?0, max-age=9"], "max-age=9"),
    ("true-is-on", ["no-store=?1"], "no-store"),
    ("quoted-number-invalid", ['max-age="60"'], "max-age=x"),
    ("decimal-invalid", ["max-age=1.5"], "max-age=x"),
    ("negative-invalid", ["s-maxage=-1"], "s-maxage=x"),
    ("token-invalid", ["max-age=soon"], "max-age=x"),
    ("inner-list-invalid", ["max-age=(1 2)"], "max-age=x"),
    ("bytes-invalid", ["max-age=:AQ==:"], "max-age=x"),
    ("window-invalid-ignored", ['stale-if-error="60", stale-while-revalidate=2.0'], ""),
    ("huge-integer", ["max-age=999999999999999"], f"max-age={DELTA_MAX}"),
    ("unknown-only-still-governs", ["none"], ""),
    ("must-understand", ["must-understand, no-store"], "must-understand, no-store"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("lines", "expected"), [case[1:] for case in CDN_VALUES], ids=[case[0] for case in CDN_VALUES]
)
def test_cdn_cache_control_values(lines: list[str], expected: str) -> None:
    headers = h(
        ("Cache-Control", "s-maxage=999, private"), *(("CDN-Cache-Control", v) for v in lines)
    )
    assert effective_cache_control(headers) == cc(expected)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(st.characters(codec="ascii"), max_size=40), min_size=1, max_size=3))
def test_cdn_cache_control_governs_exactly_when_it_parses(lines: list[str]) -> None:
    headers = h(("Cache-Control", "max-age=5, public"), *(("CDN-Cache-Control", v) for v in lines))
    combined = ", ".join(v for v in lines if v.strip(" \t"))
    try:
        parses = bool(http_sf.parse(combined.encode(), tltype="dictionary"))
    except http_sf.StructuredFieldError:
        parses = False
    effective = effective_cache_control(headers)  # never raises
    if not parses:
        assert effective == cc("max-age=5, public")
    else:  # Cache-Control has no say
        other = h(("Cache-Control", "max-age=7, private"), *list(headers.items())[1:])
        assert effective_cache_control(other) == effective


def test_effective_without_any_header_is_empty() -> None:
    assert effective_cache_control(h()) == EMPTY_CACHE_CONTROL


def test_effective_accepts_proxy_headers() -> None:
    headers = CIMultiDictProxy(h(("cache-control", "s-maxage=4")))
    assert effective_cache_control(headers).s_maxage == 4


def test_pragma_no_cache_only_without_cache_control() -> None:
    assert request_cache_control(h(("Pragma", "no-cache"))).no_cache
    assert request_cache_control(h(("Pragma", "foo, NO-CACHE"))).no_cache
    with_cc = request_cache_control(h(("Pragma", "no-cache"), ("Cache-Control", "max-age=5")))
    assert not with_cc.no_cache and with_cc.max_age == 5
    assert request_cache_control(h(("Pragma", "foo"))) == EMPTY_CACHE_CONTROL


def test_request_directives_parsed() -> None:
    req = request_cache_control(
        h(("Cache-Control", "max-age=10, min-fresh=5, max-stale, only-if-cached, no-store"))
    )
    assert req.max_age == 10 and req.min_fresh == 5
    assert req.max_stale == MAX_STALE_ANY
    assert req.only_if_cached and req.no_store


# ---------------------------------------------------------------------------
# storability (§3)
# ---------------------------------------------------------------------------

DEFAULT = CacheRules()
TTL = CacheRules(ttl=30)
# A request carrying the route's credential on a per-user route.
PER_USER = (CacheRules(user_header="Authorization"), Scope.USER)
# A request carrying a credential the per-user route does not key by.
FOREIGN = (CacheRules(ttl=30, user_header="X-Api-Key"), Scope.PASS)
COOKIES = CacheRules(store_set_cookie=True)
AUTH = ("Authorization", "Bearer t")

STORABILITY = [
    # id, method, status, request headers, response headers, rules, store, reason
    ("plain-max-age", "GET", 200, [], [("Cache-Control", "max-age=60")], DEFAULT, True, "ok"),
    ("head", "HEAD", 200, [], [("Cache-Control", "max-age=60")], DEFAULT, False, "method"),
    ("post", "POST", 200, [], [("Cache-Control", "max-age=60")], DEFAULT, False, "method"),
    ("lower-get", "get", 200, [], [("Cache-Control", "max-age=60")], DEFAULT, False, "method"),
    ("1xx", "GET", 103, [], [("Cache-Control", "max-age=60")], DEFAULT, False, "status"),
    ("206", "GET", 206, [], [("Cache-Control", "max-age=60")], DEFAULT, False, "status"),
    ("304", "GET", 304, [], [("Cache-Control", "max-age=60")], DEFAULT, False, "status"),
    ("600", "GET", 600, [], [("Cache-Control", "max-age=60")], DEFAULT, False, "status"),
    ("req-no-store", "GET", 200, [("Cache-Control", "no-store")], [("ETag", '"a"')], TTL, False,
     "no-store"),
    ("resp-no-store", "GET", 200, [], [("Cache-Control", "max-age=9, no-store")], TTL, False,
     "no-store"),
    ("no-store-beats-force", "GET", 200, [], [("Cache-Control", "no-store")],
     CacheRules(ttl=60, force_ttl=True), False, "no-store"),
    ("private", "GET", 200, [], [("Cache-Control", "private, max-age=60")], DEFAULT, False,
     "private"),
    ("private-qualified", "GET", 200, [], [("Cache-Control", 'private="X", max-age=60')],
     DEFAULT, False, "private"),
    ("private-beats-force", "GET", 200, [], [("Cache-Control", "private")],
     CacheRules(ttl=60, force_ttl=True), False, "private"),
    ("private-per-user", "GET", 200, [], [("Cache-Control", "private, max-age=60")], PER_USER,
     True, "ok"),
    ("auth-plain", "GET", 200, [AUTH], [("Cache-Control", "max-age=60")], DEFAULT, False,
     "authorization"),
    ("auth-public", "GET", 200, [AUTH], [("Cache-Control", "public, max-age=60")], DEFAULT, True,
     "ok"),
    ("auth-s-maxage", "GET", 200, [AUTH], [("Cache-Control", "s-maxage=60")], DEFAULT, True, "ok"),
    ("auth-must-revalidate", "GET", 200, [AUTH], [("Cache-Control", "must-revalidate")], TTL,
     True, "ok"),
    ("auth-per-user", "GET", 200, [AUTH], [("Cache-Control", "max-age=60")], PER_USER, True, "ok"),
    ("cookie-plain", "GET", 200, [("Cookie", "sid=1")], [("Cache-Control", "max-age=60")],
     DEFAULT, False, "authorization"),
    ("cookie-public", "GET", 200, [("Cookie", "sid=1")], [("Cache-Control", "public, max-age=60")],
     DEFAULT, True, "ok"),
    ("cookie-per-user", "GET", 200, [("Cookie", "sid=1")],
     [("Cache-Control", "private, max-age=9")], PER_USER, True, "ok"),
    ("foreign-credential", "GET", 200, [("Cookie", "sid=1")],
     [("Cache-Control", "public, max-age=60")], FOREIGN, False, "credentials"),
    ("foreign-before-status", "GET", 206, [AUTH], [], FOREIGN, False, "credentials"),
    ("set-cookie", "GET", 200, [], [("Cache-Control", "max-age=60"), ("Set-Cookie", "s=1")],
     DEFAULT, False, "set-cookie"),
    ("set-cookie-per-user", "GET", 200, [], [("Cache-Control", "max-age=60"),
     ("Set-Cookie", "s=1")], PER_USER, False, "set-cookie"),
    ("set-cookie-allowed", "GET", 200, [], [("Cache-Control", "max-age=60"),
     ("Set-Cookie", "s=1")], COOKIES, True, "ok"),
    ("vary-star", "GET", 200, [], [("Cache-Control", "max-age=60"), ("Vary", "Accept, *")],
     DEFAULT, False, "vary-star"),
    ("vary-fields", "GET", 200, [], [("Cache-Control", "max-age=60"), ("Vary", "Accept")],
     DEFAULT, True, "ok"),
    ("404-heuristic", "GET", 404, [], [("Last-Modified", http_date(NOW - 100))], DEFAULT, True,
     "ok"),
    ("500-plain", "GET", 500, [], [("ETag", '"a"')], TTL, False, "status"),
    ("500-force-ttl", "GET", 500, [], [], CacheRules(ttl=60, force_ttl=True), False, "status"),
    ("500-max-age", "GET", 500, [], [("Cache-Control", "max-age=5")], DEFAULT, True, "ok"),
    ("302-expires", "GET", 302, [], [("Expires", http_date(NOW + 60))], DEFAULT, True, "ok"),
    ("503-public-ttl", "GET", 503, [], [("Cache-Control", "public")], TTL, True, "ok"),
    ("503-public-nothing", "GET", 503, [], [("Cache-Control", "public")], DEFAULT, False,
     "no-freshness"),
    ("200-nothing", "GET", 200, [], [], DEFAULT, False, "no-freshness"),
    ("200-ttl", "GET", 200, [], [], TTL, True, "ok"),
    ("200-etag", "GET", 200, [], [("ETag", '"v1"')], DEFAULT, True, "ok"),
    ("200-last-modified", "GET", 200, [], [("Last-Modified", http_date(NOW))], DEFAULT, True,
     "ok"),
    # §5.3 / RFC 9110 §5.6.7: an invalid Last-Modified is no validator and no heuristic.
    ("200-invalid-last-modified", "GET", 200, [], [("Last-Modified", NEAR_MISS_DATE)], DEFAULT,
     False, "no-freshness"),
    ("200-empty-etag", "GET", 200, [], [("ETag", "")], DEFAULT, False, "no-freshness"),
    ("200-no-cache-etag", "GET", 200, [], [("Cache-Control", "no-cache"), ("ETag", '"v1"')],
     DEFAULT, True, "ok"),
    ("200-no-cache-only", "GET", 200, [], [("Cache-Control", "no-cache")], DEFAULT, False,
     "no-freshness"),
    ("200-route-sie", "GET", 200, [], [], CacheRules(stale_if_error=60), True, "ok"),
    ("200-origin-swr", "GET", 200, [], [("Cache-Control", "stale-while-revalidate=5")], DEFAULT,
     True, "ok"),
    ("cdn-overrides-private", "GET", 200, [], [("Cache-Control", "private"),
     ("CDN-Cache-Control", "max-age=60")], DEFAULT, True, "ok"),
    ("cdn-no-store", "GET", 200, [], [("Cache-Control", "max-age=60"),
     ("CDN-Cache-Control", "no-store")], DEFAULT, False, "no-store"),
    ("cdn-ignores-expires", "GET", 500, [], [("Expires", http_date(NOW + 60)),
     ("CDN-Cache-Control", "must-revalidate")], DEFAULT, False, "status"),
    ("cdn-unparsable-no-store", "GET", 200, [], [("Cache-Control", "max-age=60"),
     ("CDN-Cache-Control", "no-store,")], DEFAULT, True, "ok"),
    # §5.2.2.3: must-understand overrides no-store for statuses we implement, and keeps
    # every other status out of the cache.
    ("must-understand-200", "GET", 200, [], [("Cache-Control",
     "must-understand, no-store, max-age=60")], DEFAULT, True, "ok"),
    ("must-understand-404", "GET", 404, [], [("Cache-Control", "must-understand, no-store")],
     TTL, True, "ok"),
    ("must-understand-308", "GET", 308, [], [("Cache-Control",
     "no-store, must-understand, max-age=60")], DEFAULT, True, "ok"),
    ("must-understand-302", "GET", 302, [], [("Cache-Control",
     "must-understand, no-store, max-age=60")], DEFAULT, False, "must-understand"),
    ("must-understand-500", "GET", 500, [], [("Cache-Control", "must-understand, max-age=60")],
     DEFAULT, False, "must-understand"),
    ("must-understand-unknown", "GET", 299, [], [("Cache-Control",
     "must-understand, no-store, max-age=60")], DEFAULT, False, "must-understand"),
    ("must-understand-206", "GET", 206, [], [("Cache-Control", "must-understand, max-age=60")],
     DEFAULT, False, "status"),
    ("must-understand-private", "GET", 200, [], [("Cache-Control",
     "must-understand, no-store, private, max-age=60")], DEFAULT, False, "private"),
    ("must-understand-request-no-store", "GET", 200, [("Cache-Control", "no-store")],
     [("Cache-Control", "must-understand, no-store, max-age=60")], DEFAULT, False, "no-store"),
    ("cdn-must-understand", "GET", 200, [], [("Cache-Control", "no-store"),
     ("CDN-Cache-Control", "must-understand, no-store, max-age=60")], DEFAULT, True, "ok"),
    ("req-no-store-fresh-response", "GET", 200, [("Cache-Control", "no-store, max-age=0")],
     [("Cache-Control", "public, max-age=600")], DEFAULT, False, "no-store"),
    ("req-no-store-after-other", "GET", 200, [("Cache-Control", "max-age=5"),
     ("Cache-Control", "No-Store")], [("Cache-Control", "max-age=600")], DEFAULT, False,
     "no-store"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("method", "status", "req", "resp", "rules", "store", "reason"),
    [case[1:] for case in STORABILITY],
    ids=[case[0] for case in STORABILITY],
)
def test_storability_matrix(
    method: str,
    status: int,
    req: list[tuple[str, str]],
    resp: list[tuple[str, str]],
    rules: CacheRules | tuple[CacheRules, Scope],
    store: bool,
    reason: str,
) -> None:
    rules, scope = rules if isinstance(rules, tuple) else (rules, Scope.SHARED)
    decision = storability(method, status, h(*req), h(*resp), rules, scope)
    assert decision == StoreDecision(store, reason)
    assert bool(decision) is store


SCOPES = [
    # id, request headers, the route's credential header, scope
    ("shared-route-credentials", [AUTH, ("Cookie", "s=1")], None, Scope.CREDENTIALED),
    ("shared-route-anonymous", [("Accept", "*/*")], None, Scope.SHARED),
    ("anonymous", [("Accept", "*/*")], "Authorization", Scope.SHARED),
    ("own-credential", [AUTH], "Authorization", Scope.USER),
    ("own-plus-cookie", [AUTH, ("Cookie", "s=1")], "Authorization", Scope.USER),
    ("cookie-only", [("Cookie", "s=1")], "Authorization", Scope.PASS),
    ("empty-credential", [("Authorization", "  ")], "Authorization", Scope.PASS),
    ("empty-credential-on-key-route", [("X-Api-Key", "")], "X-Api-Key", Scope.PASS),
    ("api-key", [("x-api-key", "k1")], "X-Api-Key", Scope.USER),
    ("authorization-on-key-route", [AUTH], "X-Api-Key", Scope.PASS),
    ("cookie-on-key-route", [("Cookie", "s=1")], "X-Api-Key", Scope.PASS),
    ("cookie-keyed-route", [("Cookie", "s=1")], "Cookie", Scope.USER),
    ("authorization-on-cookie-route", [AUTH], "Cookie", Scope.PASS),
    ("second-line-carries-it", [("X-Api-Key", ""), ("X-Api-Key", "k")], "X-Api-Key",
     Scope.USER),
]  # fmt: skip


@pytest.mark.parametrize(
    ("req", "user_header", "scope"),
    [case[1:] for case in SCOPES],
    ids=[case[0] for case in SCOPES],
)
def test_request_scope(req: list[tuple[str, str]], user_header: str | None, scope: Scope) -> None:
    credentials = ("Authorization", "Cookie", user_header or "Cookie")
    rules = CacheRules(user_header=user_header, credentials=credentials)
    assert request_scope(h(*req), rules) is scope


@pytest.mark.parametrize(
    ("mode", "scope"),
    [("explicit", Scope.CREDENTIALED), ("lookup", Scope.SHARED), ("pass", Scope.PASS)],
)
def test_on_credentials_decides_for_shared_routes(mode: str, scope: Scope) -> None:
    rules = CacheRules(on_credentials=mode)
    assert request_scope(h(("Cookie", "sid=1")), rules) is scope
    assert request_scope(h(), rules) is Scope.SHARED
    # Per-user routes are decided by their own credential, whatever the mode.
    per_user = CacheRules(user_header="Authorization", on_credentials=mode)
    assert request_scope(h(AUTH), per_user) is Scope.USER


@pytest.mark.parametrize(
    ("cache_control", "allowed"),
    [
        ("max-age=60", False),
        ("public, max-age=60", True),
        ("s-maxage=60", True),
        ("must-revalidate, max-age=60", True),
    ],
)
def test_credentialed_requests_only_take_explicitly_shareable_entries(
    cache_control: str, allowed: bool
) -> None:
    cc = parse_cache_control([cache_control])
    assert may_answer(Scope.CREDENTIALED, cc) is allowed
    assert may_answer(Scope.SHARED, cc) and may_answer(Scope.USER, cc)


def test_configured_credentials_count_like_authorization() -> None:
    rules = CacheRules(user_header="Authorization", credentials=("Authorization", "X-Token"))
    assert request_scope(h(("x-token", "t")), rules) is Scope.PASS
    shared = CacheRules(credentials=("Authorization", "X-Token"))
    decision = storability(
        "GET", 200, h(("X-Token", "t")), h(("Cache-Control", "max-age=60")), shared
    )
    assert decision == StoreDecision(False, "authorization")


# ---------------------------------------------------------------------------
# freshness_lifetime (§4.2.1, §4.2.2)
# ---------------------------------------------------------------------------


def test_s_maxage_beats_max_age_beats_expires() -> None:
    expires = ("Expires", http_date(NOW + 500))
    date = ("Date", http_date(NOW))
    both = h(("Cache-Control", "max-age=60, s-maxage=120"), expires, date)
    assert freshness_lifetime(both, DEFAULT, NOW) == 120
    max_age = h(("Cache-Control", "max-age=60"), expires, date)
    assert freshness_lifetime(max_age, DEFAULT, NOW) == 60
    assert freshness_lifetime(h(expires, date), DEFAULT, NOW) == 500


def test_expires_is_relative_to_the_date_header_not_local_clock() -> None:
    # Origin clock 1000 s behind ours: Expires - Date still gives 300.
    headers = h(("Date", http_date(NOW - 1000)), ("Expires", http_date(NOW - 700)))
    assert freshness_lifetime(headers, DEFAULT, NOW) == 300


def test_expires_without_date_uses_fallback() -> None:
    headers = h(("Expires", http_date(NOW + 90)))
    assert freshness_lifetime(headers, DEFAULT, NOW) == 90


@pytest.mark.parametrize("expires", ["0", "-1", "yesterday", ""])
def test_invalid_expires_is_already_expired(expires: str) -> None:
    assert freshness_lifetime(h(("Expires", expires)), TTL, NOW) == 0


def test_expires_in_the_past_is_zero_not_negative() -> None:
    headers = h(("Date", http_date(NOW)), ("Expires", http_date(NOW - 50)))
    assert freshness_lifetime(headers, DEFAULT, NOW) == 0


def test_several_expires_lines_the_first_counts() -> None:
    # §4.2.1: the first occurrence, as for Cache-Control directives.
    headers = h(("Expires", http_date(NOW + 60)), ("Expires", http_date(NOW + 120)))
    assert freshness_lifetime(headers, DEFAULT, NOW) == 60
    invalid_first = h(("Expires", "0"), ("Expires", http_date(NOW + 120)))
    assert freshness_lifetime(invalid_first, TTL, NOW) == 0


def test_route_ttl_used_when_origin_gives_nothing() -> None:
    assert freshness_lifetime(h(), CacheRules(ttl=45), NOW) == 45
    # ...but origin freshness wins without force_ttl.
    assert freshness_lifetime(h(("Cache-Control", "max-age=5")), CacheRules(ttl=45), NOW) == 5


def test_force_ttl_overrides_origin_freshness() -> None:
    rules = CacheRules(ttl=45, force_ttl=True)
    headers = h(("Cache-Control", "s-maxage=5, max-age=1"), ("Expires", "0"))
    assert freshness_lifetime(headers, rules, NOW) == 45


def test_force_ttl_without_ttl_is_inert() -> None:
    rules = CacheRules(force_ttl=True)
    assert freshness_lifetime(h(("Cache-Control", "max-age=7")), rules, NOW) == 7


def test_must_understand_no_store_keeps_its_freshness() -> None:
    headers = h(("Cache-Control", "must-understand, no-store, max-age=60"))
    assert freshness_lifetime(headers, DEFAULT, NOW) == 60
    assert freshness_lifetime(h(("Cache-Control", "no-store, max-age=60")), DEFAULT, NOW) == 0


def test_no_cache_is_always_zero_even_with_force_ttl() -> None:
    headers = h(("Cache-Control", "no-cache, max-age=600"))
    assert freshness_lifetime(headers, CacheRules(ttl=60, force_ttl=True), NOW) == 0
    assert freshness_lifetime(headers, DEFAULT, NOW) == 0


def test_heuristic_is_a_fraction_of_last_modified_age() -> None:
    headers = h(("Date", http_date(NOW)), ("Last-Modified", http_date(NOW - 1000)))
    assert freshness_lifetime(headers, DEFAULT, NOW) == pytest.approx(100)
    rules = CacheRules(heuristic_fraction=0.5)
    assert freshness_lifetime(headers, rules, NOW) == pytest.approx(500)


def test_heuristic_is_capped() -> None:
    headers = h(("Last-Modified", http_date(NOW - 10 * 86400 * 100)))
    assert freshness_lifetime(headers, DEFAULT, NOW) == 86400
    assert freshness_lifetime(headers, CacheRules(heuristic_max=60), NOW) == 60


def test_heuristic_ignores_invalid_last_modified_and_date() -> None:
    headers = h(("Date", http_date(NOW)), ("Last-Modified", NEAR_MISS_DATE))
    assert freshness_lifetime(headers, DEFAULT, NOW) == 0
    # An invalid Date is ignored too: the time the response arrived stands in (§4.2.3).
    headers = h(("Date", "Tue, 14 Nov 2023 21:13:20"), ("Last-Modified", http_date(NOW - 1000)))
    assert freshness_lifetime(headers, DEFAULT, NOW) == pytest.approx(100)


def test_expires_and_date_near_misses() -> None:
    # Expires that email.utils would read as a future date is invalid, so already expired.
    assert freshness_lifetime(h(("Expires", NEAR_MISS_DATE.replace("UTC", "+0000"))), TTL,
                              NOW - 1000) == 0  # fmt: skip
    asctime = time.strftime("%a %b %e %H:%M:%S %Y", time.gmtime(NOW + 90))
    assert freshness_lifetime(h(("Expires", asctime)), DEFAULT, NOW) == 90


def test_heuristic_ignores_future_last_modified() -> None:
    headers = h(("Date", http_date(NOW)), ("Last-Modified", http_date(NOW + 1000)))
    assert freshness_lifetime(headers, DEFAULT, NOW) == 0


def test_heuristic_only_for_heuristic_statuses_or_public() -> None:
    headers = h(("Last-Modified", http_date(NOW - 1000)))
    assert freshness_lifetime(headers, DEFAULT, NOW, status=404) == pytest.approx(100)
    assert freshness_lifetime(headers, DEFAULT, NOW, status=500) == 0
    public = h(("Cache-Control", "public"), ("Last-Modified", http_date(NOW - 1000)))
    assert freshness_lifetime(public, DEFAULT, NOW, status=500) == pytest.approx(100)


def test_no_information_means_zero() -> None:
    assert freshness_lifetime(h(), DEFAULT, NOW) == 0


def test_cdn_cache_control_governs_freshness_and_hides_expires() -> None:
    headers = h(
        ("Cache-Control", "s-maxage=10"),
        ("CDN-Cache-Control", "max-age=300"),
        ("Expires", http_date(NOW + 5)),
    )
    assert freshness_lifetime(headers, DEFAULT, NOW) == 300
    # Only Expires plus a CDN field without freshness: Expires is ignored.
    hidden = h(("CDN-Cache-Control", "public"), ("Expires", http_date(NOW + 5)))
    assert freshness_lifetime(hidden, CacheRules(ttl=42), NOW) == 42


# ---------------------------------------------------------------------------
# Age (§4.2.3)
# ---------------------------------------------------------------------------


def test_initial_age_adds_response_delay_to_upstream_age() -> None:
    headers = h(("Age", "30"), ("Date", http_date(NOW)))
    assert initial_age(headers, request_time=NOW, response_time=NOW + 2) == 32


def test_initial_age_uses_apparent_age_when_larger() -> None:
    headers = h(("Age", "5"), ("Date", http_date(NOW - 100)))
    assert initial_age(headers, request_time=NOW - 1, response_time=NOW) == 100


AGES = [
    # id, Age field lines, the age value used (§5.1)
    ("plain", ["30"], 30),
    ("zero-padded", ["0030"], 30),
    ("huge", ["9" * 40], DELTA_MAX),
    ("list-first-member", ["10, 40"], 10),
    ("lines-first-line", ["20", "40"], 20),
    ("list-and-lines", ["10, 40", "20"], 10),
    ("empty-members-skipped", [" , 15", "40"], 15),
    ("empty-line-skipped", ["", "25"], 25),
    ("invalid-first-ignores-field", ["abc, 40"], 0),
    ("invalid-first-line", ["x", "40"], 0),
    ("negative", ["-5"], 0),
    ("decimal", ["1.5"], 0),
    ("trailing-garbage", ["10s"], 0),
    ("quoted", ['"10"'], 0),
    ("non-ascii-digits", ["\u0663"], 0),
    ("empty", [""], 0),
]  # fmt: skip


@pytest.mark.parametrize(
    ("lines", "expected"), [case[1:] for case in AGES], ids=[case[0] for case in AGES]
)
def test_age_value(lines: list[str], expected: int) -> None:
    headers = h(("Date", http_date(NOW)), *(("Age", line) for line in lines))
    assert initial_age(headers, request_time=NOW, response_time=NOW) == expected


def test_missing_date_means_no_apparent_age() -> None:
    assert initial_age(h(), request_time=NOW - 3, response_time=NOW) == 3


def test_date_value_helper() -> None:
    assert date_value(h(("Date", http_date(NOW - 9))), NOW) == NOW - 9
    assert date_value(h(("Date", "garbage")), NOW) == NOW


def test_current_age_adds_resident_time() -> None:
    assert current_age(10.0, response_time=NOW, now=NOW + 50) == 60
    # A clock stepping backwards never makes the entry younger.
    assert current_age(10.0, response_time=NOW, now=NOW - 50) == 10


# ---------------------------------------------------------------------------
# lookup_verdict / stale_if_error_allowed (§4.2.4, §5.2.1, RFC 5861)
# ---------------------------------------------------------------------------

F = Freshness
NO_REQ = EMPTY_CACHE_CONTROL
SWR_RULES = CacheRules(stale_while_revalidate=30, stale_if_error=300)

VERDICTS = [
    # id, age, lifetime, request Cache-Control, response Cache-Control, rules, expected
    ("fresh", 10, 60, "", "max-age=60", DEFAULT, F.FRESH),
    ("exactly-expired", 60, 60, "", "max-age=60", DEFAULT, F.MUST_REVALIDATE),
    ("stale-no-windows", 70, 60, "", "max-age=60", DEFAULT, F.MUST_REVALIDATE),
    ("resp-no-cache", 0, 0, "", "no-cache", SWR_RULES, F.MUST_REVALIDATE),
    ("req-no-cache-fresh", 10, 60, "no-cache", "max-age=60", DEFAULT, F.STALE_IF_ERROR_ONLY),
    ("req-no-cache-stale", 100, 60, "no-cache", "max-age=60", DEFAULT, F.MUST_REVALIDATE),
    ("req-max-age-ok", 10, 60, "max-age=20", "max-age=60", DEFAULT, F.FRESH),
    ("req-max-age-too-old", 30, 60, "max-age=20", "max-age=60", DEFAULT, F.STALE_IF_ERROR_ONLY),
    ("req-max-age-0", 0.5, 60, "max-age=0", "", DEFAULT, F.STALE_IF_ERROR_ONLY),
    ("req-min-fresh-ok", 10, 60, "min-fresh=30", "", DEFAULT, F.FRESH),
    ("req-min-fresh-short", 40, 60, "min-fresh=30", "", DEFAULT, F.STALE_IF_ERROR_ONLY),
    ("req-min-fresh-no-swr", 70, 60, "min-fresh=1", "", SWR_RULES, F.STALE_IF_ERROR_ONLY),
    ("max-stale-within", 70, 60, "max-stale=20", "max-age=60", DEFAULT, F.FRESH),
    ("max-stale-any", 10**6, 60, "max-stale", "max-age=60", DEFAULT, F.FRESH),
    ("max-stale-beyond", 90, 60, "max-stale=20", "max-age=60", DEFAULT, F.MUST_REVALIDATE),
    ("max-stale-beyond-route-sie", 90, 60, "max-stale=20", "", SWR_RULES, F.STALE_IF_ERROR_ONLY),
    ("max-stale-vs-must-revalidate", 70, 60, "max-stale=20", "must-revalidate", DEFAULT,
     F.MUST_REVALIDATE),
    ("max-stale-vs-proxy-revalidate", 70, 60, "max-stale=20", "proxy-revalidate", DEFAULT,
     F.MUST_REVALIDATE),
    ("max-stale-vs-s-maxage", 70, 60, "max-stale=20", "s-maxage=60", DEFAULT,
     F.MUST_REVALIDATE),
    ("s-maxage-keeps-route-swr", 70, 60, "", "s-maxage=60", SWR_RULES,
     F.STALE_WHILE_REVALIDATE),
    ("route-swr", 80, 60, "", "max-age=60", SWR_RULES, F.STALE_WHILE_REVALIDATE),
    ("route-swr-expired-then-sie", 95, 60, "", "max-age=60", SWR_RULES, F.STALE_IF_ERROR_ONLY),
    ("origin-swr-larger", 150, 60, "", "max-age=60, stale-while-revalidate=100", SWR_RULES,
     F.STALE_WHILE_REVALIDATE),
    ("swr-vs-must-revalidate", 80, 60, "", "max-age=60, must-revalidate", SWR_RULES,
     F.MUST_REVALIDATE),
    ("swr-vs-proxy-revalidate", 80, 60, "", "proxy-revalidate", SWR_RULES, F.MUST_REVALIDATE),
    ("origin-sie", 500, 60, "", "max-age=60, stale-if-error=1000", DEFAULT,
     F.STALE_IF_ERROR_ONLY),
    ("beyond-all-windows", 10**5, 60, "", "max-age=60", SWR_RULES, F.MUST_REVALIDATE),
    ("req-no-cache-with-swr", 80, 60, "no-cache", "", SWR_RULES, F.STALE_IF_ERROR_ONLY),
]  # fmt: skip


@pytest.mark.parametrize(
    ("age", "lifetime", "req", "response", "rules", "expected"),
    [case[1:] for case in VERDICTS],
    ids=[case[0] for case in VERDICTS],
)
def test_lookup_verdict(
    age: float,
    lifetime: float,
    req: str,
    response: str,
    rules: CacheRules,
    expected: Freshness,
) -> None:
    verdict = lookup_verdict(
        age=age,
        lifetime=lifetime,
        request_cc=cc(req),
        response_cc=cc(response),
        rules=rules,
    )
    assert verdict is expected


def test_lookup_verdict_with_pragma_request() -> None:
    request = request_cache_control(h(("Pragma", "no-cache")))
    verdict = lookup_verdict(
        age=1, lifetime=60, request_cc=request, response_cc=NO_REQ, rules=DEFAULT
    )
    assert verdict is F.STALE_IF_ERROR_ONLY


SIE = [
    # id, age, lifetime, response, rules, request, allowed
    ("fresh", 10, 60, "", DEFAULT, None, True),
    ("stale-no-window", 61, 60, "", DEFAULT, None, False),
    ("route-window", 200, 60, "", CacheRules(stale_if_error=300), None, True),
    ("route-window-exceeded", 400, 60, "", CacheRules(stale_if_error=300), None, False),
    ("origin-window-larger", 400, 60, "stale-if-error=600", CacheRules(stale_if_error=300), None,
     True),
    ("request-window", 100, 60, "", DEFAULT, "stale-if-error=60", True),
    ("request-max-stale", 100, 60, "", DEFAULT, "max-stale=60", True),
    ("request-window-vs-s-maxage", 100, 60, "s-maxage=60", DEFAULT, "stale-if-error=60", False),
    ("route-window-with-s-maxage", 100, 60, "s-maxage=60", CacheRules(stale_if_error=300), None,
     True),
    ("must-revalidate", 100, 60, "must-revalidate", CacheRules(stale_if_error=300), None, False),
    ("proxy-revalidate", 100, 60, "proxy-revalidate", CacheRules(stale_if_error=300), None, False),
    ("no-cache-even-fresh", 0, 0, "no-cache", CacheRules(stale_if_error=300), None, False),
    ("must-revalidate-fresh", 10, 60, "must-revalidate", DEFAULT, None, True),
]  # fmt: skip


@pytest.mark.parametrize(
    ("age", "lifetime", "response", "rules", "req", "allowed"),
    [case[1:] for case in SIE],
    ids=[case[0] for case in SIE],
)
def test_stale_if_error_allowed(
    age: float,
    lifetime: float,
    response: str,
    rules: CacheRules,
    req: str | None,
    allowed: bool,
) -> None:
    request_cc = None if req is None else cc(req)
    assert stale_if_error_allowed(age, lifetime, cc(response), rules, request_cc) is allowed


# ---------------------------------------------------------------------------
# Validation (§4.3)
# ---------------------------------------------------------------------------


def test_conditional_headers_from_validators() -> None:
    lm = http_date(NOW - 60)
    stored = h(("ETag", ' W/"v1" '), ("Last-Modified", lm), ("Content-Type", "text/plain"))
    assert conditional_headers(stored) == {"If-None-Match": 'W/"v1"', "If-Modified-Since": lm}
    assert conditional_headers(h(("ETag", '"x"'))) == {"If-None-Match": '"x"'}
    assert conditional_headers(h(("Date", lm))) == {}
    # An invalid Last-Modified is ignored: it would ask the origin a question it can't read.
    assert conditional_headers(h(("Last-Modified", NEAR_MISS_DATE))) == {}
    assert conditional_headers(h(("Last-Modified", "0"), ("ETag", '"x"'))) == {
        "If-None-Match": '"x"'
    }


STORED_ETAG = h(("ETag", '"abc"'), ("Last-Modified", http_date(NOW - 100)))
STORED_WEAK = h(("ETag", 'W/"abc"'))

CONDITIONALS = [
    # id, request headers, stored headers, 304?
    ("inm-strong-match", [("If-None-Match", '"abc"')], STORED_ETAG, True),
    ("inm-weak-request", [("If-None-Match", 'W/"abc"')], STORED_ETAG, True),
    ("inm-weak-stored", [("If-None-Match", '"abc"')], STORED_WEAK, True),
    ("inm-list", [("If-None-Match", '"x", W/"y" ,"abc"')], STORED_ETAG, True),
    ("inm-lines", [("If-None-Match", '"x"'), ("If-None-Match", '"abc"')], STORED_ETAG, True),
    ("inm-comma-inside-tag", [("If-None-Match", '"a,bc", "zz"')], STORED_ETAG, False),
    ("inm-comma-tag-match", [("If-None-Match", '"q", "a,b"')], h(("ETag", '"a,b"')), True),
    ("inm-mismatch", [("If-None-Match", '"abd"')], STORED_ETAG, False),
    ("inm-star", [("If-None-Match", "*")], h(), True),
    ("inm-no-stored-etag", [("If-None-Match", '"abc"')], h(), False),
    ("inm-unquoted-no-match", [("If-None-Match", "abc")], STORED_ETAG, False),
    ("inm-beats-ims", [("If-None-Match", '"nope"'), ("If-Modified-Since", http_date(NOW))],
     STORED_ETAG, False),
    ("ims-newer", [("If-Modified-Since", http_date(NOW))], STORED_ETAG, True),
    ("ims-equal", [("If-Modified-Since", http_date(NOW - 100))], STORED_ETAG, True),
    ("ims-older", [("If-Modified-Since", http_date(NOW - 200))], STORED_ETAG, False),
    ("ims-garbage", [("If-Modified-Since", "yesterday")], STORED_ETAG, False),
    ("ims-uses-date", [("If-Modified-Since", http_date(NOW))], h(("Date", http_date(NOW - 5))),
     True),
    ("ims-no-dates", [("If-Modified-Since", http_date(NOW))], h(), False),
    # An invalid Last-Modified is ignored, so Date decides (RFC 9111 §4.3.2).
    ("ims-invalid-last-modified", [("If-Modified-Since", http_date(NOW))],
     h(("Last-Modified", NEAR_MISS_DATE), ("Date", http_date(NOW + 50))), False),
    ("ims-invalid", [("If-Modified-Since", NEAR_MISS_DATE)], STORED_ETAG, False),
    ("unconditional", [], STORED_ETAG, False),
]  # fmt: skip


@pytest.mark.parametrize(
    ("request_headers", "stored", "expected"),
    [case[1:] for case in CONDITIONALS],
    ids=[case[0] for case in CONDITIONALS],
)
def test_not_modified_for_client(
    request_headers: list[tuple[str, str]], stored: CIMultiDict[str], expected: bool
) -> None:
    assert not_modified_for_client(h(*request_headers), stored) is expected


def test_merge_304_replaces_fields_but_not_content_length() -> None:
    stored = h(
        ("Content-Type", "text/plain"),
        ("Content-Length", "42"),
        ("Content-Encoding", "gzip"),
        ("ETag", '"v1"'),
        ("Link", "<a>"),
        ("Link", "<b>"),
        ("X-Keep", "yes"),
    )
    fresh = h(
        ("etag", '"v2"'),
        ("Content-Length", "0"),
        ("Content-Encoding", "identity"),
        ("Link", "<c>"),
        ("Cache-Control", "max-age=10"),
        ("Cache-Control", "public"),
    )
    merged = merge_304_headers(stored, CIMultiDictProxy(fresh))
    assert merged["ETag"] == '"v2"'
    assert merged.getall("Link") == ["<c>"]
    assert merged.getall("Cache-Control") == ["max-age=10", "public"]
    assert merged["Content-Length"] == "42"
    assert merged["Content-Encoding"] == "gzip"
    assert merged["X-Keep"] == "yes"
    assert stored["ETag"] == '"v1"'  # input untouched
    assert isinstance(merged, CIMultiDict)


# ---------------------------------------------------------------------------
# Vary (§4.1)
# ---------------------------------------------------------------------------


def test_vary_fields_normalised() -> None:
    headers = h(("Vary", "Accept-Encoding, accept-language"), ("Vary", " ACCEPT-ENCODING ,Origin"))
    assert vary_fields(headers) == ("accept-encoding", "accept-language", "origin")
    assert vary_fields(h()) == ()
    assert vary_fields(h(("Vary", " , "))) == ()
    assert vary_fields(h(("Vary", "Accept"), ("Vary", "*"))) is None


def test_vary_key_normalises_whitespace_and_lines() -> None:
    fields = ("accept-encoding", "accept-language")
    a = vary_key(fields, h(("Accept-Encoding", "gzip,br"), ("Accept-Language", " en ")))
    b = vary_key(
        fields,
        h(("accept-encoding", "gzip"), ("Accept-Encoding", " br"), ("Accept-Language", "en")),
    )
    assert a == b == ("gzip, br", "en")


def test_vary_key_distinguishes_values_and_absence() -> None:
    fields = ("accept-language",)
    assert vary_key(fields, h(("Accept-Language", "en"))) != vary_key(
        fields, h(("Accept-Language", "de"))
    )
    absent = vary_key(fields, h())
    empty = vary_key(fields, h(("Accept-Language", "")))
    assert absent == (VARY_ABSENT,)
    assert empty == ("",)
    assert absent != empty
    assert vary_key((), h(("Accept", "x"))) == ()


def test_vary_key_keeps_field_order() -> None:
    headers = h(("A", "1"), ("B", "2"))
    assert vary_key(("b", "a"), headers) == ("2", "1")


# ---------------------------------------------------------------------------
# Invalidation (§4.4)
# ---------------------------------------------------------------------------

INVALIDATION = [
    # id, method, status, target, response headers, expected
    ("get-never", "GET", 200, "/a", [("Location", "/b")], []),
    ("head-never", "HEAD", 200, "/a", [], []),
    ("options-never", "OPTIONS", 204, "/a", [], []),
    ("post-ok", "POST", 201, "/items?x=1", [], ["/items?x=1"]),
    ("delete-redirect", "DELETE", 303, "/a", [], ["/a"]),
    ("custom-method", "PURGEISH", 200, "/a", [], ["/a"]),
    ("error-status", "PUT", 404, "/a", [("Location", "/b")], []),
    ("server-error", "POST", 500, "/a", [], []),
    ("informational", "POST", 100, "/a", [], []),
    ("relative-location", "POST", 201, "/items", [("Location", "/items/7?v=2")],
     ["/items", "/items/7?v=2"]),
    ("path-relative", "POST", 201, "/items/new", [("Location", "7")], ["/items/new", "/items/7"]),
    ("dot-segments", "POST", 201, "/a/b/c", [("Location", "../x")], ["/a/b/c", "/a/x"]),
    ("absolute-same-host", "PUT", 200, "/a", [("Content-Location", "https://API.example.com/b")],
     ["/a", "/b"]),
    ("absolute-default-port", "PUT", 200, "/a", [("Location", "http://api.example.com:80/c")],
     ["/a", "/c"]),
    ("absolute-other-host", "PUT", 200, "/a", [("Location", "https://evil.example/b")], ["/a"]),
    ("other-port", "PUT", 200, "/a", [("Location", "http://api.example.com:8080/b")], ["/a"]),
    ("scheme-relative-other", "PUT", 200, "/a", [("Location", "//other.example/b")], ["/a"]),
    ("non-http-scheme", "PUT", 200, "/a", [("Location", "ftp://api.example.com/b")], ["/a"]),
    ("both-and-dedup", "PATCH", 200, "/a", [("Location", "/b"), ("Content-Location", "/b"),
     ("Content-Location", "/a")], ["/a", "/b"]),
    ("fragment-dropped", "POST", 200, "/a", [("Location", "/b#frag")], ["/a", "/b"]),
    ("empty-location", "POST", 200, "/a", [("Location", "  ")], ["/a"]),
    ("bad-ipv6", "POST", 200, "/a", [("Location", "http://[::1/x")], ["/a"]),
    ("empty-target", "POST", 200, "", [], ["/"]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("method", "status", "target", "resp", "expected"),
    [case[1:] for case in INVALIDATION],
    ids=[case[0] for case in INVALIDATION],
)
def test_invalidation_targets(
    method: str,
    status: int,
    target: str,
    resp: list[tuple[str, str]],
    expected: list[str],
) -> None:
    assert invalidation_targets(method, status, target, h(*resp), "api.example.com") == expected


def test_invalidation_request_host_with_port() -> None:
    got = invalidation_targets(
        "POST", 200, "/a", h(("Location", "http://localhost:8080/b")), "LOCALHOST:8080"
    )
    assert got == ["/a", "/b"]


# ---------------------------------------------------------------------------
# Methods
# ---------------------------------------------------------------------------


def test_method_helpers() -> None:
    assert all(is_unsafe_method(m) for m in ("POST", "PUT", "PATCH", "DELETE", "PROPFIND"))
    assert not any(is_unsafe_method(m) for m in SAFE_METHODS)
    assert is_unsafe_method("get")  # methods are case-sensitive (RFC 9110 §9.1)
