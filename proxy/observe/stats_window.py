"""Rolling statistics over the last minute or so: pure, bounded, clocked by the caller.

The request path only bumps cumulative counters (proxy/observe/metrics.py). Once a second those are
summed into a `Totals` snapshot and pushed here; a window is the difference between the
newest totals and the snapshot taken `seconds` earlier. So recent figures cost nothing per
request, the memory is a fixed number of snapshots, and two processes' figures add up.

Latencies are counted in fixed buckets (10 per decade, 10 µs to 100 s), so percentiles are
estimates: interpolated within a bucket, at most one bucket (~25%) off.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

_MANTISSAS = ("1", "1.25", "1.5", "2", "2.5", "3", "4", "5", "6", "8")
# Upper bounds in seconds, parsed from decimal text so that 2.5e-4 is exactly 0.00025.
BOUNDS: tuple[float, ...] = (
    *(float(f"{m}e{e}") for e in range(-5, 2) for m in _MANTISSAS),
    100.0,
)
BUCKETS = len(BOUNDS) + 1  # the last one counts what took longer than BOUNDS[-1]


def percentile(counts: Sequence[int], q: float) -> float | None:
    """The q-quantile (0..1) of what `counts` (one per bucket of BOUNDS) counted, in seconds."""
    total = sum(counts)
    if not total:
        return None
    rank = q * total
    seen = 0
    for i, count in enumerate(counts):
        if count and seen + count >= rank:
            if i == len(BOUNDS):
                return BOUNDS[-1]  # past the last bound: say the bound, not a guess
            lower = BOUNDS[i - 1] if i else 0.0
            return lower + (BOUNDS[i] - lower) * max(rank - seen, 0) / count
        seen += count
    return BOUNDS[-1]


@dataclass(frozen=True, slots=True)
class Totals:
    """Cumulative counts since start-up; subtract two for what happened in between.

    "Cached" responses came from the cache without waiting for the upstream (hit, stale);
    "uncached" ones waited for it (miss, revalidated, bypass). Responses the proxy made on
    its own (a CORS preflight, a 400, a 429) are in neither, but in `requests`/`latency`.
    """

    requests: int = 0
    hits: int = 0  # lookups served from the cache: hit, stale
    misses: int = 0  # lookups that went upstream: miss, revalidated
    errors: int = 0  # responses with a 5xx status, the proxy's own 502/504 included
    cached: int = 0
    cached_seconds: float = 0.0
    uncached: int = 0
    uncached_seconds: float = 0.0
    upstream_requests: int = 0
    upstream_errors: int = 0  # no response (unreachable, timeout) or a 5xx
    rate_limited: int = 0
    latency: tuple[int, ...] = (0,) * BUCKETS

    def __sub__(self, older: Totals) -> Totals:
        values: dict[str, Any] = {}
        for f in fields(self):
            mine, theirs = getattr(self, f.name), getattr(older, f.name)
            if isinstance(mine, tuple):
                values[f.name] = tuple(a - b for a, b in zip(mine, theirs, strict=True))
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
            "p50_ms": _ms(percentile(delta.latency, 0.5)),
            "p99_ms": _ms(percentile(delta.latency, 0.99)),
            "speedup": speedup,
        },
        "raw_counts": {
            "cached": delta.cached,
            "cached_seconds": round(delta.cached_seconds, 6),
            "uncached": delta.uncached,
            "uncached_seconds": round(delta.uncached_seconds, 6),
            "latency_buckets": list(delta.latency),
        },
    }


class RollingWindow:
    """The last `span` seconds of `Totals` snapshots, one pushed per tick (bounded)."""

    def __init__(self, span: float, start: Totals, now: float, tick: float = 1.0) -> None:
        if span <= 0 or tick <= 0:
            raise ValueError("span and tick must be positive")
        self.span = span
        # One snapshot per tick over the span, plus one at or before its start.
        self._snapshots: deque[tuple[float, Totals]] = deque(maxlen=math.ceil(span / tick) + 2)
        self._snapshots.append((now, start))

    def __len__(self) -> int:
        return len(self._snapshots)

    def push(self, now: float, totals: Totals) -> None:
        self._snapshots.append((now, totals))

    def baseline(self, now: float, seconds: float) -> tuple[float, Totals]:
        """The newest snapshot at least `seconds` old; the oldest one kept if none is."""
        cutoff = now - min(seconds, self.span)
        for taken, totals in reversed(self._snapshots):
            if taken <= cutoff:
                return taken, totals
        return self._snapshots[0]

    def over(self, now: float, current: Totals, seconds: float) -> tuple[Totals, float]:
        """(what happened over the last `seconds`, how many seconds that really covers)."""
        taken, older = self.baseline(now, seconds)
        return current - older, max(now - taken, 0.0)
