"""The rate-limit stage of one limiter: who the client is, its windows, the response.

Built once at start-up per limiter (the top-level defaults, shared by every route that
does not declare its own section; and one per route that does). On every request of a
limited route the pipeline calls `check_local` (memory backend: synchronous, no await) or
`check` (Redis); either returns the client's counts, for the headers of whatever response
it gets (proxy/respond/exchange.py), and the 429 to send, or None to go on.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from math import ceil
from typing import Final

from aiohttp import web
from multidict import CIMultiDict

from proxy.cache.keys import hash_secret
from proxy.cache.memory import StoreUnavailable
from proxy.config.ratelimit import LimiterSettings
from proxy.edge.ratelimit.headers import COUNT_HEADERS, RateHeaders, whole_seconds
from proxy.edge.ratelimit.identity import identify
from proxy.edge.ratelimit.memory import MemoryWindows
from proxy.edge.ratelimit.redis_backend import RedisWindows
from proxy.edge.ratelimit.window import Outcome
from proxy.http.clientaddr import TrustedProxies
from proxy.http.errors import json_error
from proxy.shared.redis import SharedRedis

log = logging.getLogger("cacheproxy.ratelimit")

# The numbers of a client's rate-limit headers: (which limit, remaining, reset), or None
# when they are unknown (Redis failed).
Counts = tuple[int, int, int] | None
# The stage did not run (a revoked token was refused first): the origin's headers stay.
UNCHECKED: Final[Counts] = (-1, -1, -1)
# What a check returns: the client's counts, and the refusal to send or None to go on.
Checked = tuple[Counts, web.Response | None]
# What the memory backend's check returns: its counts are always known.
CheckedLocally = tuple[tuple[int, int, int], web.Response | None]
_SAFE_NAME = re.compile(r"[A-Za-z0-9_.:\-\[\]]{1,64}")


class RateLimiter:
    def __init__(
        self,
        settings: LimiterSettings,
        trusted: TrustedProxies,
        redis: SharedRedis | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        windows = [r.window for r in settings.rates]
        limits = [r.count for r in settings.rates]
        self._identify = identify(settings.key, trusted, settings.ipv6_prefix)
        # Always there: the backend without Redis, the fallback (`local`) with it.
        self.memory = MemoryWindows(windows, limits, settings.max_clients, clock)
        self.shared = (
            RedisWindows(redis, _redis_name(settings.name), windows, limits) if redis else None
        )
        self.local = self.shared is None  # the pipeline calls check_local, without await
        self.headers = RateHeaders(settings.rates)
        self._redis = redis
        # Visible state, for /metrics, /health and the dashboard (proxy/observe/documents.py).
        self.denied = 0
        self.store_errors = 0  # checks Redis could not decide
        self.degraded = False  # the last check could not reach Redis
        self.last_error: str | None = None

    # --- the request path ---------------------------------------------------

    def check_local(self, request: web.BaseRequest) -> CheckedLocally:
        allowed, which, remaining, wait = self.memory.hit(self._identify(request))
        reset = ceil(wait - 1e-6)  # whole_seconds(wait), written out: a call costs more
        if reset < 1:
            reset = 1
        # The numbers only: the header values are made by whoever responds (`apply`, or
        # `lines` for a prepared hit), once.
        counts = (which, remaining, reset)
        if allowed:
            return counts, None
        return counts, self._refuse(which, remaining, reset)

    async def check(self, request: web.BaseRequest) -> Checked:
        assert self.shared is not None and self._redis is not None
        client = self._identify(request)
        self._redis.request_budget()  # this check and the cache tier's calls: one timeout
        try:
            outcome = await self.shared.hit(client)
        except StoreUnavailable as exc:
            return self._store_failed(request, client, exc)
        if self.degraded:
            self.degraded = False
            log.info("rate limit %s: Redis responds again, limits are shared", self.settings.name)
        return self._checked(outcome)

    def apply(self, counts: Counts, headers: CIMultiDict[str]) -> None:
        """Put a client's rate-limit headers on its response (replacing the origin's)."""
        if counts is UNCHECKED:
            return  # refused before the stage ran (a revoked token)
        if counts is None:  # counts unknown: none of the origin's either
            headers.update(self.headers.policy_only)
            for name in COUNT_HEADERS:
                headers.popall(name, None)
        else:
            headers.update(self.headers.get(*counts))

    def lines(self, counts: Counts) -> str | None:
        """What `apply` adds to a response, as lines on the wire; None when `apply` would
        leave the origin's own headers (no check ran). The caller drops the origin's in
        both cases."""
        if counts is UNCHECKED:
            return None
        if counts is None:
            return self.headers.policy_line
        return self.headers.lines(*counts)

    # --- responses ----------------------------------------------------------

    def _checked(self, outcome: Outcome) -> Checked:
        allowed, which, remaining, wait = outcome
        reset = whole_seconds(wait)
        counts = (which, remaining, reset)
        if allowed:
            return counts, None
        return counts, self._refuse(which, remaining, reset)

    def _refuse(self, which: int, remaining: int, retry: int) -> web.Response:
        self.denied += 1
        pairs = self.headers.get(which, remaining, retry)
        rate = self.settings.rates[which]
        return json_error(
            429,
            "rate_limited",
            f"rate limit {rate.text} exceeded; retry in {retry} s",
            {"Retry-After": str(retry), **dict(pairs)},
            extra={"retry_after": retry},  # the pipeline adds the request's id
        )

    def _store_failed(
        self, request: web.BaseRequest, client: str, exc: StoreUnavailable
    ) -> Checked:
        self.store_errors += 1
        self.last_error = str(exc)
        if not self.degraded:
            self.degraded = True
            log.warning(
                "rate limit %s: Redis unavailable (%s); on_store_error=%s",
                self.settings.name,
                exc,
                self.settings.on_store_error,
            )
        mode = self.settings.on_store_error
        if mode == "local":
            return self._checked(self.memory.hit(client))
        if mode == "allow":
            return None, None  # the counts are unknown: no numbers
        assert self._redis is not None
        retry = whole_seconds(self._redis.guard.breaker.reset_after)
        return None, json_error(
            503,
            "rate_limit_unavailable",
            "rate limits cannot be checked right now",
            {"Retry-After": str(retry), **dict(self.headers.policy_only)},
            extra={"retry_after": retry},
        )


def _redis_name(name: str) -> str:
    """The limiter's part of its Redis keys: readable when safe, a digest otherwise."""
    return name if _SAFE_NAME.fullmatch(name) else "h" + hash_secret(name)[:16]
