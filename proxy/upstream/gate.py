"""A FIFO admission gate: at most `limit` holders at once, at most `max_queue` waiting.

Our own rather than the connector's limit, so the queue is bounded and measurable and a
full queue or a long wait is a response of ours (503 upstream_busy), not a connect timeout.
The limit may change while requests wait (the adaptive limiter moves it): a raised limit
admits waiters at once, a lowered one admits nobody until enough holders have left.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass


class QueueFull(Exception):
    """`max_queue` requests wait already."""


class QueueTimeout(Exception):
    """No slot came free within the time the caller could wait."""


@dataclass(slots=True)
class GateStats:
    admitted: int = 0  # slots given out
    waited: int = 0  # of those, after a wait in the queue
    wait_seconds: float = 0.0  # total time admitted requests spent queued
    queue_full: int = 0  # turned away at once: the queue was full
    queue_timeouts: int = 0  # gave up waiting


class Gate:
    def __init__(
        self, limit: int, max_queue: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._limit = max(1, limit)
        self.max_queue = max_queue
        self.in_flight = 0
        self._waiters: deque[tuple[asyncio.Future[None], float]] = deque()
        self._clock = clock
        self.stats = GateStats()

    @property
    def limit(self) -> int:
        return self._limit

    @limit.setter
    def limit(self, value: int) -> None:
        self._limit = max(1, value)
        self._admit_waiters()

    @property
    def queued(self) -> int:
        return len(self._waiters)

    def oldest_wait(self) -> float:
        """Seconds the first waiter has waited so far (0 with nobody waiting)."""
        return self._clock() - self._waiters[0][1] if self._waiters else 0.0

    def try_acquire(self) -> bool:
        """A slot now, or False: for requests no client waits on, which never queue."""
        if self._waiters or self.in_flight >= self._limit:
            return False
        self.in_flight += 1
        self.stats.admitted += 1
        return True

    async def acquire(self, wait: float) -> float:
        """Wait in line for a slot, at most `wait` seconds; the seconds waited."""
        if self.try_acquire():
            return 0.0
        if len(self._waiters) >= self.max_queue:
            self.stats.queue_full += 1
            raise QueueFull
        started = self._clock()
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (waiter, started)
        self._waiters.append(entry)
        try:
            async with asyncio.timeout(max(0.0, wait)):
                await waiter
        except BaseException as exc:
            if waiter.done() and not waiter.cancelled():
                self.release()  # a slot was handed over just as we gave up: pass it on
            else:
                self._remove(entry)
            if isinstance(exc, TimeoutError):
                self.stats.queue_timeouts += 1
                raise QueueTimeout from None
            raise
        waited = self._clock() - started
        self.stats.waited += 1
        self.stats.wait_seconds += waited
        return waited

    def release(self) -> None:
        self.in_flight -= 1
        self._admit_waiters()

    def _admit_waiters(self) -> None:
        while self._waiters and self.in_flight < self._limit:
            waiter, _ = self._waiters.popleft()
            if waiter.done():  # cancelled, and not yet removed by its owner
                continue
            self.in_flight += 1
            self.stats.admitted += 1
            waiter.set_result(None)

    def _remove(self, entry: tuple[asyncio.Future[None], float]) -> None:
        with contextlib.suppress(ValueError):  # already handed a slot and popped
            self._waiters.remove(entry)
