"""Range specs, canonical Range values and the Content-Range a part is stored with
(RFC 9110 §14); cutting from a length is tested in tests/e2e/test_ranges.py."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDict

from proxy.http.ranges import (
    ByteRange,
    RangeSpec,
    Unsatisfiable,
    of,
    parse,
    received,
    resolve,
    strong_etag,
)


@pytest.mark.parametrize(
    ("value", "spec", "header"),
    [
        ("bytes=0-99", RangeSpec(0, 99), "bytes=0-99"),
        ("bytes=5-", RangeSpec(5, None), "bytes=5-"),
        ("bytes=-5", RangeSpec(None, 5), "bytes=-5"),
        ("BYTES = 007-8", RangeSpec(7, 8), "bytes=7-8"),
        ("bytes=0-1,3-4", None, None),
        ("bytes=9-3", None, None),
        ("items=0-1", None, None),
    ],
)
def test_parse_and_the_header_we_write(value: str, spec: RangeSpec | None, header: str) -> None:
    assert parse(value) == spec
    if spec is not None:
        assert spec.header() == header


@given(st.text(max_size=30))
def test_what_we_write_parses_back_to_the_same_spec(value: str) -> None:
    spec = parse(value)
    if spec is not None:
        assert parse(spec.header()) == spec


def test_resolve() -> None:
    assert resolve(RangeSpec(None, 5), 10) == ByteRange(5, 9)
    assert resolve(RangeSpec(None, 50), 10) == ByteRange(0, 9)
    assert resolve(RangeSpec(2, None), 10) == ByteRange(2, 9)
    assert resolve(RangeSpec(10, None), 10) == Unsatisfiable(10)
    assert resolve(RangeSpec(None, 0), 10) == Unsatisfiable(10)
    assert of(ByteRange(3, 4)) == RangeSpec(3, 4)


@pytest.mark.parametrize(
    ("values", "asked", "expected"),
    [
        (["bytes 5-9/10"], RangeSpec(None, 5), (ByteRange(5, 9), 10)),
        (["bytes 0-4/10"], RangeSpec(0, 4), (ByteRange(0, 4), 10)),
        (["bytes 0-2/10"], RangeSpec(0, 4), (ByteRange(0, 2), 10)),  # less: kept
        (["bytes 4-9/10"], RangeSpec(None, 5), None),  # more than asked (the suite's)
        (["bytes 0-4/*"], RangeSpec(0, 4), None),  # unknown complete length
        (["bytes */10"], RangeSpec(0, 4), None),
        (["bytes 0-4/10", "bytes 0-4/10"], RangeSpec(0, 4), None),
        ([], RangeSpec(0, 4), None),  # multipart/byteranges: one per part, none here
        (["bytes 4-2/10"], RangeSpec(0, 4), None),
        (["bytes 0-10/10"], RangeSpec(0, None), None),
        (["items 0-4/10"], RangeSpec(0, 4), None),
        (["bytes 0-٤/10"], RangeSpec(0, 4), None),
        (["bytes 20-29/30"], RangeSpec(40, None), None),  # asked past its end
    ],
)
def test_received(
    values: list[str], asked: RangeSpec, expected: tuple[ByteRange, int] | None
) -> None:
    assert received(values, asked) == expected


def test_strong_etag() -> None:
    assert strong_etag(CIMultiDict({"ETag": ' "v1" '})) == '"v1"'
    assert strong_etag(CIMultiDict({"ETag": 'W/"v1"'})) is None
    assert strong_etag(CIMultiDict()) is None
