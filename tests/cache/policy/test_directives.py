"""Cache-Control, CDN-Cache-Control and Pragma parsing (RFC 9111 §5.2, §5.4; RFC 9213): pure."""

from __future__ import annotations

import http_sf
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDictProxy

from proxy.cache.policy.directives import (
    DELTA_MAX,
    EMPTY_CACHE_CONTROL,
    MAX_STALE_ANY,
    CacheControl,
    effective_cache_control,
    parse_cache_control,
    request_cache_control,
)
from proxy.cache.policy.freshness import freshness_lifetime
from proxy.cache.policy.storable import StoreDecision, storability
from tests.cache.policy.samples import DEFAULT, NOW, cc, h, http_date


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
