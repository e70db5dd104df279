"""Decompression bombs: a body the upstream compressed is decoded for clients that do not
accept its coding a bounded piece at a time, stored decoded only while it fits an entry,
and otherwise streamed; the proxy's memory stays flat and the cache keeps its entries."""

from __future__ import annotations

import asyncio
import functools
import zlib
from collections.abc import Callable

import aiohttp
import pytest
from aiohttp import web
from multidict import CIMultiDict

from proxy.config.compression import CompressionSettings
from proxy.edge.compression.codecs import PIECE
from proxy.edge.compression.rules import CompressionRules
from proxy.respond.encoding import AS_STORED, DECODED, DecodedStream, make_variant
from tests.conftest import ProxyProcess, StartProxy, StartUpstream

MiB = 2**20
BOMB_SIZE = 512 * MiB
SMALL_BOMB_SIZE = 60 * MiB  # 61 KB of gzip: under relay.SMALL_BODY, read whole
# What the proxy may grow by while answering (its own baseline is about 60 MiB).
RSS_GROWTH_LIMIT_KIB = 128 * 1024
COMPRESSION = {"algorithms": ["gzip"]}


def _gzip_zeros(size: int) -> bytes:
    return zlib.compress(bytes(size), 9, wbits=31)


@functools.cache
def bomb() -> bytes:
    """512 MiB of zeros in 0.5 MB of gzip: eight 64 MiB members (RFC 1952 allows several;
    eight copies of one member instead of one 512 MiB member saves two seconds a run)."""
    return _gzip_zeros(BOMB_SIZE // 8) * 8


@functools.cache
def small_bomb() -> bytes:
    return _gzip_zeros(SMALL_BOMB_SIZE)


async def _upstream(start_upstream: StartUpstream) -> str:
    gz = {"Content-Encoding": "gzip", "Content-Type": "application/json"}

    async def handler(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        cache = {"Cache-Control": "max-age=60"}
        if name == "bomb":
            return web.Response(body=bomb(), headers={**gz, **cache})
        if name == "small-bomb":
            return web.Response(body=small_bomb(), headers={**gz, **cache})
        return web.json_response({"entry": name}, headers=cache)

    app = web.Application()
    app.router.add_get("/{name}", handler)
    return (await start_upstream(app)).url


async def _get(url: str, accept_encoding: str) -> tuple[int, CIMultiDict[str], int, bool]:
    """(status, headers, body size, all zeros), reading the body without holding it."""
    timeout = aiohttp.ClientTimeout(total=30)
    async with (
        aiohttp.ClientSession(auto_decompress=False, timeout=timeout) as http,
        http.get(url, headers={"Accept-Encoding": accept_encoding}) as resp,
    ):
        size, zeros = 0, True
        try:
            async for chunk in resp.content.iter_chunked(MiB):
                size += len(chunk)
                zeros = zeros and chunk.count(0) == len(chunk)
        except aiohttp.ClientPayloadError:
            pass  # cut short: the size says so
        return resp.status, CIMultiDict(resp.headers), size, zeros


async def _x_cache(url: str) -> str:
    status, headers, _, _ = await _get(url, "gzip")
    assert status == 200
    return headers["X-Cache"]


def _grew_kib(proxy: ProxyProcess, baseline: int) -> int:
    return proxy.peak_rss_kib() - baseline


async def test_a_stored_gzip_bomb_is_streamed_decoded_and_evicts_nothing(
    start_upstream: StartUpstream, proxy_process: Callable[..., ProxyProcess]
) -> None:
    origin = await _upstream(start_upstream)
    proxy = proxy_process(origin, cache={}, compression=COMPRESSION)
    base = f"http://127.0.0.1:{proxy.port}"
    for name in ("a", "b"):
        assert await _x_cache(f"{base}/{name}") == "MISS"
    baseline = proxy.peak_rss_kib()

    status, headers, size, _ = await _get(f"{base}/bomb", "gzip")
    assert (status, headers["Content-Encoding"], headers["X-Cache"]) == (200, "gzip", "MISS")
    assert size == len(bomb())  # as stored, as sent

    # Two clients at once: each costs a bounded amount, not a body.
    answers = await asyncio.gather(*(_get(f"{base}/bomb", "identity") for _ in range(2)))
    for status, headers, size, zeros in answers:
        assert (status, headers["X-Cache"]) == (200, "HIT")
        assert "Content-Encoding" not in headers
        assert (size, zeros) == (BOMB_SIZE, True)

    grew = _grew_kib(proxy, baseline)
    assert grew < RSS_GROWTH_LIMIT_KIB, f"the proxy grew by {grew // 1024} MiB"
    for name in ("a", "b", "bomb"):  # nothing was evicted for the decoded body
        assert await _x_cache(f"{base}/{name}") == "HIT", name
    for _, headers, _, _ in answers:
        assert "Content-Length" not in headers  # streamed as it was decoded


async def test_an_uncached_gzip_bomb_is_decoded_in_bounded_pieces(
    start_upstream: StartUpstream, proxy_process: Callable[..., ProxyProcess]
) -> None:
    origin = await _upstream(start_upstream)
    proxy = proxy_process(origin, compression=COMPRESSION)  # no cache section
    base = f"http://127.0.0.1:{proxy.port}"
    await _get(f"{base}/warm-up", "identity")
    baseline = proxy.peak_rss_kib()

    status, headers, size, zeros = await _get(f"{base}/bomb", "identity")
    assert (status, headers["X-Cache"]) == (200, "BYPASS")
    assert "Content-Encoding" not in headers
    assert (size, zeros) == (BOMB_SIZE, True)
    grew = _grew_kib(proxy, baseline)
    assert grew < RSS_GROWTH_LIMIT_KIB, f"the proxy grew by {grew // 1024} MiB"


async def test_small_gzip_bodies_that_inflate_are_streamed_too(
    start_upstream: StartUpstream, proxy_process: Callable[..., ProxyProcess]
) -> None:
    """61 KB of gzip is read whole (it is under 64 KiB), but its 60 MiB are not built."""
    origin = await _upstream(start_upstream)
    proxy = proxy_process(origin, compression=COMPRESSION)
    base = f"http://127.0.0.1:{proxy.port}"
    assert len(small_bomb()) < 64 * 1024
    await _get(f"{base}/warm-up", "identity")
    baseline = proxy.peak_rss_kib()

    answers = await asyncio.gather(*(_get(f"{base}/small-bomb", "identity") for _ in range(4)))
    for status, headers, size, zeros in answers:
        assert status == 200
        assert "Content-Encoding" not in headers
        assert (size, zeros) == (SMALL_BOMB_SIZE, True)
    grew = _grew_kib(proxy, baseline)
    assert grew < RSS_GROWTH_LIMIT_KIB, f"the proxy grew by {grew // 1024} MiB"


async def test_a_streamed_decoded_variant_answers_head_conditionals_and_corruption(
    start_upstream: StartUpstream, start_proxy: StartProxy
) -> None:
    four_mib = _gzip_zeros(4 * MiB)
    bodies = {"ok": four_mib, "corrupt": _gzip_zeros(2 * MiB) + b"\xff" * 64}

    async def handler(request: web.Request) -> web.Response:
        headers = {"Content-Encoding": "gzip", "Cache-Control": "max-age=60", "ETag": '"v1"'}
        return web.Response(body=bodies[request.match_info["name"]], headers=headers)

    app = web.Application()
    app.router.add_get("/{name}", handler)
    origin = (await start_upstream(app)).url
    proxy = await start_proxy(origin, cache={"max_entry_size": "1MiB"}, compression=COMPRESSION)
    base = f"http://127.0.0.1:{proxy.proxy_port}"
    assert (await _get(f"{base}/ok", "gzip"))[2] == len(four_mib)  # stored

    status, headers, size, zeros = await _get(f"{base}/ok", "identity")
    assert (status, headers["X-Cache"], size, zeros) == (200, "HIT", 4 * MiB, True)
    async with aiohttp.ClientSession(auto_decompress=False) as http:
        identity = {"Accept-Encoding": "identity"}
        async with http.head(f"{base}/ok", headers=identity) as resp:
            assert resp.status == 200
            assert "Content-Encoding" not in resp.headers
            assert await resp.read() == b""
        conditional = {**identity, "If-None-Match": 'W/"v1"'}
        async with http.get(f"{base}/ok", headers=conditional) as resp:
            assert resp.status == 304

    assert (await _get(f"{base}/corrupt", "gzip"))[2] == len(bodies["corrupt"])  # stored
    async with (
        aiohttp.ClientSession(auto_decompress=False) as http,
        http.get(f"{base}/corrupt", headers={"Accept-Encoding": "identity"}) as resp,
    ):
        # Headers went out before the bad bytes were reached: the body is cut short,
        # visibly (no clean end of the chunked body).
        assert (resp.status, resp.headers["X-Cache"]) == (200, "HIT")
        with pytest.raises(aiohttp.ClientPayloadError):
            await resp.read()


# --- the decision, without sockets ----------------------------------------------------


@pytest.fixture
def policy() -> CompressionRules:
    return CompressionRules(CompressionSettings.model_validate(COMPRESSION))


def _gzipped(**extra: str) -> CIMultiDict[str]:
    return CIMultiDict({"Content-Encoding": "gzip", "ETag": '"v1"', **extra})


def test_a_decoded_variant_that_fits_is_made_whole(policy: CompressionRules) -> None:
    body = b'{"ok": true}' * 1000
    made = make_variant(policy, _gzipped(), zlib.compress(body, wbits=31), DECODED, len(body))
    assert not isinstance(made, DecodedStream)
    headers, decoded = made
    assert decoded == body
    assert headers["Content-Length"] == str(len(body))
    assert "Content-Encoding" not in headers
    assert headers["ETag"] == 'W/"v1"'


def test_a_decoded_variant_too_large_stops_at_the_limit_and_streams(
    policy: CompressionRules,
) -> None:
    limit = 1 * MiB
    made = make_variant(policy, _gzipped(), _gzip_zeros(16 * MiB), DECODED, limit)
    assert isinstance(made, DecodedStream)
    assert "Content-Length" not in made.headers
    assert "Content-Encoding" not in made.headers
    assert made.headers["ETag"] == 'W/"v1"'
    sizes = [len(piece) for piece in made.pieces]
    assert sum(sizes) == 16 * MiB
    assert max(sizes) <= PIECE


def test_a_corrupt_stored_body_is_sent_as_stored(policy: CompressionRules) -> None:
    made = make_variant(policy, _gzipped(), b"\xff" * 100, DECODED, MiB)
    assert not isinstance(made, DecodedStream)
    headers, body = made
    assert (headers["Content-Encoding"], body) == ("gzip", b"\xff" * 100)
    assert (headers, body) == make_variant(policy, _gzipped(), body, AS_STORED, MiB)
