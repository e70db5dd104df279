"""Refreshes no client waits for: stale-while-revalidate, refresh-ahead of popular entries,
and the warmer's fetches. One per key at a time, never while a client's fetch of it is
under way."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from proxy.cache import policy
from proxy.cache.entry import Entry
from proxy.cache.memory import MemoryStore
from proxy.http.headers import forward_response_headers
from proxy.pipeline.cache_stage.fill import Fill
from proxy.pipeline.cache_stage.lookup import Lookup
from proxy.pipeline.warming import Warming
from proxy.upstream.client import UpstreamError
from proxy.upstream.http1 import ExchangeError

log = logging.getLogger("cacheproxy.cache")


class Refresher:
    def __init__(
        self,
        store: MemoryStore,
        fill: Fill,
        in_flight: Callable[[str], bool],
        warming: Warming | None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`in_flight(key)`: whether a client's fetch of that key is under way."""
        self._store = store
        self._fill = fill
        self._in_flight = in_flight
        self._warming = warming
        self._clock = clock
        self._refreshing: dict[str, asyncio.Task[None]] = {}

    async def close(self) -> None:
        tasks = list(self._refreshing.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def due_ahead(self, entry: Entry, age: float) -> bool:
        """Whether a popular entry that used `refresh_ahead` of its freshness is to be
        refreshed now (`in_background`), so that its readers never meet it expired (at
        most `max_rate`: a later hit asks again)."""
        warming = self._warming
        assert warming is not None
        key = entry.primary
        return (
            warming.due_on_hit(key, age, entry.lifetime)
            and key not in self._refreshing
            and not self._in_flight(key)
            and warming.pacer.try_take()
        )

    def in_background(self, lk: Lookup, entry: Entry) -> asyncio.Task[None] | None:
        key = entry.primary
        if key in self._refreshing or self._in_flight(key):
            return self._refreshing.get(key)  # one refresh per key
        if lk.request_cc.no_store:
            return None  # §5.2.1.5: nothing of its response may be stored, so no point
        return self._start(lk, entry)

    def _start(self, lk: Lookup, entry: Entry | None) -> asyncio.Task[None]:
        key = lk.primary
        task = asyncio.create_task(self._refresh(lk, entry))
        self._refreshing[key] = task
        task.add_done_callback(lambda _: self._ended(key, entry))
        return task

    def _ended(self, key: str, entry: Entry | None) -> None:
        self._refreshing.pop(key, None)
        if entry is not None:
            # A soft purge's grace lasts one revalidation: succeeded, the entry is replaced;
            # failed, it is merely stale (served as the usual rules say), never stale for ever.
            self._store.end_grace(entry)

    async def warm(self, lk: Lookup) -> Entry | None:
        """Fetch, or revalidate, what `lk` would be served with, and store it. The entry
        stored by this (or a concurrent) refresh, or None: nothing new was stored (the
        upstream failed or forbade storing, or a client's fetch of it is under way)."""
        key = lk.primary
        headers = lk.ex.request.headers
        before = self._store.peek(key, headers)
        task = self._refreshing.get(key)
        if task is None and not self._in_flight(key):
            task = self._start(lk, before)
        if task is not None:
            await asyncio.shield(task)
        after = self._store.peek(key, headers)
        return after if after is not before else None

    async def _refresh(self, lk: Lookup, entry: Entry | None) -> None:
        fill = self._fill
        path = lk.target.path
        request_time = self._clock()
        generation = self._store.generation
        validators = policy.conditional_headers(entry.headers) if entry is not None else {}
        try:
            # No client waits on this: it must not queue behind clients, probe an open
            # circuit or be retried.
            up = await fill.fetch.for_cache(lk.ex, lk.target, validators, background=True)
        except UpstreamError as exc:
            # Busy or circuit open: expected while the upstream struggles, not news.
            level = logging.DEBUG if exc.status == 503 else logging.WARNING
            log.log(level, "background refresh of %s failed: %s", path, exc.detail)
            return
        try:
            times = (request_time, self._clock())
            if up.status == 304 and entry is not None:
                fresh = fill.refreshed(entry, up, times, generation, lk.cache, lk.scope)
                await fill.share(fresh, generation, lk.shared_gen, lk.cache)
                return
            headers = forward_response_headers(up.headers)
            stored, _, _ = await fill.read_entry(lk, up, headers, times)
            if stored is not None:
                self._store.put(stored, fetched_at=generation)
                await fill.share(stored, generation, lk.shared_gen, lk.cache)
            # Otherwise (a 5xx, say) keep serving what we have until it expires.
        except (ExchangeError, TimeoutError) as exc:
            log.warning("background refresh of %s failed mid-body: %r", path, exc)
        finally:
            up.release()
