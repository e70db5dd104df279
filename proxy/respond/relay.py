"""Sending an upstream response on to the client: whole when small, streamed when not."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from http import HTTPStatus

from aiohttp import hdrs, web
from aiohttp.http import HttpVersion11
from multidict import CIMultiDict

from proxy.edge.compression.codecs import CodingError
from proxy.http.errors import json_error
from proxy.http.headers import forward_response_headers
from proxy.observe.metrics import CACHE_RESULT
from proxy.respond.encoding import BodyCoder
from proxy.respond.prepared import relayed
from proxy.upstream.http1 import ExchangeError, UpstreamResponse

log = logging.getLogger("cacheproxy")

# Responses that never carry a body (RFC 9110 §6.4.1).
NO_BODY_STATUS = frozenset({204, 304})
# Bodies up to this size (by Content-Length) are read whole and sent in one write.
SMALL_BODY = 64 * 1024
# What aiohttp sends for a response without a reason phrase of its own.
PHRASES = {s.value: s.phrase for s in HTTPStatus}


async def relay(
    request: web.BaseRequest,
    up: UpstreamResponse,
    headers: CIMultiDict[str],
    cache: str,
    prefix: bytes = b"",
    coder: BodyCoder | None = None,
) -> web.StreamResponse:
    """Respond with `up`'s status and body under `headers`; `prefix` was already read.
    `cache`: the response's cache label (CacheOutcome.label).

    `coder` (de)compresses the body on the way; `headers` must already say so. What a
    decoder makes is written a bounded piece at a time, each write awaited: a body that
    inflates a thousandfold is never held, and a slow client slows the decoding down.
    """
    reason = up.reason or None
    if request.method == "HEAD" or up.status in NO_BODY_STATUS:
        resp = web.StreamResponse(status=up.status, reason=reason, headers=headers)
        resp[CACHE_RESULT] = cache
        await resp.prepare(request)
        return resp
    length = up.content_length
    if (
        not prefix
        and length is not None
        and length <= SMALL_BODY
        and (coder is None or not coder.inflates)  # 64 KiB of gzip can be 64 MiB of body
    ):
        # One write for headers and body instead of two: a syscall saved on every small
        # response, which is most API traffic (measured with py-spy: socket writes dominate).
        body = await read_whole(request, up, coder)
        if body is None:
            return json_error(502, "upstream_unavailable", "upstream closed mid-response")
        headers.popall(hdrs.CONTENT_LENGTH, None)  # the body's own comes with the head
        return relayed(up.status, reason or PHRASES.get(up.status, ""), headers, body, cache)
    resp = web.StreamResponse(status=up.status, reason=reason, headers=headers)
    resp[CACHE_RESULT] = cache
    await resp.prepare(request)
    try:
        if prefix and not await send_pieces(resp, coder.feed(prefix) if coder else (prefix,)):
            return resp
        async for chunk in up.content.iter_any():
            if not await send_pieces(resp, coder.feed(chunk) if coder else (chunk,)):
                return resp  # the client left; releasing `up` unread drops that connection
        if coder is not None:
            await send_pieces(resp, coder.finish())
    except (ExchangeError, TimeoutError, CodingError) as exc:
        # Headers are gone already: the only honest signal left is an unfinished body.
        log.warning("upstream failed mid-response for %s: %r", request.path, exc)
        cut(request, resp)
    return resp


async def read_whole(
    request: web.BaseRequest, up: UpstreamResponse, coder: BodyCoder | None = None
) -> bytes | None:
    """`up`'s body (through `coder`), or None when the upstream failed part way (logged)."""
    try:
        body = up.content.whole()
        if body is None:
            body = await up.read()
        if coder is not None:
            body = b"".join((*coder.feed(body), *coder.finish()))
    except (ExchangeError, TimeoutError, CodingError) as exc:
        log.warning("upstream failed mid-response for %s: %r", request.path, exc)
        return None
    return body


def write_interim(request: web.BaseRequest, status: int, headers: CIMultiDict[str]) -> None:
    """Write an upstream's 1xx response (103 Early Hints, say) to `request`'s client, ahead
    of its final response (RFC 9110 §15.2), never to an HTTP/1.0 one (Exchange.interim).

    Written straight to the transport, and only while nothing else has been written for this
    request: a background refresh's fetch must not write into a finished exchange.
    """
    if request.version < HttpVersion11:
        return
    transport = request.transport
    if transport is None or transport.is_closing() or request.writer.output_size:
        return
    lines = [f"HTTP/1.1 {status} {PHRASES.get(status, '')}"]
    lines += [f"{k}: {v}" for k, v in forward_response_headers(headers).items()]
    transport.write(("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape"))


async def send_pieces(resp: web.StreamResponse, pieces: Iterable[bytes]) -> bool:
    """Write each piece as it comes; False when the client has gone.

    Between pieces the event loop gets a turn: a write only waits when the socket is
    full, so a fast client would otherwise let one inflating body run the loop alone.
    """
    first = True
    for piece in pieces:
        if not piece:
            continue  # a compressor holding bytes back: nothing to write yet
        if not first:
            await asyncio.sleep(0)
        first = False
        try:
            await resp.write(piece)
        except ConnectionResetError:
            return False  # aiohttp raises a reset once the client has gone
    return True


def cut(request: web.BaseRequest, resp: web.StreamResponse) -> None:
    """End a response whose body cannot be finished: the client sees it unfinished."""
    resp.force_close()
    if request.transport is not None:
        request.transport.close()
