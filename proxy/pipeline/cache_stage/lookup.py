"""`Lookup`: what the cache stage knows about one request, worked out once (stage.py) and
read by every step after."""

from __future__ import annotations

from aiohttp import web

from proxy.cache.policy import CacheControl, Scope
from proxy.cache.route import RouteCache
from proxy.edge.fields import EdgeFields
from proxy.edge.route import LoadedRoute
from proxy.http.target import Target
from proxy.respond.exchange import Exchange


class Lookup(Exchange):
    """What the cache stage knows about one request, worked out once and read by each step."""

    __slots__ = ("cache", "primary", "request_cc", "scope", "shared_gen", "target")

    def __init__(
        self,
        request: web.BaseRequest,
        route: LoadedRoute,
        edge: EdgeFields,
        target: Target,
        cache: RouteCache,
        scope: Scope,
        request_cc: CacheControl,
        primary: str,
    ) -> None:
        # Exchange's three, set here: a call fewer on every hit.
        self.request = request
        self.route = route
        self.edge = edge
        self.target = target
        self.cache = cache  # route.cache, known to be set
        self.scope = scope
        self.request_cc = request_cc
        self.primary = primary  # the store key
        # The URL's purge generation in Redis once it was looked up there, so that what is
        # stored goes to Redis too; None keeps it out of Redis.
        self.shared_gen: bytes | None = None

    @property
    def url_key(self) -> str:
        return self.cache.keys.url_key(
            self.route.upstream.host_header, self.target.path, self.target.query
        )
