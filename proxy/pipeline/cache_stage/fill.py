"""Filling the cache: the upstream request, then its response stored (here and in Redis),
merged into a stale entry (a 304), kept as a part (a 206 to a range we asked for, see
partial.py), or relayed as it is when it may not be stored."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from aiohttp import hdrs, web
from multidict import CIMultiDict

from proxy.cache import policy
from proxy.cache.entry import Entry, pack_headers
from proxy.cache.memory import MemoryStore
from proxy.cache.parts import Parts, combinable, parts_key
from proxy.cache.policy import Freshness, Scope
from proxy.cache.route import RouteCache
from proxy.cache.status import CacheOutcome
from proxy.http import ranges
from proxy.http.headers import forward_response_headers
from proxy.http.target import Target
from proxy.pipeline.cache_stage import outcomes
from proxy.pipeline.cache_stage.lookup import Lookup
from proxy.pipeline.upstream_fetch import UpstreamFetch
from proxy.respond.exchange import Exchange
from proxy.respond.responder import Responder
from proxy.shared.tier import SharedTier
from proxy.upstream.client import UpstreamError
from proxy.upstream.http1 import ExchangeError, UpstreamResponse

if TYPE_CHECKING:
    from proxy.observe.tracing.otel import Tracing  # imported only with `tracing:`

# What a coalesced fetch hands its waiters: the stored entry, the failure, or nothing
# shareable (then each waiter fetches for itself).
Shared = Entry | UpstreamError | None

_ENCODING_VARY = frozenset({"accept-encoding"})


class Fill:
    def __init__(
        self,
        store: MemoryStore,
        fetch: UpstreamFetch,
        responder: Responder,
        shared: SharedTier | None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.fetch = fetch
        self._responder = responder
        self._shared = shared
        self._clock = clock
        self.tracing: Tracing | None = None  # CacheStage.use_tracing

    async def fetch_and_store(
        self,
        lk: Lookup,
        validators: dict[str, str],
        stale: Entry | None,
        verdict: Freshness | None,
        waiters: asyncio.Future[Shared] | None = None,
    ) -> web.StreamResponse:
        """Fetch (revalidating `stale` when given) and respond; `waiters` are told what
        came of it."""
        request_time = self._clock()
        generation = self.store.generation
        ex = lk.ex
        try:
            up = await self.fetch.for_cache(ex, lk.target, validators)
        except UpstreamError as exc:
            if waiters is not None:
                waiters.set_result(exc)
            if stale is not None and (why := stale_outcome(exc, stale, verdict)):
                return await self.stale_on_error(lk, stale, why)
            raise
        try:
            response_time = self._clock()
            if stale is not None and up.status == 304:
                # §5.2.1.5: no part of a response to a no-store request is stored.
                keep = not lk.request_cc.no_store
                times = (request_time, response_time)
                fresh = self.refreshed(stale, up, times, generation, lk.cache, lk.scope, keep)
                if waiters is not None:
                    waiters.set_result(fresh)
                if keep:
                    await self.share(fresh, generation, lk.shared_gen, lk.cache)
                return await self._responder.from_entry(
                    ex, fresh, fresh.age(response_time), outcomes.REVALIDATED
                )
            if stale is not None and verdict is Freshness.STALE_IF_ERROR_ONLY and up.status >= 500:
                return await self.stale_on_error(lk, stale, outcomes.STALE_IF_ERROR)
            times = (request_time, response_time)
            if up.status == 206 and lk.asked is not None:
                answered = await self._store_part(lk, up, times, generation, waiters)
            else:
                answered = await self._store_or_relay(lk, up, times, generation, waiters)
        finally:
            up.release()
        if answered is not None:
            return answered
        # The part we asked for (what the parts held lacked) did not answer the client:
        # ask for what the client asked for itself, as a miss.
        lk.asked, lk.held = lk.wanted, None
        again = {} if lk.wanted is None else {"Range": lk.wanted.header()}
        told = waiters if waiters is not None and not waiters.done() else None
        return await self.fetch_and_store(lk, again, None, None, told)

    async def _store_or_relay(
        self,
        lk: Lookup,
        up: UpstreamResponse,
        times: tuple[float, float],
        generation: int,
        waiters: asyncio.Future[Shared] | None,
    ) -> web.StreamResponse:
        headers = forward_response_headers(up.headers)
        try:
            entry, why_not, prefix = await self.read_entry(lk, up, headers, times)
        except (ExchangeError, TimeoutError) as exc:
            raise _failed_mid_body(exc, waiters) from exc
        if entry is None:
            return await self._responder.relay(
                lk.ex, up, headers, outcomes.not_stored(why_not), prefix
            )
        # The entry went without the response's Set-Cookie (policy.entry_fields), meant for
        # this client alone: it gets the response as the origin sent it, not the entry.
        own_cookie = hdrs.SET_COOKIE in headers and not policy.keeps_set_cookie(lk.scope)
        span = None if self.tracing is None else self.tracing.start("cache store")
        stored = self.store.put(entry, fetched_at=generation)
        if waiters is not None:
            # Waiters wake now, not on a polling interval. A response overtaken by a purge
            # is not handed on: a waiter may have arrived after the change.
            overtaken = not stored and self.store.purged_since(entry.url_key, generation)
            waiters.set_result(None if overtaken else entry)
        if lk.shared_gen is not None:  # else no coroutine: `share` would do nothing
            await self.share(entry, generation, lk.shared_gen, lk.cache)
        if span is not None:
            span.set_attribute("cacheproxy.stored", stored)
            span.end()
        if stored and lk.held is not None:
            self.store.discard(lk.held)  # a complete response makes parts of it redundant
        outcome = outcomes.STORED if stored else outcomes.MISS
        if own_cookie:
            # The whole body was read: relay sends it as its prefix, and the empty rest.
            return await self._responder.relay(lk.ex, up, headers, outcome, entry.body)
        return await self._responder.from_entry(
            lk.ex,
            entry,
            entry.age(times[1]),
            outcome,
            headers,  # what the entry packed: no need to unpack them again
        )

    async def read_entry(
        self,
        lk: Lookup,
        up: UpstreamResponse,
        headers: CIMultiDict[str],
        times: tuple[float, float],
    ) -> tuple[Entry | None, str, bytes]:
        """Read `up` into an entry if it may and can be stored: (entry, why not, bytes read).

        `headers` are `up`'s as forwarded; the entry keeps them (the caller must not
        change them after a stored outcome), all but a Set-Cookie it may not keep.
        """
        rc = lk.cache
        request_headers = lk.ex.request.headers
        governed = policy.governing(headers)
        decision = policy.storability(
            "GET", up.status, request_headers, headers, rc.rules, lk.scope, governed=governed
        )
        if not decision.store:  # not `not decision`: no call of its __bool__
            return None, decision.reason, b""
        length = up.content_length
        if length is not None and length > rc.max_entry_size:
            return None, "too-large", b""
        # Mostly here with the head already: taken without the coroutines of a read.
        body = up.content.whole()
        if body is None:
            body, complete = await _read_up_to(up, rc.max_entry_size)
        else:
            complete = len(body) <= rc.max_entry_size
        if not complete:
            # Larger than an entry may be: the caller streams what was read and the rest.
            return None, "too-large", body
        entry = Entry.build(
            status=up.status,
            reason=up.reason or "",
            headers=policy.entry_fields(headers, lk.scope),
            body=body,
            request_headers=request_headers,
            request_time=times[0],
            response_time=times[1],
            rules=rc.rules,
            primary=lk.primary,
            url_key=lk.url_key,
            path=lk.target.path,
            tag_fields=rc.tags,
            handled_vary=_ENCODING_VARY if lk.ex.route.compression is not None else frozenset(),
            governed=governed,
        )
        return entry, "", b""

    async def _store_part(
        self,
        lk: Lookup,
        up: UpstreamResponse,
        times: tuple[float, float],
        generation: int,
        waiters: asyncio.Future[Shared] | None,
    ) -> web.StreamResponse | None:
        """A 206 to the range we asked for (`lk.asked`): kept as a part, combined with the
        parts held when they are of the same representation (RFC 9111 §3.4), made a
        complete entry when they add up to it; relayed unstored when it may not be kept.
        None: it cannot answer the client (it is not what the client asked for)."""
        assert lk.asked is not None
        rc, ex = lk.cache, lk.ex
        headers = forward_response_headers(up.headers)
        got = ranges.received(headers.getall("Content-Range", []), lk.asked)
        if got is None:
            return await self._relay_part(lk, up, headers, "content-range")
        decision = policy.storability(
            "GET", 206, ex.request.headers, headers, rc.rules, lk.scope, parts=True
        )
        if not decision:
            return await self._relay_part(lk, up, headers, decision.reason)
        if "Set-Cookie" in headers and not policy.keeps_set_cookie(lk.scope):
            # Meant for this client alone, and parts are served from the entry, which goes
            # without it (policy.entry_fields): the client gets the 206 as it came, unstored.
            return await self._relay_part(lk, up, headers, "set-cookie")
        part, length = got
        fields = CIMultiDict(policy.entry_fields(headers, lk.scope))
        fields.popall("Content-Range", None)
        fields.popall("Content-Length", None)
        held = lk.held
        stored_parts = None if held is None else held.parts
        if held is None or stored_parts is None:
            base = Parts(length)
        elif combinable(held.headers, headers, stored_parts.length, length):
            base = stored_parts
        else:
            base = Parts(length)  # another representation: the new part replaces them
        size = part.end - part.start + 1
        if up.content_length not in (None, size):
            return await self._relay_part(lk, up, headers, "content-range")
        if len(pack_headers(fields)) + base.size() + size > rc.max_entry_size:
            return await self._relay_part(lk, up, headers, "too-large")
        try:
            body, complete = await _read_up_to(up, size)
        except (ExchangeError, TimeoutError) as exc:
            raise _failed_mid_body(exc, waiters) from exc
        if not complete or len(body) != size:
            return await self._relay_part(lk, up, headers, "content-range", body)
        parts = base.add(part.start, body)
        whole = parts.whole()
        if whole is not None:
            fields["Content-Length"] = str(length)
        entry = Entry.build(
            status=206 if whole is None else 200,
            reason="Partial Content" if whole is None else "OK",
            headers=fields,
            body=b"" if whole is None else whole,
            request_headers=ex.request.headers,
            request_time=times[0],
            response_time=times[1],
            rules=rc.rules,
            primary=parts_key(lk.primary) if whole is None else lk.primary,
            url_key=lk.url_key,
            path=lk.target.path,
            tag_fields=rc.tags,
            # Parts are served as stored, never re-encoded: they keep a Vary on the coding.
            handled_vary=(
                _ENCODING_VARY
                if ex.route.compression is not None and whole is not None
                else frozenset()
            ),
            parts=parts if whole is None else None,
        )
        stored = self.store.put(entry, fetched_at=generation)
        outcome = outcomes.STORED if stored else outcomes.MISS
        if whole is not None:  # §3.4: complete now, stored and served as any 200
            if held is not None:
                self.store.discard(held)
            if waiters is not None:
                overtaken = not stored and self.store.purged_since(entry.url_key, generation)
                waiters.set_result(None if overtaken else entry)
            await self.share(entry, generation, lk.shared_gen, rc)
            return await self._responder.from_entry(ex, entry, entry.age(times[1]), outcome)
        if lk.wanted is None:
            return None  # a plain GET, and the parts still do not add up
        if waiters is not None:
            waiters.set_result(entry)  # each waiter checks that it covers its range
        wanted = ranges.resolve(lk.wanted, length)
        if isinstance(wanted, ranges.ByteRange) and not parts.covers(wanted):
            if lk.asked != lk.wanted:
                return None
            wanted = part  # less than asked for: what the origin sent
        return self._responder.from_parts(ex, entry, wanted, entry.age(times[1]), outcome)

    async def _relay_part(
        self,
        lk: Lookup,
        up: UpstreamResponse,
        headers: CIMultiDict[str],
        why: str,
        prefix: bytes = b"",
    ) -> web.StreamResponse | None:
        """A 206 not kept goes to the client as it came, if it is what the client asked
        for; None: it is not."""
        if lk.asked != lk.wanted:
            return None
        return await self._responder.relay(lk.ex, up, headers, outcomes.not_stored(why), prefix)

    async def share(
        self, entry: Entry, generation: int, shared_gen: bytes | None, rc: RouteCache
    ) -> None:
        """Store in Redis too, unless it was not looked up there or a purge overtook us."""
        if (
            shared_gen is None
            or self._shared is None
            or self.store.purged_since(entry.url_key, generation)
        ):
            return
        await self._shared.save(entry, shared_gen, rc.rules)

    def refreshed(
        self,
        stale: Entry,
        not_modified: UpstreamResponse,
        times: tuple[float, float],
        generation: int,
        rc: RouteCache,
        scope: Scope,
        keep: bool = True,
    ) -> Entry:
        """§4.3.4: freshen a stored entry with a 304's headers, in the store too if `keep`
        and no purge came since generation `generation` (when the revalidation began).
        A 304's Set-Cookie joins only a user's own entry (policy.entry_fields)."""
        headers = policy.entry_fields(forward_response_headers(not_modified.headers), scope)
        fresh = stale.refreshed(headers, *times, rc.rules)
        if keep:
            self.store.replace(stale, fresh, generation)
        return fresh

    async def stale_on_error(
        self, lk: Lookup, entry: Entry, outcome: CacheOutcome
    ) -> web.StreamResponse:
        return await self._responder.from_entry(lk.ex, entry, entry.age(self._clock()), outcome)

    async def pass_through(
        self, ex: Exchange, target: Target, outcome: CacheOutcome
    ) -> web.StreamResponse:
        """Forward without storing, keeping the client's own conditions and range."""
        up = await self.fetch.for_cache(ex, target, None)
        try:
            return await self._responder.relay(
                ex, up, forward_response_headers(up.headers), outcome
            )
        finally:
            up.release()


def stale_outcome(
    error: UpstreamError, stale: Entry, verdict: Freshness | None
) -> CacheOutcome | None:
    """How a stale response to `error` is described, or None: the error goes to the client.

    An open circuit means the request was never sent, and any entry not forbidden stale
    service may be served, whatever its stale-if-error window.
    """
    if error.circuit_open and policy.stale_while_unreachable_allowed(stale.cc):
        return outcomes.CIRCUIT_OPEN
    if verdict is Freshness.STALE_IF_ERROR_ONLY:
        return outcomes.STALE_IF_ERROR
    return None


def _failed_mid_body(exc: Exception, waiters: asyncio.Future[Shared] | None) -> UpstreamError:
    """The 502 for a body the upstream broke off, told to the fetch's waiters too."""
    error = UpstreamError(502, "upstream_unavailable", f"upstream failed mid-body: {exc}")
    if waiters is not None:
        waiters.set_result(error)
    return error


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
