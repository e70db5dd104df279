"""CORS and compression through the real proxy, against a real upstream, with the cache on."""

from __future__ import annotations

import gzip
import json
import sys
import zlib
from typing import Any

import aiohttp
import brotli
import pytest
from aiohttp import web

if sys.version_info >= (3, 14):  # the optional zstd path is tested too, never skipped
    from compression import zstd
else:
    from backports import zstd

from proxy.server.app import ProxyServer
from tests.conftest import Origin, StartProxy, get, url_of

APP = "https://app.example.com"
CORS = {
    "allow_origins": [APP, "https://*.example.com"],
    "allow_origin_regex": ["https://review-[0-9]+\\.example\\.dev"],
    "allow_methods": ["GET", "POST", "PUT", "DELETE", "OPTIONS"],
    "allow_headers": ["Content-Type", "Authorization", "X-Requested-With"],
    "expose_headers": ["X-Total-Count"],
    "allow_credentials": True,
    "max_age": 600,
}
DOC = json.dumps({"series": list(range(2000))}).encode()  # ~10 KB of compressible JSON


def json_doc(r: web.Request) -> web.Response:
    return web.Response(
        body=DOC,
        content_type="application/json",
        headers={"Cache-Control": "max-age=60", "ETag": '"doc1"', "Vary": "Accept-Language"},
    )


@pytest.fixture
def doc_origin(origin: Origin) -> Origin:
    origin.respond = json_doc
    return origin


async def start(start_proxy: StartProxy, origin: Origin, **sections: Any) -> ProxyServer:
    sections.setdefault("cache", {})
    sections.setdefault("cors", CORS)
    sections.setdefault("compression", {"algorithms": ["br", "zstd", "gzip"]})
    return await start_proxy(origin.url, **sections)


# --- CORS ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "origin_header",
    [APP, "https://api.example.com", "https://a.b.example.com", "https://review-42.example.dev"],
)
async def test_allowed_origins_get_their_own_origin_back(
    doc_origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession, origin_header: str
) -> None:
    proxy = await start(start_proxy, doc_origin)
    resp, _ = await get(http, proxy, "/d", headers={"Origin": origin_header})
    assert resp.headers["Access-Control-Allow-Origin"] == origin_header
    assert resp.headers["Access-Control-Allow-Credentials"] == "true"
    assert resp.headers["Access-Control-Expose-Headers"] == "X-Total-Count"
    vary = [v.strip() for v in resp.headers["Vary"].split(",")]
    assert vary[0] == "Accept-Language" and "Origin" in vary  # appended, never replaced


@pytest.mark.parametrize(
    "origin_header",
    [
        "https://app.example.com.evil.net",  # a prefix is not a match
        "https://evilexample.com",
        "https://example.com",  # *.example.com needs a subdomain
        "http://app.example.com",  # scheme matters
        "https://app.example.com:8443",  # so does the port
        "https://review-42.example.dev.evil.net",  # regexes match the whole origin
        "null",
    ],
)
async def test_disallowed_origins_get_no_cors_headers(
    doc_origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession, origin_header: str
) -> None:
    proxy = await start(start_proxy, doc_origin)
    resp, body = await get(http, proxy, "/d", headers={"Origin": origin_header})
    assert resp.status == 200 and body
    assert not [h for h in resp.headers if h.lower().startswith("access-control-")]
    assert "Origin" in resp.headers["Vary"]


async def test_one_stored_entry_serves_every_origin(
    doc_origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    proxy = await start(start_proxy, doc_origin)
    first, _ = await get(http, proxy, "/d", headers={"Origin": APP})
    second, _ = await get(http, proxy, "/d", headers={"Origin": "https://x.example.com"})
    third, _ = await get(http, proxy, "/d")
    assert first.headers["X-Cache"] == "MISS"
    assert second.headers["X-Cache"] == third.headers["X-Cache"] == "HIT"
    assert second.headers["Access-Control-Allow-Origin"] == "https://x.example.com"
    assert "Access-Control-Allow-Origin" not in third.headers
    assert doc_origin.hits["/d"] == 1


async def test_preflights_are_served_by_the_proxy(
    doc_origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    proxy = await start(start_proxy, doc_origin)
    ok = {
        "Origin": APP,
        "Access-Control-Request-Method": "PUT",
        "Access-Control-Request-Headers": "content-type, authorization",
    }
    async with http.options(url_of(proxy, "/d"), headers=ok) as resp:
        assert resp.status == 204
        assert resp.headers["Access-Control-Allow-Origin"] == APP
        assert "PUT" in resp.headers["Access-Control-Allow-Methods"]
        assert "Authorization" in resp.headers["Access-Control-Allow-Headers"]
        assert resp.headers["Access-Control-Max-Age"] == "600"
        assert resp.headers["Access-Control-Allow-Credentials"] == "true"
    for bad in (
        {**ok, "Origin": "https://app.example.com.evil.net"},
        {**ok, "Access-Control-Request-Method": "PATCH"},
        {**ok, "Access-Control-Request-Headers": "x-secret"},
    ):
        async with http.options(url_of(proxy, "/d"), headers=bad) as resp:
            assert resp.status == 403
            assert "Access-Control-Allow-Origin" not in resp.headers
    assert doc_origin.hits["/d"] == 0  # never forwarded


async def test_route_can_turn_cors_off_and_upstream_cors_headers_do_not_leak(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    origin.respond = lambda r: web.Response(
        text="x", headers={"Access-Control-Allow-Origin": "*", "Cache-Control": "no-store"}
    )
    proxy = await start(start_proxy, origin, routes=[{"match": {"prefix": "/raw"}, "cors": False}])
    resp, _ = await get(http, proxy, "/raw", headers={"Origin": "https://evil.net"})
    assert resp.headers["Access-Control-Allow-Origin"] == "*"  # CORS off: untouched
    resp, _ = await get(http, proxy, "/owned", headers={"Origin": "https://evil.net"})
    assert "Access-Control-Allow-Origin" not in resp.headers  # the proxy owns CORS here


async def test_errors_carry_cors_headers_so_browsers_can_read_them(
    start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    proxy = await start_proxy(
        "http://127.0.0.1:9", cors=CORS, upstream={"url": "http://127.0.0.1:9"}
    )
    resp, _ = await get(http, proxy, "/d", headers={"Origin": APP})
    assert resp.status == 502
    assert resp.headers["Access-Control-Allow-Origin"] == APP


# --- compression --------------------------------------------------------------------------


def decoded(coding: str | None, body: bytes) -> bytes:
    if coding == "gzip":
        return gzip.decompress(body)
    if coding == "br":
        return brotli.decompress(body)
    if coding == "zstd":
        return zstd.decompress(body)
    assert coding is None
    return body


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        ("gzip, deflate, br, zstd", "br"),
        ("gzip;q=0, br;q=0.5", "br"),
        ("gzip;q=0.2, br;q=0.1", "gzip"),
        ("zstd, gzip", "zstd"),
        ("gzip;q=0", None),
        ("deflate", None),  # never deflate
        ("identity", None),
        ("*;q=0, identity", None),
        ("br;q=0, *", "zstd"),
        (None, None),
    ],
)
async def test_negotiation_honours_q_values(
    doc_origin: Origin,
    start_proxy: StartProxy,
    http: aiohttp.ClientSession,
    accept: str | None,
    expected: str | None,
) -> None:
    proxy = await start(start_proxy, doc_origin)
    headers = {"Accept-Encoding": accept} if accept else {}
    for _ in range(2):  # the miss and the hit agree
        resp, body = await get(
            http, proxy, "/d", headers=headers, skip_auto_headers=["Accept-Encoding"]
        )
        assert resp.headers.get("Content-Encoding") == expected
        assert decoded(expected, body) == DOC
        assert resp.headers["Content-Length"] == str(len(body))
        assert "Accept-Encoding" in resp.headers["Vary"]
        expected_etag = 'W/"doc1"' if expected else '"doc1"'
        assert resp.headers["ETag"] == expected_etag  # weak only when transformed


async def test_a_hit_serves_the_stored_encoded_variant(
    doc_origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    proxy = await start(start_proxy, doc_origin)
    store = proxy.pipeline.cache.store
    br = {"Accept-Encoding": "br"}
    await get(http, proxy, "/d", headers=br)
    (entry,) = store._entries.values()
    variant = entry.variants["br"]
    bytes_after_first = 0
    for i in range(3):
        resp, body = await get(http, proxy, "/d", headers=br)
        assert resp.headers["X-Cache"] == "HIT" and body == variant[1]
        if i == 0:  # the first hit adds the variant's prepared head
            bytes_after_first = store.bytes
    assert entry.variants["br"] is variant  # made once, never compressed again
    assert store.bytes == bytes_after_first  # and counted against max_memory once
    # Different Accept-Encoding values share the one entry (no split by Vary).
    await get(http, proxy, "/d", headers={"Accept-Encoding": "gzip"})
    assert len(store) == 1 and set(entry.variants) == {"br", "gzip"}


async def test_clients_without_a_coding_cost_the_entry_nothing_more(
    doc_origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    proxy = await start(start_proxy, doc_origin)
    store = proxy.pipeline.cache.store
    plain = {"Accept-Encoding": "identity"}
    resp, _ = await get(http, proxy, "/d", headers=plain, skip_auto_headers=["Accept-Encoding"])
    assert resp.headers["X-Cache"] == "MISS" and "Accept-Encoding" in resp.headers["Vary"]
    (entry,) = store._entries.values()
    stored_bytes = store.bytes
    # The stored bytes with Vary: Accept-Encoding added are remade, not kept as a variant.
    assert entry.variants == {} and entry.prepared is None
    resp, body = await get(http, proxy, "/d", headers=plain, skip_auto_headers=["Accept-Encoding"])
    assert resp.headers["X-Cache"] == "HIT" and "Accept-Encoding" in resp.headers["Vary"]
    assert body == DOC and "Content-Encoding" not in resp.headers
    assert entry.variants == {}  # the hit keeps a prepared head only
    assert entry.prepared is not None and store.bytes > stored_bytes


@pytest.mark.parametrize(
    ("extra", "status"),
    [({"If-None-Match": '"doc1"'}, 304), ({"Range": "bytes=0-9"}, 206), ({}, 200)],
)
async def test_every_response_of_the_stored_form_says_it_varies_by_coding(
    doc_origin: Origin,
    start_proxy: StartProxy,
    http: aiohttp.ClientSession,
    extra: dict[str, str],
    status: int,
) -> None:
    # A client that accepts no coding we offer gets the stored bytes; a downstream cache
    # must still keep them apart from the compressed ones, whichever way they are served.
    proxy = await start(start_proxy, doc_origin)
    plain = {"Accept-Encoding": "identity"}
    await get(http, proxy, "/d", headers=plain, skip_auto_headers=["Accept-Encoding"])
    resp, _ = await get(
        http, proxy, "/d", headers={**plain, **extra}, skip_auto_headers=["Accept-Encoding"]
    )
    assert resp.status == status
    assert "Accept-Encoding" in resp.headers["Vary"]


@pytest.mark.parametrize(
    ("headers", "size"),
    [
        ({"Content-Type": "application/json"}, 500),  # under min_size
        ({"Content-Type": "image/png"}, 5000),  # not an allowed type
        ({"Content-Type": "application/json", "Cache-Control": "no-transform"}, 5000),
    ],
)
async def test_what_is_not_compressed(
    origin: Origin,
    start_proxy: StartProxy,
    http: aiohttp.ClientSession,
    headers: dict[str, str],
    size: int,
) -> None:
    origin.respond = lambda r: web.Response(body=b"a" * size, headers=headers)
    proxy = await start(start_proxy, origin)
    resp, body = await get(http, proxy, "/n", headers={"Accept-Encoding": "gzip, br"})
    assert "Content-Encoding" not in resp.headers
    assert body == b"a" * size


async def test_partial_responses_are_not_compressed(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    origin.respond = lambda r: web.Response(
        status=206,
        body=DOC[:3000],
        content_type="application/json",
        headers={"Content-Range": f"bytes 0-2999/{len(DOC)}"},
    )
    proxy = await start(start_proxy, origin)
    resp, body = await get(
        http, proxy, "/p", headers={"Accept-Encoding": "gzip", "Range": "bytes=0-2999"}
    )
    assert resp.status == 206 and body == DOC[:3000]
    assert "Content-Encoding" not in resp.headers


async def test_uncacheable_responses_are_compressed_while_streaming(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    chunk = b'{"row": "' + b"r" * 1000 + b'"},'

    async def respond(r: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(
            headers={"Content-Type": "application/json", "Cache-Control": "private"}
        )
        await resp.prepare(r)
        for _ in range(200):
            await resp.write(chunk)
        return resp

    origin.respond = respond
    proxy = await start(start_proxy, origin)
    resp, body = await get(http, proxy, "/s", headers={"Accept-Encoding": "gzip"})
    assert resp.headers["Content-Encoding"] == "gzip"
    assert "Content-Length" not in resp.headers  # streamed, chunked
    assert resp.headers["X-Cache"] == "MISS"
    assert gzip.decompress(body) == chunk * 200
    assert len(body) < len(chunk) * 200 / 10


async def test_upstream_compressed_bodies_pass_through_or_are_decoded(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    packed = gzip.compress(DOC)
    origin.respond = lambda r: web.Response(
        body=packed,
        headers={
            "Content-Encoding": "gzip",
            "Content-Type": "application/json",
            "Cache-Control": r.query.get("cc", "max-age=60"),
        },
    )
    proxy = await start(start_proxy, origin)
    for path in ("/z", "/z?cc=private"):  # from the cache, and streamed through
        resp, body = await get(http, proxy, path, headers={"Accept-Encoding": "gzip"})
        assert resp.headers["Content-Encoding"] == "gzip" and body == packed
        resp, body = await get(http, proxy, path, headers={"Accept-Encoding": "identity"})
        assert "Content-Encoding" not in resp.headers
        assert body == DOC
        assert resp.headers.get("Content-Length", str(len(DOC))) == str(len(DOC))


async def test_head_from_cache_matches_the_get_variant(
    doc_origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    proxy = await start(start_proxy, doc_origin)
    get_resp, body = await get(http, proxy, "/d", headers={"Accept-Encoding": "gzip"})
    async with http.head(url_of(proxy, "/d"), headers={"Accept-Encoding": "gzip"}) as resp:
        assert resp.headers["Content-Encoding"] == "gzip"
        assert resp.headers["Content-Length"] == str(len(body))
        assert await resp.read() == b""
    assert zlib.decompress(body, 16 + zlib.MAX_WBITS) == DOC
    assert get_resp.headers["X-Cache"] == "MISS"
