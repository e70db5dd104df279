"""Byte ranges and HEAD served from stored responses (RFC 9110 §14, RFC 9111 §4.3.5)."""

from __future__ import annotations

import aiohttp
import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDict

from proxy.http.ranges import ByteRange, Unsatisfiable, content_range, if_range_allows, select
from tests.conftest import Origin, StartProxy, get, url_of

BODY = bytes(range(256)) * 4  # 1024 bytes, every offset distinguishable


@pytest.mark.parametrize(
    ("value", "length", "expected"),
    [
        ("bytes=0-99", 1024, ByteRange(0, 99)),
        ("bytes=1000-", 1024, ByteRange(1000, 1023)),
        ("bytes=1000-5000", 1024, ByteRange(1000, 1023)),  # last-pos past the end: clipped
        ("bytes=-24", 1024, ByteRange(1000, 1023)),
        ("bytes=-5000", 1024, ByteRange(0, 1023)),
        ("BYTES = 5-5", 1024, ByteRange(5, 5)),
        ("bytes=1024-", 1024, Unsatisfiable(1024)),
        ("bytes=-0", 1024, Unsatisfiable(1024)),
        ("bytes=0-", 0, Unsatisfiable(0)),
        ("bytes=0-1,5-6", 1024, None),  # several ranges: the whole response
        ("bytes=9-3", 1024, None),  # invalid: ignored
        ("bytes=-", 1024, None),
        ("bytes=a-b", 1024, None),
        ("bytes=٣-", 1024, None),  # non-ASCII digits
        ("items=0-1", 1024, None),
        ("bytes 0-1", 1024, None),
        ("bytes=" + "1" * 300 + "-", 1024, None),
    ],
)
def test_select(value: str, length: int, expected: object) -> None:
    assert select(value, length) == expected


@given(st.text(max_size=40), st.integers(min_value=0, max_value=10_000))
def test_select_never_raises_and_stays_inside(value: str, length: int) -> None:
    part = select(value, length)
    if isinstance(part, ByteRange):
        assert 0 <= part.start <= part.end < length


def test_content_range() -> None:
    assert content_range(ByteRange(0, 9), 100) == "bytes 0-9/100"
    assert content_range(Unsatisfiable(100), 100) == "bytes */100"


@pytest.mark.parametrize(
    ("if_range", "allowed"),
    [
        (None, True),
        ('"v1"', True),
        ('"v2"', False),
        ('W/"v1"', False),
        ("Sun, 06 Nov 1994 08:49:37 GMT", True),
        ("Sun, 06 Nov 1994 08:49:38 GMT", False),
        ("yesterday", False),
    ],
)
def test_if_range(if_range: str | None, allowed: bool) -> None:
    stored = CIMultiDict({"ETag": '"v1"', "Last-Modified": "Sun, 06 Nov 1994 08:49:37 GMT"})
    assert if_range_allows(if_range, stored) is allowed


@pytest.fixture
def ranged_origin(origin: Origin) -> Origin:
    origin.respond = lambda r: web.Response(
        body=BODY,
        content_type="application/octet-stream",
        headers={"Cache-Control": "max-age=60", "ETag": '"v1"'},
    )
    return origin


async def test_with_range_requests_whole_a_range_miss_is_fetched_whole_stored_and_cut(
    ranged_origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    proxy = await start_proxy(ranged_origin.url, cache={"range_requests": "whole"})
    first, part = await get(http, proxy, "/file", headers={"Range": "bytes=10-19"})
    assert (first.status, first.headers["X-Cache"], part) == (206, "MISS", BODY[10:20])
    assert first.headers["Content-Range"] == "bytes 10-19/1024"
    assert first.headers["Content-Length"] == "10"
    assert "Range" not in ranged_origin.requests[0].headers  # fetched whole
    second, tail = await get(http, proxy, "/file", headers={"Range": "bytes=-4"})
    assert (second.status, second.headers["X-Cache"], tail) == (206, "HIT", BODY[-4:])
    assert ranged_origin.hits["/file"] == 1


async def test_unsatisfiable_several_and_if_range(
    ranged_origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    proxy = await start_proxy(ranged_origin.url, cache={})
    await get(http, proxy, "/file")
    resp, body = await get(http, proxy, "/file", headers={"Range": "bytes=5000-"})
    assert (resp.status, resp.headers["Content-Range"], body) == (416, "bytes */1024", b"")
    resp, body = await get(http, proxy, "/file", headers={"Range": "bytes=0-1,4-5"})
    assert (resp.status, body) == (200, BODY)
    changed = {"Range": "bytes=0-1", "If-Range": '"v0"'}
    resp, body = await get(http, proxy, "/file", headers=changed)
    assert (resp.status, body) == (200, BODY)  # the client's copy is another version
    same = {"Range": "bytes=0-1", "If-Range": '"v1"'}
    resp, body = await get(http, proxy, "/file", headers=same)
    assert (resp.status, body) == (206, BODY[:2])
    # A conditional request that matches still gets its 304 first.
    resp, _ = await get(
        http, proxy, "/file", headers={"Range": "bytes=0-1", "If-None-Match": '"v1"'}
    )
    assert resp.status == 304
    assert ranged_origin.hits["/file"] == 1


async def test_ranges_of_our_own_encodings_are_not_cut(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    origin.respond = lambda r: web.json_response(
        {"rows": ["x" * 50] * 100}, headers={"Cache-Control": "max-age=60"}
    )
    proxy = await start_proxy(origin.url, cache={}, compression={"algorithms": ["br"]})
    br = {"Accept-Encoding": "br", "Range": "bytes=0-9"}
    resp, _ = await get(http, proxy, "/rows", headers=br)
    assert (resp.status, resp.headers["Content-Encoding"]) == (200, "br")
    plain = {"Accept-Encoding": "identity", "Range": "bytes=0-9"}
    resp, body = await get(http, proxy, "/rows", headers=plain)
    assert (resp.status, body) == (206, b'{"rows": [')


async def test_a_head_miss_is_fetched_as_get_and_fills_the_cache(
    ranged_origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    proxy = await start_proxy(ranged_origin.url, cache={})
    async with http.head(url_of(proxy, "/file")) as resp:
        assert (resp.status, resp.headers["Content-Length"]) == (200, "1024")
        assert await resp.read() == b""
    assert [r.method for r in ranged_origin.requests] == ["GET"]
    resp, body = await get(http, proxy, "/file")
    assert (resp.headers["X-Cache"], body) == ("HIT", BODY)
    assert ranged_origin.hits["/file"] == 1
