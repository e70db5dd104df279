"""The pipeline's last stages: encode for the client, add CORS headers, send."""

from __future__ import annotations

import asyncio

import aiohttp
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from proxy.cache import policy
from proxy.cache.entry import Entry
from proxy.cache.stores import MemoryStore
from proxy.encoding import make_variant, plan_stream, variant_for
from proxy.relay import NO_BODY_STATUS, relay
from proxy.routes import RoutePolicy

# RFC 9110 §15.4.5: what a 304 carries of the stored response's headers.
_NOT_MODIFIED = frozenset(
    {"cache-control", "content-location", "date", "etag", "expires", "vary", "last-modified", "via"}
)
# Compressing more than this runs in a thread, so one big body cannot stall every client.
_INLINE_ENCODE = 128 * 1024


class Responder:
    def __init__(self, store: MemoryStore) -> None:
        self.store = store

    async def relay(
        self,
        request: web.BaseRequest,
        route: RoutePolicy,
        up: aiohttp.ClientResponse,
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
        route: RoutePolicy,
        entry: Entry,
        age: float,
        x_cache: str,
        status: str,
    ) -> web.Response:
        """A stored response: its bytes (or a stored encoded variant) plus three headers."""
        headers, body = entry.headers, entry.body
        if route.compression is not None:
            key = variant_for(
                route.compression,
                entry.status,
                headers,
                len(body),
                request.headers.get("Accept-Encoding"),
            )
            if key is not None:
                variant = entry.variants.get(key)
                if variant is None:
                    variant = await self._make_variant(route, entry, key)
                headers, body = variant
        h = request.headers
        if (
            ("If-None-Match" in h or "If-Modified-Since" in h)
            and entry.status == 200
            and policy.not_modified_for_client(h, headers)
        ):
            resp = web.Response(
                status=304,
                headers=[(k, v) for k, v in headers.items() if k.lower() in _NOT_MODIFIED],
            )
        else:
            resp = web.Response(
                status=entry.status, reason=entry.reason, headers=headers, body=body
            )
        out = resp.headers
        out["Age"] = str(int(age))
        out["X-Cache"] = x_cache
        out["Cache-Status"] = f"cacheproxy; {status}; ttl={int(entry.lifetime - age)}"
        if route.cors is not None:
            route.cors.apply(h, out)
        if route.rate_limit is not None:
            route.rate_limit.apply(request, out)
        return resp

    async def _make_variant(
        self, route: RoutePolicy, entry: Entry, key: str
    ) -> tuple[CIMultiDictProxy[str], bytes]:
        assert route.compression is not None
        args = (route.compression, entry.headers, entry.body, key)
        if len(entry.body) > _INLINE_ENCODE:
            variant = await asyncio.to_thread(make_variant, *args)
        else:
            variant = make_variant(*args)
        self.store.add_variant(entry, key, variant)
        return variant

    def own(self, request: web.BaseRequest, route: RoutePolicy, resp: web.Response) -> web.Response:
        """An answer of the proxy's own (an error): browsers must be able to read it too."""
        if route.cors is not None:
            route.cors.apply(request.headers, resp.headers)
        if route.rate_limit is not None:
            route.rate_limit.apply(request, resp.headers)
        return resp
