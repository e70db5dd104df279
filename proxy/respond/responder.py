"""The pipeline's last stages: encode for the client, add the cache's and the edge's
fields (CORS, rate limits), send."""

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
from proxy.cache.status import BYPASS, SF_INTEGER_MAX, CacheOutcome
from proxy.edge.compression.codecs import CodingError
from proxy.edge.compression.headers import vary_accept_encoding
from proxy.edge.ratelimit.headers import SECONDS_KEPT, SECONDS_TEXT
from proxy.edge.route import LoadedRoute
from proxy.http import ranges
from proxy.http.errors import JsonError, json_error
from proxy.http.headers import forward_response_headers
from proxy.observe.metrics import CACHE_RESULT
from proxy.respond.encoding import (
    AS_STORED,
    DECODED,
    DecodedStream,
    Variant,
    make_variant,
    stream_coding,
    variant_for,
)
from proxy.respond.exchange import Exchange
from proxy.respond.head import forwarded_head
from proxy.respond.prepared import (
    NO_BODY,
    PreparedForms,
    PreparedHead,
    PreparedResponse,
    date_line,
    head_size,
    make_head,
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
# What a forwarded (never stored) response says of the cache, as lines.
_BYPASS_LINES = "".join(f"{name}: {value}\r\n" for name, value in BYPASS.fields().items())
_CUT_SHORT = "upstream closed mid-response"
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

    async def forward(self, ex: Exchange, up: UpstreamResponse) -> web.StreamResponse:
        """An upstream response to a request that is not cached: a small body goes out
        with its head in one write, made as the upstream's fields go by (forwarded_head)."""
        request, route = ex.request, ex.route
        length = up.content_length
        if (
            length is not None
            and length <= SMALL_BODY
            and request.method != "HEAD"
            and up.status not in NO_BODY_STATUS
        ):
            reason = up.reason or PHRASES.get(up.status, "")
            ids = ex.ids
            made = forwarded_head(
                route,
                up.status,
                reason,
                up.headers,
                request.headers,
                length,
                _BYPASS_LINES,
                ex.edge_lines,
                "" if ids is None else ids.lower,
            )
            if made is not None:
                # Mostly here with the head already: no coroutine to read it (read_whole).
                body = up.content.whole()
                if body is None and (body := await read_whole(request, up)) is None:
                    return self.error(ex, json_error(502, "upstream_unavailable", _CUT_SHORT))
                static, dated = made
                tail = "" if dated else date_line()
                return PreparedResponse(up.status, reason, static, tail, body, BYPASS.label)
        return await self.relay(ex, up, forward_response_headers(up.headers), BYPASS)

    async def relay(
        self,
        ex: Exchange,
        up: UpstreamResponse,
        headers: CIMultiDict[str],
        outcome: CacheOutcome,
        prefix: bytes = b"",
    ) -> web.StreamResponse:
        """An upstream response on its way through, (de)compressed as it streams.
        `headers`: `up`'s as forwarded, to which this adds the rest."""
        request, route = ex.request, ex.route
        hidden = _hidden(route)
        if hidden:
            for name in hidden:
                headers.popall(name, None)
        headers.update(outcome.fields())
        coder = None
        if (
            route.compression is not None
            and request.method != "HEAD"
            and up.status not in NO_BODY_STATUS
        ):
            headers, coder = stream_coding(
                route.compression,
                request.headers.get(hdrs.ACCEPT_ENCODING),
                up.status,
                headers,
                up.content_length,
            )
        ex.apply_edge(headers)
        resp = await relay(request, up, headers, outcome.label, prefix, coder)
        if isinstance(resp, JsonError):  # made instead of the upstream's: not sent yet
            return self.error(ex, resp)
        return resp

    async def from_entry(
        self,
        ex: Exchange,
        entry: Entry,
        age: float,
        outcome: CacheOutcome,
        fields: Headers | None = None,
        kept: bool = True,
    ) -> web.StreamResponse:
        """A stored response: its bytes (or a stored encoded variant) plus three headers.
        `fields`: the entry's headers, when the caller has them unpacked already. `kept`:
        the entry is in the memory tier, for hits to come (an entry read from Redis may
        not be: then no prepared form is made for it).

        A decoded variant too large to store is streamed as it is decoded instead.
        Hits on a hot entry's whole body go out as prepared bytes (`prepared`): the
        first one makes the head of its form here.
        """
        request, route = ex.request, ex.route
        h = request.headers
        if (
            ((outcome.x_cache == "HIT" and kept) or entry.prepared is not None)
            and entry.status not in NO_BODY
            and hdrs.IF_NONE_MATCH not in h
            and hdrs.IF_MODIFIED_SINCE not in h
            and hdrs.RANGE not in h
            and await self._make_head(ex, entry)
        ):
            prepared = self.prepared(ex, entry, age, outcome)
            if prepared is not None:
                return prepared
        headers, body = entry.headers if fields is None else fields, entry.body
        streamed: DecodedStream | None = None
        vary_encoding = False  # the stored form, to be sent with Accept-Encoding in Vary
        if route.compression is not None:
            key = variant_for(
                route.compression,
                entry.status,
                headers,
                len(body),
                request.headers.get(hdrs.ACCEPT_ENCODING),
            )
            if key == AS_STORED:
                # The stored bytes under one more Vary: cheaper to remake than to keep as a
                # variant (a header copy and VARIANT_OVERHEAD on every entry a client
                # without Accept-Encoding asks for; hits keep their head anyway).
                vary_encoding = True
            elif key is not None:
                made = entry.variants.get(key) or await self._make_variant(route, entry, key)
                if isinstance(made, DecodedStream):
                    streamed, headers = made, made.headers
                else:
                    headers, body = made
        conditional = hdrs.IF_NONE_MATCH in h or hdrs.IF_MODIFIED_SINCE in h
        if (
            streamed is None
            and entry.status not in NO_BODY
            and not conditional
            and hdrs.RANGE not in h
        ):
            # The head is not kept on the entry: most entries served here (misses) are
            # never asked for again, and a hit makes the head it keeps.
            id_field = "" if ex.ids is None else ex.ids.lower
            head = make_head(
                route, entry.status, entry.reason, headers, body, vary_encoding, id_field
            )
            prepared = with_request_lines(ex, entry, head, age, outcome)
            if prepared is not None:
                return prepared
        headers = _shown(route, headers)
        if vary_encoding:
            headers = CIMultiDict(headers)
            vary_accept_encoding(headers)
        resp: web.StreamResponse
        if (
            conditional
            and entry.status == 200
            and policy.not_modified_for_client(h, headers, entry.response_time)
        ):
            streamed = None
            resp = web.Response(
                status=304,
                headers=[(k, v) for k, v in headers.items() if k.lower() in _NOT_MODIFIED],
            )
        elif streamed is not None:
            resp = web.StreamResponse(status=entry.status, reason=entry.reason, headers=headers)
        elif (
            hdrs.RANGE in h
            and entry.status == 200
            and body is entry.body
            and request.method == "GET"
        ):
            # Only the stored bytes are cut: ranges of our own encodings would differ
            # from one request to the next (nginx, too, sends those whole). GET is the one
            # method with range handling (RFC 9110 §14.2): a HEAD gets the 200's head.
            resp = _ranged(h, headers, body, entry.reason)
        else:
            resp = web.Response(
                status=entry.status, reason=entry.reason, headers=headers, body=body
            )
        _stored_fields(ex, resp, entry, age, outcome)
        if streamed is not None:
            await self._stream(request, resp, streamed)
        return resp

    def from_parts(
        self,
        ex: Exchange,
        entry: Entry,
        part: ranges.ByteRange | ranges.Unsatisfiable,
        age: float,
        outcome: CacheOutcome,
    ) -> web.Response:
        """One range of a partial entry (proxy/cache/parts.py), which must cover it: the
        stored bytes as they are, as ranges of complete entries (`_ranged`)."""
        parts = entry.parts
        assert parts is not None
        headers = _shown(ex.route, entry.headers)
        piece = parts.cut(part) if isinstance(part, ranges.ByteRange) else b""
        resp = _part(headers, part, parts.length, piece)
        _stored_fields(ex, resp, entry, age, outcome)
        return resp

    def prepared(
        self, ex: Exchange, entry: Entry, age: float, outcome: CacheOutcome
    ) -> PreparedResponse | None:
        """`from_entry`'s response as prepared bytes: the head of the client's form plus
        the lines of this request. Synchronous, for the hit path to call before it awaits
        anything. None: not on this path (the form has no head yet, the request has
        conditions or a range, the rate-limit stage did not run): ask `from_entry`."""
        head = self.prepared_head(ex.route, entry, ex.request.headers)
        if head is None:
            return None
        return with_request_lines(ex, entry, head, age, outcome)

    @staticmethod
    def prepared_head(route: LoadedRoute, entry: Entry, h: Headers) -> PreparedHead | None:
        """The head made for the form of `entry` a request with fields `h` gets through
        `route`; None: none made yet, or the request has conditions or a range."""
        forms = entry.prepared
        if forms is None or forms.route is not route:
            return None
        if hdrs.IF_NONE_MATCH in h or hdrs.IF_MODIFIED_SINCE in h or hdrs.RANGE in h:
            return None
        return forms.heads.get(forms.variant(h.get(hdrs.ACCEPT_ENCODING)))

    async def _make_head(self, ex: Exchange, entry: Entry) -> bool:
        """Make sure the form this client gets has its head (and the entry prepared forms
        for this route); False: it cannot have one (a decoded variant too large to store)."""
        request, route = ex.request, ex.route
        forms = entry.prepared
        if forms is None or forms.route is not route:
            if forms is not None:  # another route's (or a reload's): its heads go with it
                self.store.grew(entry, -forms.counted())
            forms = entry.prepared = PreparedForms(route, entry)
        key = forms.variant(request.headers.get(hdrs.ACCEPT_ENCODING))
        if key in forms.heads:
            return True
        headers, body = entry.headers, entry.body
        if key is not None and key != AS_STORED:
            made = entry.variants.get(key) or await self._make_variant(route, entry, key)
            if isinstance(made, DecodedStream):
                return False
            headers, body = made
        as_stored = key == AS_STORED
        id_field = "" if ex.ids is None else ex.ids.lower
        head = make_head(route, entry.status, entry.reason, headers, body, as_stored, id_field)
        forms.heads[key] = head
        if entry.prepared is forms:  # else replaced while its variant was made: gone with it
            self.store.grew(entry, head_size(head))
        return True

    async def _make_variant(
        self, route: LoadedRoute, entry: Entry, key: str
    ) -> Variant | DecodedStream:
        assert route.compression is not None and route.cache is not None
        args = (route.compression, entry.headers, entry.body, key, route.cache.max_entry_size)
        if key == DECODED or len(entry.body) > _INLINE_ENCODE:
            variant = await asyncio.to_thread(make_variant, *args)
        else:
            variant = make_variant(*args)
        if not isinstance(variant, DecodedStream):
            self.store.add_variant(entry, key, variant)
            if self.variant_made is not None and route.cache.shared:
                self.variant_made(entry)
        return variant

    @staticmethod
    async def _stream(
        request: web.BaseRequest, resp: web.StreamResponse, body: DecodedStream
    ) -> None:
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

    @staticmethod
    def error(
        ex: Exchange, resp: web.Response, outcome: CacheOutcome | None = None
    ) -> web.Response:
        """A response the proxy makes itself (an error): browsers must be able to read it
        too. `outcome`: what the cache did, when the request got as far as the cache."""
        if outcome is not None:
            resp.headers.update(outcome.fields())
            resp[CACHE_RESULT] = outcome.label
        ex.apply_edge(resp.headers)
        if ex.ids is not None and isinstance(resp, JsonError):
            resp.add_request_id(ex.request_id)
        return resp


def _hidden(route: LoadedRoute) -> frozenset[str]:
    """The response fields clients of `route` never get (RouteCache.hidden); the prepared
    and forwarded heads leave them out as they are made (head.py)."""
    return _NOTHING_HIDDEN if route.cache is None else route.cache.hidden


_NOTHING_HIDDEN: frozenset[str] = frozenset()


def _shown(route: LoadedRoute, headers: Headers) -> Headers:
    """A stored response's `headers` as clients of `route` get them: the same object when
    none is hidden (`_hidden`), else a copy without those."""
    hidden = _hidden(route)
    if hidden and any(name in headers for name in hidden):
        return CIMultiDict([(k, v) for k, v in headers.items() if k.lower() not in hidden])
    return headers


def with_request_lines(
    ex: Exchange, entry: Entry, head: PreparedHead, age: float, outcome: CacheOutcome
) -> PreparedResponse | None:
    """`head` with this request's lines; None: the rate-limit stage did not run (a prepared
    hit's Exchange always comes from a check, so a head from `prepared_head` always goes)."""
    lines = ex.edge_lines
    if lines is None:
        return None
    return with_lines(lines, entry, head, age, outcome)


def with_lines(
    lines: str, entry: Entry, head: PreparedHead, age: float, outcome: CacheOutcome
) -> PreparedResponse:
    """`head` with the cache's lines for `age` and `outcome`, then the edge's `lines`
    (Exchange.edge_lines)."""
    ttl = entry.lifetime - age
    if not -SF_INTEGER_MAX <= ttl <= SF_INTEGER_MAX:  # as cache_status_ttl (NaN too)
        ttl = SF_INTEGER_MAX if ttl > 0 else -SF_INTEGER_MAX
    # The seconds' text from a table where it has it: an int formatted costs ~1k instructions.
    a, t = int(age), int(ttl)
    tail = (
        f"Age: {SECONDS_TEXT[a] if 0 <= a < SECONDS_KEPT else a}\r\n{outcome.lines_to_ttl}"
        f"{SECONDS_TEXT[t] if 0 <= t < SECONDS_KEPT else t}\r\n"
        f"{'' if head.dated else date_line()}{lines}"
    )
    return PreparedResponse(entry.status, entry.reason, head.static, tail, head.body, outcome.label)


def _stored_fields(
    ex: Exchange, resp: web.StreamResponse, entry: Entry, age: float, outcome: CacheOutcome
) -> None:
    """What a response made from a stored entry says of the cache, and the edge's fields."""
    out = resp.headers
    out["Age"] = str(int(age))
    out["X-Cache"] = outcome.x_cache
    out["Cache-Status"] = outcome.status_with_ttl(entry.lifetime - age)
    resp[CACHE_RESULT] = outcome.label
    ex.apply_edge(out)


def _ranged(request_headers: Headers, headers: Headers, body: bytes, reason: str) -> web.Response:
    """206 with the one range asked for, 416 past the end, or the whole 200 (§14.2)."""
    part = None
    if ranges.if_range_allows(request_headers.get("If-Range"), headers):
        part = ranges.select(request_headers["Range"], len(body))
    if part is None:
        return web.Response(status=200, reason=reason, headers=headers, body=body)
    piece = body[part.start : part.end + 1] if isinstance(part, ranges.ByteRange) else b""
    return _part(headers, part, len(body), piece)


def _part(
    headers: Headers, part: ranges.ByteRange | ranges.Unsatisfiable, length: int, piece: bytes
) -> web.Response:
    """206 with `piece`, the bytes of `part` of a representation of `length` bytes; 416."""
    out = CIMultiDict(headers)
    out.popall("Content-Length", None)  # the part's own length is set from its bytes
    out["Content-Range"] = ranges.content_range(part, length)
    if isinstance(part, ranges.Unsatisfiable):
        out.popall("Content-Type", None)
        return web.Response(status=416, headers=out)
    return web.Response(status=206, headers=out, body=piece)
