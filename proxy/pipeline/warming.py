"""Cache warming, the pure part: popularity, pacing, rates.

- `Popularity`: exponentially decaying access counts for a bounded number of keys; the
  `top` highest are "popular". Each access adds weight 2**(t/half_life), so old accesses
  count for less without ever touching the other keys (rescaled now and then).
- `Pacer`: a token bucket of one token: requests spaced at least 1/rate apart, so warming
  never sends more than `max_rate` to the upstream in any period, bursts included.
- `refresh_ahead_at`: the age at which an entry is refreshed ahead of its expiry.

No I/O and a clock passed in; the fetching lives in proxy/pipeline/url_warmer.py and
proxy/pipeline/cache_stage/refresh.py, the `cache.warming` section in proxy/config/cache.py.
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Callable


def refresh_ahead_at(lifetime: float, refresh_ahead: float) -> float:
    """The age at which an entry with this freshness lifetime is refreshed."""
    return lifetime * refresh_ahead


class Pacer:
    """At most one request per 1/rate seconds: a token bucket holding one token."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = 1.0 / rate
        self._clock = clock
        self._next = -math.inf  # when the next request may go

    def wait_time(self) -> float:
        """Seconds until a request may go (0: now)."""
        return max(0.0, self._next - self._clock())

    def try_take(self) -> bool:
        now = self._clock()
        if now < self._next:
            return False
        self._next = now + self.interval
        return True


class Popularity:
    """Decaying access counts for at most about 2 * `capacity` keys."""

    def __init__(
        self,
        top: int,
        half_life: float,
        capacity: int | None = None,
        rank_every: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.top = top
        self.half_life = half_life
        self.capacity = capacity if capacity is not None else max(1000, 10 * top)
        self.rank_every = rank_every  # seconds between recomputing the top-`top` threshold
        self._clock = clock
        self._scores: dict[str, float] = {}
        self._epoch = clock()
        self._threshold = math.inf
        self._ranked_at = -math.inf

    def __len__(self) -> int:
        return len(self._scores)

    def _weight(self, now: float) -> float:
        return 2.0 ** ((now - self._epoch) / self.half_life)

    def touch(self, key: str) -> None:
        """One access to `key`."""
        now = self._clock()
        weight = self._weight(now)
        if weight > 1e12:  # keep the numbers far from overflow: rescale everything once
            self._rebase(now)
            weight = 1.0
        self._scores[key] = self._scores.get(key, 0.0) + weight
        if len(self._scores) > 2 * self.capacity:
            self._prune()

    def count(self, key: str) -> float:
        """Accesses to `key`, each discounted by its age (an access now counts 1)."""
        return self._scores.get(key, 0.0) / self._weight(self._clock())

    def is_popular(self, key: str) -> bool:
        """Is `key` among the `top` most accessed (as of the last ranking)?"""
        if self.top <= 0:
            return False
        now = self._clock()
        if now - self._ranked_at >= self.rank_every:
            self._rank(now)
        score = self._scores.get(key)
        return score is not None and score >= self._threshold

    def popular(self) -> list[str]:
        """The `top` keys, most accessed first."""
        return heapq.nlargest(self.top, self._scores, key=self._scores.__getitem__)

    def _rank(self, now: float) -> None:
        self._ranked_at = now
        if len(self._scores) <= self.top:
            self._threshold = 0.0
        else:
            self._threshold = heapq.nlargest(self.top, self._scores.values())[-1]

    def _prune(self) -> None:
        keep = heapq.nlargest(self.capacity, self._scores.items(), key=lambda kv: kv[1])
        self._scores = dict(keep)
        self._ranked_at = -math.inf

    def _rebase(self, now: float) -> None:
        scale = self._weight(now)
        self._scores = {k: v / scale for k, v in self._scores.items()}
        self._epoch = now
        self._ranked_at = -math.inf


class Warming:
    """What warming shares between the cache stage (refresh-ahead on hits) and the URL
    warmer: the popularity counts and the one pacer all warming requests go through."""

    def __init__(
        self,
        refresh_ahead: float,
        top: int,
        half_life: float,
        rate: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`top` keys by popularity are refreshed ahead (0: none); `rate` per second."""
        self.refresh_ahead = refresh_ahead
        self.popularity = Popularity(top, half_life, clock=clock) if top else None
        self.pacer = Pacer(rate, clock)

    def due_on_hit(self, key: str, age: float, lifetime: float) -> bool:
        """Should a hit on this fresh entry refresh it ahead of its expiry?"""
        return (
            self.popularity is not None
            and lifetime > 0
            and age >= refresh_ahead_at(lifetime, self.refresh_ahead)
            and self.popularity.is_popular(key)
        )
