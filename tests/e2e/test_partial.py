"""Partial content stored, served, combined and completed (RFC 9111 §3.3-§3.4, RFC 9110 §14),
through a running proxy against an origin that answers ranges itself."""

from __future__ import annotations

import asyncio
import re

import aiohttp
import pytest
from aiohttp import web

from tests.conftest import Origin, StartProxy, get, url_of
from tests.e2e.test_caching import admin
from tests.e2e.test_shared_cache import shared
from tests.redis_servers import RedisServer

BODY = b"0123456789"
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


class RangedOrigin:
    """Answers one range with a 206 (as a server that supports Range does), an If-Range
    that does not match its ETag with the whole 200."""

    def __init__(self, origin: Origin) -> None:
        self.origin = origin
        self.body = BODY
        self.etag: str | None = '"v1"'
        self.cache_control = "max-age=60"
        self.content_range: str | None = None  # sent instead of the right one
        self.more: dict[str, str] = {}
        origin.respond = self.respond

    def respond(self, request: web.Request) -> web.Response:
        headers = {"Cache-Control": self.cache_control, **self.more}
        if self.etag is not None:
            headers["ETag"] = self.etag
        asked = _RANGE.fullmatch(request.headers.get("Range", ""))
        if_range = request.headers.get("If-Range")
        if asked is None or (if_range is not None and if_range != self.etag):
            return web.Response(body=self.body, headers=headers)
        first, last, length = asked[1], asked[2], len(self.body)
        if first == "":
            start, end = max(0, length - int(last)), length - 1
        else:
            start, end = int(first), min(length - 1, int(last) if last else length - 1)
        headers["Content-Range"] = self.content_range or f"bytes {start}-{end}/{length}"
        return web.Response(status=206, body=self.body[start : end + 1], headers=headers)

    def ranges(self) -> list[tuple[str | None, str | None]]:
        """The Range and If-Range of each request the origin got."""
        return [(r.headers.get("Range"), r.headers.get("If-Range")) for r in self.origin.requests]


@pytest.fixture
def ranged(origin: Origin) -> RangedOrigin:
    return RangedOrigin(origin)


async def ask(
    http: aiohttp.ClientSession, proxy: object, value: str | None = None, **headers: str
) -> tuple[int, str, bytes]:
    if value is not None:
        headers["Range"] = value
    resp, body = await get(http, proxy, "/file", headers=headers)  # type: ignore[arg-type]
    return resp.status, resp.headers["X-Cache"], body


async def test_a_range_miss_asks_for_that_range_and_later_ranges_are_served_from_it(
    ranged: RangedOrigin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    proxy = await start_proxy(ranged.origin.url, cache={})
    resp, body = await get(http, proxy, "/file", headers={"Range": "bytes=-5"})
    assert (resp.status, resp.headers["X-Cache"], body) == (206, "MISS", b"56789")
    assert resp.headers["Content-Range"] == "bytes 5-9/10"
    assert ranged.ranges() == [("bytes=-5", None)]  # forwarded, written by us
    assert await ask(http, proxy, "bytes=-5") == (206, "HIT", b"56789")
    assert await ask(http, proxy, "bytes=6-8") == (206, "HIT", b"678")
    assert await ask(http, proxy, "bytes=6-") == (206, "HIT", b"6789")
    assert await ask(http, proxy, "bytes=-1") == (206, "HIT", b"9")
    resp, body = await get(http, proxy, "/file", headers={"Range": "bytes=7-100"})
    assert (resp.status, resp.headers["Content-Range"], body) == (206, "bytes 7-9/10", b"789")
    resp, body = await get(http, proxy, "/file", headers={"Range": "bytes=10-"})
    assert (resp.status, resp.headers["Content-Range"], body) == (416, "bytes */10", b"")
    assert ranged.origin.hits["/file"] == 1


async def test_the_range_forwarded_is_our_own_canonical_one(
    ranged: RangedOrigin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    proxy = await start_proxy(ranged.origin.url, cache={})
    assert await ask(http, proxy, "BYTES = 2-3") == (206, "MISS", b"23")
    # Several ranges, or none we understand: the whole response, as before.
    assert await ask(http, proxy, "bytes=0-1,4-5") == (200, "MISS", BODY)
    assert ranged.ranges() == [("bytes=2-3", None), (None, None)]


async def test_parts_adding_up_to_the_whole_become_a_complete_entry(
    ranged: RangedOrigin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    proxy = await start_proxy(ranged.origin.url, cache={})
    assert await ask(http, proxy, "bytes=0-4") == (206, "MISS", b"01234")
    resp, body = await get(http, proxy, "/file")
    # Only the missing part is asked for, of the same representation (§3.4).
    assert ranged.ranges()[-1] == ("bytes=5-9", '"v1"')
    assert (resp.status, resp.headers["Content-Length"], body) == (200, "10", BODY)
    assert "Content-Range" not in resp.headers
    assert await ask(http, proxy) == (200, "HIT", BODY)
    assert await ask(http, proxy, "bytes=3-6") == (206, "HIT", b"3456")
    assert ranged.origin.hits["/file"] == 2
    store = proxy.pipeline.cache.store
    assert len(store) == 1  # the parts went with the complete entry made of them


async def test_a_range_partly_held_asks_only_for_what_is_missing(
    ranged: RangedOrigin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    proxy = await start_proxy(ranged.origin.url, cache={})
    await ask(http, proxy, "bytes=0-2")
    await ask(http, proxy, "bytes=6-7")
    assert await ask(http, proxy, "bytes=1-8") == (206, "MISS", b"12345678")
    # Between the first missing byte and the last: one range, what lies between included.
    assert ranged.ranges()[-1] == ("bytes=3-8", '"v1"')
    assert await ask(http, proxy, "bytes=0-8") == (206, "HIT", b"012345678")
    resp, body = await get(http, proxy, "/file")
    assert ranged.ranges()[-1] == ("bytes=9-9", '"v1"')
    assert (resp.status, body) == (200, BODY)
    assert ranged.origin.hits["/file"] == 4


async def test_a_changed_representation_comes_back_whole_and_replaces_the_parts(
    ranged: RangedOrigin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    proxy = await start_proxy(ranged.origin.url, cache={})
    await ask(http, proxy, "bytes=0-4")
    ranged.body, ranged.etag = b"abcdefghij", '"v2"'
    assert await ask(http, proxy, "bytes=3-6") == (206, "MISS", b"defg")
    assert ranged.ranges()[-1] == ("bytes=5-6", '"v1"')  # If-Range failed: a 200
    assert await ask(http, proxy) == (200, "HIT", b"abcdefghij")
    assert ranged.origin.hits["/file"] == 2


async def test_parts_of_another_etag_replace_the_ones_held(
    ranged: RangedOrigin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    ranged.cache_control = "max-age=0"  # stale at once: the next range goes as a miss
    proxy = await start_proxy(ranged.origin.url, cache={})
    await ask(http, proxy, "bytes=0-4")
    ranged.body, ranged.etag, ranged.cache_control = b"abcdefghij", '"v2"', "max-age=60"
    assert await ask(http, proxy, "bytes=5-9") == (206, "MISS", b"fghij")
    assert ranged.ranges()[-1] == ("bytes=5-9", None)
    assert await ask(http, proxy, "bytes=0-1") == (206, "MISS", b"ab")  # not v1's "01"
    assert await ask(http, proxy, "bytes=5-9") == (206, "HIT", b"fghij")


async def test_stale_parts_are_not_served_but_combine_with_the_same_etag(
    ranged: RangedOrigin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    ranged.cache_control = "max-age=0"
    proxy = await start_proxy(ranged.origin.url, cache={})
    await ask(http, proxy, "bytes=0-4")
    ranged.cache_control = "max-age=60"
    assert await ask(http, proxy, "bytes=5-9") == (206, "MISS", b"56789")
    assert ranged.ranges()[-1] == ("bytes=5-9", None)  # as a miss: no If-Range
    assert await ask(http, proxy) == (200, "HIT", BODY)  # combined into a complete entry
    assert ranged.origin.hits["/file"] == 2


async def test_without_a_strong_etag_parts_are_not_combined(
    ranged: RangedOrigin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    ranged.etag = None
    proxy = await start_proxy(ranged.origin.url, cache={})
    await ask(http, proxy, "bytes=0-4")
    assert await ask(http, proxy, "bytes=0-2") == (206, "HIT", b"012")
    assert await ask(http, proxy) == (200, "MISS", BODY)
    assert ranged.ranges()[-1] == (None, None)  # the whole, not bytes=5-
    assert await ask(http, proxy, "bytes=5-") == (206, "HIT", b"56789")


async def test_a_client_if_range_the_parts_do_not_match_gets_what_a_plain_get_would(
    ranged: RangedOrigin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    proxy = await start_proxy(ranged.origin.url, cache={})
    await ask(http, proxy, "bytes=0-4")
    assert await ask(http, proxy, "bytes=0-2", **{"If-Range": '"v1"'}) == (206, "HIT", b"012")
    status, _, body = await ask(http, proxy, "bytes=0-2", **{"If-Range": '"v0"'})
    assert (status, body) == (200, BODY)
    assert ranged.ranges()[-1] == ("bytes=5-9", '"v1"')


async def test_parts_that_are_not_what_was_asked_are_relayed_unstored(
    ranged: RangedOrigin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    proxy = await start_proxy(ranged.origin.url, cache={})
    for wrong in ("bytes 0-4/*", "bytes 1-5/10", "bytes 0-3/10"):
        ranged.content_range = wrong  # unknown length, outside 0-4, not the body's length
        resp, body = await get(http, proxy, "/file", headers={"Range": "bytes=0-4"})
        assert (resp.status, resp.headers["Content-Range"], body) == (206, wrong, b"01234")
        assert resp.headers["Cache-Status"].endswith("detail=content-range")
    ranged.content_range = None
    ranged.cache_control = "no-store"
    resp, _ = await get(http, proxy, "/file", headers={"Range": "bytes=0-4"})
    assert resp.headers["Cache-Status"].endswith("detail=no-store")
    assert len(proxy.pipeline.cache.store) == 0


async def test_parts_count_against_max_entry_size(
    ranged: RangedOrigin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    ranged.body = bytes(range(256)) * 8  # 2 KiB
    proxy = await start_proxy(ranged.origin.url, cache={"max_entry_size": 1500})
    assert (await ask(http, proxy, "bytes=0-999"))[:2] == (206, "MISS")
    assert (await ask(http, proxy, "bytes=0-999"))[:2] == (206, "HIT")
    resp, body = await get(http, proxy, "/file", headers={"Range": "bytes=1000-1999"})
    assert (resp.status, body) == (206, ranged.body[1000:2000])
    assert resp.headers["Cache-Status"].endswith("detail=too-large")  # relayed, not stored
    assert (await ask(http, proxy, "bytes=0-999"))[:2] == (206, "HIT")  # kept as it was
    assert (await ask(http, proxy, "bytes=1000-1999"))[1] == "MISS"


async def test_a_purge_removes_the_parts(
    ranged: RangedOrigin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    proxy = await start_proxy(ranged.origin.url, cache={}, admin={"token": "s3cret"})
    await ask(http, proxy, "bytes=0-4")
    status, body = await admin(proxy, "POST", "/cache/purge", "s3cret", {"url": "/file"})
    assert (status, body) == (200, {"purged": 1})
    assert await ask(http, proxy, "bytes=0-4") == (206, "MISS", b"01234")
    status, body = await admin(proxy, "POST", "/cache/purge", "s3cret", {"prefix": "/fi"})
    assert (status, body) == (200, {"purged": 1})
    assert (await ask(http, proxy, "bytes=0-4"))[1] == "MISS"


async def test_range_fetches_coalesce_per_range_never_with_a_plain_get(
    ranged: RangedOrigin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    ranged.origin.delay = 0.3
    proxy = await start_proxy(ranged.origin.url, cache={})
    results = await asyncio.gather(
        ask(http, proxy, "bytes=0-4"), ask(http, proxy, "bytes=0-4"), ask(http, proxy)
    )
    assert results[0][0::2] == results[1][0::2] == (206, b"01234")
    assert sorted(r[1] for r in results[:2]) == ["MISS", "MISS"]
    assert results[2][0::2] == (200, BODY)
    assert sorted(ranged.ranges(), key=str) == [("bytes=0-4", None), (None, None)]


async def test_parts_keep_their_vary_on_the_coding_where_complete_entries_need_none(
    ranged: RangedOrigin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    """Complete entries make each client's coding themselves; parts are served as stored."""
    ranged.more = {"Vary": "Accept-Encoding"}
    proxy = await start_proxy(ranged.origin.url, cache={}, compression={"algorithms": ["br"]})
    gzip, identity = {"Accept-Encoding": "gzip"}, {"Accept-Encoding": "identity"}
    assert await ask(http, proxy, "bytes=0-4", **gzip) == (206, "MISS", b"01234")
    assert await ask(http, proxy, "bytes=0-4", **gzip) == (206, "HIT", b"01234")
    assert await ask(http, proxy, "bytes=0-4", **identity) == (206, "MISS", b"01234")
    assert await ask(http, proxy, "bytes=5-9", **identity) == (206, "MISS", b"56789")
    assert await ask(http, proxy, **gzip) == (200, "HIT", BODY)  # one complete entry for all


async def test_whole_mode_fetches_the_whole_and_cuts(
    ranged: RangedOrigin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    proxy = await start_proxy(ranged.origin.url, cache={"range_requests": "whole"})
    assert await ask(http, proxy, "bytes=-5") == (206, "MISS", b"56789")
    assert ranged.ranges() == [(None, None)]
    assert await ask(http, proxy) == (200, "HIT", BODY)


async def test_an_origin_answering_a_range_whole_is_stored_complete_and_cut(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    origin.respond = lambda r: web.Response(body=BODY, headers={"Cache-Control": "max-age=60"})
    proxy = await start_proxy(origin.url, cache={})
    assert await ask(http, proxy, "bytes=2-3") == (206, "MISS", b"23")
    assert origin.requests[0].headers["Range"] == "bytes=2-3"
    assert await ask(http, proxy) == (200, "HIT", BODY)


async def test_a_head_with_a_range_is_fetched_whole_and_answered_as_a_200(
    ranged: RangedOrigin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    proxy = await start_proxy(ranged.origin.url, cache={})
    for cache in ("MISS", "HIT"):
        async with http.head(url_of(proxy, "/file"), headers={"Range": "bytes=0-1"}) as resp:
            assert await resp.read() == b""
            # GET is the one method with range handling (RFC 9110 §14.2).
            assert (resp.status, resp.headers["X-Cache"]) == (200, cache)
            assert resp.headers["Content-Length"] == str(len(BODY))
            assert "Content-Range" not in resp.headers
    assert ranged.ranges() == [(None, None)]  # fetched whole, as a GET


async def test_a_part_setting_a_cookie_goes_to_its_client_unstored(
    ranged: RangedOrigin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    ranged.more = {"Set-Cookie": "session=abc"}
    proxy = await start_proxy(ranged.origin.url, cache={"store_set_cookie": True})
    resp, body = await get(http, proxy, "/file", headers={"Range": "bytes=0-4"})
    assert (resp.status, body, resp.headers["Set-Cookie"]) == (206, b"01234", "session=abc")
    assert resp.headers["Cache-Status"].endswith("detail=set-cookie")
    resp, body = await get(http, proxy, "/file", headers={"Range": "bytes=0-4"})
    assert (resp.status, resp.headers["X-Cache"], body) == (206, "MISS", b"01234")
    assert resp.headers["Set-Cookie"] == "session=abc"  # its own, from the origin again
    assert len(proxy.pipeline.cache.store) == 0


async def test_parts_stay_in_memory_and_the_complete_entry_they_make_is_shared(
    ranged: RangedOrigin,
    start_proxy: StartProxy,
    http: aiohttp.ClientSession,
    redis_server: RedisServer,
) -> None:
    config = shared({"url": redis_server.url})
    a, b = (
        await start_proxy(ranged.origin.url, **config),
        await start_proxy(ranged.origin.url, **config),
    )
    assert await ask(http, a, "bytes=0-4") == (206, "MISS", b"01234")
    assert await ask(http, b, "bytes=0-4") == (206, "MISS", b"01234")  # not in Redis
    assert await ask(http, a, "bytes=5-9") == (206, "MISS", b"56789")  # completes A's
    resp, body = await get(http, b, "/file", headers={"Range": "bytes=6-7"})
    assert (resp.status, resp.headers["X-Cache"], body) == (206, "HIT", b"67")
    assert resp.headers["Cache-Status"].startswith("cacheproxy;hit;detail=shared")
    assert ranged.origin.hits["/file"] == 3
