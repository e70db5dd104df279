"""The admin API's JSON documents about the proxy's traffic: `/performance/*`, `/alerts/active`,
`/cache/stats`, and `/health`'s `rate_limits` check. Built when asked, from the meters, the
ticker's window and the figures' owners (sources.py).

With `workers: N` each worker responds for itself and the supervisor merges their documents
(proxy/admin/merge.py): counts add up, and the ratios and estimates beside them (`RATIOS`) are
recomputed from the summed counts by `recompute_ratios`.
"""

from __future__ import annotations

import dataclasses
import socket
from typing import TYPE_CHECKING, Any

from proxy.observe.logs import iso_time
from proxy.observe.stats_window import BOUNDS, Totals, describe, ratio
from proxy.observe.ticker import HISTORY_FIELDS, SUMMARY_WINDOW, counts_by_route

if TYPE_CHECKING:
    from proxy.observe.metrics import Meters
    from proxy.observe.sources import Sources
    from proxy.observe.ticker import Ticker

# Fields that are ratios or estimates: a merge of several processes recomputes them.
RATIOS: tuple[str, ...] = ("hit_rate", "reuse_rate", "error_rate", "requests_per_second")
RATIOS += ("avg_cached_ms", "avg_uncached_ms", "avg_failed_ms", "p50_ms", "p99_ms", "speedup")
# How the supervisor merges these documents (the Cacheproxy-Merge header, proxy/admin/merge.py):
# settings and spans are the same in every worker, so taken once; a latency histogram adds up
# bucket by bucket.
MERGE_RULES = "ttl_seconds=first, seconds=first, window_seconds=first, thresholds=first"
MERGE_RULES += ", latency_buckets=sum"
# The summary's history: workers' points fall at the same times (multiples of its step), so
# its columns add up item by item, and its times are the same in every worker.
MERGE_RULES += ", step_seconds=first, t=first, " + ", ".join(f"{f}=sum" for f in HISTORY_FIELDS)
# The machine's name: the same in every worker, and strings are taken once anyway.
INSTANCE = socket.gethostname()


class Documents:
    def __init__(self, meters: Meters, ticker: Ticker, sources: Sources) -> None:
        self.meters = meters
        self.ticker = ticker
        self.sources = sources

    def cache(self) -> dict[str, Any]:
        """`/performance/cache`: lookups by result, the memory tier's size, TTLs by route.

        Its `hits` and `misses` count responses (`"counts": "responses"`): served from the
        cache (hit, stale) or after waiting for the upstream (miss, revalidated). /cache/stats'
        count the memory tier's lookups, where a stale entry found and revalidated is a hit."""
        lookups = self.meters.lookups()
        by_result: dict[str, int] = {}
        for (_, result), count in lookups.items():
            by_result[result] = by_result.get(result, 0) + count
        hits = by_result.get("hit", 0) + by_result.get("stale", 0)
        misses = by_result.get("miss", 0) + by_result.get("revalidated", 0)
        stats = self.sources.store.snapshot()
        hit_rate = ratio(hits, hits + misses)
        ttls = self.sources.routes.ttls
        return {
            "enabled": bool(ttls),
            "counts": "responses",
            "hits": hits,
            "misses": misses,
            "hit_rate": None if hit_rate is None else round(hit_rate, 4),
            "lookups": by_result,
            "entries": stats.entries,
            "bytes": stats.bytes,
            "max_bytes": stats.max_bytes,
            "evictions": stats.evictions,
            "ttl_seconds": dict(ttls),
        }

    def connections(self) -> dict[str, Any]:
        """`/performance/connections`: the upstream pool and each origin's protection."""
        upstream = self.sources.upstream
        pool = upstream.pool_stats()
        total = sum(sum(m.upstream.values()) for m in self.meters.by_route.values())
        reuse_rate = _reuse_rate(total, pool.opened)
        return {
            "max_connections": pool.max_connections,
            "active": pool.active,
            "idle": pool.idle,
            "total_requests": total,
            "opened": pool.opened,
            "reuse_rate": reuse_rate,
            # Per upstream origin: queue, in-flight limit, retries, circuit (proxy/upstream/).
            "upstreams": [dataclasses.asdict(o) for o in upstream.stats()],
        }

    def summary(self) -> dict[str, Any]:
        """`/performance/summary`: everything above plus the last minute (the dashboard's)."""
        ticker = self.ticker
        window = ticker.recent(SUMMARY_WINDOW)
        limited = sum(m.ratelimit[1] for m in self.meters.by_route.values())
        allowed = sum(m.ratelimit[0] for m in self.meters.by_route.values())
        totals = self.meters.totals()
        access = self.sources.access
        return {
            "uptime_seconds": round(ticker.now() - ticker.started, 3),
            "requests": totals.requests,
            "errors": totals.errors,
            "cache": self.cache(),
            "connections": self.connections(),
            "response_times": window["response_times"],
            "window": window,
            "rate_limit": {
                "configured": self.sources.routes.rate_limits > 0,
                "allowed": allowed,
                "limited": limited,
                **self._limiters(),
            },
            "alerts": len(ticker.alerts.active),
            "instance": INSTANCE,
            "routes": self._routes(SUMMARY_WINDOW),
            "history": ticker.history.columns(),
            "access_log": {
                "written": access.written if access else 0,
                "dropped": access.dropped if access else 0,
            },
        }

    def _routes(self, seconds: float) -> dict[str, Any]:
        """Each route's requests, 4xx, 5xx and upstream failures over about the last
        `seconds` (from the history's points: up to its step more): which route is failing."""
        wall = self.ticker.wall()
        before = self.ticker.history.since(wall, seconds)
        now = counts_by_route(self.meters)
        covered = wall - before[0] if before else 0.0
        then = before[1] if before else {}
        routes: dict[str, dict[str, int]] = {}
        for name, counts in now.items():
            old = then.get(name, (0,) * len(counts))
            delta = dict(
                zip(
                    HISTORY_FIELDS,
                    (max(0, a - b) for a, b in zip(counts, old, strict=True)),
                    strict=True,
                )
            )
            routes[name] = {
                "requests": delta["requests"],
                "errors_4xx": delta["errors_4xx"],
                "errors_5xx": delta["errors_5xx"],
                "upstream_errors": delta["upstream_errors"],
                "upstream_timeouts": delta["upstream_timeouts"],
                "rate_limited": delta["rate_limited"],
            }
        return {"seconds": round(covered, 3), "by_route": routes}

    def alerts(self) -> dict[str, Any]:
        """`/alerts/active`: the thresholds, and the alerts raised now."""
        active = self.ticker.active_alerts()
        s = self.ticker.alert_settings
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

    def cache_stats(self) -> dict[str, Any]:
        """`/cache/stats`: the memory tier's own counters, and the Redis tier's.

        Its `hits` and `misses` count lookups in memory (`"counts": "memory lookups"`): an
        entry found, fresh or stale, is a hit; see `cache` for what clients were served."""
        stats: dict[str, Any] = {
            "counts": "memory lookups",
            **dataclasses.asdict(self.sources.store.snapshot()),
        }
        shared = self.sources.shared
        if shared is not None:
            stats["shared"] = {
                **dataclasses.asdict(shared.stats),
                "corrupt": shared.store.corrupt,
                "unauthenticated": shared.store.unauthenticated,
                "oversize": shared.store.oversize,
                "subscribed": shared.subscribed,
                **shared.log.counts(),
            }
        return stats

    def rate_limits_check(self) -> dict[str, object] | None:
        """/health's `rate_limits` check: down while a limiter cannot reach its windows in
        Redis (its on_store_error decides meanwhile); None when none keeps them there. No
        error text: it would name the Redis (and /health needs no token)."""
        shared = {lim.settings.name: lim for lim in self.sources.routes.limiters}
        if not shared:
            return None
        down = [name for name, lim in shared.items() if lim.degraded]
        error = f"Redis unreachable: {', '.join(down)} limited per on_store_error" if down else None
        limiters = {
            name: {
                "status": "down" if lim.degraded else "up",
                "store_errors": lim.store_errors,
                "on_store_error": lim.settings.on_store_error,
            }
            for name, lim in shared.items()
        }
        return {"status": "down" if down else "up", "error": error, "limiters": limiters}

    def _limiters(self) -> dict[str, int]:
        """The Redis windows' failures: checks Redis could not decide, limiters degraded
        (nothing when no limiter keeps its windows in Redis)."""
        shared = self.sources.routes.limiters
        if not shared:
            return {}
        return {
            "store_errors": sum(lim.store_errors for lim in shared),
            "degraded": sum(lim.degraded for lim in shared),
        }


def _reuse_rate(requests: int, opened: int) -> float | None:
    """Requests sent on a connection already open, of all sent; none while no connection
    was ever opened (an upstream down from the start is not 100% reuse)."""
    r = ratio(max(requests - opened, 0), requests) if opened else None
    return None if r is None else round(r, 4)


# --- several processes ---------------------------------------------------------------------


def recompute_ratios(doc: dict[str, Any]) -> None:
    """In a document merged from several workers' (proxy/admin/merge.py), whose counts were
    added up: the ratios and estimates (RATIOS) recomputed from the counts beside them.

    Recognised by shape, at any depth: `hit_rate` beside `hits` and `misses`, `reuse_rate`
    beside `total_requests` and `opened`, a window's figures beside its `raw_counts` and
    `seconds`, a summary's `response_times` beside its `window`. Anything else is left as it
    is, and so is a part that only looks like one of these.
    """
    for value in doc.values():
        if isinstance(value, dict):
            recompute_ratios(value)
    try:
        if "hits" in doc and "misses" in doc and "hit_rate" in doc:
            r = ratio(doc["hits"], doc["hits"] + doc["misses"])
            doc["hit_rate"] = None if r is None else round(r, 4)
        if "reuse_rate" in doc:
            doc["reuse_rate"] = _reuse_rate(doc["total_requests"], doc["opened"])
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
                failed=raw.get("failed", 0),
                failed_seconds=raw.get("failed_seconds", 0.0),
                upstream_requests=doc["upstream_requests"],
                upstream_errors=doc["upstream_errors"],
                rate_limited=doc["rate_limited"],
                latency=tuple(raw["latency_buckets"][: len(BOUNDS) + 1]),
            )
            doc.update(describe(delta, doc["seconds"]))
        if "window" in doc and "response_times" in doc:
            doc["response_times"] = doc["window"]["response_times"]
    except (KeyError, TypeError, ValueError):
        return
