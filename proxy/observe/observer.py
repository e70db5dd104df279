"""The request path's side of observability: what each response costs to count.

`Observer.observe` is called by the proxy port once a response has been sent (see
proxy/server/listener.py); it costs a few dictionary updates, plus a tuple appended to the
access log's buffer when the line is logged. The upstream client and the rate-limit stage are
handed `upstream_result` and `Meters.ratelimit_check` when they are built. Everything that
reads these counters runs once a second (ticker.py) or when asked (documents.py, catalogue.py).
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from typing import IO, TYPE_CHECKING

from aiohttp import web
from multidict import istr

from proxy.adapters.aiohttp_internals import request_state
from proxy.http.request_id import upstream_request_id
from proxy.observe.logs import AccessLog
from proxy.observe.metrics import (
    CACHE_RESULT,
    REQUEST_ID,
    ROUTE,
    TUNNELLED,
    UNROUTED,
    RouteMeter,
    upstream_seconds,
)

if TYPE_CHECKING:
    from proxy.config.logs import LogSettings
    from proxy.http.clientaddr import TrustedProxies
    from proxy.observe.metrics import Meters
    from proxy.observe.sources import RouteFacts

_XFF = istr("X-Forwarded-For")
_FORWARDED = istr("Forwarded")


class Observer:
    def __init__(
        self,
        meters: Meters,
        log_settings: LogSettings,
        trusted_proxies: TrustedProxies,
        prepared: type[web.StreamResponse],
        stream: IO[bytes] | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        """`prepared`: the class of a hit's prepared response (proxy/respond/prepared.py),
        which carries its cache label as `cache_result`; other responses carry theirs
        under `CACHE_RESULT` (none: the cache stage did not make them)."""
        self.meters = meters
        self.access = (
            AccessLog(log_settings, stream or sys.stdout.buffer, trusted_proxies)
            if log_settings.access
            else None
        )
        self._all_hits = log_settings.sample_hits >= 1.0
        self._trusted = bool(trusted_proxies)
        self._prepared = prepared
        self._wall = wall

    def use_routes(self, routes: RouteFacts) -> None:
        """After a reload: new route names get meters; old ones keep counting what they saw."""
        by_route = self.meters.by_route
        for name, caching in routes.meters:
            if name not in by_route:
                by_route[name] = RouteMeter(name, caching)
        if self.access is not None:
            self.access.trusted = routes.trusted_proxies
        self._trusted = bool(routes.trusted_proxies)

    def start(self) -> None:
        if self.access is not None:
            self.access.start()

    async def stop(self) -> None:
        if self.access is not None:
            await asyncio.to_thread(self.access.close)

    def observe(
        self, request: web.BaseRequest, response: web.StreamResponse, seconds: float
    ) -> None:
        """One response sent on the proxy port, `seconds` after its request head arrived."""
        state = request_state(request)
        route = state.get(ROUTE, UNROUTED)
        status = response.status
        if response.__class__ is self._prepared:
            # A class identity test (cheaper than isinstance) that mypy does not narrow by.
            cache = response.cache_result  # type: ignore[attr-defined]
        else:
            cache = response.get(CACHE_RESULT, "none")
            if status == 101:  # a tunnel's, observed as it closes: its time is the switch's
                seconds -= response.get(TUNNELLED, 0.0)
        method = request.method
        self.meters.response(route, method, status, cache, seconds)
        access = self.access
        if access is not None and (cache != "hit" or self._all_hits or access.hit_sampled()):
            trusted = self._trusted
            access.add(
                (
                    self._wall(),
                    method,
                    request.raw_path,
                    route,
                    status,
                    cache,
                    upstream_seconds.get(None),
                    seconds,
                    response.body_length,
                    request.remote,
                    tuple(request.headers.getall(_XFF, ())) if trusted else (),
                    tuple(request.headers.getall(_FORWARDED, ())) if trusted else (),
                    state.get(REQUEST_ID),
                    upstream_request_id.get(None),
                )
            )

    def upstream_result(self, route: str, outcome: int | str, seconds: float) -> None:
        """One upstream request: its status (or error/timeout) and time to its head."""
        upstream_seconds.set(seconds)
        self.meters.upstream(route, outcome, seconds)
