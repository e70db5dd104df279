"""How long a follower of Redis (purge log, revocation list) waits before connecting again.

A connection that fails at once must not be retried at once: a Redis that refuses
SUBSCRIBE (an ACL) refuses every attempt in a millisecond, and a follower that reset its
delay as soon as SUBSCRIBE was sent reconnected ten times a second. So the delay doubles
after every failure and falls back to the first one only once a connection has lasted
`steady` seconds; and it is jittered, so instances that lost Redis together (a restart)
do not all come back in the same millisecond.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from typing import Any


class Backoff:
    def __init__(
        self,
        first: float = 0.1,
        most: float = 5.0,
        steady: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.first, self.most, self.steady = first, most, steady
        self._clock = clock
        self._jitter = jitter
        self._delay = 0.0  # the last one waited (0: none yet)
        self._since = clock()  # when the current attempt began

    def next_delay(self) -> float:
        """The wait before the next attempt, the current one having just failed."""
        if self._delay == 0.0 or self._clock() - self._since >= self.steady:
            self._delay = self.first  # that connection had proven itself: start over
        else:
            self._delay = min(self._delay * 2, self.most)
        return self._delay * (0.5 + self._jitter() / 2)

    def began(self) -> None:
        """A new attempt starts now."""
        self._since = self._clock()

    async def wait(self) -> None:
        """Sleep before the next attempt; the attempt is taken to start when this returns."""
        await asyncio.sleep(self.next_delay())
        self.began()


async def subscribe_confirmed(pubsub: Any, channel: str, within: float) -> None:
    """SUBSCRIBE and wait for Redis to confirm it: redis-py sends the command without
    reading its reply, so a refusal (NOPERM) would only surface on the next read."""
    await pubsub.subscribe(channel)
    deadline = asyncio.get_running_loop().time() + within
    while True:
        left = deadline - asyncio.get_running_loop().time()
        if left <= 0:
            raise TimeoutError(f"no confirmation of SUBSCRIBE {channel} in {within} s")
        message = await pubsub.get_message(timeout=left)
        if message is None:
            continue
        if message.get("type") == "subscribe":
            return  # (a refusal raises from get_message)
