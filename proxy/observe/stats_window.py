"""Rolling statistics over the last minute or so: pure, bounded, clocked by the caller.

The request path only bumps cumulative counters (proxy/observe/metrics.py). Once a second those are
summed into a `Totals` snapshot and pushed here; a window is the difference between the
newest totals and the snapshot taken `seconds` earlier. So recent figures cost nothing per
request, the memory is a fixed number of snapshots, and two processes' figures add up.

Latencies are counted in log-spaced buckets (DDSketch's): from 10 µs to 100 s each bucket's
upper bound is at most GAMMA = (1 + a) / (1 - a) times its lower one, a = RELATIVE_ERROR = 1%,
and a percentile is reported as its bucket's representative value, so it is within 1% of the
exact (nearest-rank) percentile of the recorded times. Below 10 µs a time counts as 10 µs;
above 100 s, as 100 s. The bounds Prometheus gets (PROM_BOUNDS) are bounds here too, so each
of its buckets is a union of these and stays exact.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, fields
from operator import sub
from typing import Any

RELATIVE_ERROR = 0.01
GAMMA = (1 + RELATIVE_ERROR) / (1 - RELATIVE_ERROR)
LOWEST, HIGHEST = 1e-5, 100.0  # seconds

# What Prometheus gets: chosen for a proxy whose hits take well under a millisecond and whose
# misses take what the upstream takes. Parsed from decimal text so 0.00025 is exactly that.
_PROM = "0.00025 0.0005 0.001 0.0025 0.005 0.01 0.025 0.05 0.1 0.25 0.5 1 2.5 5 10"
PROM_BOUNDS: tuple[float, ...] = tuple(float(b) for b in _PROM.split(" "))


def _bounds() -> tuple[float, ...]:
    steps = math.ceil(math.log(HIGHEST / LOWEST) / math.log(GAMMA))
    spaced = {LOWEST * GAMMA**k for k in range(steps)} | {HIGHEST}
    # Splitting a bucket at a Prometheus bound only narrows the two halves.
    return tuple(sorted(spaced | set(PROM_BOUNDS)))


# Upper bounds in seconds: bucket i counts what took more than BOUNDS[i - 1] and at most BOUNDS[i].
BOUNDS: tuple[float, ...] = _bounds()
BUCKETS = len(BOUNDS) + 1  # the last one counts what took longer than BOUNDS[-1]


def _representative(i: int) -> float:
    """The value within 1% of anything bucket i counts: the harmonic mean of its bounds,
    (hi - lo) / (hi + lo) off at either end, which is at most RELATIVE_ERROR as hi <= GAMMA lo."""
    if i == 0:
        return BOUNDS[0]
    if i == len(BOUNDS):
        return BOUNDS[-1]  # past the last bound: say the bound, not a guess
    lo, hi = BOUNDS[i - 1], BOUNDS[i]
    return 2 * lo * hi / (lo + hi)


REPRESENTATIVES: tuple[float, ...] = tuple(_representative(i) for i in range(BUCKETS))


def percentile(counts: Sequence[int], q: float) -> float | None:
    """The q-quantile (0..1) of what `counts` (one per bucket of BOUNDS) counted, in seconds:
    within RELATIVE_ERROR of the nearest-rank one (the ceil(q n)-th smallest of n)."""
    total = sum(counts)
    if not total:
        return None
    # round(): 0.99 * 10000 is 9900.000000000002 in floats, which is rank 9900, not 9901.
    rank = max(1, math.ceil(round(q * total, 6)))
    seen = 0
    for i, count in enumerate(counts):
        seen += count
        if seen >= rank:
            return REPRESENTATIVES[i]
    return BOUNDS[-1]


@dataclass(frozen=True, slots=True)
class Totals:
    """Cumulative counts since start-up; subtract two for what happened in between.

    "Cached" responses came from the cache without waiting for the upstream (hit, stale);
    "uncached" ones waited for it (miss, revalidated, bypass) and got an answer: those with
    a 5xx status (the upstream's, or the proxy's 502/503/504 when it failed, timed out or
    was refused) are "failed" instead, so an upstream timing out does not make the upstream
    look slow. Responses the proxy made on its own before the cache (a CORS preflight, a
    400, a 429) are in none, but in `requests`/`latency`.
    """

    requests: int = 0
    hits: int = 0  # lookups served from the cache: hit, stale
    misses: int = 0  # lookups that went upstream: miss, revalidated
    errors: int = 0  # responses with a 5xx status, the proxy's own 502/504 included
    cached: int = 0
    cached_seconds: float = 0.0
    uncached: int = 0
    uncached_seconds: float = 0.0
    failed: int = 0
    failed_seconds: float = 0.0
    upstream_requests: int = 0
    upstream_errors: int = 0  # no response (unreachable, timeout) or a 5xx
    rate_limited: int = 0
    latency: tuple[int, ...] = (0,) * BUCKETS

    def __sub__(self, older: Totals) -> Totals:
        values: dict[str, Any] = {}
        for f in fields(self):
            mine, theirs = getattr(self, f.name), getattr(older, f.name)
            if isinstance(mine, tuple):  # the latency buckets: 822 of them, in C
                values[f.name] = tuple(map(sub, mine, theirs))
            else:
                values[f.name] = mine - theirs
        return Totals(**values)


def ratio(part: float, whole: float) -> float | None:
    return part / whole if whole else None


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


def describe(delta: Totals, seconds: float) -> dict[str, object]:
    """What happened in a window, as numbers people read: rates, averages, percentiles.

    Ratios and percentiles cannot be added across processes; `raw_counts` can (see
    proxy/observe/documents.py, recompute_ratios).
    """
    avg_cached = ratio(delta.cached_seconds, delta.cached)
    avg_uncached = ratio(delta.uncached_seconds, delta.uncached)
    speedup = None
    if avg_cached and avg_uncached is not None:
        speedup = round(avg_uncached / avg_cached, 1)
    hit_rate = ratio(delta.hits, delta.hits + delta.misses)
    error_rate = ratio(delta.errors, delta.requests)
    return {
        "seconds": round(seconds, 3),
        "requests": delta.requests,
        "requests_per_second": round(delta.requests / seconds, 3) if seconds > 0 else None,
        "hits": delta.hits,
        "misses": delta.misses,
        "hit_rate": None if hit_rate is None else round(hit_rate, 4),
        "errors": delta.errors,
        "error_rate": None if error_rate is None else round(error_rate, 4),
        "upstream_requests": delta.upstream_requests,
        "upstream_errors": delta.upstream_errors,
        "rate_limited": delta.rate_limited,
        "response_times": {
            "avg_cached_ms": _ms(avg_cached),
            "avg_uncached_ms": _ms(avg_uncached),
            "avg_failed_ms": _ms(ratio(delta.failed_seconds, delta.failed)),
            "p50_ms": _ms(percentile(delta.latency, 0.5)),
            "p99_ms": _ms(percentile(delta.latency, 0.99)),
            "speedup": speedup,
        },
        "raw_counts": {
            "cached": delta.cached,
            "cached_seconds": round(delta.cached_seconds, 6),
            "uncached": delta.uncached,
            "uncached_seconds": round(delta.uncached_seconds, 6),
            "failed": delta.failed,
            "failed_seconds": round(delta.failed_seconds, 6),
            "latency_buckets": list(delta.latency),
        },
    }


FINE_SPAN = 60.0  # seconds kept at one snapshot a tick
COARSE_SNAPSHOTS = 120  # at most this many, evenly spaced, over the rest of a longer span


class RollingWindow:
    """The last `span` seconds of `Totals` snapshots, one pushed per tick (bounded).

    A snapshot holds a latency count per bucket (822 of them: 6.5 KiB, up to 29 KiB once every
    bucket has counted past 256), so an hour at one a second would be 23 to 100 MiB. The last
    FINE_SPAN seconds keep every tick's; older ones are thinned to about COARSE_SNAPSHOTS over
    the rest of the span, so at most 62 + 122 are kept (1.2 MiB, at most 5.3 MiB) and a window
    longer than a minute may cover up to span / 120 seconds more than asked (`over` says how
    much it covers).
    """

    def __init__(self, span: float, start: Totals, now: float, tick: float = 1.0) -> None:
        if span <= 0 or tick <= 0:
            raise ValueError("span and tick must be positive")
        self.span = span
        fine = min(span, FINE_SPAN)
        # One snapshot per tick over the fine span, plus one at or before its start.
        self._recent: deque[tuple[float, Totals]] = deque(maxlen=math.ceil(fine / tick) + 2)
        coarse = span - fine
        self._step = max(tick, coarse / COARSE_SNAPSHOTS)
        older = math.ceil(coarse / self._step) + 2 if coarse > 0 else 0
        self._older: deque[tuple[float, Totals]] = deque(maxlen=older)
        self._recent.append((now, start))

    def __len__(self) -> int:
        return len(self._recent) + len(self._older)

    def push(self, now: float, totals: Totals) -> None:
        recent = self._recent
        if len(recent) == recent.maxlen:
            leaving = recent[0]
            older = self._older
            if older.maxlen and (not older or leaving[0] - older[-1][0] >= self._step):
                older.append(leaving)
        recent.append((now, totals))

    def baseline(self, now: float, seconds: float) -> tuple[float, Totals]:
        """The newest snapshot at least `seconds` old; the oldest one kept if none is."""
        cutoff = now - min(seconds, self.span)
        for kept in (self._recent, self._older):
            for taken, totals in reversed(kept):
                if taken <= cutoff:
                    return taken, totals
        return self._older[0] if self._older else self._recent[0]

    def over(self, now: float, current: Totals, seconds: float) -> tuple[Totals, float]:
        """(what happened over the last `seconds`, how many seconds that really covers)."""
        taken, older = self.baseline(now, seconds)
        return current - older, max(now - taken, 0.0)
