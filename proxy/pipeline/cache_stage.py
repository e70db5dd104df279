"""The cache stage: lookup, coalesced fetch, store, revalidation and stale serving.

Decisions come from `policy` (pure); this module only does the I/O around them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from multidict import CIMultiDict

from proxy.cache import policy
from proxy.cache.entry import Entry
from proxy.cache.keys import url_part
from proxy.cache.memory import MemoryStore
from proxy.cache.policy import EMPTY_CACHE_CONTROL, Freshness, Scope
from proxy.cache.route import RouteCache
from proxy.cache.status import cache_status
from proxy.edge.route import LoadedRoute
from proxy.http.errors import json_error
from proxy.http.headers import forward_response_headers
from proxy.http.target import Target
from proxy.pipeline.warming import Warming
from proxy.respond.responder import Responder
from proxy.shared.tier import PurgeKind, PurgeResult, SharedTier
from proxy.upstream.client import BACKGROUND, UpstreamError
from proxy.upstream.http1 import ExchangeError, UpstreamResponse

log = logging.getLogger("cacheproxy.cache")

# (request, route, target, validators) -> upstream response; see Pipeline.fetch_for_cache.
Fetch = Callable[
    [web.BaseRequest, LoadedRoute, Target, dict[str, str] | None],
    Awaitable[UpstreamResponse],
]
# What a coalesced fetch hands its waiters: the stored entry, the failure, or nothing
# shareable (then each waiter fetches for itself).
Outcome = Entry | UpstreamError | None


_ENCODING_VARY = frozenset({"accept-encoding"})
_STALE_IF_ERROR = "fwd=stale; detail=stale-if-error"
_CIRCUIT_OPEN = "hit; detail=circuit-open"


def cache_headers(x_cache: str, status: str) -> dict[str, str]:
    return {"X-Cache": x_cache, "Cache-Status": cache_status(status)}


class HttpCache:
    def __init__(
        self,
        store: MemoryStore,
        fetch: Fetch,
        responder: Responder,
        shared: SharedTier | None = None,
        coalesce_wait: float = 30.0,
        clock: Callable[[], float] = time.time,
        warming: Warming | None = None,
    ) -> None:
        self.store = store
        self.shared = shared
        # How long an instance waits on another's fetch (coalesce: global) before it
        # fetches for itself; also how long that fetch's lock lives if its owner dies.
        self._coalesce_wait = coalesce_wait
        self._responder = responder
        self._fetch = fetch
        self._clock = clock
        self._inflight: dict[str, asyncio.Future[Outcome]] = {}
        self._refreshing: dict[str, asyncio.Task[None]] = {}
        # Refresh-ahead of popular keys; None (no `cache.warming`) costs a hit one test.
        self.warming = warming
        self._popularity = warming.popularity if warming is not None else None

    def now(self) -> float:
        """The clock entry ages are measured by."""
        return self._clock()

    async def close(self) -> None:
        tasks = list(self._refreshing.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def purge(self, kind: PurgeKind, value: str) -> PurgeResult:
        """Purge by url (a URL key), prefix (a path prefix) or tag, in every tier."""
        if self.shared is not None:
            return await self.shared.purge(kind, value)
        return PurgeResult(getattr(self.store, f"purge_{kind}")(value), 0, None)

    def primary_key(self, route: LoadedRoute, target: Target, request: web.BaseRequest) -> str:
        assert route.cache is not None
        return route.cache.keys.primary_key(
            route.upstream.host_header, target.path, target.query, request.headers
        )

    def url_key(self, route: LoadedRoute, path: str, query: str) -> str:
        assert route.cache is not None
        return route.cache.keys.url_key(route.upstream.host_header, path, query)

    # --- the request path ---------------------------------------------------

    async def serve(
        self, request: web.BaseRequest, route: LoadedRoute, target: Target
    ) -> web.StreamResponse:
        """Answer a GET/HEAD on a caching route."""
        rc = route.cache
        assert rc is not None
        scope = policy.request_scope(request.headers, rc.rules)
        if scope is Scope.PASS:
            return await self._pass(
                request, route, target, "BYPASS", "fwd=bypass; detail=credentials"
            )
        req_cc = policy.request_cache_control(request.headers)
        primary = rc.keys.primary_key(
            route.upstream.host_header, target.path, target.query, request.headers
        )
        if self._popularity is not None:
            self._popularity.touch(primary)
        entry = self.store.get(primary, request.headers)
        if entry is not None and (
            scope is not Scope.CREDENTIALED or policy.may_reuse(scope, entry.cc)
        ):
            age, verdict = self._judge(entry, req_cc, rc)
            if verdict is Freshness.FRESH:
                if self._popularity is not None:
                    self._refresh_ahead(request, route, target, entry, age)
                responder = self._responder
                return responder.prepared(
                    request, route, entry, age, "HIT", "hit"
                ) or await responder.from_entry(request, route, entry, age, "HIT", "hit")
        else:
            entry = None
        shared_gen = None
        if rc.shared and self.shared is not None:
            # L1 could not answer: another instance may have stored a (fresher) copy.
            fetched_at = self.store.generation
            found, shared_gen = await self.shared.lookup(
                primary, url_part(primary), request.headers, rc.max_entry_size
            )
            if (
                found is not None
                and (entry is None or found.response_time > entry.response_time)
                and policy.may_reuse(scope, found.cc)
            ):
                self.store.put(found, fetched_at=fetched_at)
                entry = found
                age, verdict = self._judge(entry, req_cc, rc)
                if verdict is Freshness.FRESH:
                    return await self._responder.from_entry(
                        request, route, entry, age, "HIT", "hit; detail=shared"
                    )
        if entry is not None:
            if verdict is Freshness.STALE_WHILE_REVALIDATE:
                self._refresh_in_background(request, route, target, entry, shared_gen)
                return await self._responder.from_entry(
                    request, route, entry, age, "STALE", "hit; detail=stale-while-revalidate"
                )
            if not req_cc.only_if_cached:
                return await self._revalidate(request, route, target, entry, verdict, shared_gen)
        if req_cc.only_if_cached:
            # §5.2.1.7: nothing we may serve without going upstream.
            error = json_error(
                504,
                "not_cached",
                "only-if-cached: no stored response can answer this request",
                cache_headers("MISS", "fwd=miss; detail=only-if-cached"),
            )
            return self._responder.own(request, route, error)
        # A HEAD miss is fetched as a GET (§4.3.5 allows it, Varnish does it): the client
        # still gets no body, and the next GET is a hit. A Range miss likewise fetches the
        # whole response, stores it and cuts the range from it.
        return await self._coalesced(request, route, target, primary, {}, shared_gen)

    @staticmethod
    def _may_answer(request: web.BaseRequest, rc: RouteCache, entry: Entry) -> bool:
        return policy.may_reuse(policy.request_scope(request.headers, rc.rules), entry.cc)

    def _judge(
        self, entry: Entry, req_cc: policy.CacheControl, rc: RouteCache
    ) -> tuple[float, Freshness]:
        # entry.age(now), written out: asked on every lookup.
        elapsed = self._clock() - entry.response_time
        age = entry.initial_age + elapsed if elapsed > 0.0 else entry.initial_age
        if req_cc is EMPTY_CACHE_CONTROL and age < entry.lifetime and not entry.cc.no_cache:
            return age, Freshness.FRESH  # what lookup_verdict says, without asking it
        verdict = policy.lookup_verdict(
            age=age,
            lifetime=entry.lifetime,
            request_cc=req_cc,
            response_cc=entry.cc,
            rules=rc.rules,
        )
        return age, verdict

    # --- going upstream -----------------------------------------------------

    async def _coalesced(
        self,
        request: web.BaseRequest,
        route: LoadedRoute,
        target: Target,
        primary: str,
        validators: dict[str, str],
        shared_gen: bytes | None,
        stale: Entry | None = None,
        verdict: Freshness | None = None,
    ) -> web.StreamResponse:
        """One upstream request per key at a time; the others wait for its entry.

        `shared_gen`: the URL's purge generation in Redis when it was looked up there,
        so that the stored response can go to Redis too; None keeps it out of Redis.
        """
        pending = self._inflight.get(primary)
        if pending is not None:
            outcome = await asyncio.shield(pending)
            if (
                isinstance(outcome, Entry)
                and outcome.matches(request.headers)
                and (route.cache is None or self._may_answer(request, route.cache, outcome))
            ):
                return await self._responder.from_entry(
                    request,
                    route,
                    outcome,
                    outcome.age(self._clock()),
                    "MISS",
                    "fwd=miss; collapsed",
                )
            if isinstance(outcome, UpstreamError):
                if stale is not None and (why := _stale_reason(outcome, stale, verdict)):
                    return await self._stale_on_error(request, route, stale, why)
                raise outcome
            # Nothing shareable (not storable, or another variant): fetch for ourselves, and
            # share what we get under the generation our own lookup saw (a purge since then
            # keeps it out of Redis, as for any fetch).
            return await self._fetch_and_store(
                request, route, target, primary, validators, shared_gen, stale, verdict
            )

        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._inflight[primary] = future
        leading = False
        try:
            if shared_gen is not None and stale is None and self._global(route):
                assert self.shared is not None
                leading = await self.shared.lead(primary, url_part(primary), self._coalesce_wait)
                if not leading:
                    collapsed = await self._follow(request, route, primary, future)
                    if collapsed is not None:
                        return collapsed
            return await self._fetch_and_store(
                request, route, target, primary, validators, shared_gen, stale, verdict, future
            )
        finally:
            if self._inflight.get(primary) is future:
                del self._inflight[primary]
            if not future.done():
                future.set_result(None)
            if leading:
                assert self.shared is not None
                await self.shared.done(primary, url_part(primary))

    def _global(self, route: LoadedRoute) -> bool:
        return self.shared is not None and route.cache is not None and route.cache.coalesce_global

    async def _follow(
        self,
        request: web.BaseRequest,
        route: LoadedRoute,
        primary: str,
        future: asyncio.Future[Outcome],
    ) -> web.StreamResponse | None:
        """coalesce: global, another instance is fetching: the answer made from its
        entry, or None when nothing shareable came of it (then fetch for ourselves)."""
        assert self.shared is not None
        generation = self.store.generation
        assert route.cache is not None
        entry = await self.shared.follow(
            primary,
            url_part(primary),
            request.headers,
            self._coalesce_wait,
            route.cache.max_entry_size,
        )
        if entry is None:
            return None  # nothing shareable came of it
        self.store.put(entry, fetched_at=generation)
        future.set_result(entry)
        age = entry.age(self._clock())
        return await self._responder.from_entry(
            request, route, entry, age, "MISS", "fwd=miss; collapsed; detail=shared"
        )

    async def _fetch_and_store(
        self,
        request: web.BaseRequest,
        route: LoadedRoute,
        target: Target,
        primary: str,
        validators: dict[str, str],
        shared_gen: bytes | None,
        stale: Entry | None,
        verdict: Freshness | None,
        future: asyncio.Future[Outcome] | None = None,
    ) -> web.StreamResponse:
        rc = route.cache
        assert rc is not None
        request_time = self._clock()
        generation = self.store.generation
        try:
            up = await self._fetch(request, route, target, validators)
        except UpstreamError as exc:
            if future is not None:
                future.set_result(exc)
            if stale is not None and (why := _stale_reason(exc, stale, verdict)):
                return await self._stale_on_error(request, route, stale, why)
            raise
        try:
            response_time = self._clock()
            if stale is not None and up.status == 304:
                # §5.2.1.5: no part of a response to a no-store request is stored.
                keep = not policy.request_cache_control(request.headers).no_store
                fresh = self._refreshed(stale, up, request_time, response_time, rc.rules, keep)
                if future is not None:
                    future.set_result(fresh)
                if keep:
                    await self._share(fresh, generation, shared_gen, rc)
                return await self._responder.from_entry(
                    request,
                    route,
                    fresh,
                    fresh.age(response_time),
                    "REVALIDATED",
                    "fwd=stale; fwd-status=304",
                )
            if stale is not None and verdict is Freshness.STALE_IF_ERROR_ONLY and up.status >= 500:
                return await self._stale_on_error(request, route, stale, _STALE_IF_ERROR)
            return await self._store_or_relay(
                request,
                route,
                target,
                primary,
                up,
                (request_time, response_time),
                generation,
                shared_gen,
                future,
            )
        finally:
            up.release()

    async def _store_or_relay(
        self,
        request: web.BaseRequest,
        route: LoadedRoute,
        target: Target,
        primary: str,
        up: UpstreamResponse,
        times: tuple[float, float],
        generation: int,
        shared_gen: bytes | None,
        future: asyncio.Future[Outcome] | None,
    ) -> web.StreamResponse:
        headers = forward_response_headers(up.headers)
        try:
            entry, why_not, prefix = await self._read_entry(
                request, route, target, primary, up, headers, times
            )
        except (ExchangeError, TimeoutError) as exc:
            error = UpstreamError(502, "upstream_unavailable", f"upstream failed mid-body: {exc}")
            if future is not None:
                future.set_result(error)
            raise error from exc
        if entry is None:
            headers.update(cache_headers("MISS", f"fwd=miss; detail={why_not}"))
            return await self._responder.relay(request, route, up, headers, prefix)
        stored = self.store.put(entry, fetched_at=generation)
        if future is not None:
            # Waiters wake now, not on a polling interval. A response overtaken by a purge
            # is not handed on: a waiter may have arrived after the change.
            stale = not stored and self.store.purged_since(entry.url_key, generation)
            future.set_result(None if stale else entry)
        await self._share(entry, generation, shared_gen, route.cache)
        return await self._responder.from_entry(
            request,
            route,
            entry,
            entry.age(times[1]),
            "MISS",
            "fwd=miss; stored" if stored else "fwd=miss",
            headers,  # what the entry packed: no need to unpack them again
        )

    async def _read_entry(
        self,
        request: web.BaseRequest,
        route: LoadedRoute,
        target: Target,
        primary: str,
        up: UpstreamResponse,
        headers: CIMultiDict[str],
        times: tuple[float, float],
    ) -> tuple[Entry | None, str, bytes]:
        """Read `up` into an entry if it may and can be stored: (entry, why not, bytes read).

        `headers` are `up`'s as forwarded; the entry keeps them (the caller must not
        change them after a stored outcome).
        """
        rc = route.cache
        assert rc is not None
        scope = policy.request_scope(request.headers, rc.rules)
        decision = policy.storability("GET", up.status, request.headers, headers, rc.rules, scope)
        if not decision:
            return None, decision.reason, b""
        length = up.content_length
        if length is not None and length > rc.max_entry_size:
            return None, "too-large", b""
        body, complete = await _read_up_to(up, rc.max_entry_size)
        if not complete:
            # Larger than an entry may be: the caller streams what was read and the rest.
            return None, "too-large", body
        entry = Entry.build(
            status=up.status,
            reason=up.reason or "",
            headers=headers,
            body=body,
            request_headers=request.headers,
            request_time=times[0],
            response_time=times[1],
            rules=rc.rules,
            primary=primary,
            url_key=self.url_key(route, target.path, target.query),
            path=target.path,
            tags_header=rc.tags_header,
            handled_vary=_ENCODING_VARY if route.compression is not None else frozenset(),
        )
        return entry, "", b""

    async def _revalidate(
        self,
        request: web.BaseRequest,
        route: LoadedRoute,
        target: Target,
        entry: Entry,
        verdict: Freshness,
        shared_gen: bytes | None,
    ) -> web.StreamResponse:
        validators = policy.conditional_headers(entry.headers)
        return await self._coalesced(
            request, route, target, entry.primary, validators, shared_gen, entry, verdict
        )

    async def _share(
        self, entry: Entry, generation: int, shared_gen: bytes | None, rc: RouteCache | None
    ) -> None:
        """Store in Redis too, unless it was not looked up there or a purge overtook us."""
        if (
            shared_gen is None
            or self.shared is None
            or rc is None
            or self.store.purged_since(entry.url_key, generation)
        ):
            return
        await self.shared.save(entry, shared_gen, rc.rules)

    def _refreshed(
        self,
        stale: Entry,
        not_modified: UpstreamResponse,
        request_time: float,
        response_time: float,
        rules: policy.CacheRules,
        keep: bool = True,
    ) -> Entry:
        """§4.3.4: freshen a stored entry with a 304's headers, in the store too if `keep`."""
        fresh = stale.refreshed(
            forward_response_headers(not_modified.headers), request_time, response_time, rules
        )
        if keep:
            self.store.replace(stale, fresh)
        return fresh

    async def _stale_on_error(
        self, request: web.BaseRequest, route: LoadedRoute, entry: Entry, status: str
    ) -> web.StreamResponse:
        return await self._responder.from_entry(
            request, route, entry, entry.age(self._clock()), "STALE", status
        )

    async def _pass(
        self,
        request: web.BaseRequest,
        route: LoadedRoute,
        target: Target,
        x_cache: str,
        status: str,
    ) -> web.StreamResponse:
        """Forward without storing (Range, HEAD misses), keeping the client's own headers."""
        up = await self._fetch(request, route, target, None)
        try:
            headers = forward_response_headers(up.headers)
            headers.update(cache_headers(x_cache, status))
            return await self._responder.relay(request, route, up, headers)
        finally:
            up.release()

    # --- background refresh (stale-while-revalidate, refresh-ahead, warming) ---

    def _refresh_ahead(
        self,
        request: web.BaseRequest,
        route: LoadedRoute,
        target: Target,
        entry: Entry,
        age: float,
    ) -> None:
        """A popular entry that used `refresh_ahead` of its freshness is refreshed now, so
        that its readers never meet it expired (at most `max_rate`: a later hit retries)."""
        warming = self.warming
        assert warming is not None
        key = entry.primary
        if (
            warming.due_on_hit(key, age, entry.lifetime)
            and key not in self._refreshing
            and key not in self._inflight
            and warming.pacer.try_take()
        ):
            self._refresh_in_background(request, route, target, entry, None)

    def _refresh_in_background(
        self,
        request: web.BaseRequest,
        route: LoadedRoute,
        target: Target,
        entry: Entry,
        shared_gen: bytes | None,
    ) -> asyncio.Task[None] | None:
        key = entry.primary
        if key in self._refreshing or key in self._inflight:
            return self._refreshing.get(key)  # one refresh per key
        if policy.request_cache_control(request.headers).no_store:
            return None  # §5.2.1.5: nothing of its response may be stored, so no point
        return self._start_refresh(request, route, target, key, entry, shared_gen)

    def _start_refresh(
        self,
        request: web.BaseRequest,
        route: LoadedRoute,
        target: Target,
        key: str,
        entry: Entry | None,
        shared_gen: bytes | None,
    ) -> asyncio.Task[None]:
        task = asyncio.create_task(self._refresh(request, route, target, key, entry, shared_gen))
        self._refreshing[key] = task
        task.add_done_callback(lambda _: self._refreshing.pop(key, None))
        return task

    async def warm(
        self, request: web.BaseRequest, route: LoadedRoute, target: Target
    ) -> Entry | None:
        """Fetch, or revalidate, what a GET of `target` by `request` would be answered
        with, and store it: for the warmer, which has no client. The entry stored by this
        (or a concurrent) refresh, or None: nothing new was stored (the upstream failed or
        forbade storing, or a client's fetch of it is under way)."""
        key = self.primary_key(route, target, request)
        before = self.store.peek(key, request.headers)
        task = self._refreshing.get(key)
        if task is None and key not in self._inflight:
            task = self._start_refresh(request, route, target, key, before, None)
        if task is not None:
            await asyncio.shield(task)
        after = self.store.peek(key, request.headers)
        return after if after is not before else None

    async def _refresh(
        self,
        request: web.BaseRequest,
        route: LoadedRoute,
        target: Target,
        key: str,
        entry: Entry | None,
        shared_gen: bytes | None,
    ) -> None:
        # No client waits on this: it must not queue behind clients, probe an open
        # circuit or be retried (the task runs in its own copy of the context).
        BACKGROUND.set(True)
        rc = route.cache
        assert rc is not None
        request_time = self._clock()
        generation = self.store.generation
        validators = policy.conditional_headers(entry.headers) if entry is not None else {}
        try:
            up = await self._fetch(request, route, target, validators)
        except UpstreamError as exc:
            # Busy or circuit open: expected while the upstream struggles, not news.
            level = logging.DEBUG if exc.status == 503 else logging.WARNING
            log.log(level, "background refresh of %s failed: %s", target.path, exc.detail)
            return
        try:
            response_time = self._clock()
            if up.status == 304 and entry is not None:
                fresh = self._refreshed(entry, up, request_time, response_time, rc.rules)
                await self._share(fresh, generation, shared_gen, rc)
                return
            fresh, _, _ = await self._read_entry(
                request,
                route,
                target,
                key,
                up,
                forward_response_headers(up.headers),
                (request_time, response_time),
            )
            if fresh is not None:
                self.store.put(fresh, fetched_at=generation)
                await self._share(fresh, generation, shared_gen, rc)
            # Otherwise (a 5xx, say) keep serving what we have until it expires.
        except (ExchangeError, TimeoutError) as exc:
            log.warning("background refresh of %s failed mid-body: %r", target.path, exc)
        finally:
            up.release()


def _stale_reason(error: UpstreamError, stale: Entry, verdict: Freshness | None) -> str | None:
    """The Cache-Status of a stale answer to `error`, or None: the error goes to the client.

    An open circuit means the request was never sent (RFC 9211: no `fwd`), and any entry
    not forbidden stale service may answer, whatever its stale-if-error window.
    """
    if error.circuit_open and policy.stale_while_unreachable_allowed(stale.cc):
        return _CIRCUIT_OPEN
    if verdict is Freshness.STALE_IF_ERROR_ONLY:
        return _STALE_IF_ERROR
    return None


async def _read_up_to(up: UpstreamResponse, limit: int) -> tuple[bytes, bool]:
    """The body if it is at most `limit` bytes (True), else what was read so far (False)."""
    length = up.content_length
    if length is not None and length <= limit:
        return await up.read(), True
    chunks: list[bytes] = []
    size = 0
    async for chunk in up.content.iter_any():
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            return b"".join(chunks), False
    return b"".join(chunks), True
