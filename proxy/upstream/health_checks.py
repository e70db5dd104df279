"""Active health checks of the targets of upstreams with several (`upstream.health_check`).

One task per target and process: a GET of the path over the upstream pool (or a TCP connect
when there is no path), bounded by `timeout`; a 5xx, no response or a timeout fails it. Its
verdicts go to the target's `Checked` (proxy/upstream/ejection.py), which the balancer reads.

The cost is bounded and spread: one check per target per `interval` and process, the first
at a random point of the first interval and each next one `interval` +-15% later, so
workers and instances started together do not probe in step.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable

from proxy.config.upstream import Upstream
from proxy.tasks import cancel
from proxy.upstream.ejection import Checked
from proxy.upstream.guard import OriginGuard
from proxy.upstream.http1 import OriginKey, Pool

log = logging.getLogger("cacheproxy.upstream")

JITTER = 0.15  # each interval is interval x (1 +- JITTER)
MAX_BODY = 64 * 1024  # a check's response body read, to keep its connection


class HealthChecks:
    def __init__(self, config: Upstream, rand: Callable[[], float] = random.random) -> None:
        self.settings = config.health_check
        self.path = self.settings.path or config.health_path  # None: a TCP connect
        self._rand = rand
        self._pool: Pool | None = None
        self._watched: dict[str, tuple[OriginGuard, OriginKey, str]] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def watch(self, guard: OriginGuard, key: OriginKey, host: str) -> None:
        """Check `guard`'s target (at `key`, sent `host`) from now on, once started."""
        if not self.settings.enabled or guard.origin in self._watched:
            return
        s = self.settings
        guard.checked = Checked(s.unhealthy_threshold, s.healthy_threshold)
        self._watched[guard.origin] = (guard, key, host)
        if self._pool is not None:
            self._start(guard.origin)

    def start(self, pool: Pool) -> None:
        self._pool = pool
        for origin in self._watched:
            self._start(origin)

    def _start(self, origin: str) -> None:
        if origin not in self._tasks:
            self._tasks[origin] = asyncio.create_task(self._run(*self._watched[origin]))

    async def close(self) -> None:
        tasks, self._tasks = self._tasks, {}
        for task in tasks.values():
            await cancel(task)
        self._pool = None

    async def _run(self, guard: OriginGuard, key: OriginKey, host: str) -> None:
        interval = self.settings.interval
        await asyncio.sleep(self._rand() * interval)
        checked = guard.checked
        assert checked is not None
        while True:
            passed, why = await self.check(key, host)
            if checked.record(passed):
                if passed:
                    log.warning("upstream %s: health checks pass again: back in", guard.name)
                else:
                    log.warning(
                        "upstream %s: %d health checks in a row failed (%s): left out",
                        guard.name,
                        checked.unhealthy_after,
                        why,
                    )
            await asyncio.sleep(interval * (1 - JITTER + 2 * JITTER * self._rand()))

    async def check(self, key: OriginKey, host: str) -> tuple[bool, str]:
        """One check: (passed, why not)."""
        timeout = self.settings.timeout
        try:
            async with asyncio.timeout(timeout):
                if self.path is None:
                    _, writer = await asyncio.open_connection(key[1], key[2])
                    writer.close()
                    with contextlib.suppress(OSError):
                        await writer.wait_closed()
                    return True, ""
                assert self._pool is not None
                fields = [f"Host: {host}", "User-Agent: cacheproxy-health-check"]
                up = await self._pool.request("GET", key, self.path, fields, None, None, None)
                try:
                    # The head decides. A small body is read, so its connection is kept
                    # for the next check; any other is left unread, closing it.
                    if up.content_length is not None and up.content_length <= MAX_BODY:
                        await up.read()
                finally:
                    up.release()
        except TimeoutError:
            return False, f"no response within {timeout:g} s"
        except Exception as exc:  # whatever went wrong, the target did not respond
            return False, type(exc).__name__
        if up.status >= 500:
            return False, f"status {up.status}"
        return True, ""
