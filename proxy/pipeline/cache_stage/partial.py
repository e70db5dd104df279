"""GET misses on a `range_requests: parts` route (RFC 9111 §3.3-§3.4, RFC 9110 §14): a
range served from the parts stored of it, or asked of the origin alone, or only the part
the stored parts lack; a plain GET with parts stored asks only for what they lack.

What is asked and what comes back is stored by fill.py (`Fill._store_part`); the parts
themselves are proxy/cache/parts.py, kept apart from complete entries.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import hdrs, web

from proxy.cache import policy
from proxy.cache.entry import Entry
from proxy.cache.memory import MemoryStore
from proxy.cache.parts import parts_key
from proxy.cache.policy import CacheControl, Freshness
from proxy.cache.route import RouteCache
from proxy.http import ranges
from proxy.pipeline.cache_stage import outcomes
from proxy.pipeline.cache_stage.coalescing import Coalescer
from proxy.pipeline.cache_stage.lookup import Lookup
from proxy.respond.responder import Responder

FreshnessOf = Callable[[Entry, CacheControl, RouteCache], tuple[float, Freshness]]


class PartialContent:
    def __init__(
        self,
        store: MemoryStore,
        coalescer: Coalescer,
        responder: Responder,
        freshness: FreshnessOf,
    ) -> None:
        self._store = store
        self._coalescer = coalescer
        self._responder = responder
        self._freshness = freshness  # CacheStage._freshness

    def miss(self, lk: Lookup) -> Awaitable[web.StreamResponse]:
        """A GET no complete entry could answer."""
        headers = lk.ex.request.headers
        held = self._store.peek(parts_key(lk.primary), headers)
        if held is None and hdrs.RANGE not in headers:
            return self._coalescer.fetch(lk, {}, None, None)  # most misses: a plain fetch
        return self._with_parts(lk, held)

    async def _with_parts(self, lk: Lookup, held: Entry | None) -> web.StreamResponse:
        headers = lk.ex.request.headers
        if held is not None and not policy.may_reuse(lk.scope, held.cc):
            held = None
        lk.held = held  # stale or fresh: a 206 of the same representation combines with it
        fresh = None  # the parts that may be served, with their age
        if held is not None and held.parts is not None:
            age, verdict = self._freshness(held, lk.request_cc, lk.cache)
            if verdict is Freshness.FRESH:
                fresh = held, held.parts, age
        range_value = headers.get("Range")
        spec = None if range_value is None else ranges.parse(range_value)
        if_range = headers.get("If-Range")
        if (
            spec is not None
            and if_range is not None
            and (fresh is None or not ranges.if_range_allows(if_range, fresh[0].headers))
        ):
            # The client's copy is not the one held (or none is held to compare it with):
            # answered as a plain GET would be, whose response then checks If-Range.
            spec = None
        etag = None if fresh is None else ranges.strong_etag(fresh[0].headers)
        if spec is None:
            if etag is not None and fresh is not None:
                parts = fresh[1]
                whole = ranges.ByteRange(0, parts.length - 1)
                gap = parts.missing(whole)
                if gap is not None and gap != whole:
                    return await self._fetch(lk, gap, etag)
            return await self._coalescer.fetch(lk, {}, None, None)
        lk.wanted = lk.asked = spec
        lk.flight = parts_key(lk.primary) + spec.header()  # never a plain GET's
        if fresh is not None:
            entry, parts, age = fresh
            wanted = ranges.resolve(spec, parts.length)
            if isinstance(wanted, ranges.Unsatisfiable) or parts.covers(wanted):
                self._store.used(entry)
                return self._responder.from_parts(lk.ex, entry, wanted, age, outcomes.HIT)
            gap = parts.missing(wanted)
            if etag is not None and gap is not None:
                return await self._fetch(lk, gap, etag)
        return await self._coalescer.fetch(lk, {"Range": spec.header()}, None, None)

    async def _fetch(self, lk: Lookup, gap: ranges.ByteRange, etag: str) -> web.StreamResponse:
        """Ask only for `gap`, what the fresh parts held lack, if they are still current:
        If-Range makes a changed representation come back whole (a 200)."""
        lk.asked = ranges.of(gap)
        ask = {"Range": lk.asked.header(), "If-Range": etag}
        return await self._coalescer.fetch(lk, ask, None, None)
