"""Parts of one representation (RFC 9111 §3.3-§3.4): merged, cut, what they lack."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDict

from proxy.cache.parts import SPAN_OVERHEAD, Parts, combinable, parts_key
from proxy.http.ranges import ByteRange

WHOLE = bytes(range(100))


def held(*spans: tuple[int, int]) -> Parts:
    """Parts of WHOLE holding the (inclusive) spans given, added in that order."""
    parts = Parts(len(WHOLE))
    for start, end in spans:
        parts = parts.add(start, WHOLE[start : end + 1])
    return parts


def test_spans_apart_stay_apart_and_sorted() -> None:
    parts = held((50, 59), (10, 19))
    assert [(s, len(d)) for s, d in parts.spans] == [(10, 10), (50, 10)]
    assert parts.size() == 20 + 2 * SPAN_OVERHEAD


def test_touching_and_overlapping_spans_merge() -> None:
    assert [(s, len(d)) for s, d in held((10, 19), (20, 29)).spans] == [(10, 20)]
    assert [(s, len(d)) for s, d in held((10, 19), (15, 24)).spans] == [(10, 15)]
    assert [(s, len(d)) for s, d in held((10, 19), (30, 39), (0, 49)).spans] == [(0, 50)]
    merged = held((10, 19), (30, 39), (15, 34))
    assert merged.spans == ((10, WHOLE[10:40]),)


def test_the_newer_bytes_win_where_parts_overlap() -> None:
    parts = Parts(10).add(0, b"aaaaa").add(3, b"BBBB")
    assert parts.spans == ((0, b"aaaBBBB"),)
    assert Parts(10).add(3, b"BBBB").add(0, b"aaaaa").spans == ((0, b"aaaaaBB"),)


def test_covers_and_cut() -> None:
    parts = held((10, 19), (30, 39))
    assert parts.covers(ByteRange(10, 19)) and parts.covers(ByteRange(12, 12))
    assert not parts.covers(ByteRange(15, 30))  # a gap between
    assert not parts.covers(ByteRange(9, 10))
    assert parts.cut(ByteRange(32, 35)) == WHOLE[32:36]


def test_missing_is_one_range_from_the_first_missing_byte_to_the_last() -> None:
    parts = held((10, 19), (30, 39))
    assert parts.missing(ByteRange(0, 99)) == ByteRange(0, 99)
    assert parts.missing(ByteRange(10, 39)) == ByteRange(20, 29)
    assert parts.missing(ByteRange(15, 45)) == ByteRange(20, 45)  # the held 30-39 too
    assert parts.missing(ByteRange(5, 35)) == ByteRange(5, 29)
    assert parts.missing(ByteRange(12, 18)) is None


def test_whole_only_when_they_cover_it_all() -> None:
    assert held((0, 49)).whole() is None
    assert held((0, 49), (60, 99)).whole() is None
    assert held((0, 49), (50, 99)).whole() == WHOLE
    assert Parts(0).whole() is None


def test_combinable_only_with_the_same_strong_etag_and_length() -> None:
    v1 = CIMultiDict({"ETag": '"v1"'})
    assert combinable(v1, CIMultiDict({"ETag": ' "v1" '}), 10, 10)
    assert not combinable(v1, CIMultiDict({"ETag": '"v2"'}), 10, 10)
    assert not combinable(v1, v1, 10, 11)
    weak = CIMultiDict({"ETag": 'W/"v1"'})
    assert not combinable(weak, weak, 10, 10)
    assert not combinable(CIMultiDict(), CIMultiDict(), 10, 10)


def test_parts_have_a_key_of_their_own() -> None:
    assert parts_key("api/x?") != "api/x?"
    assert parts_key("api/x?").startswith("api/x?")


@given(st.lists(st.tuples(st.integers(0, 99), st.integers(0, 99)), max_size=8))
def test_parts_hold_exactly_the_bytes_added(ranges: list[tuple[int, int]]) -> None:
    spans = [(min(a, b), max(a, b)) for a, b in ranges]
    parts = held(*spans)
    have = {i for s, e in spans for i in range(s, e + 1)}
    for start, data in parts.spans:
        assert data == WHOLE[start : start + len(data)]
    assert {i for s, d in parts.spans for i in range(s, s + len(d))} == have
    for (s1, d1), (s2, _) in zip(parts.spans, parts.spans[1:], strict=False):
        assert s1 + len(d1) < s2  # apart: neither overlapping nor touching
    asked = ByteRange(0, 99)
    gap = parts.missing(asked)
    lacking = set(range(100)) - have
    if gap is None:
        assert not lacking
    else:
        assert lacking and (gap.start, gap.end) == (min(lacking), max(lacking))
