"""Once a second: the rolling window of totals, alerts raised and cleared, the stats line, and
(with workers) this process's metric file. The window and the alerts are what the admin
documents read (documents.py)."""

from __future__ import annotations

import asyncio
import logging
import math
import resource
import time
from collections import deque
from collections.abc import Callable
from itertools import pairwise
from typing import TYPE_CHECKING, Any

from proxy.observe.alerts import Active, AlertTracker, evaluate
from proxy.observe.stats_window import RollingWindow, Totals, describe, percentile, ratio
from proxy.tasks import cancel

if TYPE_CHECKING:
    from proxy.cache.memory import MemoryStore
    from proxy.config.alerts import AlertSettings
    from proxy.observe.metrics import Meters, RouteMeter

log = logging.getLogger("cacheproxy.stats")

SUMMARY_WINDOW = 60  # seconds behind /performance/summary's response times
HISTORY_STEP = 5.0  # seconds between the points of the dashboard's charts
HISTORY_SPAN = 15 * 60.0  # seconds of them kept
# Counted per route, cumulative; the history serves their differences from point to point.
# `upstream_errors` are failures other than timeouts (no response, a 5xx), `upstream_timeouts`
# the timeouts: the dashboard charts them apart.
HISTORY_FIELDS = (
    "requests",
    "errors_4xx",
    "errors_5xx",
    "upstream_errors",
    "upstream_timeouts",
    "rate_limited",
    "hits",
    "misses",
)
RouteCounts = tuple[int, ...]  # HISTORY_FIELDS' values, in that order


def route_counts(meter: RouteMeter) -> RouteCounts:
    """One route's counts since start, for the history (once per HISTORY_STEP)."""
    requests = errors_4xx = errors_5xx = hits = misses = 0
    for (method, status, cache), count in meter.responses.items():
        requests += count
        if status >= 500:
            errors_5xx += count
        elif status >= 400:
            errors_4xx += count
        if meter.caching and method in ("GET", "HEAD"):  # lookups, as Meters.totals counts them
            if cache in ("hit", "stale"):
                hits += count
            elif cache in ("miss", "revalidated"):
                misses += count
    upstream_errors = upstream_timeouts = 0
    for outcome, count in meter.upstream.items():
        if outcome == "timeout":
            upstream_timeouts += count
        elif outcome != "aborted" and (not outcome.isdigit() or int(outcome) >= 500):
            upstream_errors += count  # "aborted": the client's body broke off, not the upstream
    limited = meter.ratelimit[1]
    return (
        requests,
        errors_4xx,
        errors_5xx,
        upstream_errors,
        upstream_timeouts,
        limited,
        hits,
        misses,
    )


class History:
    """Each route's counts every `step` seconds of wall time, the last `span` seconds: what
    the dashboard charts, so they are full when the page opens. Bounded: span / step + 1
    points of a few integers per route."""

    def __init__(self, step: float = HISTORY_STEP, span: float = HISTORY_SPAN) -> None:
        self.step = step
        self._points: deque[tuple[float, dict[str, RouteCounts]]] = deque(
            maxlen=math.ceil(span / step) + 1
        )

    def record(self, wall: float, meters: Meters) -> None:
        """Take a point when `wall` enters a new step (points at multiples of the step, so
        workers' points fall at the same times and add up)."""
        at = math.floor(wall / self.step) * self.step
        if self._points and at <= self._points[-1][0]:
            return
        self._points.append((at, counts_by_route(meters)))

    def columns(self) -> dict[str, Any]:
        """Per step: its end (epoch seconds) in `t`, and what happened in it, per field."""
        steps = list(pairwise(self._points))
        doc: dict[str, Any] = {"step_seconds": self.step, "t": [b[0] for _, b in steps]}
        for i, name in enumerate(HISTORY_FIELDS):
            # Never below zero: a reload may start a route's counters again.
            doc[name] = [max(0, _sum(b[1], i) - _sum(a[1], i)) for a, b in steps]
        return doc

    def since(self, wall: float, seconds: float) -> tuple[float, dict[str, RouteCounts]] | None:
        """The newest point at least `seconds` before `wall`, else the oldest (None: none)."""
        chosen = self._points[0] if self._points else None
        for point in self._points:
            if point[0] > wall - seconds:
                break
            chosen = point
        return chosen


def counts_by_route(meters: Meters) -> dict[str, RouteCounts]:
    return {name: route_counts(meter) for name, meter in meters.by_route.items()}


def _sum(counts: dict[str, RouteCounts], i: int) -> int:
    return sum(c[i] for c in counts.values())


class Ticker:
    def __init__(
        self,
        meters: Meters,
        store: MemoryStore,
        alert_settings: AlertSettings,
        stats_interval: float,
        write_metrics: Callable[[], None] = lambda: None,
        tick: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        """`stats_interval`: seconds between stats lines (0: none); `write_metrics`: copies
        the series to this process's metric file (Catalogue.write), each tick and at stop."""
        self.meters = meters
        self.store = store
        self.alert_settings = alert_settings
        self._stats_interval = stats_interval
        self._write_metrics = write_metrics
        self._clock, self._wall, self._tick_every = clock, wall, tick
        self.started = clock()
        span = max(SUMMARY_WINDOW, alert_settings.window)
        self.window = RollingWindow(span, Totals(), self.started, tick)
        self.alerts = AlertTracker()
        self.history = History()
        self.history.record(wall(), meters)
        self._last_stats = (self.started, Totals())
        self._task: asyncio.Task[None] | None = None

    def now(self) -> float:
        return self._clock()

    def wall(self) -> float:
        return self._wall()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        await cancel(self._task)
        self._task = None
        self._write_metrics()  # the last requests count too

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._tick_every)
            try:
                self.tick()
            except Exception:  # a bug here must not stop the statistics for good
                log.exception("statistics tick failed")

    def tick(self) -> None:
        now = self._clock()
        totals = self.meters.totals()
        self.window.push(now, totals)
        self.active_alerts(now, totals)
        self.history.record(self._wall(), self.meters)
        interval = self._stats_interval
        if interval and now - self._last_stats[0] >= interval:
            self._stats_line(now, totals)
        self._write_metrics()

    def recent(self, seconds: float, now: float | None = None) -> dict[str, Any]:
        """What happened over the last `seconds` (at most the window's span)."""
        now = self._clock() if now is None else now
        delta, covered = self.window.over(now, self.meters.totals(), seconds)
        return describe(delta, covered)

    def active_alerts(self, now: float | None = None, totals: Totals | None = None) -> list[Active]:
        """Evaluate the thresholds now; log what was raised or cleared; the active ones."""
        settings = self.alert_settings
        if not settings.any:
            return []
        now = self._clock() if now is None else now
        totals = self.meters.totals() if totals is None else totals
        delta, covered = self.window.over(now, totals, settings.window)
        wall = self._wall()
        for change in self.alerts.update(evaluate(settings, describe(delta, covered)), wall):
            a = change.alert
            fields = {"event": "alert", "alert": a.name, "value": a.value}
            fields["threshold"] = a.threshold
            if change.raised:
                fields["state"] = "raised"
                log.warning("alert raised: %s: %s", a.name, a.message, extra={"fields": fields})
            else:
                fields["state"] = "cleared"
                log.info(
                    "alert cleared: %s (held %.0f s)",
                    a.name,
                    wall - change.since,
                    extra={"fields": fields},
                )
        return list(self.alerts.active.values())

    def _stats_line(self, now: float, totals: Totals) -> None:
        since, before = self._last_stats
        self._last_stats = (now, totals)
        d = totals - before
        p50, p99 = percentile(d.latency, 0.5), percentile(d.latency, 0.99)
        hit_rate = ratio(d.hits, d.hits + d.misses)
        cache_bytes, rss_bytes = self.store.bytes, _rss()
        per_second = ratio(d.requests, now - since)
        fields = {
            "interval_s": round(now - since, 1),
            "requests": d.requests,
            "requests_per_second": None if per_second is None else round(per_second, 1),
            "hit_rate": None if hit_rate is None else round(hit_rate, 4),
            "p50_ms": None if p50 is None else round(p50 * 1000, 3),
            "p99_ms": None if p99 is None else round(p99 * 1000, 3),
            "errors_5xx": d.errors,
            "rate_limited": d.rate_limited,
            "upstream_errors": d.upstream_errors,
            "cache_bytes": cache_bytes,
            "cache_entries": len(self.store),
            "rss_bytes": rss_bytes,
        }

        def show(value: float | None, unit: str = "") -> str:
            return "-" if value is None else f"{value:g}{unit}"

        log.info(
            "stats: %d requests in %ss (%s), hit rate %s, p50 %s, p99 %s, %d 5xx, %d 429s, "
            "%d upstream errors, cache %d entries / %.1f MiB, RSS %.1f MiB",
            d.requests,
            fields["interval_s"],
            show(fields["requests_per_second"], "/s"),
            show(fields["hit_rate"]),
            show(fields["p50_ms"], " ms"),
            show(fields["p99_ms"], " ms"),
            d.errors,
            d.rate_limited,
            d.upstream_errors,
            fields["cache_entries"],
            cache_bytes / 2**20,
            rss_bytes / 2**20,
            extra={"fields": {"event": "stats", **fields}},
        )


def _rss() -> int:
    """Resident memory now (Linux), else the peak so far."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * resource.getpagesize()
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
