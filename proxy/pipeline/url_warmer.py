"""`cache.warming.urls`: fetched from start-up and kept fresh, in the background.

Each URL is fetched once the proxy starts (its port opens at once: a slow upstream must
not delay it), then refreshed whenever its entry has used `refresh_ahead` of its
freshness. Every request goes through the one pacer (`max_rate`), through the origin's
gate without queueing and through its breaker, and the warmer pauses while the upstream
struggles (circuit not closed, or clients queueing for it). A URL that cannot be stored
fresh is tried again later, backing off up to `MAX_BACKOFF`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from proxy.edge.route import LoadedRoute
from proxy.http.target import Target, parse_target
from proxy.pipeline.cache_stage import CacheStage
from proxy.pipeline.routes import RouteTable
from proxy.pipeline.warming import Warming, refresh_ahead_at
from proxy.shared.breaker import State
from proxy.tasks import cancel
from proxy.upstream.client import UpstreamClient

log = logging.getLogger("cacheproxy.warming")

MAX_BACKOFF = 60.0  # seconds between tries of a URL that keeps failing
MIN_GAP = 0.1  # seconds between two refreshes of one URL, whatever its entry says
_PAUSE = 1.0  # seconds to wait while the upstream struggles
_MAX_SLEEP = 30.0  # wake at least this often (a purge may have emptied an entry)


@dataclass(frozen=True, slots=True)
class WarmingRequest:
    """What the cache's fetch reads of a request, for a fetch no client made: a plain
    GET with no headers (the variant clients get when the origin varies on none of
    theirs), from no peer (so no X-Forwarded-For)."""

    path: str
    method: str = "GET"
    headers: CIMultiDictProxy[str] = field(default_factory=lambda: CIMultiDictProxy(CIMultiDict()))
    remote: str | None = None
    scheme: str = "http"
    body_exists: bool = False
    content_length: int | None = None


@dataclass(slots=True)
class _Url:
    url: str
    route: LoadedRoute
    target: Target
    request: web.BaseRequest
    due: float = 0.0  # clock time of the next fetch
    failures: int = 0


class Warmer:
    def __init__(
        self,
        urls: tuple[str, ...],
        cache: CacheStage,
        routes: RouteTable,
        upstream: UpstreamClient,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        assert cache.warming is not None
        self.warming: Warming = cache.warming
        self.cache = cache
        self.upstream = upstream
        self._clock = clock
        self._urls = []
        for url in urls:
            target = parse_target(url)
            route = routes.match("GET", target.path)
            request = cast(web.BaseRequest, WarmingRequest(target.path))
            self._urls.append(_Url(url, route, target, request))
        self._task: asyncio.Task[None] | None = None
        self.fetches = 0  # warming requests made (for tests and stats)

    def start(self) -> None:
        if self._urls:
            self._task = asyncio.create_task(self._run(), name="cacheproxy-warmer")

    async def close(self) -> None:
        await cancel(self._task)
        self._task = None

    async def _run(self) -> None:
        # Its fetches (refresh.py) are background ones: they never queue behind clients,
        # never probe an open circuit and are never retried.
        while True:
            item = min(self._urls, key=lambda u: u.due)
            wait = max(item.due - self._clock(), self.warming.pacer.wait_time())
            if wait > 0:
                await asyncio.sleep(min(wait, _MAX_SLEEP))
                continue
            pause = self._struggling(item.route)
            if pause:
                item.due = self._clock() + pause
                continue
            if not self.warming.pacer.try_take():
                continue  # a hit's refresh-ahead took the token first
            try:
                item.due = await self._warm(item)
            except Exception:  # the loop must outlive any one bad fetch
                log.exception("warming %s failed", item.url)
                item.due = self._backoff(item)

    def _struggling(self, route: LoadedRoute) -> float:
        """Seconds to hold off while every target of the upstream struggles, else 0."""
        group = route.upstream.group
        pause = math.inf
        for guard in group.guards or self.upstream.bind(group):
            breaker = guard.breaker
            if breaker is not None and breaker.state is not State.CLOSED:
                pause = min(pause, max(breaker.retry_in(), _PAUSE))
            elif guard.gate.queued:
                pause = _PAUSE
            else:
                return 0.0  # one has room
        return pause

    async def _warm(self, item: _Url) -> float:
        """Fetch one URL; when it is next due."""
        self.fetches += 1
        entry = await self.cache.warm(item.request, item.route, item.target)
        if entry is None or entry.lifetime <= 0:
            log.log(
                self._level(item),
                "warming %s: nothing fresh stored (upstream failing, busy, or not storable)",
                item.url,
            )
            return self._backoff(item)
        item.failures = 0
        age = entry.age(self.cache.now())
        due_in = refresh_ahead_at(entry.lifetime, self.warming.refresh_ahead) - age
        return self._clock() + max(MIN_GAP, due_in)

    def _backoff(self, item: _Url) -> float:
        item.failures += 1
        return self._clock() + min(MAX_BACKOFF, 2.0 ** (item.failures - 1))

    @staticmethod
    def _level(item: _Url) -> int:
        # One warning when a URL starts failing, then quiet until it recovers.
        return logging.WARNING if item.failures == 0 else logging.DEBUG
