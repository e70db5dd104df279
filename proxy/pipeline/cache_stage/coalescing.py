"""One upstream request per key at a time: the requests that arrive while it is under way
wait for its entry, in this process, and across instances with `coalesce: global`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from aiohttp import web

from proxy.cache import policy
from proxy.cache.entry import Entry
from proxy.cache.keys import url_part
from proxy.cache.memory import MemoryStore
from proxy.cache.policy import Freshness
from proxy.http import ranges
from proxy.pipeline.cache_stage import outcomes
from proxy.pipeline.cache_stage.fill import Fill, Shared, stale_outcome
from proxy.pipeline.cache_stage.lookup import Lookup
from proxy.respond.responder import Responder
from proxy.shared.tier import SharedTier
from proxy.upstream.client import UpstreamError


class Coalescer:
    def __init__(
        self,
        store: MemoryStore,
        shared: SharedTier | None,
        fill: Fill,
        responder: Responder,
        wait: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._shared = shared
        self._fill = fill
        self._responder = responder
        self._wait = wait  # on another instance's fetch, at most (see CacheStage)
        self._clock = clock
        self._inflight: dict[str, asyncio.Future[Shared]] = {}

    def in_flight(self, key: str) -> bool:
        return key in self._inflight

    async def fetch(
        self,
        lk: Lookup,
        validators: dict[str, str],
        stale: Entry | None,
        verdict: Freshness | None,
    ) -> web.StreamResponse:
        """Fetch for `lk` (revalidating `stale`), or wait for the fetch already under way:
        per primary key, or per key and range for a range fetch (`lk.flight`)."""
        primary, flight = lk.primary, lk.flight
        pending = self._inflight.get(flight)
        if pending is not None:
            outcome = await asyncio.shield(pending)
            if (
                isinstance(outcome, Entry)
                and outcome.matches(lk.ex.request.headers)
                and policy.may_reuse(lk.scope, outcome.cc)
            ):
                age = outcome.age(self._clock())
                parts = outcome.parts
                if parts is None:
                    return await self._responder.from_entry(lk.ex, outcome, age, outcomes.COLLAPSED)
                wanted = None if lk.wanted is None else ranges.resolve(lk.wanted, parts.length)
                if isinstance(wanted, ranges.Unsatisfiable) or (
                    wanted is not None and parts.covers(wanted)
                ):
                    return self._responder.from_parts(
                        lk.ex, outcome, wanted, age, outcomes.COLLAPSED
                    )
            if isinstance(outcome, UpstreamError):
                if stale is not None and (why := stale_outcome(outcome, stale, verdict)):
                    return await self._fill.stale_on_error(lk, stale, why)
                raise outcome
            # Nothing shareable (not storable, or another variant): fetch for ourselves, and
            # share what we get under the generation our own lookup saw (a purge since then
            # keeps it out of Redis, as for any fetch).
            return await self._fill.fetch_and_store(lk, validators, stale, verdict)

        waiters: asyncio.Future[Shared] = asyncio.get_running_loop().create_future()
        self._inflight[flight] = waiters
        shared = self._shared
        leading = False
        try:
            if (
                shared is not None
                and lk.shared_gen is not None
                and stale is None
                and lk.cache.coalesce_global
                and lk.wanted is None  # a range fetch's parts stay in this process
            ):
                leading = await shared.lead(primary, url_part(primary), self._wait)
                if not leading:
                    followed = await self._follow(lk, waiters)
                    if followed is not None:
                        return followed
            return await self._fill.fetch_and_store(lk, validators, stale, verdict, waiters)
        finally:
            if self._inflight.get(flight) is waiters:
                del self._inflight[flight]
            if not waiters.done():
                waiters.set_result(None)
            if leading:
                assert shared is not None
                await shared.done(primary, url_part(primary))

    async def _follow(
        self, lk: Lookup, waiters: asyncio.Future[Shared]
    ) -> web.StreamResponse | None:
        """coalesce: global, another instance is fetching: the response made from its
        entry, or None when nothing shareable came of it (then fetch for ourselves)."""
        assert self._shared is not None
        generation = self._store.generation
        primary = lk.primary
        entry = await self._shared.follow(
            primary, url_part(primary), lk.ex.request.headers, self._wait, lk.cache.max_entry_size
        )
        if entry is None:
            return None
        self._store.put(entry, fetched_at=generation)
        waiters.set_result(entry)
        age = entry.age(self._clock())
        return await self._responder.from_entry(lk.ex, entry, age, outcomes.COLLAPSED_SHARED)
