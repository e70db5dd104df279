"""Direct tests of proxy.cache.keys (cache key building)."""

from __future__ import annotations

import hashlib
import hmac
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy

from proxy.cache.keys import (
    ANONYMOUS,
    KeyBuilder,
    KeyRules,
    hash_secret,
    normalise_query,
    url_part,
)


def h(*pairs: tuple[str, str]) -> CIMultiDict[str]:
    return CIMultiDict(pairs)


IGNORE = KeyRules(query_ignore=("utm_*", "_", "fb?lid", "[xy]id"))

# ---------------------------------------------------------------------------
# normalise_query
# ---------------------------------------------------------------------------

QUERIES = [
    # id, raw query, rules, expected
    ("empty", "", KeyRules(), ""),
    ("sorted", "b=2&a=1", KeyRules(), "a=1&b=2"),
    ("sort-by-name-then-value", "a=2&a-b=0&a=1", KeyRules(), "a=1&a=2&a-b=0"),
    ("unsorted-kept-order", "b=2&a=1", KeyRules(query_sort=False), "b=2&a=1"),
    ("drop-empty-parts", "&&a=1&&b=2&", KeyRules(query_sort=False), "a=1&b=2"),
    ("only-empties", "&&&", KeyRules(), ""),
    ("bare-and-empty-value", "a=&a", KeyRules(), "a&a="),
    ("prefix-glob", "utm_source=x&id=3&utm_medium=y", IGNORE, "id=3"),
    ("exact", "_=1700000000&q=z", IGNORE, "q=z"),
    ("exact-does-not-prefix", "__=1&_x=2", IGNORE, "__=1&_x=2"),
    ("question-mark-glob", "fbclid=1&fbxlid=2&fbxxlid=3", IGNORE, "fbxxlid=3"),
    ("bracket-glob", "xid=1&yid=2&zid=3", IGNORE, "zid=3"),
    ("case-sensitive", "UTM_source=1", IGNORE, "UTM_source=1"),
    ("percent-decoded-name", "utm%5Fsource=1&q%20x=2", IGNORE, "q%20x=2"),
    ("bytes-kept", "q=a%20b+c&z=%E2%82%AC", KeyRules(), "q=a%20b+c&z=%E2%82%AC"),
    ("no-reencoding", "b=%zz&a=caf\u00e9", KeyRules(), "a=caf\u00e9&b=%zz"),
    ("value-equals-signs", "a=b=c&a=b", KeyRules(), "a=b&a=b=c"),
    ("star-drops-all", "a=1&b=2", KeyRules(query_ignore=("*",)), ""),
]  # fmt: skip


@pytest.mark.parametrize(
    ("raw", "rules", "expected"),
    [case[1:] for case in QUERIES],
    ids=[case[0] for case in QUERIES],
)
def test_normalise_query(raw: str, rules: KeyRules, expected: str) -> None:
    assert normalise_query(raw, rules) == expected
    assert KeyBuilder(rules).normalise_query(raw) == expected


_NAMES = st.sampled_from(["a", "b", "utm_x", "utm_", "_", "q%5F", "utm%5Fy", "A", "id", ""])
_VALUES = st.sampled_from(["", "1", "2", "x%20y", "+", "=", "caf\u00e9", "%zz"])
_PART = st.one_of(
    st.tuples(_NAMES, _VALUES).map(lambda nv: f"{nv[0]}={nv[1]}"),
    _NAMES,
    st.text(alphabet=st.characters(blacklist_characters="&"), max_size=8),
)
_QUERY_PARTS = st.lists(_PART, max_size=8)
_RULES = st.builds(
    KeyRules,
    query_ignore=st.sampled_from([(), ("utm_*", "_"), ("a",), ("[ab]", "q?")]),
    query_sort=st.booleans(),
)


@settings(max_examples=200, deadline=None)
@given(parts=_QUERY_PARTS, rules=_RULES)
def test_normalise_is_idempotent(parts: list[str], rules: KeyRules) -> None:
    once = normalise_query("&".join(parts), rules)
    assert normalise_query(once, rules) == once


@settings(max_examples=200, deadline=None)
@given(parts=_QUERY_PARTS, rules=_RULES, data=st.data())
def test_normalise_is_order_insensitive_when_sorting(
    parts: list[str], rules: KeyRules, data: st.DataObject
) -> None:
    sorting = KeyRules(query_ignore=rules.query_ignore, query_sort=True)
    shuffled = data.draw(st.permutations(parts))
    assert normalise_query("&".join(parts), sorting) == normalise_query("&".join(shuffled), sorting)


@settings(max_examples=200, deadline=None)
@given(parts=_QUERY_PARTS, rules=_RULES)
def test_normalise_keeps_non_ignored_parts_byte_for_byte(parts: list[str], rules: KeyRules) -> None:
    out = normalise_query("&".join(parts), rules)
    kept = out.split("&") if out else []
    builder = KeyBuilder(rules)
    expected = [p for p in parts if p and not builder._ignored(p.partition("=")[0])]
    # Same multiset of parts, each unchanged; order only changes when sorting.
    assert Counter(kept) == Counter(expected)
    if not rules.query_sort:
        assert kept == expected


@settings(max_examples=300, deadline=None)
@given(raw=st.text(max_size=60), rules=_RULES)
def test_normalise_never_raises(raw: str, rules: KeyRules) -> None:
    assert isinstance(normalise_query(raw, rules), str)


# ---------------------------------------------------------------------------
# strip_ignored: the query the origin gets on a fetch through the cache
# ---------------------------------------------------------------------------

STRIPS = [
    # id, raw query, expected
    ("nothing-ignored", "b=2&a=1", "b=2&a=1"),
    ("empty", "", ""),
    ("prefix-glob", "utm_source=x&id=3&utm_medium=y", "id=3"),
    ("order-kept", "b=2&utm_x=1&a=1", "b=2&a=1"),
    ("bytes-kept", "q=a%20b+c&utm_x=1&z=%E2%82%AC&e=%zz", "q=a%20b+c&z=%E2%82%AC&e=%zz"),
    ("empty-parts-kept", "a=1&&utm_x=1&b&", "a=1&&b&"),
    ("bare-names", "_&a&_=1", "a"),
    ("exact-does-not-prefix", "__=1&_x=2", "__=1&_x=2"),
    ("globs", "fbclid=1&fbxxlid=3&xid=1&zid=3", "fbxxlid=3&zid=3"),
    ("percent-encoded-name", "utm%5Fsource=1&q%20x=2", "q%20x=2"),
    ("case-sensitive", "UTM_source=1", "UTM_source=1"),
    ("all-ignored", "utm_a=1&_=2", ""),
    ("value-looks-ignored", "a=utm_x&b=_", "a=utm_x&b=_"),
    ("semicolon-is-not-a-separator", "a=1;utm_x=2&utm_y=3", "a=1;utm_x=2"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("raw", "expected"), [case[1:] for case in STRIPS], ids=[case[0] for case in STRIPS]
)
def test_strip_ignored(raw: str, expected: str) -> None:
    assert KeyBuilder(IGNORE).strip_ignored(raw) == expected


def test_strip_ignored_without_patterns_returns_the_query_itself() -> None:
    raw = "utm_source=x&b=2"
    assert KeyBuilder(KeyRules()).strip_ignored(raw) is raw
    assert KeyBuilder(IGNORE).strip_ignored("a=1&b=2") == "a=1&b=2"


@settings(max_examples=300, deadline=None)
@given(parts=_QUERY_PARTS, rules=_RULES)
def test_strip_keeps_the_key_and_drops_only_ignored_parts(
    parts: list[str], rules: KeyRules
) -> None:
    builder = KeyBuilder(rules)
    raw = "&".join(parts)
    stripped = builder.strip_ignored(raw)
    # The origin is asked for exactly what the key stands for ...
    assert builder.normalise_query(stripped) == builder.normalise_query(raw)
    # ... with every other part as sent, in order, and nothing ignored left.
    assert stripped == "&".join(p for p in parts if not (p and builder._ignored(p.split("=")[0])))
    assert builder.strip_ignored(stripped) == stripped


# ---------------------------------------------------------------------------
# hash_secret
# ---------------------------------------------------------------------------


def test_hash_secret_is_truncated_sha256_hex() -> None:
    digest = hash_secret("Bearer abc")
    assert digest == hashlib.sha256(b"Bearer abc").hexdigest()[:32]
    assert len(digest) == 32 and int(digest, 16) >= 0
    assert hash_secret("Bearer abc") == digest
    assert hash_secret("Bearer abd") != digest


def test_hash_secret_accepts_surrogates() -> None:
    # aiohttp decodes non-UTF-8 header bytes with surrogateescape.
    assert len(hash_secret("tok\udcff")) == 32
    assert hash_secret("tok\udcff") != hash_secret("tok\udcfe")


# ---------------------------------------------------------------------------
# url_key / primary_key
# ---------------------------------------------------------------------------


def test_url_key_format() -> None:
    builder = KeyBuilder(IGNORE)
    # The origin comes normalised (UpstreamTarget.key_origin): never lower-cased again here,
    # since a base path in it is case-sensitive.
    assert builder.url_key("api.example.com/Base", "/Items", "b=2&utm_x=1&a=1") == (
        "api.example.com/Base/Items?a=1&b=2"
    )
    assert builder.url_key("h", "/p", "") == "h/p?"
    assert builder.url_key("h", "", "") == "h/?"


def test_url_key_escapes_separator() -> None:
    builder = KeyBuilder(KeyRules())
    key = builder.url_key("h", "/a|b", "x=1|2")
    assert key == "h/a%7Cb?x=1%7C2"
    assert "|" not in key


def test_primary_key_without_extras_is_the_url_key() -> None:
    builder = KeyBuilder(KeyRules())
    headers = h(("Authorization", "Bearer secret"))
    assert builder.primary_key("h", "/a", "", headers) == "h/a?"


def test_primary_key_header_segments() -> None:
    builder = KeyBuilder(KeyRules(headers=("Accept-Language", "X-Tenant")))
    key = builder.primary_key(
        "h", "/a", "q=1", h(("accept-language", "en,fr"), ("Accept-Language", " de"))
    )
    assert key == "h/a?q=1|h:accept-language=en, fr, de|h:x-tenant"


def test_primary_key_absent_differs_from_empty() -> None:
    builder = KeyBuilder(KeyRules(headers=("X-Tenant",)))
    absent = builder.primary_key("h", "/", "", h())
    empty = builder.primary_key("h", "/", "", h(("X-Tenant", "")))
    assert absent != empty
    assert absent.endswith("|h:x-tenant") and empty.endswith("|h:x-tenant=")


def test_primary_key_header_values_cannot_forge_segments() -> None:
    builder = KeyBuilder(KeyRules(headers=("A", "B")))
    forged = builder.primary_key("h", "/", "", h(("A", "1|h:b=2")))
    honest = builder.primary_key("h", "/", "", h(("A", "1"), ("B", "2")))
    assert forged != honest
    escaped = builder.primary_key("h", "/", "", h(("A", "1%7Ch:b=2")))
    assert escaped != forged


def test_secret_headers_are_hashed_never_in_clear() -> None:
    builder = KeyBuilder(KeyRules(headers=("Authorization", "Cookie", "X-Api-Key"),
                                  per_user_header="X-Api-Key"))  # fmt: skip
    headers = h(("Authorization", "Bearer tok123"), ("Cookie", "sid=s3cr3t"), ("X-Api-Key", "k9"))
    key = builder.primary_key("h", "/", "", headers)
    for secret in ("tok123", "s3cr3t", "k9"):
        assert secret not in key
    assert f"h:authorization={hash_secret('Bearer tok123')}" in key
    assert key.endswith(f"|u:{hash_secret('k9')}")


def test_per_user_scope() -> None:
    builder = KeyBuilder(KeyRules(per_user_header="Authorization"))
    alice = builder.primary_key("h", "/me", "", h(("Authorization", "Bearer alice")))
    bob = builder.primary_key("h", "/me", "", h(("Authorization", "Bearer bob")))
    anon = builder.primary_key("h", "/me", "", h())
    blank = builder.primary_key("h", "/me", "", h(("Authorization", "  ")))
    assert alice != bob
    assert "alice" not in alice
    assert anon == blank == f"h/me?|u:{ANONYMOUS}"
    assert alice == f"h/me?|u:{hash_secret('Bearer alice')}"


def test_per_user_accepts_proxy_headers() -> None:
    builder = KeyBuilder(KeyRules(per_user_header="X-Api-Key"))
    key = builder.primary_key("h", "/", "", CIMultiDictProxy(h(("x-api-key", "abc"))))
    assert key.endswith(hash_secret("abc"))


def test_url_part_finds_every_variant_of_a_url() -> None:
    builder = KeyBuilder(
        KeyRules(headers=("Accept-Language",), per_user_header="Authorization", query_ignore=("_",))
    )
    url = builder.url_key("h", "/a|x", "z=1&_=9&b=2")
    variants = [
        builder.primary_key("h", "/a|x", "b=2&z=1", h()),
        builder.primary_key("h", "/a|x", "_=1&b=2&z=1", h(("Authorization", "Bearer q"))),
        builder.primary_key("h", "/a|x", "z=1&b=2", h(("Accept-Language", "a|b"))),
    ]
    for key in variants:
        assert url_part(key) == url
        assert key.startswith(url + "|")
    assert url_part(url) == url
    assert url_part(builder.primary_key("h", "/a|x", "b=3", h())) != url


def test_url_prefix_matches_keys_under_a_path() -> None:
    builder = KeyBuilder(KeyRules())
    prefix = builder.url_prefix("api.example.com", "/v1/")
    assert prefix == "api.example.com/v1/"
    assert builder.url_key("api.example.com", "/v1/items", "").startswith(prefix)
    assert not builder.url_key("api.example.com", "/v2/items", "").startswith(prefix)
    assert builder.url_prefix("h", "/a|") == "h/a%7C"


def test_hash_secret_with_a_key_is_hmac() -> None:
    expected = hmac.new(b"k" * 16, b"Bearer abc", hashlib.sha256).hexdigest()[:32]
    assert hash_secret("Bearer abc", b"k" * 16) == expected
    assert hash_secret("Bearer abc", b"k" * 16) != hash_secret("Bearer abc", b"j" * 16)
    assert hash_secret("Bearer abc", b"k" * 16) != hash_secret("Bearer abc")


def test_per_user_keys_depend_on_the_key_secret() -> None:
    headers = CIMultiDict({"Authorization": "Bearer tok"})

    def key(secret: bytes) -> str:
        rules = KeyRules(per_user_header="Authorization", headers=("Cookie",), secret=secret)
        return KeyBuilder(rules).primary_key("api", "/me", "", headers)

    assert key(b"s" * 16) == key(b"s" * 16)
    assert key(b"s" * 16) != key(b"t" * 16)
    assert f"u:{hash_secret('Bearer tok', b's' * 16)}" in key(b"s" * 16)
    assert "s" * 16 not in repr(KeyRules(secret=b"s" * 16))
