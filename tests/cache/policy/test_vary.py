"""Selecting a stored variant by Vary (RFC 9111 §4.1): pure."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.cache.policy.vary import VARY_ABSENT, vary_fields, vary_key
from tests.cache.policy.samples import h


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


# --- §4.1 normalisation of the weighted preference lists (Accept-*) ---------------------

Item = tuple[str, str, int]  # base, a parameter ("" or "name=value"), weight in thousandths

_bases = st.sampled_from(["en", "fr", "de-ch", "gzip", "br", "text/html", "*/*", "*"])
_items = st.lists(
    st.tuples(_bases, st.sampled_from(["", "level=1", "charset=UTF-8"]), st.integers(0, 1000)),
    min_size=1,
    max_size=5,
    unique_by=lambda item: item[0],
)


def _q_spellings(q: int) -> list[str]:
    if q == 1000:
        return ["", ";q=1", ";Q=1.0", " ; q=1.000"]
    digits = f"{q:03d}"
    short = digits.rstrip("0") or "0"
    return [f";q=0.{short}" if q else ";q=0", f";q=0.{digits}", f" ;Q=0.{digits}"]


@st.composite
def _spelling(draw: st.DrawFn, items: list[Item]) -> list[str]:
    """One equivalent way to write `items`: any case, spacing, weight spelling, line split,
    and any order that keeps items of equal weight in their order."""
    order = draw(st.permutations(items))
    for q in {item[2] for item in items}:  # equal weights: back in their given order
        slots = [i for i, item in enumerate(order) if item[2] == q]
        for slot, item in zip(slots, [item for item in items if item[2] == q], strict=True):
            order[slot] = item
    parts = []
    for base, param, q in order:
        base = "".join(draw(st.sampled_from([c.lower(), c.upper()])) for c in base)
        name, _, value = param.partition("=")
        param = f";{name.upper() if draw(st.booleans()) else name}={value}" if param else ""
        space = draw(st.sampled_from(["", " ", "\t "]))
        parts.append(space + base + param + draw(st.sampled_from(_q_spellings(q))) + space)
    cut = draw(st.integers(0, len(parts)))
    lines = [",".join(parts[:cut]), ",".join(parts[cut:])]
    return [line for line in lines if line] or [""]


def _key(field: str, lines: list[str]) -> tuple[str, ...]:
    return vary_key((field,), h(*((field, line) for line in lines)))


@settings(deadline=None)  # a loaded CI machine is no reason to fail
@given(_items, st.data(), st.sampled_from(["accept", "accept-encoding", "accept-language"]))
def test_equivalent_spellings_share_a_variant(
    items: list[Item], data: st.DataObject, field: str
) -> None:
    assert _key(field, data.draw(_spelling(items))) == _key(field, data.draw(_spelling(items)))


@settings(deadline=None)  # a loaded CI machine is no reason to fail
@given(_items, st.data())
def test_a_different_weight_is_a_different_variant(items: list[Item], data: st.DataObject) -> None:
    index = data.draw(st.integers(0, len(items) - 1))
    base, param, q = items[index]
    changed = [*items[:index], (base, param, (q + 1) % 1001), *items[index + 1 :]]
    a = _key("accept-language", data.draw(_spelling(items)))
    assert a != _key("accept-language", data.draw(_spelling(changed)))


@settings(deadline=None)  # a loaded CI machine is no reason to fail
@given(_items, st.data())
def test_equal_weights_keep_their_order(items: list[Item], data: st.DataObject) -> None:
    # Servers break ties by order (RFC 4647 §2.3 reads a plain list as a priority list).
    equal = [(base, param, 1000) for base, param, _ in items]
    if len(equal) > 1:
        swapped = [equal[1], equal[0], *equal[2:]]
        a = _key("accept-language", data.draw(_spelling(equal)))
        assert a != _key("accept-language", data.draw(_spelling(swapped)))


def test_weighted_lists_in_their_canonical_spelling() -> None:
    assert _key("accept-language", ["FR ;q=0.50", " EN"]) == ("en, fr;q=0.5",)
    assert _key("accept-language", ["en, fr"]) != _key("accept-language", ["fr, en"])
    assert _key("accept", ["Text/HTML;Level=1;q=0.8, */*"]) == ("*/*, text/html;level=1;q=0.8",)
    assert _key("accept-encoding", ["gzip;q=0, br"]) == ("br, gzip;q=0",)
    # Parameter values keep their case: it is the parameter's to define.
    assert _key("accept", ["text/plain;format=Flowed"]) == ("text/plain;format=Flowed",)


def test_malformed_weighted_lists_only_lose_whitespace() -> None:
    for value, key in [
        ("EN;q=2 , fr", "EN;q=2, fr"),  # no such weight
        ("EN;q=0.5;x=1", "EN;q=0.5;x=1"),  # the weight must end the item
        ("EN; q = 0.5", "EN; q = 0.5"),  # no spaces around "="
        ("EN;", "EN;"),
    ]:
        assert _key("accept-language", [value]) == (key,)


def test_quoted_strings_are_kept_whole() -> None:
    # A comma inside quotes is text: "a,b" and "a, b" differ.
    assert _key("accept", ['text/x;p="a,b"']) != _key("accept", ['text/x;p="a, b"'])
    assert _key("x-custom", ['"a,b"']) != _key("x-custom", ['"a, b"'])


def test_origin_and_unknown_fields_keep_their_case() -> None:
    assert _key("origin", ["https://A.example"]) != _key("origin", ["https://a.example"])
    assert _key("x-custom", ["A, b"]) == _key("x-custom", ["A,b"]) != _key("x-custom", ["a, b"])


def test_lines_split_inside_quotes_are_not_mistaken_for_one_line() -> None:
    one = _key("accept", ['text/x;p="a,b"'])
    assert _key("accept", ['text/x;p="a', 'b"']) != one
    assert _key("accept", ['text/x;p="a,b"']) == one  # the memo returns what it computed
