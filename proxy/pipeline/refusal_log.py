"""The log lines of upstream failures, one per failure, except refusals that come in floods.

While an origin's circuit is open (or its queue is full), every request to it is refused
without being sent: logged one by one, 40 refused requests made 40 warnings and buried
the one line that says why (the guard's "circuit open: ..."). Those refusals are counted
instead, and a summary per route and reason goes out every `every` seconds while they last.
"""

from __future__ import annotations

import asyncio
import logging

from proxy.http.errors import UpstreamError

log = logging.getLogger("cacheproxy")

SUMMARY_EVERY = 5.0  # seconds between two summaries of refusals on one route


class RefusalLog:
    def __init__(self, every: float = SUMMARY_EVERY) -> None:
        self.every = every
        self._counts: dict[tuple[str, str], int] = {}  # (route, error code) -> refusals
        self._flush: asyncio.TimerHandle | None = None

    def failed(self, route: str, method: str, path: str, exc: UpstreamError) -> None:
        """One request that got `exc` instead of an upstream response."""
        if not (exc.circuit_open or exc.code == "upstream_busy"):
            log.warning("%s %s -> %s: %s", method, path, exc.code, exc.detail)
            return
        key = (route, exc.code)
        self._counts[key] = self._counts.get(key, 0) + 1
        if self._flush is None:
            self._flush = asyncio.get_running_loop().call_later(self.every, self.summarise)

    def summarise(self) -> None:
        """Log what was counted since the last summary (also on shutdown: nothing is lost)."""
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        counts, self._counts = self._counts, {}
        for (route, code), n in counts.items():
            why = "circuit open" if code != "upstream_busy" else "upstream busy"
            log.warning(
                "route %s: %d request%s refused in the last %g s (%s, %s)",
                route,
                n,
                "" if n == 1 else "s",
                self.every,
                why,
                code,
            )
