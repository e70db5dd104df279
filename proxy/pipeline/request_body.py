"""A client's request body on its way upstream: read first when small, bounded when streamed.

An upstream slot is for talking to the upstream, so a body that has not arrived must not
hold one (docs/protecting-the-upstream.md):

- a body with a Content-Length up to `upstream.buffer_body` is read whole before the
  request asks for a slot, under the listener's body timeout; it can then be retried too;
- a larger or chunked body streams once the request holds a slot, and each wait for its
  next chunk is bounded by `upstream.timeouts.client_body` (then 408, never counted
  against the upstream: proxy/upstream/http1.py's RequestBodyFailed).

`Expect: 100-continue` gets its 100 when the body is about to be read: at once for a small
body, once the upstream exchange has begun for a streamed one, so a client whose request
is refused (queue full, circuit open) is not invited to send its body for nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from aiohttp import web

from proxy.http.errors import BodyTooLarge

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class BodyCutShort(Exception):
    """The client's body ended (or its connection went) before its declared length."""


def expects_continue(request: web.BaseRequest) -> bool:
    return request.headers.get("Expect", "").lower() == "100-continue"


async def read_small(request: web.BaseRequest, length: int) -> bytes:
    """The whole body of `length` bytes; the listener's body timeout bounds the silences."""
    if expects_continue(request):
        # The low-level server leaves Expect to us; the client waits for this.
        await request.writer.write(CONTINUE)
    try:
        return await request.content.readexactly(length)
    except (asyncio.IncompleteReadError, ConnectionError) as exc:
        raise BodyCutShort(f"the request body ended before its {length} bytes") from exc


class ClientBody:
    """The client's streamed body as the upstream connection reads it (an http1.StreamedBody).
    `limit`: bytes it may have (the route's max_body_size); past them BodyTooLarge stops it,
    and the upstream never gets a whole request."""

    __slots__ = ("_limit", "_request", "_wait")

    def __init__(self, request: web.BaseRequest, wait: float, limit: int | None = None) -> None:
        self._request = request
        self._wait = wait
        self._limit = limit

    async def iter_any(self) -> AsyncIterator[bytes]:
        request = self._request
        if expects_continue(request):
            await request.writer.write(CONTINUE)
        content, wait, left = request.content, self._wait, self._limit
        while True:
            try:
                async with asyncio.timeout(wait):
                    chunk = await content.readany()
            except TimeoutError:
                raise TimeoutError(f"no request body byte for {wait:g} s") from None
            if not chunk:
                return
            if left is not None:
                left -= len(chunk)
                if left < 0:
                    raise BodyTooLarge(f"the request body is over {self._limit} bytes")
            yield chunk
