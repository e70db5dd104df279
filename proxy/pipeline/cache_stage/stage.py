"""The cache stage's entry point: look the request up, serve what may be served, send the
rest upstream (coalescing.py) or refresh it behind the client's back (refresh.py)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from aiohttp import web

from proxy.cache import policy
from proxy.cache.entry import Entry
from proxy.cache.keys import url_part
from proxy.cache.memory import MemoryStore
from proxy.cache.policy import EMPTY_CACHE_CONTROL, CacheControl, Freshness, Headers
from proxy.cache.policy.scope import CREDENTIALED, PASS
from proxy.cache.policy.serving import FRESH
from proxy.cache.route import RouteCache
from proxy.edge.route import LoadedRoute
from proxy.http.errors import json_error
from proxy.http.target import Target
from proxy.pipeline.cache_stage import outcomes
from proxy.pipeline.cache_stage.coalescing import Coalescer
from proxy.pipeline.cache_stage.fill import Fill
from proxy.pipeline.cache_stage.lookup import Lookup
from proxy.pipeline.cache_stage.partial import PartialContent
from proxy.pipeline.cache_stage.refresh import Refresher
from proxy.pipeline.upstream_fetch import UpstreamFetch
from proxy.pipeline.warming import Warming
from proxy.respond.exchange import Exchange
from proxy.respond.responder import Responder
from proxy.shared.tier import PurgeKind, PurgeResult, SharedTier

if TYPE_CHECKING:
    from proxy.observe.tracing.otel import Tracing  # imported only with `tracing:`

HOT_TARGETS = 4096  # hot request targets remembered (CacheStage.hot); cleared when full


class CacheStage:
    def __init__(
        self,
        store: MemoryStore,
        fetch: UpstreamFetch,
        responder: Responder,
        shared: SharedTier | None = None,
        coalesce_wait: float = 30.0,
        clock: Callable[[], float] = time.time,
        warming: Warming | None = None,
    ) -> None:
        """`coalesce_wait`: how long an instance waits on another's fetch (coalesce:
        global) before it fetches for itself; also how long that fetch's lock lives if its
        owner dies."""
        self.store = store
        self.shared = shared
        self._responder = responder
        self._clock = clock
        # Refresh-ahead of popular keys; None (no `cache.warming`) costs a hit one test.
        self.warming = warming
        self._popularity = warming.popularity if warming is not None else None
        fill = Fill(store, fetch, responder, shared, clock)
        self._coalescer = Coalescer(store, shared, fill, responder, coalesce_wait, clock)
        self._refresher = Refresher(store, fill, self._coalescer.in_flight, warming, clock)
        self._fill = fill
        self._partial = PartialContent(store, self._coalescer, responder, self._freshness)
        self.tracing: Tracing | None = None  # None (no `tracing:`) costs a hit one test
        # Request targets a fresh memory hit was served for lately, on routes `answers`:
        # those the listener's fast path tries (memory_hit decides). A miss, or a target
        # no longer fresh, costs the fast path nothing, or once.
        self.hot: set[str] = set()

    def use_tracing(self, tracing: Tracing) -> None:
        """Spans for the lookups and the stores of traced requests."""
        self.tracing = self._fill.tracing = tracing

    def now(self) -> float:
        """The clock entry ages are measured by."""
        return self._clock()

    async def close(self) -> None:
        await self._refresher.close()

    async def purge(self, kind: PurgeKind, value: str, soft: bool = False) -> PurgeResult:
        """Purge by url (a URL key), prefix (a path prefix) or tag, in every tier; `soft`:
        mark stale instead of removing (MemoryStore.purge_url)."""
        if self.shared is not None:
            return await self.shared.purge(kind, value, soft)
        purge = getattr(self.store, f"purge_{kind}")
        return PurgeResult(purge(value, self._clock() if soft else None), 0, None)

    def url_key(self, route: LoadedRoute, path: str, query: str) -> str:
        assert route.cache is not None
        return route.cache.keys.url_key(route.upstream.key_origin, path, query)

    async def serve(self, ex: Exchange, target: Target) -> web.StreamResponse:
        """Respond to a GET/HEAD on a caching route."""
        request, route = ex.request, ex.route
        rc = route.cache
        assert rc is not None
        headers = request.headers
        scope = policy.request_scope(headers, rc.rules)
        if scope is PASS:
            return await self._fill.pass_through(ex, target, outcomes.CREDENTIALS)
        request_cc = policy.request_cache_control(headers)
        primary = rc.keys.primary_key(route.upstream.key_origin, target.path, target.query, headers)
        if self._popularity is not None:
            self._popularity.touch(primary)
        tracing = self.tracing
        span = (
            None
            if tracing is None or tracing.traced.get(None) is None
            else tracing.start("cache lookup")
        )
        entry = self.store.get(primary, headers)
        if entry is not None and (scope is not CREDENTIALED or policy.may_reuse(scope, entry.cc)):
            age, verdict = self._freshness(entry, request_cc, rc)
            if verdict is FRESH:
                if span is not None:
                    span.end()
                if self.answers(route):  # the next may go the fast path
                    hot = self.hot
                    if len(hot) >= HOT_TARGETS:
                        hot.clear()
                    hot.add(request.raw_path)
                if self._popularity is not None and self._refresher.due_ahead(entry, age):
                    lk = Lookup(ex, target, rc, scope, request_cc, primary)
                    self._refresher.in_background(lk, entry)
                responder = self._responder
                return responder.prepared(ex, entry, age, outcomes.HIT) or (
                    await responder.from_entry(ex, entry, age, outcomes.HIT)
                )
        else:
            entry = None
        lk = Lookup(ex, target, rc, scope, request_cc, primary)
        if rc.shared and self.shared is not None:
            # L1 could not serve it: another instance may have stored a (fresher) copy.
            fetched_at = self.store.generation
            redis = None if tracing is None else tracing.start("cache lookup redis", span)
            found, lk.shared_gen, grace = await self.shared.lookup(
                primary, url_part(primary), headers, rc.max_entry_size
            )
            if redis is not None:
                redis.set_attribute("cacheproxy.found", found is not None)
                redis.end()
            if (
                found is not None
                and (entry is None or found.response_time > entry.response_time)
                and policy.may_reuse(scope, found.cc)
            ):
                kept = self.store.put(found, fetched_at, grace)
                entry = found
                age, verdict = self._freshness(entry, request_cc, rc)
                if verdict is FRESH:
                    if span is not None:
                        span.end()
                    return await self._responder.from_entry(
                        ex, entry, age, outcomes.HIT_SHARED, kept=kept
                    )
        if span is not None:
            span.end()
        if entry is not None:
            if verdict is Freshness.STALE_WHILE_REVALIDATE or verdict is Freshness.SOFT_PURGED:
                self._refresher.in_background(lk, entry)
                stale = (
                    outcomes.STALE_WHILE_REVALIDATE
                    if verdict is Freshness.STALE_WHILE_REVALIDATE
                    else outcomes.SOFT_PURGED
                )
                return await self._responder.from_entry(ex, entry, age, stale)
            if not request_cc.only_if_cached:
                validators = policy.conditional_headers(entry.headers)
                return await self._coalescer.fetch(lk, validators, entry, verdict)
        if request_cc.only_if_cached:
            # §5.2.1.7: nothing we may serve without going upstream.
            error = json_error(
                504, "not_cached", "only-if-cached: no stored response can answer this request"
            )
            return self._responder.error(ex, error, outcomes.ONLY_IF_CACHED)
        if rc.range_parts and request.method == "GET":
            return await self._partial.miss(lk)  # stored parts, or a range fetched alone
        # A HEAD miss is fetched as a GET (§4.3.5 allows it, Varnish does it): the client
        # still gets no body, and the next GET is a hit. A Range miss (`range_requests:
        # whole`) likewise fetches the whole response, stores it and cuts the range from it.
        return await self._coalescer.fetch(lk, {}, None, None)

    def answers(self, route: LoadedRoute) -> bool:
        """Whether the listener's fast path may answer hits of `route` (pipeline/handler.py
        `answer`): it caches, its rate limit is kept in memory (a check in Redis awaits),
        and neither refresh-ahead (which counts every request) nor tracing (which spans the
        lookup) is on."""
        limiter = route.rate_limit
        return (
            route.cache is not None
            and (limiter is None or limiter.local)
            and self._popularity is None
            and self.tracing is None
        )

    def memory_hit(
        self,
        route: LoadedRoute,
        target: Target,
        headers: Headers,
        raw_target: str,
        primary: str | None = None,
    ) -> tuple[Entry, float] | None:
        """The fresh entry in memory `serve` would answer this request with as it is, and its
        age, on a route it `answers`; None: ask `serve` (and `raw_target` is not hot any
        more). Its first steps, with no effect (the entry is only peeked at: `used` counts
        it once answered): for the listener's fast path, which answers only what it can
        answer whole (pipeline/handler.py `answer`). `primary`: the request's primary key,
        when the caller knows it (a route whose keys are the URL's alone, `KeyBuilder.by_url`)."""
        rc = route.cache
        assert rc is not None
        scope = policy.request_scope(headers, rc.rules)
        if scope is not PASS:
            if primary is None:
                primary = rc.keys.primary_key(
                    route.upstream.key_origin, target.path, target.query, headers
                )
            entry = self.store.peek(primary, headers)
            # policy.may_reuse, its call left for the one scope it has to look into
            if entry is not None and (
                scope is not CREDENTIALED or policy.may_reuse(scope, entry.cc)
            ):
                request_cc = policy.request_cache_control(headers)
                age, verdict = self._freshness(entry, request_cc, rc)
                if verdict is FRESH:
                    return entry, age
        self.hot.discard(raw_target)
        return None

    def used(self, entry: Entry) -> bool:
        """`entry`, from `memory_hit`, answered: counted as `serve` counts a hit, and made
        recent. False: it is not in memory any more, and nothing was done."""
        return self.store.used(entry)

    def plain_age(self, entry: Entry) -> float | None:
        """The age of `entry` when a request without Cache-Control may be served it as it
        is (`_freshness`'s first case); None: ask `_freshness`."""
        # entry.age(now), written out: asked on every hit.
        elapsed = self._clock() - entry.response_time
        age = entry.initial_age + elapsed if elapsed > 0.0 else entry.initial_age
        return age if age < entry.lifetime and not entry.cc.no_cache else None

    def _freshness(
        self, entry: Entry, request_cc: CacheControl, rc: RouteCache
    ) -> tuple[float, Freshness]:
        """The entry's age now, and whether it may be served as it is (§4.2)."""
        if request_cc is EMPTY_CACHE_CONTROL:
            age = self.plain_age(entry)
            if age is not None:
                return age, FRESH  # what lookup_verdict says, without asking it
        age = entry.age(self._clock())
        verdict = policy.lookup_verdict(
            age=age,
            lifetime=entry.lifetime,
            request_cc=request_cc,
            response_cc=entry.cc,
            rules=rc.rules,
            grace=self.store.in_grace(entry),
        )
        return age, verdict

    async def warm(
        self, request: web.BaseRequest, route: LoadedRoute, target: Target
    ) -> Entry | None:
        """Fetch, or revalidate, what a GET of `target` by `request` would be served with,
        and store it: for the warmer, which has no client (see Refresher.warm)."""
        rc = route.cache
        assert rc is not None
        headers = request.headers
        lk = Lookup(
            Exchange(request, route),  # no response is sent
            target,
            rc,
            policy.request_scope(headers, rc.rules),
            policy.request_cache_control(headers),
            rc.keys.primary_key(route.upstream.key_origin, target.path, target.query, headers),
        )
        return await self._refresher.warm(lk)
