"""Sending an upstream response on to the client: whole when small, streamed when not."""

from __future__ import annotations

import logging

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from proxy.compression import CodingError
from proxy.encoding import BodyCoder
from proxy.errors import json_error

log = logging.getLogger("cacheproxy")

# Responses that never carry a body (RFC 9110 §6.4.1).
NO_BODY_STATUS = frozenset({204, 304})
# Bodies up to this size (by Content-Length) are read whole and sent in one write.
SMALL_BODY = 64 * 1024


async def relay(
    request: web.BaseRequest,
    up: aiohttp.ClientResponse,
    headers: CIMultiDict[str],
    prefix: bytes = b"",
    coder: BodyCoder | None = None,
) -> web.StreamResponse:
    """Answer with `up`'s status and body under `headers`; `prefix` was already read.

    `coder` (de)compresses the body on the way; `headers` must already say so.
    """
    reason = up.reason or None
    if request.method == "HEAD" or up.status in NO_BODY_STATUS:
        resp = web.StreamResponse(status=up.status, reason=reason, headers=headers)
        await resp.prepare(request)
        return resp
    length = up.content_length
    if not prefix and length is not None and length <= SMALL_BODY:
        # One write for headers and body instead of two: a syscall saved on every small
        # response, which is most API traffic (measured with py-spy: socket writes dominate).
        try:
            body = await up.read()
            if coder is not None:
                body = coder.feed(body) + coder.finish()
                headers["Content-Length"] = str(len(body))
        except (aiohttp.ClientError, TimeoutError, CodingError) as exc:
            log.warning("upstream failed mid-response for %s: %r", request.path, exc)
            return json_error(502, "upstream_unavailable", "upstream closed mid-response")
        return web.Response(status=up.status, reason=reason, headers=headers, body=body)
    resp = web.StreamResponse(status=up.status, reason=reason, headers=headers)
    await resp.prepare(request)
    try:
        if prefix and not await _send(resp, coder.feed(prefix) if coder else prefix):
            return resp
        async for chunk in up.content.iter_any():
            if not await _send(resp, coder.feed(chunk) if coder else chunk):
                return resp  # the client left; releasing `up` unread drops that connection
        if coder is not None:
            await _send(resp, coder.finish())
    except (aiohttp.ClientError, TimeoutError, CodingError) as exc:
        # Headers are gone already: the only honest signal left is an unfinished body.
        log.warning("upstream failed mid-response for %s: %r", request.path, exc)
        resp.force_close()
        if request.transport is not None:
            request.transport.close()
    return resp


async def _send(resp: web.StreamResponse, chunk: bytes) -> bool:
    """Write to the client; False when it has gone (aiohttp raises a reset then)."""
    if not chunk:
        return True  # a compressor holding bytes back: nothing to write yet
    try:
        await resp.write(chunk)
    except ConnectionResetError:
        return False
    return True
