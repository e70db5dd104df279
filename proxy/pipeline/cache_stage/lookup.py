"""`Lookup`: what the cache stage knows about one request, worked out once (stage.py) and
read by every step after."""

from __future__ import annotations

from proxy.cache.entry import Entry
from proxy.cache.policy import CacheControl, Scope
from proxy.cache.route import RouteCache
from proxy.http.ranges import RangeSpec
from proxy.http.target import Target
from proxy.respond.exchange import Exchange


class Lookup:
    """Made only once a request gets past a fresh hit in memory: that path reads the same
    facts as locals and allocates nothing for them."""

    __slots__ = (
        "asked",
        "cache",
        "ex",
        "flight",
        "held",
        "primary",
        "request_cc",
        "scope",
        "shared_gen",
        "target",
        "wanted",
    )

    def __init__(
        self,
        ex: Exchange,
        target: Target,
        cache: RouteCache,
        scope: Scope,
        request_cc: CacheControl,
        primary: str,
    ) -> None:
        self.ex = ex
        self.target = target
        self.cache = cache  # ex.route.cache, known to be set
        self.scope = scope
        self.request_cc = request_cc
        self.primary = primary  # the store key
        # The URL's purge generation in Redis once it was looked up there, so that what is
        # stored goes to Redis too; None keeps it out of Redis.
        self.shared_gen: bytes | None = None
        # Partial content (partial.py): the one fetch requests wait on (coalescing.py), the
        # stored parts a 206 may combine with, the range the fetch asks the origin for and
        # the one the client asked for (None: a plain GET).
        self.flight = primary
        self.held: Entry | None = None
        self.asked: RangeSpec | None = None
        self.wanted: RangeSpec | None = None

    @property
    def url_key(self) -> str:
        keys = self.cache.keys
        if keys.by_url:
            return self.primary  # the same string: not made again
        return keys.url_key(self.ex.route.upstream.key_origin, self.target.path, self.target.query)
