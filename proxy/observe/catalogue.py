"""The Prometheus catalogue: every series `/metrics` shows, the request path's counters plus
figures read from their owners at scrape time (memory tier, upstream pools and guards, Redis,
rate limiters, the proxy port, the access log).

One process: a scrape collects `series()` (metrics.Exporter). With `workers: N`
(PROMETHEUS_MULTIPROC_DIR set) each worker copies them into its own file once a second
(`write`, called by the ticker) and the supervisor renders every worker's files.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from proxy import __version__, runtime
from proxy.observe.metrics import (
    AcrossWorkers,
    Exporter,
    Meters,
    MultiprocessWriter,
    Samples,
    Series,
    multiprocess_dir,
    multiprocess_registry,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from prometheus_client import CollectorRegistry

    from proxy.observe.sources import Sources
    from proxy.upstream.guard import OriginStats


# cacheproxy_build_info's labels: what runs, as `cacheproxy --version` says it.
BUILD = (__version__, *runtime())


class Catalogue:
    def __init__(self, meters: Meters, sources: Sources) -> None:
        self.meters = meters
        self.sources = sources
        self._files: MultiprocessWriter | None = None
        self.registry: CollectorRegistry
        path = multiprocess_dir()
        if path is not None:
            # Workers: each writes its own file; /metrics shows every worker's.
            self._files = MultiprocessWriter()
            self.registry = multiprocess_registry(path)
        else:
            self.registry = Exporter(self.series).registry()

    def write(self) -> None:
        """With workers, copy every series into this process's metric file (else nothing)."""
        if self._files is not None:
            self._files.write(self.series())

    def series(self) -> list[Series]:
        """Every metric now: the request path's counters plus figures read from their owners."""
        sources = self.sources
        out = self.meters.series()
        store = sources.store.snapshot()
        pool = sources.upstream.pool_stats()
        out += [
            Series(
                "gauge",
                "cacheproxy_build_info",
                "Always 1: the running version, and the Python and aiohttp it runs on",
                ("version", "python", "aiohttp"),
                {BUILD: 1},
                across_workers="max",  # one build, however many workers
            ),
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
        out += upstream_series(sources.upstream.stats())
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
        redis = sources.redis
        if redis is not None:
            errors.values = {(op,): n for op, n in redis.guard.errors.items()}
            skipped.values = {(why,): n for why, n in redis.guard.skipped.items()}
        out += [errors, skipped]
        limiters = sources.routes.limiters
        if limiters:
            out += [
                Series(
                    "counter",
                    "cacheproxy_ratelimit_store_errors",
                    "Rate-limit checks Redis could not answer (on_store_error decided them)",
                    ("limiter",),
                    {(lim.settings.name,): lim.store_errors for lim in limiters},
                ),
                Series(
                    "gauge",
                    "cacheproxy_ratelimit_degraded",
                    "1 while a limiter's last check could not reach Redis",
                    ("limiter",),
                    {(lim.settings.name,): int(lim.degraded) for lim in limiters},
                    across_workers="max",  # 1 if any worker's is, not how many workers
                ),
            ]
        if sources.shared is not None:
            st = sources.shared.stats
            out.append(
                Series(
                    "counter",
                    "cacheproxy_shared_lookups",
                    "Lookups in the Redis tier (after a memory miss)",
                    ("result",),
                    {("hit",): st.hits, ("miss",): st.misses, ("error",): st.errors},
                )
            )
        if sources.listener is not None:
            ls = sources.listener
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
                Series(
                    "counter",
                    "cacheproxy_tls_handshake_failures",
                    "TLS handshakes on the proxy port that failed: not TLS, no version or cipher"
                    " in common, or a client refusing the certificate (one expired or not"
                    " trusted); those that outlasted request_head are phase=head timeouts",
                    (),
                    {(): ls.tls_handshake_failures},
                ),
            ]
        if sources.tunnels is not None:
            out += sources.tunnels.series()
        if sources.access is not None:
            out.append(
                Series(
                    "counter",
                    "cacheproxy_access_log_dropped",
                    "Access log lines dropped because the writer could not keep up",
                    (),
                    {(): sources.access.dropped},
                )
            )
        return out


def upstream_series(origins: list[OriginStats]) -> list[Series]:
    """Each upstream's queue, limit, retries and circuit, labelled by its route name."""

    def by_origin(value: Callable[[OriginStats], float]) -> Samples:
        return {(o.name,): value(o) for o in origins}

    def counter(name: str, help: str, value: Callable[[OriginStats], float]) -> Series:
        return Series("counter", name, help, ("upstream",), by_origin(value))

    def gauge(
        name: str, help: str, value: Callable[[OriginStats], float], across_workers: AcrossWorkers
    ) -> Series:
        values = by_origin(value)
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
        counter(
            "cacheproxy_upstream_attempts",
            "Attempts sent (retries included): how the balancing shares requests",
            lambda o: o.admitted,
        ),
        # Targets of an upstream with several only: a lone target is never out.
        Series(
            "gauge",
            "cacheproxy_upstream_ejected",
            "1 while the target is out of the balancing after failing (upstream.ejection)",
            ("upstream",),
            {(o.name,): int(o.ejected) for o in origins if o.ejected is not None},
            across_workers="max",  # 1 if any worker left it out
        ),
        Series(
            "counter",
            "cacheproxy_upstream_ejections",
            "Times the target was left out of the balancing",
            ("upstream",),
            {(o.name,): o.ejections for o in origins if o.ejected is not None},
        ),
        Series(
            "gauge",
            "cacheproxy_upstream_health_check_up",
            "1 while the target passes its health checks (upstream.health_check)",
            ("upstream",),
            {(o.name,): int(o.health_check == "up") for o in origins if o.health_check},
            across_workers="min",  # 0 if any worker's checks fail it
        ),
    ]
