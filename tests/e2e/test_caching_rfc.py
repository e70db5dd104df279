"""The cache's parsing rules end to end: the real proxy, a real upstream on loopback.

One test per rule of RFC 9110 §5.6.7 (HTTP-date, its names read in any case), RFC 9111
§4.2.1 (first occurrence), §5.1 (Age), §5.2.2.3 (must-understand), §5.2.1.5 (request
no-store), §5.3 (Expires) and RFC 9213 §2.1 (CDN-Cache-Control); the pure decisions are in
tests/cache/policy/.
"""

from __future__ import annotations

import asyncio
import time
from email.utils import formatdate
from typing import Any

import aiohttp
from aiohttp import web

from proxy.server.app import ProxyServer
from tests.conftest import Origin, StartProxy, get


def http_date(ts: float) -> str:
    return formatdate(ts, usegmt=True)


def near_miss(ts: float) -> str:
    """The date `ts` as email.utils reads it, but no HTTP-date: the zone is not GMT."""
    return http_date(ts).replace("GMT", "UTC")


def ttl_of(resp: aiohttp.ClientResponse) -> int:
    return int(resp.headers["Cache-Status"].rpartition(";ttl=")[2])


async def twice(
    http: aiohttp.ClientSession, proxy: ProxyServer, path: str, **kwargs: Any
) -> tuple[aiohttp.ClientResponse, aiohttp.ClientResponse]:
    first, _ = await get(http, proxy, path, **kwargs)
    second, _ = await get(http, proxy, path, **kwargs)
    return first, second


# --- HTTP-date (RFC 9110 §5.6.7, RFC 9111 §5.3) ----------------------------------


async def test_expires_zero_is_already_expired(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    origin.respond = lambda r: web.Response(
        status=304 if r.headers.get("If-None-Match") == '"a"' else 200,
        headers={"Expires": "0", "ETag": '"a"'},
    )
    proxy = await start_proxy(origin.url, cache={})
    first, second = await twice(http, proxy, "/zero")
    assert first.headers["Cache-Status"].startswith("cacheproxy;fwd=miss;stored;ttl=")
    assert second.headers["X-Cache"] == "REVALIDATED"  # stored, but never fresh
    assert origin.hits["/zero"] == 2


async def test_expires_that_is_no_http_date_is_already_expired(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    # email.utils read this as an hour from now; it is not an HTTP-date.
    origin.respond = lambda r: web.Response(
        text="x", headers={"Expires": near_miss(time.time() + 3600)}
    )
    proxy = await start_proxy(origin.url, cache={})
    first, second = await twice(http, proxy, "/utc")
    assert [first.headers["X-Cache"], second.headers["X-Cache"]] == ["MISS", "MISS"]
    assert origin.hits["/utc"] == 2


async def test_expires_as_asctime_is_a_date(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    expires = time.strftime("%a %b %e %H:%M:%S %Y", time.gmtime(time.time() + 120))
    origin.respond = lambda r: web.Response(text="x", headers={"Expires": expires})
    proxy = await start_proxy(origin.url, cache={})
    _, second = await twice(http, proxy, "/asctime")
    assert second.headers["X-Cache"] == "HIT"
    assert 110 <= ttl_of(second) <= 120
    assert origin.hits["/asctime"] == 1


async def test_expires_with_lowercase_names_is_a_date(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    # `thu, 05 nov 2026 10:00:00 gmt`: the grammar's names are case-sensitive, but reading
    # this as "already expired" would make every request a miss.
    expires = http_date(time.time() + 120).lower()
    origin.respond = lambda r: web.Response(text="x", headers={"Expires": expires})
    proxy = await start_proxy(origin.url, cache={})
    first, second = await twice(http, proxy, "/lowercase")
    assert first.headers["Cache-Status"].startswith("cacheproxy;fwd=miss;stored;ttl=")
    assert second.headers["X-Cache"] == "HIT"
    assert 110 <= ttl_of(second) <= 120  # fresh until that date, not longer
    assert origin.hits["/lowercase"] == 1


async def test_an_invalid_date_header_is_ignored(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    # Read as a date, it would make the response 1000 s old, so stale at once.
    origin.respond = lambda r: web.Response(
        text="x", headers={"Cache-Control": "max-age=60", "Date": near_miss(time.time() - 1000)}
    )
    proxy = await start_proxy(origin.url, cache={})
    _, second = await twice(http, proxy, "/date")
    assert second.headers["X-Cache"] == "HIT"
    assert int(second.headers["Age"]) <= 1
    assert origin.hits["/date"] == 1


async def test_an_invalid_last_modified_gives_no_heuristic_freshness(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    # Read as a date, ten days ago would give a day of heuristic freshness (§4.2.2).
    origin.respond = lambda r: web.Response(
        text="x", headers={"Last-Modified": near_miss(time.time() - 10 * 86400)}
    )
    proxy = await start_proxy(origin.url, cache={})
    first, second = await twice(http, proxy, "/lm")
    assert first.headers["Cache-Status"] == "cacheproxy;fwd=miss;detail=no-freshness"
    assert second.headers["X-Cache"] == "MISS"
    assert origin.hits["/lm"] == 2


async def test_an_invalid_last_modified_is_never_sent_to_revalidate(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    last_modified = near_miss(time.time() - 86400)
    origin.respond = lambda r: web.Response(text="x", headers={"Last-Modified": last_modified})
    proxy = await start_proxy(origin.url, cache={"ttl": 0})  # stored, stale at once
    await twice(http, proxy, "/validate")
    assert origin.hits["/validate"] == 2
    assert "If-Modified-Since" not in origin.requests[-1].headers


# --- Age (RFC 9111 §5.1) -----------------------------------------------------------


async def test_age_list_uses_its_first_member(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    origin.respond = lambda r: web.Response(
        text="x", headers={"Cache-Control": "max-age=60", "Age": "10, 20"}
    )
    proxy = await start_proxy(origin.url, cache={})
    _, hit = await twice(http, proxy, "/age")
    assert hit.headers["X-Cache"] == "HIT"
    assert 10 <= int(hit.headers["Age"]) <= 11
    assert 49 <= ttl_of(hit) <= 50


async def test_age_whose_first_member_is_invalid_is_ignored(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    origin.respond = lambda r: web.Response(
        text="x", headers={"Cache-Control": "max-age=60", "Age": "soon, 90"}
    )
    proxy = await start_proxy(origin.url, cache={})
    _, hit = await twice(http, proxy, "/bad-age")
    assert hit.headers["X-Cache"] == "HIT"  # 90 would have made it stale
    assert int(hit.headers["Age"]) <= 1


# --- Cache-Control directives (RFC 9111 §4.2.1, §5.2) -------------------------------


async def test_a_repeated_max_age_uses_the_first(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    origin.respond = lambda r: web.Response(
        text="x", headers={"Cache-Control": "max-age=10, max-age=100"}
    )
    proxy = await start_proxy(origin.url, cache={})
    first, second = await twice(http, proxy, "/dup")
    assert first.headers["Cache-Status"].startswith("cacheproxy;fwd=miss;stored;ttl=")
    assert second.headers["X-Cache"] == "HIT"
    assert 9 <= ttl_of(second) <= 10
    assert origin.hits["/dup"] == 1


async def test_max_age_with_trailing_garbage_is_stale_quoted_is_fine(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    origin.respond = lambda r: web.Response(
        text="x",
        headers={"Cache-Control": "max-age=10a" if r.path == "/garbage" else 'max-age="30"'},
    )
    proxy = await start_proxy(origin.url, cache={"ttl": 600})  # route ttl must not step in
    _, garbage = await twice(http, proxy, "/garbage")
    _, quoted = await twice(http, proxy, "/quoted")
    assert garbage.headers["X-Cache"] == "MISS"
    assert origin.hits["/garbage"] == 2
    assert quoted.headers["X-Cache"] == "HIT"
    assert 29 <= ttl_of(quoted) <= 30


# --- CDN-Cache-Control (RFC 9213 §2.1) ---------------------------------------------


async def test_a_cdn_cache_control_that_does_not_parse_is_ignored(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    # A trailing comma makes it no Structured Field: Cache-Control's private stands.
    origin.respond = lambda r: web.Response(
        text="x", headers={"Cache-Control": "private", "CDN-Cache-Control": "max-age=60,"}
    )
    proxy = await start_proxy(origin.url, cache={})
    first, second = await twice(http, proxy, "/cdn-bad")
    assert first.headers["Cache-Status"] == "cacheproxy;fwd=miss;detail=private"
    assert second.headers["X-Cache"] == "MISS"
    assert origin.hits["/cdn-bad"] == 2


async def test_a_cdn_cache_control_that_parses_governs(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    origin.respond = lambda r: web.Response(
        text="x",
        headers={"Cache-Control": "no-store", "CDN-Cache-Control": "max-age=60;x=1, public"},
    )
    proxy = await start_proxy(origin.url, cache={})
    _, second = await twice(http, proxy, "/cdn-good")
    assert second.headers["X-Cache"] == "HIT"
    assert second.headers["Cache-Control"] == "no-store"  # passed on for the next cache
    assert origin.hits["/cdn-good"] == 1


async def test_a_cdn_cache_control_quoted_max_age_is_not_consumed(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    # A String where an Integer belongs: invalid freshness, so stale, not 60 s.
    origin.respond = lambda r: web.Response(
        text="x", headers={"Cache-Control": "max-age=60", "CDN-Cache-Control": 'max-age="60"'}
    )
    proxy = await start_proxy(origin.url, cache={})
    _, second = await twice(http, proxy, "/cdn-quoted")
    assert second.headers["X-Cache"] == "MISS"
    assert origin.hits["/cdn-quoted"] == 2


# --- must-understand (RFC 9111 §5.2.2.3) --------------------------------------------


async def test_must_understand_stores_a_status_we_understand_despite_no_store(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    origin.respond = lambda r: web.Response(
        text="x", headers={"Cache-Control": "must-understand, no-store, max-age=60"}
    )
    proxy = await start_proxy(origin.url, cache={})
    first, second = await twice(http, proxy, "/mu")
    assert first.headers["Cache-Status"].startswith("cacheproxy;fwd=miss;stored;ttl=")
    assert second.headers["X-Cache"] == "HIT"
    assert origin.hits["/mu"] == 1


async def test_must_understand_keeps_other_statuses_out(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    # 302 is cacheable with explicit freshness, but has no caching rules of its own here.
    origin.respond = lambda r: web.Response(
        status=302,
        headers={"Location": "/elsewhere", "Cache-Control": "must-understand, max-age=60"},
    )
    proxy = await start_proxy(origin.url, cache={})
    first, second = await twice(http, proxy, "/mu-302", allow_redirects=False)
    assert first.status == second.status == 302
    assert first.headers["Cache-Status"] == "cacheproxy;fwd=miss;detail=must-understand"
    assert origin.hits["/mu-302"] == 2


# --- request no-store (RFC 9111 §5.2.1.5) -------------------------------------------

NO_STORE = {"Cache-Control": "no-store"}


async def test_request_no_store_is_not_stored_but_served_from_an_entry(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    proxy = await start_proxy(origin.url, cache={})
    first, _ = await get(http, proxy, "/ns", headers=NO_STORE)
    assert first.headers["Cache-Status"] == "cacheproxy;fwd=miss;detail=no-store"
    stored, _ = await get(http, proxy, "/ns")
    assert stored.headers["Cache-Status"].startswith("cacheproxy;fwd=miss;stored;ttl=")
    hit, body = await get(http, proxy, "/ns", headers=NO_STORE)
    assert hit.headers["X-Cache"] == "HIT"
    assert body == b"body of /ns"
    assert origin.hits["/ns"] == 2


async def test_request_no_store_does_not_refresh_the_entry_with_a_304(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    def respond(r: web.Request) -> web.Response:
        headers = {"ETag": '"v1"', "Cache-Control": "max-age=1"}
        if r.headers.get("If-None-Match") == '"v1"':
            return web.Response(status=304, headers={**headers, "Cache-Control": "max-age=60"})
        return web.Response(text="payload", headers=headers)

    origin.respond = respond
    proxy = await start_proxy(origin.url, cache={})
    await get(http, proxy, "/ns304")
    await asyncio.sleep(1.2)
    revalidated, body = await get(http, proxy, "/ns304", headers=NO_STORE)
    assert revalidated.headers["X-Cache"] == "REVALIDATED"
    assert body == b"payload"
    assert revalidated.headers["Cache-Control"] == "max-age=60"  # the client sees the 304's
    # ...but the stored response is not updated from a response to a no-store request.
    again, _ = await get(http, proxy, "/ns304")
    assert again.headers["X-Cache"] == "REVALIDATED"
    assert origin.hits["/ns304"] == 3


async def test_request_no_store_starts_no_background_refresh(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    origin.respond = lambda r: web.Response(
        text="x", headers={"Cache-Control": "max-age=1, stale-while-revalidate=30"}
    )
    proxy = await start_proxy(origin.url, cache={})
    await get(http, proxy, "/swr")
    await asyncio.sleep(1.2)
    stale, _ = await get(http, proxy, "/swr", headers=NO_STORE)
    assert stale.headers["X-Cache"] == "STALE"  # served from the entry, as it may be
    await asyncio.sleep(0.3)
    assert origin.hits["/swr"] == 1  # a refresh would store a response to it
    await get(http, proxy, "/swr")
    for _ in range(50):
        if origin.hits["/swr"] == 2:
            break
        await asyncio.sleep(0.02)
    assert origin.hits["/swr"] == 2  # an ordinary request does refresh it
