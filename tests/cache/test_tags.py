"""Surrogate keys read from the fields each CDN's convention names: pure."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict

from proxy.cache.tags import NO_TAGS, TagFields


def tags(names: list[str], *fields: tuple[str, str]) -> tuple[str, ...]:
    return TagFields.named(names).tags(CIMultiDict(fields))


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("Surrogate-Key", "a b\tc  d", ("a", "b", "c", "d")),  # Fastly: spaces
        ("Surrogate-Key", "a,b c", ("a,b", "c")),  # a comma is part of a Fastly key
        ("xkey", "a b,c , d", ("a", "b", "c", "d")),  # Varnish: spaces and/or commas
        ("Cache-Tag", "a, b,,c ,", ("a", "b", "c")),  # Cloudflare: commas, trimmed
        ("Cache-Tag", "two words,x", ("two words", "x")),
        ("Edge-Cache-Tag", "a,b", ("a", "b")),  # Akamai: commas
        ("X-Tags", "a b", ("a", "b")),  # anything else: spaces, as always
    ],
)
def test_each_convention_splits_its_own_way(
    name: str, value: str, expected: tuple[str, ...]
) -> None:
    assert tags([name], (name, value)) == expected
    assert tags([name.upper()], (name.lower(), value)) == expected  # names in any case


def test_several_fields_and_lines_add_up_each_tag_once_in_order() -> None:
    fields = [("Surrogate-Key", "a b"), ("Cache-Tag", "b,c"), ("Surrogate-Key", "d a")]
    assert tags(["Surrogate-Key", "Cache-Tag"], *fields) == ("a", "b", "d", "c")


def test_unconfigured_fields_and_no_fields_give_no_tags() -> None:
    assert tags(["Cache-Tag"], ("Surrogate-Key", "a")) == ()
    assert NO_TAGS.tags(CIMultiDict({"Surrogate-Key": "a"})) == ()
    assert tags(["Surrogate-Key"], ("Surrogate-Key", "  ")) == ()


def test_names_are_lower_case_and_counted_once() -> None:
    named = TagFields.named(["Surrogate-Key", "surrogate-key", "Cache-Tag"])
    assert named.names == frozenset({"surrogate-key", "cache-tag"})
    assert len(named.fields) == 2
