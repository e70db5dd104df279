"""The pipeline's last stages: encode for the client, add CORS headers, send."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from aiohttp import hdrs, web
from multidict import CIMultiDict

from proxy.cache import policy
from proxy.cache.entry import Entry
from proxy.cache.memory import MemoryStore
from proxy.cache.policy import Headers
from proxy.cache.status import SF_INTEGER_MAX, cache_status, cache_status_ttl
from proxy.edge.compression.codecs import CodingError
from proxy.edge.compression.headers import vary_accept_encoding
from proxy.edge.route import LoadedRoute
from proxy.http import ranges
from proxy.http.errors import json_error
from proxy.http.headers import forward_response_headers
from proxy.observe.metrics import X_CACHE
from proxy.respond.encoding import (
    AS_STORED,
    DECODED,
    Unstored,
    Variant,
    make_variant,
    plan_stream,
    variant_for,
)
from proxy.respond.head import forwarded_head
from proxy.respond.prepared import (
    HEAD_OVERHEAD,
    NO_BODY,
    Head,
    Plan,
    PreparedResponse,
    date_line,
    make_head,
    status_lines,
)
from proxy.respond.relay import (
    NO_BODY_STATUS,
    PHRASES,
    SMALL_BODY,
    cut,
    read_whole,
    relay,
    send_pieces,
)
from proxy.upstream.http1 import UpstreamResponse

log = logging.getLogger("cacheproxy")

# RFC 9110 §15.4.5: what a 304 carries of the stored response's headers.
_NOT_MODIFIED = frozenset(
    {"cache-control", "content-location", "date", "etag", "expires", "vary", "last-modified", "via"}
)
# What a forwarded (never stored) answer says of the cache.
_BYPASS = {"X-Cache": "BYPASS", "Cache-Status": cache_status("fwd=bypass")}
_BYPASS_LINES = "".join(f"{name}: {value}\r\n" for name, value in _BYPASS.items())
# Compressing more than this runs in a thread, so one big body cannot stall every client.
# Decoding always does: its cost is in what comes out, unknown until it has.
_INLINE_ENCODE = 128 * 1024


class Responder:
    def __init__(
        self, store: MemoryStore, variant_made: Callable[[Entry], None] | None = None
    ) -> None:
        # Told of each stored variant made (the Redis tier shares them); None: nobody.
        self.variant_made = variant_made
        self.store = store

    async def forward(
        self, request: web.BaseRequest, route: LoadedRoute, up: UpstreamResponse
    ) -> web.StreamResponse:
        """An upstream response to a request that is not cached: a small body goes out
        with its head in one write, made as the upstream's fields go by (forwarded_head)."""
        length = up.content_length
        if (
            length is not None
            and length <= SMALL_BODY
            and request.method != "HEAD"
            and up.status not in NO_BODY_STATUS
        ):
            reason = up.reason or PHRASES.get(up.status, "")
            made = forwarded_head(
                route, up.status, reason, up.headers, request.headers, length, _BYPASS_LINES
            )
            if made is not None:
                body = await read_whole(request, up)
                if body is None:
                    return json_error(502, "upstream_unavailable", "upstream closed mid-response")
                static, dated = made
                tail = "" if dated else date_line()
                return PreparedResponse(up.status, reason, static, tail, body, "bypass")
        headers = forward_response_headers(up.headers)
        headers.update(_BYPASS)
        return await self.relay(request, route, up, headers)

    async def relay(
        self,
        request: web.BaseRequest,
        route: LoadedRoute,
        up: UpstreamResponse,
        headers: CIMultiDict[str],
        prefix: bytes = b"",
    ) -> web.StreamResponse:
        """An upstream response on its way through, (de)compressed as it streams."""
        coder = None
        if (
            route.compression is not None
            and request.method != "HEAD"
            and up.status not in NO_BODY_STATUS
        ):
            headers, coder = plan_stream(
                route.compression,
                request.headers.get("Accept-Encoding"),
                up.status,
                headers,
                up.content_length,
            )
        if route.cors is not None:
            route.cors.apply(request.headers, headers)
        if route.rate_limit is not None:
            route.rate_limit.apply(request, headers)
        return await relay(request, up, headers, prefix, coder)

    async def from_entry(
        self,
        request: web.BaseRequest,
        route: LoadedRoute,
        entry: Entry,
        age: float,
        x_cache: str,
        status: str,
        fields: Headers | None = None,
    ) -> web.StreamResponse:
        """A stored response: its bytes (or a stored encoded variant) plus three headers.
        `fields`: the entry's headers, when the caller has them unpacked already.

        A decoded variant too large to store is streamed as it is decoded instead.
        Hits on a hot entry's whole body go out as prepared bytes (`prepared`): the
        first one makes the head of its form here.
        """
        h = request.headers
        if (
            (x_cache == "HIT" or entry.plan is not None)
            and entry.status not in NO_BODY
            and "If-None-Match" not in h
            and "If-Modified-Since" not in h
            and "Range" not in h
            and await self._make_head(request, route, entry)
        ):
            prepared = self.prepared(request, route, entry, age, x_cache, status)
            if prepared is not None:
                return prepared
        headers, body = entry.headers if fields is None else fields, entry.body
        unstored: Unstored | None = None
        vary_encoding = False  # the stored form, to be sent with Accept-Encoding in Vary
        if route.compression is not None:
            key = variant_for(
                route.compression,
                entry.status,
                headers,
                len(body),
                request.headers.get("Accept-Encoding"),
            )
            if key == AS_STORED:
                # The stored bytes under one more Vary: cheaper to remake than to keep as a
                # variant (a header copy and VARIANT_OVERHEAD on every entry a client
                # without Accept-Encoding asks for; hits keep their head anyway).
                vary_encoding = True
            elif key is not None:
                made = entry.variants.get(key) or await self._make_variant(route, entry, key)
                if isinstance(made, Unstored):
                    unstored, headers = made, made.headers
                else:
                    headers, body = made
        conditional = "If-None-Match" in h or "If-Modified-Since" in h
        if (
            unstored is None
            and entry.status not in NO_BODY
            and not conditional
            and "Range" not in h
        ):
            # The head is not kept on the entry: most entries answered here (misses) are
            # never asked for again, and a hit makes the head it keeps.
            head = make_head(route, entry.status, entry.reason, headers, body, vary_encoding)
            prepared = _send_head(request, route, entry, head, age, x_cache, status)
            if prepared is not None:
                return prepared
        if vary_encoding:
            headers = CIMultiDict(headers)
            vary_accept_encoding(headers)
        resp: web.StreamResponse
        if conditional and entry.status == 200 and policy.not_modified_for_client(h, headers):
            unstored = None
            resp = web.Response(
                status=304,
                headers=[(k, v) for k, v in headers.items() if k.lower() in _NOT_MODIFIED],
            )
        elif unstored is not None:
            resp = web.StreamResponse(status=entry.status, reason=entry.reason, headers=headers)
        elif "Range" in h and entry.status == 200 and body is entry.body:
            # Only the stored bytes are cut: ranges of our own encodings would differ
            # from one request to the next (nginx, too, sends those whole).
            resp = _ranged(h, headers, body, entry.reason)
        else:
            resp = web.Response(
                status=entry.status, reason=entry.reason, headers=headers, body=body
            )
        out = resp.headers
        out["Age"] = str(int(age))
        out["X-Cache"] = x_cache
        out["Cache-Status"] = cache_status_ttl(status, entry.lifetime - age)
        if route.cors is not None:
            route.cors.apply(h, out)
        if route.rate_limit is not None:
            route.rate_limit.apply(request, out)
        if unstored is not None:
            await self._stream(request, resp, unstored)
        return resp

    def prepared(
        self,
        request: web.BaseRequest,
        route: LoadedRoute,
        entry: Entry,
        age: float,
        x_cache: str,
        status: str,
    ) -> PreparedResponse | None:
        """`from_entry`'s answer as prepared bytes: the head of the client's form plus the
        lines of this request. Synchronous, for the hit path to call before it awaits
        anything. None: not on this path (the form has no head yet, the request has
        conditions or a range, the rate-limit stage did not run): ask `from_entry`."""
        plan = entry.plan
        if plan is None or plan.route is not route:
            return None
        h = request.headers
        if hdrs.IF_NONE_MATCH in h or hdrs.IF_MODIFIED_SINCE in h or hdrs.RANGE in h:
            return None
        head = plan.heads.get(plan.variant(h.get(hdrs.ACCEPT_ENCODING)))
        if head is None:
            return None
        return _send_head(request, route, entry, head, age, x_cache, status)

    async def _make_head(self, request: web.BaseRequest, route: LoadedRoute, entry: Entry) -> bool:
        """Make sure the form this client gets has its head (and the entry a plan for this
        route); False: it cannot have one (a decoded variant too large to store)."""
        plan = entry.plan
        if plan is None or plan.route is not route:
            plan = entry.plan = Plan(route, entry)
        key = plan.variant(request.headers.get("Accept-Encoding"))
        if key in plan.heads:
            return True
        headers, body = entry.headers, entry.body
        if key is not None and key != AS_STORED:
            made = entry.variants.get(key) or await self._make_variant(route, entry, key)
            if isinstance(made, Unstored):
                return False
            headers, body = made
        as_stored = key == AS_STORED
        head = make_head(route, entry.status, entry.reason, headers, body, as_stored)
        plan.heads[key] = head
        self.store.grew(entry, len(head.static) + HEAD_OVERHEAD)
        return True

    async def _make_variant(self, route: LoadedRoute, entry: Entry, key: str) -> Variant | Unstored:
        assert route.compression is not None and route.cache is not None
        args = (route.compression, entry.headers, entry.body, key, route.cache.max_entry_size)
        if key == DECODED or len(entry.body) > _INLINE_ENCODE:
            variant = await asyncio.to_thread(make_variant, *args)
        else:
            variant = make_variant(*args)
        if not isinstance(variant, Unstored):
            self.store.add_variant(entry, key, variant)
            if self.variant_made is not None and route.cache.shared:
                self.variant_made(entry)
        return variant

    @staticmethod
    async def _stream(request: web.BaseRequest, resp: web.StreamResponse, body: Unstored) -> None:
        """Send a decoded body as it is decoded, from the stored bytes: bounded memory."""
        await resp.prepare(request)
        if request.method == "HEAD":
            return
        try:
            await send_pieces(resp, body.pieces)
        except CodingError as exc:
            # Past the part that was checked while it was decoded for storing.
            log.warning("stored body of %s does not decode: %s", request.path, exc)
            cut(request, resp)

    def own(self, request: web.BaseRequest, route: LoadedRoute, resp: web.Response) -> web.Response:
        """An answer of the proxy's own (an error): browsers must be able to read it too."""
        if route.cors is not None:
            route.cors.apply(request.headers, resp.headers)
        if route.rate_limit is not None:
            route.rate_limit.apply(request, resp.headers)
        return resp


def _send_head(
    request: web.BaseRequest,
    route: LoadedRoute,
    entry: Entry,
    head: Head,
    age: float,
    x_cache: str,
    status: str,
) -> PreparedResponse | None:
    """`head` with this request's lines; None: the rate-limit stage did not run."""
    limits = "" if route.rate_limit is None else route.rate_limit.lines()
    if limits is None:
        return None
    cors = route.cors.allow_lines(request.headers) if route.cors is not None else ""
    ttl = entry.lifetime - age
    if not -SF_INTEGER_MAX <= ttl <= SF_INTEGER_MAX:  # as cache_status_ttl (NaN too)
        ttl = SF_INTEGER_MAX if ttl > 0 else -SF_INTEGER_MAX
    tail = (
        f"Age: {int(age)}\r\n{status_lines(x_cache, status)}{int(ttl)}\r\n"
        f"{'' if head.dated else date_line()}{cors}{limits}"
    )
    return PreparedResponse(
        entry.status, entry.reason, head.static, tail, head.body, X_CACHE[x_cache]
    )


def _ranged(request_headers: Headers, headers: Headers, body: bytes, reason: str) -> web.Response:
    """206 with the one range asked for, 416 past the end, or the whole 200 (§14.2)."""
    part = None
    if ranges.if_range_allows(request_headers.get("If-Range"), headers):
        part = ranges.select(request_headers["Range"], len(body))
    if part is None:
        return web.Response(status=200, reason=reason, headers=headers, body=body)
    out = CIMultiDict(headers)
    out.popall("Content-Length", None)  # the part's own length is set from its bytes
    out["Content-Range"] = ranges.content_range(part, len(body))
    if isinstance(part, ranges.Unsatisfiable):
        out.popall("Content-Type", None)
        return web.Response(status=416, headers=out)
    return web.Response(status=206, headers=out, body=body[part.start : part.end + 1])
