"""What the proxy tells about itself: metrics, rolling stats, alerts, access log, stats line.

`Observer.observe` is called by the proxy port once an answer has been sent (see
proxy/server/listener.py); it costs a few dictionary updates, plus a tuple appended to the
access log's buffer when the line is logged. Everything else runs once a second in
`_tick`, or when the admin API asks.

With `workers: N` each worker answers for itself; the process in front adds their
answers up. Counts add up; the ratios and estimates (`RATIOS`) do not and are recomputed
from the counts next to them by `merge_summaries`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import resource
import sys
import time
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any

from aiohttp import web
from multidict import istr

from proxy.observe.alerts import AlertSettings, AlertTracker, evaluate
from proxy.observe.logs import AccessLog, LogSettings, iso_time
from proxy.observe.metrics import (
    UNROUTED,
    X_CACHE,
    AcrossWorkers,
    Exporter,
    Meters,
    MultiprocessWriter,
    RouteMeter,
    Series,
    current_route,
    multiprocess_dir,
    multiprocess_registry,
    upstream_seconds,
)
from proxy.observe.stats_window import BOUNDS, RollingWindow, Totals, describe, percentile, ratio
from proxy.respond.prepared import PreparedResponse
from proxy.tasks import cancel

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from proxy.cache.memory import MemoryStore
    from proxy.pipeline.routes import RouteTable
    from proxy.server.listener import ListenerStats
    from proxy.shared.redis import SharedRedis
    from proxy.shared.tier import SharedTier
    from proxy.upstream.client import UpstreamClient
    from proxy.upstream.guard import OriginStats

log = logging.getLogger("cacheproxy.stats")

_X_CACHE = istr("X-Cache")
_XFF = istr("X-Forwarded-For")
_FORWARDED = istr("Forwarded")
SUMMARY_WINDOW = 60  # seconds behind /performance/summary's response times

# Fields that are ratios or estimates: a merge of several processes recomputes them.
RATIOS = ("hit_rate", "reuse_rate", "error_rate", "requests_per_second", "avg_cached_ms")
RATIOS += ("avg_uncached_ms", "p50_ms", "p99_ms", "speedup")


class Observer:
    def __init__(
        self,
        routes: RouteTable,
        store: MemoryStore,
        upstream: UpstreamClient,
        log_settings: LogSettings,
        alert_settings: AlertSettings,
        redis: SharedRedis | None = None,
        shared: SharedTier | None = None,
        listener: ListenerStats | None = None,
        stream: IO[bytes] | None = None,
        tick: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.routes = routes
        self.store = store
        self.upstream = upstream
        self.redis = redis
        self.shared = shared
        self.listener = listener
        self.log_settings = log_settings
        self.alert_settings = alert_settings
        self.meters = Meters((p.name, p.cache is not None) for p in routes.policies)
        self.access = (
            AccessLog(log_settings, stream or sys.stdout.buffer, routes.trusted_proxies)
            if log_settings.access
            else None
        )
        self._all_hits = log_settings.sample_hits >= 1.0
        self._trusted = bool(routes.trusted_proxies)
        self._clock, self._wall, self._tick_every = clock, wall, tick
        self.started = clock()
        self.started_wall = wall()
        span = max(SUMMARY_WINDOW, alert_settings.window)
        self.window = RollingWindow(span, Totals(), self.started, tick)
        self.alerts = AlertTracker()
        self._last_stats = (self.started, Totals())
        self.multiprocess: MultiprocessWriter | None = None
        self.registry: CollectorRegistry
        path = multiprocess_dir()
        if path is not None:
            # Workers: each writes its own file; /metrics shows every worker's.
            self.multiprocess = MultiprocessWriter()
            self.registry = multiprocess_registry(path)
        else:
            self.registry = Exporter(self.series).registry()
        self._ticker: asyncio.Task[None] | None = None

    def use_routes(self, routes: RouteTable) -> None:
        """After a reload: new route names get meters; old ones keep counting what they saw."""
        self.routes = routes
        for policy in routes.policies:
            name = policy.name
            if name not in self.meters.by_route:
                self.meters.by_route[name] = RouteMeter(name, policy.cache is not None)
        if self.access is not None:
            self.access.trusted = routes.trusted_proxies
        self._trusted = bool(routes.trusted_proxies)

    async def start(self) -> None:
        if self.access is not None:
            self.access.start()
        self._ticker = asyncio.create_task(self._run_ticks())

    async def stop(self) -> None:
        await cancel(self._ticker)
        self._ticker = None
        if self.multiprocess is not None:
            self.multiprocess.write(self.series())  # the last requests count too
        if self.access is not None:
            await asyncio.to_thread(self.access.close)

    # --- the request path -------------------------------------------------------------

    def observe(
        self, request: web.BaseRequest, response: web.StreamResponse, seconds: float
    ) -> None:
        """One answer sent on the proxy port, `seconds` after its request head arrived."""
        route = current_route.get(UNROUTED)
        status = response.status
        if response.__class__ is PreparedResponse:
            cache = response.cache_result  # type: ignore[attr-defined]
        else:
            cache = X_CACHE.get(response.headers.get(_X_CACHE), "none")  # type: ignore[arg-type]
        method = request.method
        self.meters.response(route, method, status, cache, seconds)
        access = self.access
        if access is not None and (cache != "hit" or self._all_hits or access.hit_sampled()):
            trusted = self._trusted
            access.add(
                (
                    self._wall(),
                    method,
                    request.raw_path,
                    route,
                    status,
                    cache,
                    upstream_seconds.get(None),
                    seconds,
                    response.body_length,
                    request.remote,
                    tuple(request.headers.getall(_XFF, ())) if trusted else (),
                    tuple(request.headers.getall(_FORWARDED, ())) if trusted else (),
                )
            )

    def upstream_result(self, route: str, outcome: int | str, seconds: float) -> None:
        """One upstream request: its status (or error/timeout) and time to its head."""
        upstream_seconds.set(seconds)
        self.meters.upstream(route, outcome, seconds)

    def ratelimit_check(self, route: str, allowed: bool) -> None:
        """For the rate-limit stage, once per check (`allowed` False: answered 429)."""
        self.meters.ratelimit_check(route, allowed)

    # --- once a second ----------------------------------------------------------------

    async def _run_ticks(self) -> None:
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
        interval = self.log_settings.stats_interval
        if interval and now - self._last_stats[0] >= interval:
            self._stats_line(now, totals)
        if self.multiprocess is not None:
            self.multiprocess.write(self.series())

    def _stats_line(self, now: float, totals: Totals) -> None:
        since, before = self._last_stats
        self._last_stats = (now, totals)
        d = totals - before
        p50, p99 = percentile(d.latency, 0.5), percentile(d.latency, 0.99)
        hit_rate = ratio(d.hits, d.hits + d.misses)
        fields = {
            "interval_s": round(now - since, 1),
            "requests": d.requests,
            "hit_rate": None if hit_rate is None else round(hit_rate, 4),
            "p50_ms": None if p50 is None else round(p50 * 1000, 3),
            "p99_ms": None if p99 is None else round(p99 * 1000, 3),
            "errors_5xx": d.errors,
            "upstream_errors": d.upstream_errors,
            "cache_bytes": self.store.bytes,
            "cache_entries": len(self.store),
            "rss_bytes": _rss(),
        }

        def show(value: float | None, unit: str = "") -> str:
            return "-" if value is None else f"{value:g}{unit}"

        log.info(
            "stats: %d requests in %ss, hit rate %s, p50 %s, p99 %s, %d 5xx, "
            "%d upstream errors, cache %d entries / %.1f MiB, RSS %.1f MiB",
            d.requests,
            fields["interval_s"],
            show(fields["hit_rate"]),  # type: ignore[arg-type]
            show(fields["p50_ms"], " ms"),  # type: ignore[arg-type]
            show(fields["p99_ms"], " ms"),  # type: ignore[arg-type]
            d.errors,
            d.upstream_errors,
            fields["cache_entries"],
            fields["cache_bytes"] / 2**20,  # type: ignore[operator]
            fields["rss_bytes"] / 2**20,  # type: ignore[operator]
            extra={"fields": {"event": "stats", **fields}},
        )

    # --- documents for the admin API -----------------------------------------------------

    def recent(self, seconds: float, now: float | None = None) -> dict[str, Any]:
        now = self._clock() if now is None else now
        delta, covered = self.window.over(now, self.meters.totals(), seconds)
        return describe(delta, covered)

    def active_alerts(self, now: float | None = None, totals: Totals | None = None) -> list[Any]:
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

    def alerts_doc(self) -> dict[str, Any]:
        active = self.active_alerts()
        s = self.alert_settings
        return {
            "window_seconds": s.window,
            "thresholds": {
                "min_hit_rate": s.min_hit_rate,
                "max_p99_ms": s.max_p99_ms,
                "max_error_rate": s.max_error_rate,
                "min_requests": s.min_requests,
            },
            "active": [
                {
                    "name": a.alert.name,
                    "value": a.alert.value,
                    "threshold": a.alert.threshold,
                    "message": a.alert.message,
                    "since": iso_time(a.since),
                    "since_ts": round(a.since, 3),
                }
                for a in active
            ],
        }

    def cache_doc(self) -> dict[str, Any]:
        lookups = self.meters.lookups()
        by_result: dict[str, int] = {}
        for (_, result), count in lookups.items():
            by_result[result] = by_result.get(result, 0) + count
        hits = by_result.get("hit", 0) + by_result.get("stale", 0)
        misses = by_result.get("miss", 0) + by_result.get("revalidated", 0)
        stats = self.store.snapshot()
        hit_rate = ratio(hits, hits + misses)
        return {
            "enabled": any(p.cache is not None for p in self.routes.policies),
            "hits": hits,
            "misses": misses,
            "hit_rate": None if hit_rate is None else round(hit_rate, 4),
            "lookups": by_result,
            "entries": stats.entries,
            "bytes": stats.bytes,
            "max_bytes": stats.max_bytes,
            "evictions": stats.evictions,
            "ttl_seconds": {
                p.name: p.cache.rules.ttl for p in self.routes.policies if p.cache is not None
            },
        }

    def connections_doc(self) -> dict[str, Any]:
        pool = self.upstream.pool_stats()
        total = sum(sum(m.upstream.values()) for m in self.meters.by_route.values())
        reused = max(total - pool.opened, 0)
        reuse_rate = ratio(reused, total)
        return {
            "max_connections": pool.max_connections,
            "active": pool.active,
            "idle": pool.idle,
            "total_requests": total,
            "opened": pool.opened,
            "reuse_rate": None if reuse_rate is None else round(reuse_rate, 4),
            # Per upstream origin: queue, in-flight limit, retries, circuit (proxy/upstream/).
            "upstreams": [dataclasses.asdict(o) for o in self.upstream.stats()],
        }

    def summary_doc(self) -> dict[str, Any]:
        window = self.recent(SUMMARY_WINDOW)
        limited = sum(m.ratelimit[1] for m in self.meters.by_route.values())
        allowed = sum(m.ratelimit[0] for m in self.meters.by_route.values())
        totals = self.meters.totals()
        return {
            "uptime_seconds": round(self._clock() - self.started, 3),
            "requests": totals.requests,
            "errors": totals.errors,
            "cache": self.cache_doc(),
            "connections": self.connections_doc(),
            "response_times": window["response_times"],
            "window": window,
            "rate_limit": {"allowed": allowed, "limited": limited, **self._limiters_doc()},
            "alerts": len(self.alerts.active),
            "access_log": {
                "written": self.access.written if self.access else 0,
                "dropped": self.access.dropped if self.access else 0,
            },
        }

    def rate_limits_check(self) -> dict[str, object] | None:
        """/health's `rate_limits` check: down while a limiter cannot reach its windows in
        Redis (its on_store_error decides meanwhile); None when none keeps them there. No
        error text: it would name the Redis (and /health needs no token)."""
        shared = {lim.policy.name: lim for lim in self.routes.limiters if lim.shared is not None}
        if not shared:
            return None
        down = [name for name, lim in shared.items() if lim.degraded]
        error = f"Redis unreachable: {', '.join(down)} limited per on_store_error" if down else None
        limiters = {
            name: {
                "status": "down" if lim.degraded else "up",
                "store_errors": lim.store_errors,
                "on_store_error": lim.policy.on_store_error,
            }
            for name, lim in shared.items()
        }
        return {"status": "down" if down else "up", "error": error, "limiters": limiters}

    def _limiters_doc(self) -> dict[str, int]:
        """The Redis windows' failures: checks Redis could not answer, limiters degraded
        (nothing when no limiter keeps its windows in Redis)."""
        shared = [lim for lim in self.routes.limiters if lim.shared is not None]
        if not shared:
            return {}
        return {
            "store_errors": sum(lim.store_errors for lim in shared),
            "degraded": sum(lim.degraded for lim in shared),
        }

    # --- Prometheus -------------------------------------------------------------------

    def series(self) -> list[Series]:
        """Every metric now: the request path's counters plus figures read from their owners."""
        out = self.meters.series()
        store = self.store.snapshot()
        pool = self.upstream.pool_stats()
        out += [
            Series(
                "gauge",
                "cacheproxy_cache_bytes",
                "Bytes held by the memory cache",
                (),
                {(): store.bytes},
                across_workers="sum",
            ),
            Series(
                "gauge",
                "cacheproxy_cache_max_bytes",
                "cache.max_memory",
                (),
                {(): store.max_bytes},
                across_workers="sum",  # each worker has the budget
            ),
            Series(
                "gauge",
                "cacheproxy_cache_entries",
                "Entries in the memory cache",
                (),
                {(): store.entries},
                across_workers="sum",
            ),
            Series(
                "counter",
                "cacheproxy_cache_evictions",
                "Entries evicted from the memory cache to make room",
                (),
                {(): store.evictions},
            ),
            Series(
                "gauge",
                "cacheproxy_upstream_connections",
                "Upstream pool connections, in use or idle",
                ("state",),
                {("active",): pool.active, ("idle",): pool.idle},
                across_workers="sum",
            ),
            Series(
                "counter",
                "cacheproxy_upstream_connections_opened",
                "Upstream connections opened (the rest of the requests reused one)",
                (),
                {(): pool.opened},
            ),
        ]
        out += _upstream_series(self.upstream.stats())
        errors = Series(
            "counter",
            "cacheproxy_redis_errors",
            "Redis operations that failed, by operation",
            ("op",),
        )
        skipped = Series(
            "counter",
            "cacheproxy_redis_skipped",
            "Redis operations given up for the proxy's own limits, not Redis's fault: no free"
            " connection within the request's budget (pool), or no budget left (budget)",
            ("reason",),
        )
        if self.redis is not None:
            errors.values = {(op,): n for op, n in self.redis.guard.errors.items()}
            skipped.values = {(why,): n for why, n in self.redis.guard.skipped.items()}
        out += [errors, skipped]
        limiters = [lim for lim in self.routes.limiters if lim.shared is not None]
        if limiters:
            out += [
                Series(
                    "counter",
                    "cacheproxy_ratelimit_store_errors",
                    "Rate-limit checks Redis could not answer (on_store_error decided them)",
                    ("limiter",),
                    {(lim.policy.name,): lim.store_errors for lim in limiters},
                ),
                Series(
                    "gauge",
                    "cacheproxy_ratelimit_degraded",
                    "1 while a limiter's last check could not reach Redis",
                    ("limiter",),
                    {(lim.policy.name,): int(lim.degraded) for lim in limiters},
                    across_workers="max",  # 1 if any worker's is, not how many workers
                ),
            ]
        if self.shared is not None:
            st = self.shared.stats
            out.append(
                Series(
                    "counter",
                    "cacheproxy_shared_lookups",
                    "Lookups in the Redis tier (after a memory miss)",
                    ("result",),
                    {("hit",): st.hits, ("miss",): st.misses, ("error",): st.errors},
                )
            )
        if self.listener is not None:
            ls = self.listener
            out += [
                Series(
                    "gauge",
                    "cacheproxy_client_connections",
                    "Client connections open on the proxy port",
                    (),
                    {(): ls.open_connections},
                    across_workers="sum",
                ),
                Series(
                    "counter",
                    "cacheproxy_client_connections_refused",
                    "Client connections closed at once: listen.max_connections reached"
                    " (reason=max_connections) or one client's listen.max_connections_per_client"
                    " (reason=per_client)",
                    ("reason",),
                    {
                        ("max_connections",): ls.refused_connections,
                        ("per_client",): ls.refused_per_client,
                    },
                ),
                Series(
                    "counter",
                    "cacheproxy_client_timeouts",
                    "Client connections closed for taking too long",
                    ("phase",),
                    {("head",): ls.head_timeouts, ("body",): ls.body_timeouts},
                ),
            ]
        if self.access is not None:
            out.append(
                Series(
                    "counter",
                    "cacheproxy_access_log_dropped",
                    "Access log lines dropped because the writer could not keep up",
                    (),
                    {(): self.access.dropped},
                )
            )
        return out


def _upstream_series(origins: list[OriginStats]) -> list[Series]:
    """Each upstream's queue, limit, retries and circuit, labelled by its route name."""

    def counter(name: str, help: str, value: Any) -> Series:
        return Series("counter", name, help, ("upstream",), {(o.name,): value(o) for o in origins})

    def gauge(name: str, help: str, value: Any, across_workers: AcrossWorkers) -> Series:
        values = {(o.name,): value(o) for o in origins}
        return Series("gauge", name, help, ("upstream",), values, across_workers=across_workers)

    return [
        gauge("cacheproxy_upstream_in_flight", "Requests in flight", lambda o: o.in_flight, "sum"),
        gauge(
            "cacheproxy_upstream_limit",
            "In-flight limit now (pool.max_connections, or lower with pool.adaptive)",
            lambda o: o.limit,
            "sum",  # each worker has its own pool
        ),
        gauge(
            "cacheproxy_upstream_queued", "Requests waiting for a slot", lambda o: o.queued, "sum"
        ),
        gauge(
            "cacheproxy_upstream_queue_oldest_seconds",
            "How long the first request in the queue has waited",
            lambda o: o.oldest_wait,
            "max",  # the longest wait of any worker, not the sum of theirs
        ),
        counter(
            "cacheproxy_upstream_queue_wait_seconds",
            "Seconds requests spent queued before they were sent",
            lambda o: o.queue_wait_seconds,
        ),
        Series(
            "counter",
            "cacheproxy_upstream_rejected",
            "Requests answered 503 upstream_busy, by reason",
            ("upstream", "reason"),
            {
                **{(o.name, "queue_full"): o.queue_full for o in origins},
                **{(o.name, "queue_timeout"): o.queue_timeouts for o in origins},
            },
        ),
        Series(
            "counter",
            "cacheproxy_upstream_retries",
            "Retries sent, and retries the budget refused",
            ("upstream", "result"),
            {
                **{(o.name, "sent"): o.retries for o in origins},
                **{(o.name, "denied"): o.retries_denied for o in origins},
            },
        ),
        gauge(
            "cacheproxy_upstream_circuit_open",
            "1 while the circuit is open or half-open",
            lambda o: int(o.circuit in ("open", "half-open")),
            "max",  # 1 if any worker's is open, not how many workers
        ),
        counter(
            "cacheproxy_upstream_circuit_opened",
            "Times the circuit opened",
            lambda o: o.circuit_opened,
        ),
        gauge(
            "cacheproxy_upstream_circuit_window_requests",
            "Requests in the breaker's window (circuit_breaker.window seconds)",
            lambda o: o.window_requests,
            "sum",  # each worker judges its own share
        ),
        gauge(
            "cacheproxy_upstream_circuit_window_failures",
            "Failed requests in the breaker's window",
            lambda o: o.window_failures,
            "sum",
        ),
        gauge(
            "cacheproxy_upstream_circuit_failure_rate",
            "Failures / requests in the breaker's window (0 without requests)",
            lambda o: o.failure_rate or 0.0,
            "max",  # the worst worker's: each opens on its own rate
        ),
    ]


def _rss() -> int:
    """Resident memory now (Linux), else the peak so far."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * resource.getpagesize()
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


# --- several processes ---------------------------------------------------------------------


def merge_summaries(docs: list[dict[str, Any]]) -> dict[str, Any]:
    """`/performance/summary` (or /cache, /connections) of several workers as one process's.

    Numbers add up (counts, bytes, pool sizes); `ttl_seconds` and `seconds` are the same
    everywhere and taken once; the ratios and estimates in RATIOS are recomputed from the
    summed counts beside them.
    """
    merged = _sum(docs)
    _recompute(merged)
    return merged


def _sum(values: list[Any]) -> Any:
    first = values[0]
    if isinstance(first, dict):
        keys = dict.fromkeys(k for v in values for k in v)
        out = {}
        for k in keys:
            present = [v[k] for v in values if k in v]
            out[k] = present[0] if k in ("ttl_seconds", "seconds", "thresholds") else _sum(present)
        return out
    if isinstance(first, list):
        if all(isinstance(x, int | float) for v in values for x in v):
            return [sum(col) for col in zip(*values, strict=False)]
        return [x for v in values for x in v]
    if isinstance(first, bool) or first is None:
        return first if all(v == first for v in values) else any(values)
    if all(isinstance(v, int | float) for v in values):
        return sum(values)
    return first


def _recompute(doc: dict[str, Any]) -> None:
    for value in doc.values():
        if isinstance(value, dict):
            _recompute(value)
    if "hits" in doc and "misses" in doc and "hit_rate" in doc:
        r = ratio(doc["hits"], doc["hits"] + doc["misses"])
        doc["hit_rate"] = None if r is None else round(r, 4)
    if "reuse_rate" in doc:
        total = doc["total_requests"]
        r = ratio(max(total - doc["opened"], 0), total)
        doc["reuse_rate"] = None if r is None else round(r, 4)
    if "raw_counts" in doc and "seconds" in doc:
        raw = doc["raw_counts"]
        delta = Totals(
            requests=doc["requests"],
            hits=doc["hits"],
            misses=doc["misses"],
            errors=doc["errors"],
            cached=raw["cached"],
            cached_seconds=raw["cached_seconds"],
            uncached=raw["uncached"],
            uncached_seconds=raw["uncached_seconds"],
            upstream_requests=doc["upstream_requests"],
            upstream_errors=doc["upstream_errors"],
            rate_limited=doc["rate_limited"],
            latency=tuple(raw["latency_buckets"][: len(BOUNDS) + 1]),
        )
        doc.update(describe(delta, doc["seconds"]))
    if "window" in doc and "response_times" in doc:
        doc["response_times"] = doc["window"]["response_times"]
